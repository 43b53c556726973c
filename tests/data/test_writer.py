import json
import os

import numpy as np
import pytest
import torch

from pyg_fewshot.data import (
    build_fewshot_data,
    load_dataset,
    make_synthetic,
    read_fewshot_folder,
    write_fewshot_folder,
)
from pyg_fewshot.data.hetero import SPLITS


def assert_same_graph(a, b):
    assert a['entity'].num_nodes == b['entity'].num_nodes
    assert a.relation_names == b.relation_names
    # Same background triples, even in the same order.
    assert torch.equal(a.bg_edge_index, b.bg_edge_index)
    assert torch.equal(a.bg_edge_type, b.bg_edge_type)
    assert a.task_relation_names == b.task_relation_names
    for split in SPLITS:
        assert torch.equal(a[f'{split}_rel'], b[f'{split}_rel'])
    # Triples of each task relation in file order.
    assert torch.equal(a.task_ptr, b.task_ptr)
    assert torch.equal(a.task_triples, b.task_triples)
    assert torch.equal(a.cand_ptr, b.cand_ptr)
    assert torch.equal(a.cand_idx, b.cand_idx)
    assert torch.equal(a.true_keys, b.true_keys)


def test_round_trip_tiny(tmp_path, tiny_data):
    data = tiny_data
    folder = str(tmp_path / 'out')
    paths = write_fewshot_folder(data, folder)
    assert sorted(os.path.basename(p) for p in paths) == sorted([
        'ent2ids', 'relation2ids', 'path_graph', 'train_tasks.json',
        'dev_tasks.json', 'test_tasks.json', 'rel2candidates.json',
        'e1rel_e2.json'
    ])
    back, report = read_fewshot_folder(folder)
    assert_same_graph(data, back)
    # No stored names: 'e<id>'.
    assert back['entity'].names == [f'e{i}' for i in range(40)]
    assert report['num_e1rel_e2_keys_ignored'] == 0
    with open(os.path.join(folder, 'path_graph')) as f:
        first = f.readline()
    h, r, t = data.bg_edge_index[0, 0], data.bg_edge_type[0], \
        data.bg_edge_index[1, 0]
    assert first == f'e{h}\tbg{r}\te{t}\n'


def test_round_trip_keeps_names_and_extra_true_triples(tiny_folder,
                                                       tmp_path):
    # The hand-made folder has names and an extra e1rel_e2 triple.
    data, _ = read_fewshot_folder(tiny_folder)
    folder = str(tmp_path / 'out')
    write_fewshot_folder(data, folder, relation2ids=False)
    back, _ = read_fewshot_folder(folder)
    assert_same_graph(data, back)
    assert back['entity'].names == data['entity'].names
    with open(os.path.join(folder, 'e1rel_e2.json')) as f:
        assert json.load(f)['n0likes'] == ['n1', 'n7']


@pytest.mark.parametrize('names', [False, True])
def test_round_trip_synthetic_through_dataset(tmp_path, names):
    data = make_synthetic(300, 5, 900, 4, 2, 2, (6, 15), num_candidates=40,
                          entity_names=names, seed=1)
    folder = str(tmp_path / 'raw')
    # A small chunk: several path_graph / ent2ids chunks.
    write_fewshot_folder(data, folder, chunk_size=128)
    ds = load_dataset(folder, root=str(tmp_path / 'root'), log=False)
    assert_same_graph(data, ds.data)
    if names:
        assert ds.data['entity'].names == data['entity'].names


def test_chunking_does_not_change_files(tmp_path):
    data = make_synthetic(200, 4, 500, 3, 1, 1, 8, seed=2)
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    write_fewshot_folder(data, a)
    write_fewshot_folder(data, b, chunk_size=7)
    for name in os.listdir(a):
        with open(os.path.join(a, name), 'rb') as f, \
                open(os.path.join(b, name), 'rb') as g:
            assert f.read() == g.read(), name


def test_compressed_and_embeddings(tmp_path, tiny_data):
    data = tiny_data
    data['entity'].emb = torch.randn(40, 3)
    folder = str(tmp_path / 'gz')
    paths = write_fewshot_folder(data, folder, compress=True)
    names = sorted(os.listdir(folder))
    assert 'ent2vec.npy' in names and 'path_graph.gz' in names
    assert all(n.endswith('.gz') or n == 'ent2vec.npy' for n in names)
    assert len(paths) == len(names)
    back, _ = read_fewshot_folder(folder)
    assert_same_graph(data, back)
    assert torch.equal(back['entity'].emb, data['entity'].emb)


