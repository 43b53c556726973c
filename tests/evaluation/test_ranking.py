import itertools
import math

import pytest
import torch

from pyg_fewshot.evaluation import rank_candidates


def brute_force(pos, scores, valid, policy):
    """Ranks by listing the competitors one query at a time."""
    out = []
    for q in range(scores.size(0)):
        others = [float(s) for s, v in zip(scores[q], valid[q]) if v]
        p = float(pos[q])
        higher = sum(s > p for s in others)
        ties = sum(s == p for s in others)
        if policy == 'expected':
            # Average over every order of the tied candidates.
            ranks = [higher + 1 + i for i in range(ties + 1)]
            out.append(sum(1 / r for r in ranks) / len(ranks))
        else:
            rank = {'mean': 1 + higher + ties / 2,
                    'optimistic': 1 + higher,
                    'pessimistic': 1 + higher + ties}[policy]
            out.append(1 / rank)
    return torch.tensor(out, dtype=torch.double)


@pytest.mark.parametrize('policy',
                         ['mean', 'optimistic', 'pessimistic', 'expected'])
def test_rank_matches_brute_force_with_ties(policy):
    g = torch.Generator().manual_seed(0)
    # Few distinct values, so ties are frequent.
    scores = torch.randint(0, 4, (50, 30), generator=g).float()
    valid = torch.rand(50, 30, generator=g) > 0.2
    true_col = torch.randint(0, 30, (50, ), generator=g)
    valid[torch.arange(50), true_col] = False
    pos = scores[torch.arange(50), true_col]
    res = rank_candidates(pos, scores, valid, policy)
    ref = brute_force(pos, scores, valid, policy)
    assert torch.allclose(res['rr'], ref, atol=1e-12)
    if policy != 'expected':
        for k in (1, 5, 10):
            assert torch.equal(res[f'hits@{k}'],
                               (1 / ref <= k + 1e-9).double())


def test_expected_hits_match_enumeration():
    # 2 higher, 3 ties: the true tail is at rank 3..6 with equal chance.
    pos = torch.zeros(1)
    scores = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, -1.0]])
    res = rank_candidates(pos, scores, None, 'expected', ks=(1, 3, 5, 10))
    assert res['hits@1'].item() == 0
    assert res['hits@3'].item() == pytest.approx(1 / 4)
    assert res['hits@5'].item() == pytest.approx(3 / 4)
    assert res['hits@10'].item() == 1
    assert res['rr'].item() == pytest.approx(
        sum(1 / r for r in range(3, 7)) / 4)


def test_unknown_policy():
    with pytest.raises(ValueError, match='Unknown ties policy'):
        rank_candidates(torch.zeros(1), torch.zeros(1, 2), None, 'random')
