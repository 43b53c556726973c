r"""scripts/build_pykeen_one.py: Nations-One and Kinships-One from the
pykeen wheel."""
import importlib.util
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from pyg_fewshot.data.hetero import candidates, summary, task_triples
from pyg_fewshot.data.io import read_fewshot_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'scripts', 'build_pykeen_one.py')
DEFAULT_WHEEL = '/tmp/pykeen_wheel/pykeen-1.11.1-py3-none-any.whl'

LAYOUT = ('train_tasks.json', 'dev_tasks.json', 'test_tasks.json',
          'path_graph', 'rel2candidates.json', 'e1rel_e2.json', 'ent2ids',
          'relation2ids')

# The fake graph: 12 entities; relation -> number of triples. With
# num_background=2, 'big' and 'alpha' (tied with 'omega', first by name) go
# to the background, 's1' and 's2' are too small to be tasks, and the other
# five are task relations ('t2' and 't4' have exactly min_task_triples).
FAKE_COUNTS = {'big': 20, 'alpha': 15, 'omega': 15, 't1': 12, 't2': 10,
               't3': 11, 't4': 10, 's1': 9, 's2': 1}
FAKE_TASKS = ['omega', 't1', 't2', 't3', 't4']
FAKE_BACKGROUND = ['alpha', 'big', 's1', 's2']