def test_non_empty_folder(tmp_path, tiny_data):
    data = tiny_data
    folder = tmp_path / 'out'
    folder.mkdir()
    (folder / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not empty.*overwrite=True'):
        write_fewshot_folder(data, str(folder))
    assert os.listdir(folder) == ['notes.txt']
    # Overwrite: stale layout files go, other files stay.
    (folder / 'ent2vec.npy').write_bytes(b'stale')
    (folder / 'path_graph.gz').write_bytes(b'stale')
    write_fewshot_folder(data, str(folder), overwrite=True)
    assert not (folder / 'ent2vec.npy').exists()
    assert not (folder / 'path_graph.gz').exists()
    assert (folder / 'notes.txt').read_text() == 'keep me'
    assert_same_graph(data, read_fewshot_folder(str(folder))[0])


def _named(names, task_names=('r0', ), num_entities=4):
    tasks = {'train': [(task_names[0], torch.tensor([[0, 1]]))]}
    for i, name in enumerate(task_names[1:]):
        tasks['train'].append((name, torch.tensor([[2, 3]])))
    cands = {name: torch.arange(num_entities) for name in task_names}
    return build_fewshot_data(num_entities, torch.tensor([[0, 0, 1]]), ['b'],
                              tasks, cands, entity_names=names)


@pytest.mark.parametrize('names, match', [
    (['a', 'b\tc', 'd', 'e'], 'tab or line break'),
    (['a', 'b', 'a', 'e'], "duplicate entity name 'a'"),
    (['a', '', 'd', 'e'], 'empty entity name'),
])
def test_bad_entity_names(tmp_path, names, match):
    with pytest.raises(ValueError, match=match):
        write_fewshot_folder(_named(names), str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()


def test_ambiguous_e1rel_e2_key(tmp_path):
    # ('x', 'yr') and ('xy', 'r'): the reader takes the longer relation.
    data = _named(['x', 'b', 'xy', 'd'], task_names=('yr', 'r'))
    with pytest.raises(ValueError, match="'xyr' would be read back as"):
        write_fewshot_folder(data, str(tmp_path / 'out'))
    # The same names without the clash round-trip.
    data = _named(['x', 'b', 'z', 'd'], task_names=('yr', 'r'))
    write_fewshot_folder(data, str(tmp_path / 'ok'))
    assert_same_graph(data, read_fewshot_folder(str(tmp_path / 'ok'))[0])


def test_inverse_relation_names_need_no_relation2ids(tmp_path):
    data = build_fewshot_data(
        3, torch.tensor([[0, 0, 1], [1, 1, 2]]), ['b', 'b_inv'],
        {'train': [('r', torch.tensor([[0, 2]]))]}, {'r': torch.arange(3)})
    with pytest.raises(ValueError, match='relation2ids=False'):
        write_fewshot_folder(data, str(tmp_path / 'a'))
    write_fewshot_folder(data, str(tmp_path / 'b'), relation2ids=False)
    back, _ = read_fewshot_folder(str(tmp_path / 'b'))
    assert back.relation_names == ['b', 'b_inv']
    assert np.array_equal(back.bg_edge_type.numpy(), [0, 1])


@pytest.mark.parametrize('chunk', [1, 3, 8, 17, 64, 1 << 23])
def test_ent2ids_chunked_parse(tmp_path, chunk):
    # The writer's big ent2ids is read back a chunk of entries at a time;
    # names holding ', "' or digits before a comma must not fool the cuts.
    from pyg_fewshot.data.io import FewShotDataError, read_ent2ids
    names = ['a5, ', 'b, "c', '7', 'd\\\\', '8,', 'x, 9', 'é, "1', 'z']
    obj = {n: i for i, n in enumerate(names)}
    path = tmp_path / 'ent2ids'
    for text in (json.dumps(obj), json.dumps(obj, indent=1),
                 json.dumps(obj, ensure_ascii=False)):
        path.write_text(text, encoding='utf-8')
        ent2id, got = read_ent2ids(str(path), chunk_chars=chunk)
        assert ent2id == obj and list(ent2id) == names and got == names
    # A duplicate key is rejected (json.load would keep the later id).
    path.write_text('{"a": 0, "b": 1, "a": 1}')
    with pytest.raises(FewShotDataError, match="duplicate key 'a'"):
        read_ent2ids(str(path), chunk_chars=chunk)
    # Errors name the line and column of the whole file.
    path.write_text('{"a": 0,\n "b": 1,\n "c" 2}')
    with pytest.raises(FewShotDataError, match='line 3, column 6'):
        read_ent2ids(str(path), chunk_chars=chunk)
