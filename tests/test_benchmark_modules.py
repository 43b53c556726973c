r"""The experiment-only layer variants of benchmarks/_modules.py."""
import os

import pytest
import torch

from conftest import REPO
from pyg_fewshot.nn.attentive_neighbor_aggregator import (
    AttentiveNeighborAggregator,
)
from pyg_fewshot.nn.encoder import NeighborEncoder

D = 8


@pytest.fixture
def modules(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    import _modules
    return _modules


def _small_edges(seed=7):
    torch.manual_seed(seed)
    x = torch.randn(6, D)
    x_rel = torch.randn(4, D)
    src = torch.tensor([1, 2, 3, 5, 0])
    rel = torch.tensor([0, 1, 2, 3, 0])
    batch = torch.tensor([0, 0, 0, 1, 1])
    return x, x_rel, src, rel, batch


def test_fixed_message_learns_attention_and_scale_only(modules):
    x, x_rel, src, rel, batch = _small_edges()
    agg = modules.FixedMessageAggregator(D, gate=False, act=None,
                                         mix='convex', init='transe',
                                         residual_scale=0.2)
    out = agg.forward_edges(x[:3], x_rel, x, batch, rel_index=rel,
                            ent_index=src)
    out.pow(2).sum().backward()
    assert agg.lin_ent.weight.grad is None and agg.lin_rel.weight.grad is None
    assert agg.att.grad is not None and agg.gamma.grad is not None
    agg.reset_parameters()
    assert torch.equal(agg.lin_ent.weight, torch.eye(D))
    assert not agg.lin_ent.weight.requires_grad
    assert repr(agg).startswith('FixedMessageAggregator(8, ')
    # Same initial values as the layer it freezes.
    torch.manual_seed(0)
    a = modules.FixedMessageAggregator(D)
    torch.manual_seed(0)
    b = AttentiveNeighborAggregator(D)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_first_neighbors_in_training(modules):
    # Hub 0 has 6 neighbours, more than the cap of 2.
    rowptr = torch.tensor([0, 6, 8, 8])
    col_ent = torch.tensor([1, 2, 1, 2, 1, 2, 0, 0])
    col_rel = torch.tensor([0, 1, 2, 3, 1, 0, 2, 3])
    x_ent, x_rel = torch.randn(3, D), torch.randn(4, D)
    args = (x_ent, x_rel, torch.tensor([0, 1, 2]), rowptr, col_ent, col_rel)
    torch.manual_seed(1)
    first = modules.FirstNeighborsAggregator(D, max_neighbors=2)
    ref = first.eval()(*args)
    first.train()
    for seed in range(4):
        torch.manual_seed(seed)
        assert torch.equal(first(*args), ref)
    assert AttentiveNeighborAggregator.sample_neighbors


def test_resolvable_by_name(modules):
    graph = (torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0]),
             torch.tensor([0, 1]))
    for name, cls in (('fixed_message', modules.FixedMessageAggregator),
                      ('first_neighbors', modules.FirstNeighborsAggregator)):
        enc = NeighborEncoder(3, 1, D, graph, aggregator=name)
        assert type(enc.aggregator) is cls
