r"""The bundled UMLS-One copy and scripts/build_umls_one.py."""
import gzip
import hashlib
import importlib.util
import json
import os
import zipfile

import pytest
import torch

from pyg_fewshot.data.dataset import FewShotKGDataset, bundled_dir
from pyg_fewshot.data.hetero import candidates, summary, task_triples
from pyg_fewshot.data.io import read_fewshot_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'scripts', 'build_umls_one.py')

SPLIT = {
    'train': ['associated_with', 'causes', 'complicates', 'disrupts',
              'issue_in', 'location_of', 'manifestation_of', 'measures',
              'part_of', 'produces'],
    'dev': ['assesses_effect_of', 'co-occurs_with', 'occurs_in', 'performs',
            'precedes'],
    'test': ['analyzes', 'evaluation_of', 'measurement_of', 'treats', 'uses'],
}
BACKGROUND = ['affects', 'result_of', 'isa', 'interacts_with', 'process_of']


@pytest.fixture(scope='module')
def build_script():
    spec = importlib.util.spec_from_file_location('build_umls_one', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def bundled():
    data, report = read_fewshot_folder(bundled_dir())
    return data


def test_bundled_counts_and_split(bundled, umls_one_counts):
    data = bundled
    assert summary(data) == umls_one_counts
    assert data.task_relation_names == (SPLIT['train'] + SPLIT['dev'] +
                                        SPLIT['test'])
    assert data.relation_names == BACKGROUND
    names = data['entity'].names
    assert names == sorted(names)  # ids in sorted name order
    for rel in range(len(data.task_relation_names)):
        assert torch.equal(candidates(data, rel), torch.arange(135))
    # Every task triple is in the filter set; nothing else is.
    assert data.true_keys.numel() == 2453 + 385 + 300


def test_bundled_is_small_and_compressed():
    folder = bundled_dir()
    total = sum(
        os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert total < 300_000
    for name in ('train_tasks.json', 'dev_tasks.json', 'test_tasks.json',
                 'path_graph', 'rel2candidates.json', 'e1rel_e2.json',
                 'ent2ids', 'relation2ids'):
        assert os.path.isfile(os.path.join(folder, name + '.gz'))
    manifest = json.load(open(os.path.join(folder, 'MANIFEST.json')))
    assert manifest['split'] == SPLIT
    assert 'MIT' in manifest['source']['licence']
    assert os.path.isfile(os.path.join(folder, 'LICENSE-PyKEEN.txt'))


@pytest.mark.shared_data
def test_bundled_matches_shared_umls_one(umls_one_folder, bundled,
                                        tmp_path):
    folder = umls_one_folder
    # The read-only shared folder loads through the dataset class too.
    shared = FewShotKGDataset(str(tmp_path / 'root'), raw_dir=folder).data
    assert summary(shared) == summary(bundled)
    for split in ('train', 'dev', 'test'):
        names = [shared.task_relation_names[i]
                 for i in shared[f'{split}_rel'].tolist()]
        assert sorted(names) == SPLIT[split]
    assert sorted(shared.relation_names) == sorted(bundled.relation_names)
    assert sorted(shared['entity'].names) == bundled['entity'].names

    def named_tasks(data):
        n = data['entity'].names
        return {
            rel: [(n[h], n[t]) for h, t in task_triples(data, i).tolist()]
            for i, rel in enumerate(data.task_relation_names)
        }

    def named_bg(data):
        n, r = data['entity'].names, data.relation_names
        return sorted((n[h], r[k], n[t]) for (h, t), k in zip(
            data.bg_edge_index.t().tolist(), data.bg_edge_type.tolist()))

    # Same triples, same order within each relation (the pykeen file order).
    assert named_tasks(shared) == named_tasks(bundled)
    assert named_bg(shared) == named_bg(bundled)
    assert shared.true_keys.numel() == bundled.true_keys.numel()
    # No bundled file is a byte copy of a shared one.
    shared_digests = {
        hashlib.sha256(open(os.path.join(folder, f), 'rb').read()).digest()
        for f in os.listdir(folder)
    }
    for name in os.listdir(bundled_dir()):
        raw = open(os.path.join(bundled_dir(), name), 'rb').read()
        assert hashlib.sha256(raw).digest() not in shared_digests
        if name.endswith('.gz'):
            plain = gzip.decompress(raw)
            assert hashlib.sha256(plain).digest() not in shared_digests


def _fake_wheel(path, build_script):
    r"""A wheel-shaped zip with a tiny UMLS-like graph: 2 triples of every
    split relation, 3 of every background relation, 2 of an unused one."""
    ents = [f'ent{i}' for i in range(6)]
    lines = []
    rels = [r for rels in build_script.SPLIT.values() for r in rels]
    for k, rel in enumerate(rels + build_script.BACKGROUND + ['unused']):
        count = 3 if rel in build_script.BACKGROUND else 2
        for j in range(count):
            lines.append(f'{ents[(k + j) % 6]}\t{rel}\t{ents[(k + 2*j + 1) % 6]}')
    parts = {'train': lines[0::3], 'valid': lines[1::3], 'test': lines[2::3]}
    with zipfile.ZipFile(path, 'w') as zf:
        for part, rows in parts.items():
            zf.writestr(build_script.MEMBER.format(part),
                        '\n'.join(rows) + '\n')
        zf.writestr(build_script.LICENSE_MEMBER, 'MIT License\n')
    return parts


def test_build_script_on_fake_wheel(build_script, tmp_path):
    wheel = str(tmp_path / 'fake.whl')
    parts = _fake_wheel(wheel, build_script)
    out = str(tmp_path / 'out')
    with pytest.raises(ValueError, match='SHA-256'):
        build_script.build(wheel, out)
    manifest = build_script.build(wheel, out, verify=False,
                                  check_counts=False)
    assert manifest['counts']['num_train_triples'] == 20
    assert manifest['counts']['num_background_triples'] == 15
    assert manifest['counts']['num_source_triples_left_out'] == 2
    data, _ = read_fewshot_folder(out)
    assert summary(data)['num_dev_triples'] == 10
    assert data.relation_names == build_script.BACKGROUND
    # Triple order within a relation is the file order train, valid, test.
    order = parts['train'] + parts['valid'] + parts['test']
    names = data['entity'].names
    rel = data.task_relation_names.index('causes')
    got = [f'{names[h]}\tcauses\t{names[t]}'
           for h, t in task_triples(data, rel).tolist()]
    assert got == [line for line in order if '\tcauses\t' in line]
    # Deterministic output: a second build gives identical bytes.
    first = {f: open(os.path.join(out, f), 'rb').read()
             for f in os.listdir(out)}
    build_script.build(wheel, str(tmp_path / 'again'), verify=False,
                       check_counts=False)
    for f, content in first.items():
        assert open(os.path.join(tmp_path / 'again', f),
                    'rb').read() == content
    with pytest.raises(ValueError, match='counts differ'):
        build_script.build(wheel, str(tmp_path / 'x'), verify=False)


def test_build_script_reproduces_bundled_copy(build_script, tmp_path):
    wheel = os.environ.get('PYG_FEWSHOT_PYKEEN_WHEEL')
    if not wheel or not os.path.isfile(wheel):
        pytest.skip('set PYG_FEWSHOT_PYKEEN_WHEEL to pykeen-1.11.1-py3-none-'
                    'any.whl (pip download pykeen==1.11.1 --no-deps) to '
                    'check the bundled copy against a rebuild')
    out = str(tmp_path / 'umls_one')
    build_script.build(wheel, out)
    for name in sorted(os.listdir(bundled_dir())):
        assert open(os.path.join(out, name), 'rb').read() == open(
            os.path.join(bundled_dir(), name), 'rb').read(), name
