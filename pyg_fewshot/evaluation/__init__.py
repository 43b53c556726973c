r"""Filtered ranking evaluation used by every model."""
from .evaluator import chance_level, degree_baseline, evaluate
from .ranking import (TIE_POLICIES, count_nonfinite, count_rank_terms,
                      rank_candidates, ranking_metrics, summarize)

__all__ = ['evaluate', 'chance_level', 'degree_baseline', 'count_rank_terms', 'count_nonfinite',
           'ranking_metrics',
           'rank_candidates', 'summarize', 'TIE_POLICIES']
