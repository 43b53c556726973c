"""Item 8: ``e1rel_e2.json`` keys (plain ``head + relation``) are resolved
against the known (head, task relation) pairs, never by suffix guessing, and
a key that names no known pair is skipped with a counted warning instead of
rejecting valid data."""
import gzip
import json
import os
import re

import numpy as np
import pytest
import torch

from pyg_fewshot.data.dataset import bundled_dir
from pyg_fewshot.data.io import (FewShotDataError, FewShotDataWarning,
                                 read_e1rel_e2, read_fewshot_folder)


def _bundled(name):
    with gzip.open(os.path.join(bundled_dir(), name + '.gz'), 'rt',
                   encoding='utf-8') as f:
        return f.read()


def _true_triples(data):
    r"""The known true task triples as (relation, head, tail) names."""
    N = data['entity'].num_nodes
    names = data['entity'].names
    keys = data.true_keys
    rel, head, tail = keys // (N * N), keys // N % N, keys % N
    return {(data.task_relation_names[r], names[h], names[t])
            for r, h, t in zip(rel.tolist(), head.tolist(), tail.tolist())}


def test_removed_train_relation_keeps_umls_one_loadable(tmp_path):
    # 'receptorcauses' ends with the test relation 'uses': suffix guessing
    # read it as ('receptorca', 'uses') and rejected the folder.
    folder = tmp_path / 'umls'
    folder.mkdir()
    names = ('dev_tasks.json', 'test_tasks.json', 'path_graph',
             'rel2candidates.json', 'e1rel_e2.json', 'ent2ids', 'relation2ids')
    for name in names:
        (folder / name).write_text(_bundled(name), encoding='utf-8')
    train = json.loads(_bundled('train_tasks.json'))
    causes = train.pop('causes')
    (folder / 'train_tasks.json').write_text(json.dumps(train))
    e1rel_e2 = json.loads(_bundled('e1rel_e2.json'))
    assert 'receptorcauses' in e1rel_e2
    dropped = [k for k in e1rel_e2 if k.endswith('causes')]
    assert len(dropped) == len({h + 'causes' for h, _, _ in causes})

    full, _ = read_fewshot_folder(bundled_dir())
    path = str(folder / 'e1rel_e2.json')
    with pytest.warns(FewShotDataWarning) as record:
        data, report = read_fewshot_folder(str(folder))
    assert [str(w.message) for w in record] == [
        f"{path}: ignored {len(dropped)} key(s) that name no (head, task "
        f"relation) pair of this dataset (first: '{dropped[0]}'); they "
        f"cannot filter any query"
    ]
    assert report['num_e1rel_e2_keys_ignored'] == len(dropped)
    assert 'causes' not in data.task_relation_names
    # Exactly the true triples of the other relations remain.
    assert _true_triples(data) == {
        t for t in _true_triples(full) if t[0] != 'causes'
    }


def _read(tmp_path, obj, relations, pairs=None, background=None):
    ent2id = {'a': 0, 'ab': 1, 'x': 2, 'xb': 3}
    path = tmp_path / 'e1rel_e2.json'
    path.write_text(json.dumps(obj))
    N = len(ent2id)
    task_pairs = None if pairs is None else {
        relations.index(r) * N + ent2id[h]
        for h, r in pairs
    }
    rows, skipped = read_e1rel_e2(str(path), ent2id, relations, task_pairs,
                                  background)
    return rows.tolist(), skipped


def test_ambiguous_key_takes_the_queried_pair(tmp_path):
    # 'abc' is ('ab', 'c') or ('a', 'bc'); only ('ab', 'c') is queried by a
    # task triple, so it gets the tails (the longest suffix would not).
    rows, skipped = _read(tmp_path, {'abc': ['x']}, ['c', 'bc'],
                          pairs=[('ab', 'c'), ('x', 'bc')])
    assert rows == [[0, 1, 2]] and skipped == 0


def test_key_of_two_queried_pairs_filters_both(tmp_path):
    # Both splits are queried: the published code looks the filter up by
    # the string head + relation, so both queries see these tails.
    rows, skipped = _read(tmp_path, {'abc': ['x']}, ['c', 'bc'],
                          pairs=[('ab', 'c'), ('a', 'bc')])
    assert rows == [[1, 0, 2], [0, 1, 2]] and skipped == 0


def test_key_of_a_background_pair_is_skipped(tmp_path):
    # 'xbc': the task pair ('xb', 'c') is never queried, but ('x', 'bc') is
    # a background pair: the key holds background triples.
    background = (np.array([[2, 0, 0]]), ['bc'])
    with pytest.warns(FewShotDataWarning, match=re.escape(
            "ignored 1 key(s) that name no (head, task relation) pair of "
            "this dataset (first: 'xbc')")):
        rows, skipped = _read(tmp_path, {'xbc': ['a']}, ['c'],
                              pairs=[('a', 'c')], background=background)
    assert rows == [] and skipped == 1


def test_unknown_tail_of_a_queried_key_is_an_error(tmp_path):
    with pytest.raises(FewShotDataError) as info:
        _read(tmp_path, {'abc': ['x', 'ghost']}, ['c'], pairs=[('ab', 'c')])
    assert str(info.value) == (f"{tmp_path / 'e1rel_e2.json'}: key 'abc': "
                               f"tail 'ghost' is not in ent2ids")
    assert isinstance(info.value, ValueError)


def test_written_folder_round_trips_the_filter(tiny_data, tmp_path):
    # The writer's own e1rel_e2.json (every task triple plus extra true
    # triples) reads back to the same true_keys.
    from pyg_fewshot.data.hetero import build_fewshot_data
    from pyg_fewshot.data.writer import write_fewshot_folder
    d = tiny_data
    tasks = {
        split: [(d.task_relation_names[r],
                 d.task_triples[int(d.task_ptr[r]):int(d.task_ptr[r + 1])])
                for r in d[f'{split}_rel'].tolist()]
        for split in ('train', 'dev', 'test')
    }
    cands = {
        name: d.cand_idx[int(d.cand_ptr[r]):int(d.cand_ptr[r + 1])]
        for r, name in enumerate(d.task_relation_names)
    }
    # Extra true triples: (e0, test0, e1) and (e0, test0, e2) of a pair no
    # task triple queries, (e12, test0, e0) of a queried pair.
    extra = torch.tensor([[5, 0, 1], [5, 0, 2], [5, 12, 0]])
    data = build_fewshot_data(40, torch.stack([d.bg_edge_index[0],
                                               d.bg_edge_type,
                                               d.bg_edge_index[1]], 1),
                              d.relation_names, tasks, cands,
                              extra_true_triples=extra)
    write_fewshot_folder(data, str(tmp_path / 'raw'))
    back, report = read_fewshot_folder(str(tmp_path / 'raw'))
    assert torch.equal(back.true_keys, data.true_keys)
    assert report['num_e1rel_e2_keys_ignored'] == 0
