import os
import time

import pytest
import torch
from torch_geometric.data import HeteroData

import pyg_fewshot.data.dataset as dataset_mod
from pyg_fewshot.data.dataset import (
    FewShotKGDataset,
    bundled_dir,
    default_root,
    load_dataset,
)
from pyg_fewshot.data.io import FewShotDataError, MissingRawFilesError


def snapshot(folder):
    return sorted((name, os.stat(os.path.join(folder, name)).st_mtime_ns)
                  for name in os.listdir(folder))


def test_process_then_reload(tiny_folder, tmp_path, monkeypatch):
    before = snapshot(tiny_folder)
    root = str(tmp_path / 'root')
    ds = FewShotKGDataset(root, raw_dir=tiny_folder)
    assert snapshot(tiny_folder) == before  # the raw folder is only read
    assert sorted(os.listdir(os.path.join(root, 'processed'))) == [
        'data.pt', 'meta.json'
    ]
    assert len(ds) == 1
    data = ds[0]
    assert isinstance(data, HeteroData)
    assert ds.data is ds._data
    assert data['entity'].num_nodes == 10
    assert ds.name == 'raw'
    assert ds.report['num_e1rel_e2_keys_ignored'] == 1
    assert ds.summary()['num_train_triples'] == 7
    assert 'tasks=2/1/1' in repr(ds)

    # A second instance loads the processed files without reading raw data.
    def boom(*args, **kwargs):
        raise AssertionError('processed again')

    monkeypatch.setattr(dataset_mod, 'read_fewshot_folder', boom)
    again = FewShotKGDataset(root, raw_dir=tiny_folder)
    for key in ('bg_edge_index', 'task_triples', 'cand_idx', 'true_keys',
                'nbr_ptr', 'nbr_ent', 'nbr_rel'):
        assert torch.equal(again.data[key], data[key])
    assert again.data.task_relation_names == data.task_relation_names
    assert again.data['entity'].names == data['entity'].names
    with pytest.raises(AssertionError, match='processed again'):
        FewShotKGDataset(root, raw_dir=tiny_folder, force_reload=True)


def test_default_raw_dir_is_root_raw(make_folder, tmp_path):
    make_folder(name='ds/raw')
    ds = FewShotKGDataset(str(tmp_path / 'ds'))
    assert ds.raw_dir == str(tmp_path / 'ds' / 'raw')
    assert ds.name == 'ds'
    assert ds.data['entity'].num_nodes == 10


def test_raw_change_triggers_reprocessing(tiny_folder, tmp_path):
    root = str(tmp_path / 'root')
    ds = FewShotKGDataset(root, raw_dir=tiny_folder)
    assert ds.data.bg_edge_index.size(1) == 6
    path = os.path.join(tiny_folder, 'path_graph')
    with open(path, 'a') as f:
        f.write('n8\tnear\tn9\n')
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = FewShotKGDataset(root, raw_dir=tiny_folder)
    assert ds.data.bg_edge_index.size(1) == 7


def test_transform_and_pre_transform(tiny_folder, tmp_path):
    def pre(data):
        data.marker = torch.tensor([1])
        return data

    def transform(data):
        data.seen = True
        return data

    ds = FewShotKGDataset(str(tmp_path / 'root'), raw_dir=tiny_folder,
                          pre_transform=pre, transform=transform)
    assert torch.equal(ds.data.marker, torch.tensor([1]))
    assert ds[0].seen is True
    assert 'seen' not in ds.data


def test_error_leaves_nothing_behind(make_folder, tmp_path):
    folder = make_folder({'train_tasks.json': '{"likes": ['})
    root = tmp_path / 'root'
    with pytest.raises(FewShotDataError, match='malformed JSON'):
        FewShotKGDataset(str(root), raw_dir=folder)
    processed = root / 'processed'
    leftovers = os.listdir(processed) if processed.exists() else []
    assert leftovers == []


def test_missing_raw_files_named(tmp_path):
    raw = tmp_path / 'raw'
    raw.mkdir()
    with pytest.raises(MissingRawFilesError) as info:
        FewShotKGDataset(str(tmp_path / 'root'), raw_dir=str(raw))
    for name in ('train_tasks.json', 'path_graph', 'ent2ids'):
        assert os.path.join(str(raw), name) in str(info.value)
    assert not (tmp_path / 'root' / 'processed' / 'data.pt').exists()


def test_min_triples_checked_at_every_load(tiny_folder, tmp_path):
    root = str(tmp_path / 'root')
    FewShotKGDataset(root, raw_dir=tiny_folder)
    with pytest.raises(FewShotDataError, match="'likes' \\(train, 3"):
        FewShotKGDataset(root, raw_dir=tiny_folder, min_triples=4)


def test_load_embeddings_setting_reprocesses(make_folder, tmp_path):
    folder = make_folder({'ent2vec.txt': '1 2\n' * 10})
    root = str(tmp_path / 'root')
    assert 'emb' in FewShotKGDataset(root, raw_dir=folder).data['entity']
    ds = FewShotKGDataset(root, raw_dir=folder, load_embeddings=False)
    assert 'emb' not in ds.data['entity']


def test_load_dataset_paths_and_cache_home(tiny_folder, tmp_path,
                                           monkeypatch):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'home'))
    ds = load_dataset(tiny_folder)
    expected = default_root('raw', tiny_folder)
    assert expected.startswith(str(tmp_path / 'home' / 'raw-'))
    assert ds.root == expected
    assert os.path.isfile(os.path.join(expected, 'processed', 'data.pt'))
    explicit = load_dataset(tiny_folder, root=str(tmp_path / 'mine'))
    assert explicit.processed_dir == str(tmp_path / 'mine' / 'processed')
    with pytest.raises(MissingRawFilesError, match='neither a bundled'):
        load_dataset(str(tmp_path / 'nope'))


def test_default_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv('PYG_FEWSHOT_HOME', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    root = default_root('umls-one', '/some/where')
    assert root.startswith(
        os.path.join(str(tmp_path), '.cache', 'pyg_fewshot', 'umls-one-'))
    assert root != default_root('umls-one', '/some/where/else')


def test_bundled_umls_one(tmp_path, monkeypatch, umls_one_counts):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path))
    t = time.perf_counter()
    ds = load_dataset()  # 'umls-one' is the default
    assert ds.name == 'umls-one'
    assert ds.raw_dir == bundled_dir()
    assert ds.summary() == umls_one_counts
    assert time.perf_counter() - t < 30
    assert load_dataset('UMLS-One').root == ds.root


@pytest.mark.parametrize('names', [['a', 'bé', 'c d'], ['a', 'b\nc', 'd']])
def test_save_hetero_packs_names(tmp_path, names):
    from pyg_fewshot.data.dataset import save_hetero, unpack_names
    from pyg_fewshot.data.hetero import build_fewshot_data
    from torch_geometric.data import InMemoryDataset
    data = build_fewshot_data(3, torch.tensor([[0, 0, 1]]), ['r'],
                              {'train': [('t', torch.tensor([[1, 2]]))]},
                              {'t': torch.arange(3)}, entity_names=names)
    path = str(tmp_path / 'data.pt')
    save_hetero(data, path)
    assert os.listdir(tmp_path) == ['data.pt']

    class Plain(InMemoryDataset):
        def __init__(self):
            super().__init__(None)
            self.load(path, data_cls=HeteroData)

    loaded = unpack_names(Plain()._data)
    assert loaded['entity'].names == names
    assert 'names_utf8' not in loaded['entity']
    assert torch.equal(loaded.nbr_ent, data.nbr_ent)
