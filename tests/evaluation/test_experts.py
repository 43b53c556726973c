import math

import pytest
import torch

from pyg_fewshot.evaluation.experts import (expert_activations,
                                            load_statistics,
                                            relation_specificity)
from pyg_fewshot.models import build_model


def test_exact_collapse_is_detected():
    # Every pair routed to the same 5 of 32 experts: the perplexity equals
    # top_k up to rounding, which must still count as collapse.
    load = torch.zeros(32, dtype=torch.double)
    load[[6, 13, 21, 23, 26]] = 0.2
    stats = load_statistics(load, top_k=5)
    assert stats['effective_experts'] == pytest.approx(5.0)
    assert stats['normalized_entropy'] == pytest.approx(
        math.log(5) / math.log(32))
    assert stats['experts_used'] == 5
    assert stats['collapsed']


def test_near_collapse_and_balance():
    load = torch.full((32, ), 1e-4, dtype=torch.double)
    load[:5] = (1 - 27e-4) / 5
    near = load_statistics(load, top_k=5)
    assert near['experts_used'] == 32
    assert near['effective_experts'] < 7.5
    assert near['collapsed']

    balanced = load_statistics(torch.full((32, ), 1 / 32), top_k=5)
    assert balanced['normalized_entropy'] == pytest.approx(1.0)
    assert balanced['effective_experts'] == pytest.approx(32.0)
    assert not balanced['collapsed']
    # Two disjoint fixed sets of 5 are 10 effective experts: not collapse
    # at the default tolerance (1.5 sets), collapse at 2.
    two = torch.zeros(32)
    two[:10] = 0.1
    assert not load_statistics(two, top_k=5)['collapsed']
    assert load_statistics(two, top_k=5, tolerance=2.0)['collapsed']


def test_relation_specificity_bounds():
    pairs = torch.tensor([10., 30.])
    # Both relations use experts {0, 1}: the relation tells nothing.
    alike = torch.tensor([[1., 1., 0., 0.], [1., 1., 0., 0.]])
    assert relation_specificity(alike, pairs) == pytest.approx(0.0)
    # Disjoint experts: H(E | R) = log 2, so I / H(E) = 1 - log 2 / H(E).
    apart = torch.tensor([[1., 1., 0., 0.], [0., 0., 1., 1.]])
    p = torch.tensor([0.125, 0.125, 0.375, 0.375], dtype=torch.double)
    h_e = float(-(p * p.log()).sum())
    assert relation_specificity(apart, pairs) == pytest.approx(
        1 - math.log(2) / h_e)


def test_expert_activations_reports_pairs_and_specificity(tiny_data):
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        num_experts=4, top_k=2, expert_hidden=8)
    out = expert_activations(model, tiny_data)
    R = len(out['relations'])
    assert out['activation'].shape == (R, 4)
    assert out['pairs'].shape == (R, )
    # Each pair uses top_k experts.
    assert torch.allclose(out['activation'].sum(1),
                          torch.full((R, ), 2.0, dtype=torch.double))
    stats = out['statistics']
    assert 0.0 <= stats['relation_specificity'] <= 1.0
    assert stats['effective_experts'] <= 4.0 + 1e-9
