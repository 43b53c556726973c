r"""The reader on the real NELL-One copy (skipped when absent)."""
import json
import os
import time

import pytest
import torch

from pyg_fewshot.data.dataset import FewShotKGDataset
from pyg_fewshot.data.hetero import candidates, summary, task_triples
from pyg_fewshot.data.io import validate

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope='module')
def nell(nell_one_folder, tmp_path_factory):
    folder = nell_one_folder
    root = str(tmp_path_factory.mktemp('nell'))
    t = time.perf_counter()
    ds = FewShotKGDataset(root, raw_dir=folder, min_triples=6)
    process_s = time.perf_counter() - t
    t = time.perf_counter()
    again = FewShotKGDataset(root, raw_dir=folder, min_triples=6)
    reload_s = time.perf_counter() - t
    return folder, ds, again, process_s, reload_s


def test_nell_one_counts(nell):
    folder, ds, _, _, _ = nell
    data = ds.data
    assert summary(data) == {
        'num_entities': 68544,
        'num_background_relations': 291,
        'num_background_triples': 181109,
        'num_train_relations': 51,
        'num_train_triples': 8526,
        'num_dev_relations': 5,
        'num_dev_triples': 1004,
        'num_test_relations': 11,
        'num_test_triples': 2158,
    }
    assert ds.report['relation_ids_from'] == 'relation2ids'
    assert ds.report['num_e1rel_e2_keys_ignored'] == 575
    # e1rel_e2 covers every task triple and adds 1,235 more true pairs.
    assert data.true_keys.numel() == 11688
    validate(data, shots=5)


def test_nell_one_ids_follow_the_files(nell):
    folder, ds, _, _, _ = nell
    data = ds.data
    ent2ids = json.load(open(os.path.join(folder, 'ent2ids')))
    names = data['entity'].names
    for name in ('concept:director:bryan_singer',
                 'concept:book:billiards_at_half_past_nine'):
        assert names[ent2ids[name]] == name
    rel2ids = json.load(open(os.path.join(folder, 'relation2ids')))
    forward = sorted((v, k) for k, v in rel2ids.items()
                     if not k.endswith('_inv'))
    assert data.relation_names == [k for _, k in forward]
    # The first background line, as ids.
    with open(os.path.join(folder, 'path_graph')) as f:
        h, r, t = f.readline().rstrip('\n').split('\t')
    assert data.bg_edge_index[:, 0].tolist() == [ent2ids[h], ent2ids[t]]
    assert data.relation_names[int(data.bg_edge_type[0])] == r
    # Task triples keep the file order (support = first K).
    test = json.load(open(os.path.join(folder, 'test_tasks.json')))
    rel = data.task_relation_names.index(next(iter(test)))
    first = test[data.task_relation_names[rel]][0]
    assert task_triples(data, rel)[0].tolist() == [ent2ids[first[0]],
                                                   ent2ids[first[2]]]
    cands = json.load(open(os.path.join(folder, 'rel2candidates.json')))
    name = data.task_relation_names[rel]
    assert candidates(data, rel).tolist() == [ent2ids[c] for c in cands[name]]


def test_nell_one_processing_speed(nell):
    _, ds, again, process_s, reload_s = nell
    assert process_s < 60  # a few seconds on an idle 2-core machine
    assert reload_s < 10  # under 1 s idle
    assert torch.equal(again.data.nbr_ent, ds.data.nbr_ent)
