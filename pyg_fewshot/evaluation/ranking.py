r"""Filtered ranking metrics with an explicit tie policy."""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

TIE_POLICIES = ('mean', 'optimistic', 'pessimistic', 'expected')


def count_rank_terms(pos: Tensor, scores: Tensor,
                     valid: Optional[Tensor] = None) -> tuple:
    r"""Counts, per query, the valid candidates scoring strictly higher than
    and equal to the true tail.

    A score that is not finite never helps the model: a true tail whose
    score is NaN or :math:`\pm\infty` is ranked below every valid candidate,
    and a candidate whose score is NaN counts as scoring higher than the true
    tail. (A plain comparison would do the opposite: NaN is neither higher
    nor equal, so a diverged model would rank every query first.)

    Args:
        pos (torch.Tensor): Score of the true tail, ``[Q]``.
        scores (torch.Tensor): Scores of the candidates, ``[Q, C]``. The true
            tail must be masked out through ``valid``.
        valid (torch.Tensor, optional): ``[Q, C]`` bool, :obj:`False` for the
            true tail itself and for filtered (known true) tails.

    Returns:
        (higher, ties), two ``[Q]`` long tensors.
    """
    p = pos.unsqueeze(-1)
    bad_pos = ~torch.isfinite(p)
    higher = (scores > p) | torch.isnan(scores) | bad_pos
    ties = (scores == p) & ~bad_pos
    if valid is not None:
        higher = higher & valid
        ties = ties & valid
    return higher.sum(-1), ties.sum(-1)


def count_nonfinite(pos: Tensor, scores: Tensor,
                    valid: Optional[Tensor] = None) -> int:
    r"""Number of non-finite scores among the true tails ``pos`` and the
    valid candidates ``scores`` (what :func:`count_rank_terms` ranks
    pessimistically)."""
    bad = ~torch.isfinite(scores)
    if valid is not None:
        bad = bad & valid
    return int((~torch.isfinite(pos)).sum()) + int(bad.sum())


def _harmonic(n: Tensor) -> Tensor:
    """H_n = sum_{i<=n} 1/i for float64 ``n`` >= 0 (H_0 = 0)."""
    return torch.digamma(n + 1) - torch.digamma(torch.ones_like(n))


def ranking_metrics(higher: Tensor, ties: Tensor, ties_policy: str = 'mean',
                    ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Tensor]:
    r"""Per-query reciprocal rank, rank and Hits@k from
    :func:`count_rank_terms`.

    Tie policies, with :math:`h` candidates scoring higher and :math:`e`
    scoring equal to the true tail:

    * ``'mean'``: rank :math:`= 1 + h + e / 2` (the default);
    * ``'optimistic'``: rank :math:`= 1 + h`;
    * ``'pessimistic'``: rank :math:`= 1 + h + e`;
    * ``'expected'``: every metric is its expectation over a uniformly random
      order of the tied candidates, *e.g.* the reciprocal rank is
      :math:`\frac{1}{e + 1} \sum_{i = h + 1}^{h + e + 1} \frac{1}{i}`. A
      model that scores every candidate the same then gets exactly the
      metrics of a random ranking.

    Returns:
        A dict of ``[Q]`` float64 tensors: ``'rr'``, ``'rank'`` and
        ``'hits@k'`` for each ``k``.
    """
    if ties_policy not in TIE_POLICIES:
        raise ValueError(f"Unknown ties policy '{ties_policy}': expected one "
                         f'of {TIE_POLICIES}')
    h = higher.double()
    e = ties.double()
    out: Dict[str, Tensor] = {}
    if ties_policy == 'expected':
        out['rank'] = 1 + h + e / 2
        out['rr'] = (_harmonic(h + e + 1) - _harmonic(h)) / (e + 1)
        for k in ks:
            inside = (k - h).clamp(min=0, max=None).minimum(e + 1)
            out[f'hits@{k}'] = inside / (e + 1)
        return out
    if ties_policy == 'mean':
        rank = 1 + h + e / 2
    elif ties_policy == 'optimistic':
        rank = 1 + h
    else:
        rank = 1 + h + e
    out['rank'] = rank
    out['rr'] = 1.0 / rank
    for k in ks:
        out[f'hits@{k}'] = (rank <= k).double()
    return out


def rank_candidates(pos: Tensor, scores: Tensor,
                    valid: Optional[Tensor] = None,
                    ties_policy: str = 'mean',
                    ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Tensor]:
    r"""Convenience: :func:`count_rank_terms` then :func:`ranking_metrics`."""
    higher, ties = count_rank_terms(pos, scores, valid)
    return ranking_metrics(higher, ties, ties_policy, ks)


def summarize(per_query: Dict[str, Tensor]) -> Dict[str, float]:
    r"""Averages per-query metrics into ``mrr``, ``mean_rank`` and
    ``hits@k``."""
    out = {'mrr': float(per_query['rr'].mean()),
           'mean_rank': float(per_query['rank'].mean())}
    for key, value in per_query.items():
        if key.startswith('hits@'):
            out[key] = float(value.mean())
    return out
