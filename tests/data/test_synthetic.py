import time

import pytest
import torch

import pyg_fewshot.data.synthetic as synthetic_mod
from pyg_fewshot.data.hetero import candidates, summary, task_triples
from pyg_fewshot.data.io import validate
from pyg_fewshot.data.pretrain import pretrain_transe
from pyg_fewshot.data.stats import relation_categories
from pyg_fewshot.data.synthetic import (
    SyntheticFewShotDataset,
    make_synthetic,
)


def test_default_fixture_size():
    data = make_synthetic()
    assert summary(data) == {
        'num_entities': 100,
        'num_background_relations': 4,
        'num_background_triples': 300,
        'num_train_relations': 6,
        'num_train_triples': 120,
        'num_dev_relations': 2,
        'num_dev_triples': 40,
        'num_test_relations': 2,
        'num_test_triples': 40,
    }
    validate(data, shots=5)
    assert data['entity'].names[:2] == ['e0', 'e1']
    assert torch.equal(candidates(data, 0), torch.arange(100))
    # Background triples are distinct, and so are the triples of a task.
    bg = data.bg_edge_type * 10**4 + data.bg_edge_index[0] * 100 + \
        data.bg_edge_index[1]
    assert torch.unique(bg).numel() == bg.numel()
    for rel in range(len(data.task_relation_names)):
        pairs = task_triples(data, rel)
        assert torch.unique(pairs, dim=0).size(0) == pairs.size(0)


def test_deterministic_by_seed():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    c = make_synthetic(seed=4)
    for key in ('bg_edge_index', 'bg_edge_type', 'task_triples', 'cand_idx',
                'true_keys'):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a.bg_edge_index, c.bg_edge_index)


