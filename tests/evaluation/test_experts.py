import math

import pytest
import torch

from pyg_fewshot.evaluation.experts import (expert_activations,
                                            load_statistics,
                                            relation_specificity)
from pyg_fewshot.data.hetero import split_relations, task_triples
from pyg_fewshot.models import build_model

MOE = {'num_experts': 4, 'top_k': 2, 'hidden_channels': 8,
       'gate_hidden_channels': 8}


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
                        relation_meta_kwargs=MOE)
    model.train()
    out = expert_activations(model, tiny_data)
    assert model.training  # the mode is restored
    R = len(out['relations'])
    assert out['activation'].shape == (R, 4)
    assert out['pairs'].shape == (R, )
    # Each pair uses top_k experts.
    assert torch.allclose(out['activation'].sum(1),
                          torch.full((R, ), 2.0, dtype=torch.double))
    stats = out['statistics']
    assert 0.0 <= stats['relation_specificity'] <= 1.0
    assert stats['effective_experts'] <= 4.0 + 1e-9


def test_expert_activations_are_the_routing_of_init_local(tiny_data):
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta_kwargs=MOE).eval()
    out = expert_activations(model, tiny_data, splits=('dev', ), shots=3)
    rel = int(split_relations(tiny_data, 'dev')[0])
    trip = task_triples(tiny_data, rel)[:3]
    routing = model.init_local(trip.unsqueeze(0),
                               model.embed(trip[:, 0]).unsqueeze(0),
                               model.embed(trip[:, 1]).unsqueeze(0)).routing
    onehot = torch.zeros(3, 4, dtype=torch.double)
    onehot.scatter_(1, routing.experts, 1.0)
    assert out['relations'] == [tiny_data.task_relation_names[rel]]
    assert out['pairs'].tolist() == [3.0]
    torch.testing.assert_close(out['activation'][0], onehot.mean(0))
    torch.testing.assert_close(out['gate'][0], routing.probs.double().mean(0))


def test_expert_activations_need_a_routing_model(tiny_data):
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta='mlp',
                        relation_meta_kwargs={'hidden_channels': (8, )})
    with pytest.raises(ValueError, match="relation_meta='moe'"):
        expert_activations(model, tiny_data)
    metar = build_model('metar', tiny_data, embedding_dim=8,
                        hidden_channels=(8, ))
    with pytest.raises(ValueError, match='routes pairs to experts'):
        expert_activations(metar, tiny_data)
    moe = build_model('moemeta', tiny_data, embedding_dim=8,
                      relation_meta_kwargs=MOE)
    with pytest.raises(ValueError, match='no task relations'):
        expert_activations(moe, tiny_data, splits=())
