"""Item 10: duplicate task or background triples are dropped with a counted
warning (first occurrence kept, file order preserved), an empty background
graph is reported, and a duplicate key in any JSON file is an error."""
import json
import os
import re

import pytest
import torch

from pyg_fewshot.data.dataset import FewShotKGDataset
from pyg_fewshot.data.hetero import task_triples
from pyg_fewshot.data.io import (FewShotDataError, FewShotDataWarning,
                                 read_fewshot_folder)
from pyg_fewshot.data.writer import write_fewshot_folder


@pytest.fixture
def raw(tiny_data, tmp_path):
    folder = str(tmp_path / 'raw')
    write_fewshot_folder(tiny_data, folder)
    return folder


def _load(path):
    with open(path) as f:
        return json.load(f)


def _dump(obj, path):
    with open(path, 'w') as f:
        json.dump(obj, f)


def _messages(record):
    return [str(w.message) for w in record
            if issubclass(w.category, FewShotDataWarning)]


def test_duplicate_task_triples_dropped(raw, tiny_data):
    path = os.path.join(raw, 'test_tasks.json')
    tasks = _load(path)
    t = tasks['test0']
    # A support triple repeated as a later "query", and a repeated query.
    tasks['test0'] = t[:2] + [t[0]] + t[2:] + [t[5], t[5]]
    _dump(tasks, path)
    h, r, tail = t[0]
    with pytest.warns(FewShotDataWarning) as record:
        data, report = read_fewshot_folder(raw)
    assert _messages(record) == [
        f"{path}: dropped 3 duplicate task triple(s) (first: key 'test0', "
        f"triple #2 [{h}, {r}, {tail}] repeats #0); the first occurrence of "
        f"each is kept, so support sets are the first K distinct triples"
    ]
    assert report['num_duplicate_task_triples_dropped'] == 3
    rel = data.task_relation_names.index('test0')
    assert torch.equal(task_triples(data, rel), task_triples(tiny_data, rel))


def test_duplicate_background_triples_dropped(raw, tiny_data):
    path = os.path.join(raw, 'path_graph')
    with open(path) as f:
        lines = f.readlines()
    # Line 4 repeats line 2; the last line repeats line 1.
    with open(path, 'w') as f:
        f.writelines(lines[:3] + [lines[1]] + lines[3:] + [lines[0]])
    h, r, t = lines[1].rstrip('\n').split('\t')
    with pytest.warns(FewShotDataWarning) as record:
        data, report = read_fewshot_folder(raw)
    assert _messages(record) == [
        f"{path}: dropped 2 duplicate background triple(s) (first: line 4 "
        f"repeats line 2, ({h}, {r}, {t})); the first occurrence of each is "
        f"kept"
    ]
    assert report['num_duplicate_background_triples_dropped'] == 2
    assert torch.equal(data.bg_edge_index, tiny_data.bg_edge_index)
    assert torch.equal(data.bg_edge_type, tiny_data.bg_edge_type)
    assert torch.equal(data.nbr_ent, tiny_data.nbr_ent)


def test_empty_background_warns_at_every_load(raw, tmp_path):
    path = os.path.join(raw, 'path_graph')
    open(path, 'w').close()
    message = (f"{path}: the background graph is empty (no triples): models "
               f"that aggregate background neighbours (e.g. MoEMeta) see "
               f"none, and TransE pretraining has nothing to learn from")
    root = str(tmp_path / 'root')
    for _ in range(2):  # processing, then loading the processed copy
        with pytest.warns(FewShotDataWarning) as record:
            ds = FewShotKGDataset(root, raw_dir=raw)
        assert _messages(record) == [message]
        assert ds.data.bg_edge_index.size(1) == 0
        assert ds.report['warnings'] == [message]


def test_duplicate_key_in_rel2candidates_rejected(raw):
    path = os.path.join(raw, 'rel2candidates.json')
    with open(path) as f:
        text = f.read()
    # Two candidate sets for 'test0': json.load would keep the second.
    with open(path, 'w') as f:
        f.write(text.rstrip().rstrip('}') + ', "test0": ["e1"]}\n')
    with pytest.raises(FewShotDataError) as info:
        read_fewshot_folder(raw)
    assert str(info.value) == f"{path}: duplicate key 'test0'"


@pytest.mark.parametrize('name,entry,key', [
    ('ent2ids', '"e3": 3', 'e3'),
    ('relation2ids', '"bg1": 1', 'bg1'),
    ('train_tasks.json', '"train0": []', 'train0'),
    ('e1rel_e2.json', '"e0test0": ["e1"]', 'e0test0'),
])
def test_duplicate_key_rejected_in_every_json_file(raw, name, entry, key):
    path = os.path.join(raw, name)
    with open(path) as f:
        text = f.read()
    if key not in _load(path):  # e1rel_e2: make the first copy exist
        text = text.rstrip().rstrip('}') + ', ' + entry + '}'
    with open(path, 'w') as f:
        f.write(text.rstrip().rstrip('}') + ', ' + entry + '}\n')
    with pytest.raises(FewShotDataError) as info:
        read_fewshot_folder(raw)
    assert str(info.value) == f"{path}: duplicate key '{key}'"


def test_duplicate_key_rejected_across_ent2ids_chunks(tmp_path):
    from pyg_fewshot.data.io import read_ent2ids
    path = tmp_path / 'ent2ids'
    path.write_text(json.dumps({f'e{i}': i for i in range(50)})[:-1] +
                    ', "e1": 1}')
    for chunk in (16, 64, 1 << 20):  # same chunk or another one
        with pytest.raises(FewShotDataError, match=re.escape(
                f"{path}: duplicate key 'e1'")):
            read_ent2ids(str(path), chunk_chars=chunk)
