import pytest
import torch

from pyg_fewshot.data import FewShotDataError
from pyg_fewshot.data.hetero import is_true_triple, task_triples
from pyg_fewshot.data.sampler import (EpisodeSampler,
                                      sample_without_replacement)


def test_sample_without_replacement_is_uniform_and_distinct():
    g = torch.Generator().manual_seed(0)
    n = torch.full((20000, ), 6)
    out = sample_without_replacement(n, 3, g)
    assert out.shape == (20000, 3)
    assert (out.sort(1).values.diff(dim=1) > 0).all()
    counts = torch.bincount(out.view(-1), minlength=6).double()
    assert torch.allclose(counts / counts.sum(), torch.full((6, ), 1 / 6).double(),
                          atol=0.01)
    # Each ordered position is uniform too (the order is random).
    first = torch.bincount(out[:, 0], minlength=6).double() / 20000
    assert torch.allclose(first, torch.full((6, ), 1 / 6).double(), atol=0.015)


def test_sample_without_replacement_small_population_cycles():
    out = sample_without_replacement(torch.tensor([2]), 5)
    assert set(out[0, :2].tolist()) == {0, 1}
    assert out[0].tolist() == out[0, :2].tolist() * 2 + [out[0, 0].item()]


def test_episode_shapes_and_membership(tiny_data):
    sampler = EpisodeSampler(tiny_data, shots=3, num_queries=4,
                             batch_size=64, seed=1)
    ep = sampler.sample()
    assert ep.rel.shape == (64, )
    assert ep.support.shape == (64, 3, 2) and ep.query.shape == (64, 4, 2)
    assert ep.support_neg.shape == (64, 3) and ep.query_neg.shape == (64, 4)
    assert set(ep.rel.tolist()) <= set(tiny_data.train_rel.tolist())
    for b in range(64):
        rel = int(ep.rel[b])
        trip = {tuple(x) for x in task_triples(tiny_data, rel).tolist()}
        sup = [tuple(x) for x in ep.support[b].tolist()]
        qry = [tuple(x) for x in ep.query[b].tolist()]
        assert set(sup) <= trip and set(qry) <= trip
        assert len(set(sup)) == 3 and len(set(qry)) == 4
        assert not set(sup) & set(qry)  # support and query never overlap
    # Negatives are candidates and never known true tails.
    for pairs, neg in ((ep.support, ep.support_neg), (ep.query, ep.query_neg)):
        rel = ep.rel.unsqueeze(1).expand_as(neg)
        assert not is_true_triple(tiny_data, rel, pairs[..., 0], neg).any()


def test_sampler_is_seeded_and_resumable(tiny_data):
    a = EpisodeSampler(tiny_data, shots=2, batch_size=16, seed=3)
    b = EpisodeSampler(tiny_data, shots=2, batch_size=16, seed=3)
    for x, y in zip(a.sample(), b.sample()):
        assert torch.equal(x, y)
    state = a.state_dict()
    first = a.sample()
    a.load_state_dict(state)
    for x, y in zip(first, a.sample()):
        assert torch.equal(x, y)
    c = EpisodeSampler(tiny_data, shots=2, batch_size=16, seed=4)
    assert not torch.equal(c.sample().support, b.sample().support)


def test_sampler_rejects_too_few_triples(tiny_data):
    # FewShotDataError (a ValueError): the one check, EpisodeConfig.check.
    with pytest.raises(FewShotDataError, match='too few for 12-shot'):
        EpisodeSampler(tiny_data, shots=12)
    with pytest.raises(ValueError, match='must be positive'):
        EpisodeSampler(tiny_data, shots=0)