def test_planted_translation():
    data, latent = make_synthetic(num_entities=300, noise=0.0,
                                  return_latent=True, seed=1)
    C = latent['num_clusters']
    cluster, shift = latent['cluster'], latent['shift']
    R = len(data.relation_names)
    h, t = data.bg_edge_index
    assert torch.equal(cluster[h] + shift[data.bg_edge_type], cluster[t])
    assert (shift != 0).all() and (shift.abs() <= C // 2).all()
    sizes = data.task_ptr[1:] - data.task_ptr[:-1]
    rel = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    h, t = data.task_triples.t()
    assert torch.equal(cluster[h] + shift[R + rel], cluster[t])
    # With noise, about that share of tails leaves the planted cluster.
    data, latent = make_synthetic(num_entities=2000,
                                  num_background_triples=20000, noise=0.2,
                                  return_latent=True, seed=1)
    cl, sh = latent['cluster'], latent['shift']
    h, t = data.bg_edge_index
    off = (cl[h] + sh[data.bg_edge_type] != cl[t]).float().mean()
    assert 0.15 < float(off) < 0.25


def test_planted_categories_are_recovered():
    data, latent = make_synthetic(num_entities=1000,
                                  num_background_relations=24,
                                  num_background_triples=12000, noise=0.0,
                                  category_probs=(1, 1, 1, 1),
                                  return_latent=True, seed=0)
    cats = relation_categories(data, include='background')
    planted = latent['category'][:len(data.relation_names)]
    assert set(planted) == {'1-1', '1-N', 'N-1', 'N-N'}
    checked = set()
    for name, want in zip(data.relation_names, planted):
        n = cats[name]['num_triples']
        # Sparse N-N relations look 1-1 (few repeats): check dense ones.
        if (want != 'N-N' and n >= 100) or n >= 800:
            assert cats[name]['category'] == want, (name, cats[name])
            checked.add(want)
    assert checked == {'1-1', '1-N', 'N-1', 'N-N'}
    # Relations with more than N / 4 triples are N-N.
    assert all(c == 'N-N' for name, c in zip(data.relation_names, planted)
               if cats[name]['num_triples'] > 250)


def test_degree_distribution_is_skewed():
    data = make_synthetic(num_entities=5000, num_background_triples=20000,
                          seed=0)
    deg = data.nbr_ptr[1:] - data.nbr_ptr[:-1]
    assert deg.max() > 10 * deg.float().mean()


def _mrr(data, ent, K=3):
    rr = []
    for rel in torch.cat([data.dev_rel, data.test_rel]).tolist():
        pairs = task_triples(data, rel)
        cand = candidates(data, rel)
        sup, qry = pairs[:K], pairs[K:]
        r = (ent[sup[:, 1]] - ent[sup[:, 0]]).mean(0)
        for h, t in qry.tolist():
            score = -(ent[h] + r - ent[cand]).abs().sum(-1)
            true = -(ent[h] + r - ent[t]).abs().sum()
            ties = int((score == true).sum()) - 1  # mean rank among ties
            rr.append(1.0 / (1 + int((score > true).sum()) + ties / 2))
    return sum(rr) / len(rr)


def test_structure_is_learnable():
    r"""TransE on the background graph plus the mean support translation
    ranks the true tails far above chance; random vectors do not."""
    data = make_synthetic(num_entities=200, num_background_relations=6,
                          num_background_triples=3000, num_train_relations=2,
                          num_dev_relations=3, num_test_relations=3,
                          triples_per_relation=30, num_clusters=10,
                          noise=0.0, category_probs=(0, 0, 0, 1), seed=0)
    ent, _ = pretrain_transe(data, dim=16, epochs=30, batch_size=1024,
                             lr=0.1, holdout=0.0, progress=False)
    learned = _mrr(data, ent)
    random = _mrr(data, torch.randn(200, 16,
                                    generator=torch.Generator().manual_seed(0)))
    assert random < 0.08
    assert learned > 0.1
    assert learned > 2.5 * random


def test_candidates_from_tail_clusters():
    data, latent = make_synthetic(num_entities=1000, num_candidates=60,
                                  num_clusters=20, return_latent=True,
                                  noise=0.0, seed=2)
    for rel in range(len(data.task_relation_names)):
        cand = candidates(data, rel)
        tails = task_triples(data, rel)[:, 1]
        assert cand.numel() == 60
        assert torch.isin(tails, cand).all()
        assert torch.isin(latent['cluster'][cand],
                          latent['cluster'][tails]).all()
    validate(data)


def test_triples_per_relation_range():
    data = make_synthetic(num_entities=500, triples_per_relation=(5, 40),
                          seed=0)
    sizes = data.task_ptr[1:] - data.task_ptr[:-1]
    assert sizes.min() >= 5 and sizes.max() <= 40
    assert sizes.unique().numel() > 1


def test_invalid_arguments():
    with pytest.raises(ValueError, match='num_entities'):
        make_synthetic(num_entities=1)
    with pytest.raises(ValueError, match='noise'):
        make_synthetic(noise=2.0)
    with pytest.raises(ValueError, match='pass \'num_candidates\''):
        make_synthetic(num_entities=2_000_000, num_background_triples=10,
                       triples_per_relation=2, num_train_relations=30)
    with pytest.raises(ValueError, match='distinct triples'):
        make_synthetic(num_entities=10, triples_per_relation=200)


def test_scales_without_per_triple_loops():
    t = time.perf_counter()
    data = make_synthetic(num_entities=100_000,
                          num_background_relations=100,
                          num_background_triples=200_000,
                          num_train_relations=40, num_dev_relations=5,
                          num_test_relations=10,
                          triples_per_relation=(10, 100),
                          num_candidates=500, entity_names=False, seed=0)
    assert summary(data)['num_background_triples'] == 200_000
    assert 'names' not in data['entity']
    assert time.perf_counter() - t < 30


def test_synthetic_dataset_caches(tmp_path, monkeypatch):
    ds = SyntheticFewShotDataset(str(tmp_path), num_entities=50, seed=1)
    assert ds[0]['entity'].num_nodes == 50

    def boom(**kwargs):
        raise AssertionError('generated again')

    monkeypatch.setattr(synthetic_mod, 'make_synthetic', boom)
    again = SyntheticFewShotDataset(str(tmp_path), num_entities=50, seed=1)
    assert torch.equal(again.data.bg_edge_index, ds.data.bg_edge_index)
    with pytest.raises(AssertionError, match='generated again'):
        SyntheticFewShotDataset(str(tmp_path), num_entities=50, seed=2)
