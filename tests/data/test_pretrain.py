import os

import pytest
import torch

import pyg_fewshot.data.pretrain as pretrain_mod
from pyg_fewshot.data.dataset import FewShotKGDataset
from pyg_fewshot.data.hetero import build_fewshot_data
from pyg_fewshot.data.pretrain import (
    _transe_class,
    load_or_pretrain,
    pretrain_transe,
)
from pyg_fewshot.data.synthetic import make_synthetic


@pytest.fixture(scope='module')
def data():
    return make_synthetic(num_entities=150, num_background_triples=1500,
                          seed=0)


def test_shapes_determinism_and_rng(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ent, rel = pretrain_transe(data, dim=16, epochs=3, batch_size=256,
                               progress=False)
    assert torch.equal(torch.rand(3), expected)  # global RNG untouched
    assert ent.shape == (150, 16) and rel.shape == (4, 16)
    assert torch.allclose(ent.abs().sum(-1), torch.ones(150), atol=1e-5)
    again, rel2 = pretrain_transe(data, dim=16, epochs=3, batch_size=256,
                                  progress=False)
    assert torch.equal(ent, again) and torch.equal(rel, rel2)
    other, _ = pretrain_transe(data, dim=16, epochs=3, batch_size=256,
                               seed=1, progress=False)
    assert not torch.equal(ent, other)
    assert torch.get_num_threads() >= 1


def test_training_separates_true_from_corrupted(data):
    ent, rel = pretrain_transe(data, dim=32, epochs=40, batch_size=128,
                               lr=0.02, holdout=0.0, progress=False)
    h, t = data.bg_edge_index
    r = data.bg_edge_type
    g = torch.Generator().manual_seed(0)
    fake = torch.randint(0, 150, t.shape, generator=g)

    def score(h, r, t):
        return -(ent[h] + rel[r] - ent[t]).abs().sum(-1)

    gap = (score(h, r, t) > score(h, r, fake)).float().mean()
    assert gap > 0.8


def test_fast_transe_matches_pyg():
    from torch_geometric.nn.kge import TransE
    torch.manual_seed(0)
    fast = _transe_class()(20, 3, 8, sparse=True)
    ref = TransE(20, 3, 8)
    ref.load_state_dict(fast.state_dict())
    h, r, t = (torch.randint(0, 20, (50, )), torch.randint(0, 3, (50, )),
               torch.randint(0, 20, (50, )))
    assert torch.allclose(fast(h, r, t), ref(h, r, t), atol=1e-5)


def test_cache_reuse_and_keys(data, tmp_path, monkeypatch):
    cache = str(tmp_path / 'cache')
    ent, rel = load_or_pretrain(data, cache, dim=8, epochs=2,
                                batch_size=512, progress=False)
    files = sorted(os.listdir(cache))  # the vectors and their record
    assert len(files) == 2 and files[0].startswith('transe-')
    assert files[0].endswith('.json') and files[1].endswith('.pt')

    def boom(*args, **kwargs):
        raise AssertionError('trained again')

    monkeypatch.setattr(pretrain_mod, 'pretrain_transe', boom)
    ent2, rel2 = load_or_pretrain(data, cache, dim=8, epochs=2,
                                  batch_size=512, progress=False)
    assert torch.equal(ent, ent2) and torch.equal(rel, rel2)
    # Any other hyper-parameter, or another graph, misses the cache.
    for kw in ({'dim': 9}, {'epochs': 3}, {'lr': 0.02}, {'seed': 1},
               {'batch_size': 256}, {'margin': 2.0}):
        args = dict(dim=8, epochs=2, batch_size=512, progress=False)
        args.update(kw)
        with pytest.raises(AssertionError, match='trained again'):
            load_or_pretrain(data, cache, **args)
    other = make_synthetic(num_entities=150, num_background_triples=1500,
                           seed=1)
    with pytest.raises(AssertionError, match='trained again'):
        load_or_pretrain(other, cache, dim=8, epochs=2, batch_size=512)
    monkeypatch.undo()
    # A corrupt cache file is trained again and replaced atomically.
    path = os.path.join(cache, files[1])
    with open(path, 'wb') as f:
        f.write(b'garbage')
    with pytest.warns(UserWarning, match='unreadable cache'):
        ent3, _ = load_or_pretrain(data, cache, dim=8, epochs=2,
                                   batch_size=512, progress=False)
    assert torch.equal(ent3, ent)
    assert sorted(os.listdir(cache)) == files  # no temporary files left


def test_dataset_pretrained_embeddings(tiny_folder, tmp_path):
    ds = FewShotKGDataset(str(tmp_path / 'root'), raw_dir=tiny_folder)
    ent, rel = ds.pretrained_embeddings(dim=4, epochs=2, progress=False)
    assert ent.shape == (10, 4) and rel.shape == (2, 4)
    cached = [f for f in os.listdir(ds.processed_dir)
              if f.startswith('transe-') and f.endswith('.pt')]
    assert len(cached) == 1
    again, _ = ds.pretrained_embeddings(dim=4, epochs=2, progress=False)
    assert torch.equal(ent, again)
    same, _ = load_or_pretrain(ds, dim=4, epochs=2, progress=False)
    assert torch.equal(ent, same)
    with pytest.raises(ValueError, match='cache_dir'):
        load_or_pretrain(ds.data, dim=4, epochs=2)


def test_empty_background_is_an_error():
    data = build_fewshot_data(3, torch.empty(0, 3, dtype=torch.long), [],
                              {'train': [('t', torch.tensor([[0, 1]]))]},
                              {'t': torch.arange(3)})
    with pytest.raises(ValueError, match='no triples'):
        pretrain_transe(data, epochs=1, progress=False)