@pytest.fixture(scope='module')
def script():
    spec = importlib.util.spec_from_file_location('build_pykeen_one', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_spec(script, **kw):
    spec = dict(script.SPECS['nations'], num_background=2,
                sizes={'train': 3, 'dev': 1, 'test': 1}, expected=None)
    spec.update(kw)
    return spec


def make_wheel(path, script, num_entities=12, counts=FAKE_COUNTS):
    r"""A wheel-shaped zip with the Nations member paths and a made-up
    graph; returns the triple lines in file order (train, valid, test)."""
    ents = [f'e{i:02d}' for i in range(num_entities)]
    lines = []
    for k, (rel, n) in enumerate(counts.items()):
        for j in range(n):
            head = ents[j % num_entities]
            tail = ents[(j + j // num_entities + k + 1) % num_entities]
            lines.append(f'{head}\t{rel}\t{tail}')
    parts = {'train': lines[0::3], 'valid': lines[1::3], 'test': lines[2::3]}
    member = script.SPECS['nations']['member']
    with zipfile.ZipFile(path, 'w') as zf:
        for part, rows in parts.items():
            zf.writestr(member.format(part), '\n'.join(rows) + '\n')
        zf.writestr(script.umls.LICENSE_MEMBER, 'MIT License\n')
    return parts['train'] + parts['valid'] + parts['test']


@pytest.fixture
def fake(script, tmp_path):
    wheel = str(tmp_path / 'fake.whl')
    order = make_wheel(wheel, script)
    return wheel, order


def read_all(folder):
    return {f: open(os.path.join(folder, f), 'rb').read()
            for f in sorted(os.listdir(folder))}


def test_split_rule(script, fake, tmp_path):
    wheel, _ = fake
    out = str(tmp_path / 'out')
    manifest = script.build('nations', wheel, out, verify=False,
                            spec=fake_spec(script))
    # Small relations and the 2 largest (tie broken by name) are background.
    assert manifest['background_relations'] == FAKE_BACKGROUND
    split = manifest['split']
    assert [len(split[s]) for s in ('train', 'dev', 'test')] == [3, 1, 1]
    assert sorted(r for rels in split.values() for r in rels) == FAKE_TASKS
    # The seeded permutation of the name-sorted task relations, cut 3/1/1,
    # each split listed by name.
    perm = np.random.default_rng(0).permutation(len(FAKE_TASKS)).tolist()
    order = [FAKE_TASKS[i] for i in perm]
    assert split == {'train': sorted(order[:3]), 'dev': order[3:4],
                     'test': order[4:]}
    c = manifest['counts']
    assert c['num_entities'] == 12
    assert c['num_background_triples'] == 20 + 15 + 9 + 1
    assert c['num_background_relations_small'] == 2
    assert sum(c[f'num_{s}_triples'] for s in ('train', 'dev', 'test')) == (
        15 + 12 + 10 + 11 + 10)
    assert c['min_task_relation_triples'] == 10
    assert manifest['rule_parameters']['sizes'] == {'train': 3, 'dev': 1,
                                                    'test': 1}
    assert 'fewer than 10 triples' in manifest['rule']
    # The same rule through split_relations, and a size mismatch refused.
    triples = [tuple(line.split('\t')) for line in fake[1]]
    assert script.split_relations(triples, 10, 2, {
        'train': 3, 'dev': 1, 'test': 1})[0] == split
    with pytest.raises(ValueError, match='5 task relations'):
        script.split_relations(triples, 10, 2,
                               {'train': 3, 'dev': 2, 'test': 1})


def test_layout_read_back(script, fake, tmp_path):
    wheel, order = fake
    out = str(tmp_path / 'out')
    manifest = script.build('nations', wheel, out, verify=False,
                            spec=fake_spec(script))
    names = set(os.listdir(out))
    assert names == set(LAYOUT) | {'MANIFEST.json', 'LICENSE-PyKEEN.txt'}
    assert not any(n.endswith('.gz') for n in names)  # uncompressed
    assert json.load(open(os.path.join(out, 'MANIFEST.json'))) == manifest
    data, _ = read_fewshot_folder(out)
    s = summary(data)
    for key in ('num_entities', 'num_background_triples', 'num_train_triples',
                'num_dev_triples', 'num_test_triples'):
        assert s[key] == manifest['counts'][key]
    assert data.relation_names == FAKE_BACKGROUND
    ents = data['entity'].names
    assert ents == sorted(ents)
    split = manifest['split']
    assert data.task_relation_names == (split['train'] + split['dev'] +
                                        split['test'])
    for i, rel in enumerate(data.task_relation_names):
        got = [f'{ents[h]}\t{rel}\t{ents[t]}'
               for h, t in task_triples(data, i).tolist()]
        # Every triple of the relation, in file order (train, valid, test).
        assert got == [line for line in order if line.split('\t')[1] == rel]
        assert len(got) >= 10
        assert torch.equal(candidates(data, i), torch.arange(12))
    assert data.true_keys.numel() == 15 + 12 + 10 + 11 + 10
    # path_graph keeps the file order of the background triples.
    bg = open(os.path.join(out, 'path_graph')).read().splitlines()
    assert bg == [line for line in order
                  if line.split('\t')[1] in FAKE_BACKGROUND]


def test_deterministic_and_refuses_non_empty(script, fake, tmp_path):
    wheel, _ = fake
    spec = fake_spec(script)
    out, again = str(tmp_path / 'out'), str(tmp_path / 'again')
    script.build('nations', wheel, out, verify=False, spec=spec)
    first = read_all(out)
    os.makedirs(again)  # an empty folder is accepted
    script.build('nations', wheel, again, verify=False, spec=spec)
    assert read_all(again) == first
    # No staging folder is left next to the outputs.
    assert sorted(os.listdir(tmp_path)) == ['again', 'fake.whl', 'out']

    with open(os.path.join(out, 'path_graph'), 'w') as f:
        f.write('changed\n')
    with pytest.raises(FileExistsError, match='not empty'):
        script.build('nations', wheel, out, verify=False, spec=spec)
    assert open(os.path.join(out, 'path_graph')).read() == 'changed\n'
    with pytest.raises(SystemExit):  # the CLI refuses it too
        script.main(['nations', '--out', out, '--wheel', wheel,
                     '--no-verify'])
    with open(os.path.join(out, 'notes.txt'), 'w') as f:
        f.write('mine\n')
    script.build('nations', wheel, out, verify=False, spec=spec,
                 overwrite=True)
    after = read_all(out)
    assert after.pop('notes.txt') == b'mine\n'  # other files left alone
    assert after == first
    with pytest.raises(FileExistsError, match='not a folder'):
        script.build('nations', wheel, str(tmp_path / 'fake.whl'),
                     verify=False, spec=spec)
    with pytest.raises(SystemExit):  # --out is required
        script.main(['nations', '--wheel', wheel])


def test_checks_and_crash(script, fake, tmp_path, monkeypatch):
    wheel, _ = fake
    with pytest.raises(ValueError, match='SHA-256'):
        script.build('nations', wheel, str(tmp_path / 'x'))
    with pytest.raises(ValueError, match='counts differ'):
        script.build('nations', wheel, str(tmp_path / 'x'), verify=True,
                     spec=fake_spec(script, sha256=script.umls.read_source(
                         wheel, verify=False,
                         member=script.SPECS['nations']['member'])[1],
                         expected={'num_entities': 14}))
    # A graph the published loader would loop forever on is refused.
    small = str(tmp_path / 'small.whl')
    make_wheel(small, script, num_entities=8)
    with pytest.raises(ValueError, match='more than 10 candidates'):
        script.build('nations', small, str(tmp_path / 'x'), verify=False,
                     spec=fake_spec(script))
    assert not os.path.exists(tmp_path / 'x')

    # A crash while writing leaves neither the folder nor a staging folder.
    def crash(folder, files, *args, **kwargs):
        with open(os.path.join(folder, 'train_tasks.json'), 'w') as f:
            f.write('{"half')
        raise KeyboardInterrupt

    monkeypatch.setattr(script.umls, 'write', crash)
    with pytest.raises(KeyboardInterrupt):
        script.build('nations', wheel, str(tmp_path / 'x'), verify=False,
                     spec=fake_spec(script))
    assert sorted(os.listdir(tmp_path)) == ['fake.whl', 'small.whl']


def test_real_wheel(script, tmp_path):
    wheel = os.environ.get('PYG_FEWSHOT_PYKEEN_WHEEL') or DEFAULT_WHEEL
    if not os.path.isfile(wheel):
        pytest.skip(f'no pykeen-1.11.1 wheel at {wheel}: set '
                    f'PYG_FEWSHOT_PYKEEN_WHEEL to pykeen-1.11.1-py3-none-'
                    f'any.whl (pip download pykeen==1.11.1 --no-deps) to '
                    f'build Nations-One and Kinships-One from it')
    for dataset, ents in (('nations', 14), ('kinships', 104)):
        out = str(tmp_path / dataset)
        # verify=True: pinned digests and counts.
        manifest = script.build(dataset, wheel, out)
        data, _ = read_fewshot_folder(out)
        s = summary(data)
        assert s['num_entities'] == ents
        for key, value in script.SPECS[dataset]['expected'].items():
            if key in s:
                assert s[key] == value, key
        assert s['num_dev_relations'] >= 4 and s['num_test_relations'] >= 4
        for i in range(len(data.task_relation_names)):
            assert task_triples(data, i).shape[0] >= 10
        assert (manifest['counts']['num_source_triples'] ==
                s['num_background_triples'] + s['num_train_triples'] +
                s['num_dev_triples'] + s['num_test_triples'])
