r"""The published few-shot evaluation protocol, batched and vectorised."""
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.hetero import (ENTITY, background_degree, candidates,
                           is_true_triple, split_relations, task_triples)
from ..data.io import check_shots
from ..data.sampler import sample_negative_tails
from ..meta import distributed as dist_utils
from ..meta.learner import MetaLearner
from ..models.base import FewShotModel
from .ranking import (count_nonfinite, count_rank_terms, ranking_metrics,
                      summarize)


def _relation_generator(seed: int, rel: int) -> torch.Generator:
    # One stream per relation: results do not depend on evaluation order.
    return torch.Generator().manual_seed(seed * 1_000_003 + rel)


@torch.no_grad()
def evaluate(model: FewShotModel, data: HeteroData, split: str = 'test',
             shots: int = 1, learner: Optional[MetaLearner] = None,
             ties_policy: str = 'mean', candidate_set: str = 'relation',
             chunk_size: int = 1 << 22, seed: int = 0,
             device: Optional[torch.device] = None,
             relations: Optional[Tensor] = None,
             distributed: bool = False) -> Dict[str, Any]:
    r"""Ranks the tail of every query of a split with the published protocol.

    For each task relation of ``split``, the support set is its first ``K``
    triples (file order) and every remaining triple is a query. The support
    set is used by :meth:`MetaLearner.adapt` (with negatives drawn from a
    per-relation seeded stream) and by the model's
    :meth:`~pyg_fewshot.models.FewShotModel.task_scope`. Each query
    :math:`(h, r, ?)` is ranked against the relation's candidates
    (``candidate_set='relation'``, the published protocol) or all entities
    (``'all'``), minus every known true tail of :math:`(h, r)`, the true tail
    kept; see :func:`~pyg_fewshot.evaluation.ranking_metrics` for the tie
    policies.

    Args:
        model (FewShotModel): The model (put in eval mode while ranking).
        data (HeteroData): Graph from
            :func:`~pyg_fewshot.data.build_fewshot_data`.
        split (str, optional): ``'dev'`` or ``'test'``. (default:
            :obj:`'test'`)
        shots (int, optional): Support size ``K``. (default: :obj:`1`)
        learner (MetaLearner, optional): Runs the inner loop; a default one
            is built if :obj:`None`. (default: :obj:`None`)
        ties_policy (str, optional): ``'mean'``, ``'optimistic'``,
            ``'pessimistic'`` or ``'expected'``. (default: :obj:`'mean'`)
        candidate_set (str, optional): ``'relation'`` or ``'all'``.
            (default: :obj:`'relation'`)
        chunk_size (int, optional): Maximum query × candidate scores held at
            once. (default: :obj:`2**22`)
        seed (int, optional): Seed of the support negatives.
            (default: :obj:`0`)
        device (torch.device, optional): Device to score on (defaults to the
            model's).
        relations (torch.Tensor, optional): Evaluate only these task
            relation ids of the split.
        distributed (bool, optional): Inside a :mod:`torch.distributed` job,
            split the relations over the ranks (every rank must call this)
            and gather the results, so each rank returns the full result.
            (default: :obj:`False`)

    Returns:
        A dict with micro-averaged ``mrr``, ``hits@1``, ``hits@5``,
        ``hits@10``, ``mean_rank`` and ``num_queries``, the number of
        non-finite scores met (``nonfinite_scores``; each is ranked as badly
        as possible, see :func:`~pyg_fewshot.evaluation.count_rank_terms`,
        and a :class:`RuntimeWarning` is raised), the same averaged
        over relations under ``'macro'``, a ``'per_relation'`` table, and
        ``'seconds'``.
    """
    if candidate_set not in ('relation', 'all'):
        raise ValueError(f"Unknown candidate_set '{candidate_set}': expected "
                         f"'relation' or 'all'")
    if device is None:
        device = next(model.parameters()).device
    learner = learner or MetaLearner(model)
    rels = split_relations(data, split) if relations is None else relations
    num_entities = data[ENTITY].num_nodes
    was_training = model.training
    model.eval()
    start_time = time.perf_counter()
    order = rels.tolist()
    mine = order
    if distributed and dist_utils.is_distributed():
        mine = order[dist_utils.get_rank()::dist_utils.get_world_size()]
    done: Dict[int, Tuple[Dict[str, Tensor], Dict[str, Any]]] = {}
    # The one K+1 check (every relation evaluated here needs K support
    # triples and a query), before any relation is ranked.
    check_shots(data, shots, relations=rels)
    try:
        for rel in mine:
            trip = task_triples(data, rel)
            support, query = trip[:shots], trip[shots:]
            sup_neg = sample_negative_tails(
                data, torch.full((shots, ), rel), support[:, 0],
                _relation_generator(seed, rel))
            if candidate_set == 'relation':
                cand = torch.unique(torch.cat([candidates(data, rel),
                                               query[:, 1]]))
            else:
                cand = torch.arange(num_entities)
            with model.task_scope(support.to(device), sup_neg.to(device),
                                  learner):
                metrics = _rank_relation(model, learner, data, rel, support,
                                         sup_neg, query, cand, ties_policy,
                                         chunk_size, device)
            row = summarize(metrics)
            row['num_queries'] = query.size(0)
            row['num_candidates'] = cand.numel()
            done[rel] = (metrics, row)
    finally:
        model.train(was_training)
    if mine is not order:
        for part in dist_utils.all_gather_objects(done):
            done.update(part)
    # Pool in split order, whichever rank ranked which relation.
    per_query = [done[rel][0] for rel in order]
    table = {data.task_relation_names[rel]: done[rel][1] for rel in order}

    result: Dict[str, Any] = {}
    if per_query:
        pooled = {k: torch.cat([m[k] for m in per_query])
                  for k in per_query[0]}
        result.update(summarize(pooled))
        result['nonfinite_scores'] = int(pooled['nonfinite'].sum())
        if result['nonfinite_scores']:
            warnings.warn(
                f"{result['nonfinite_scores']} non-finite (NaN or infinite) "
                f"scores on the {split} split were ranked as the worst "
                f"possible; the model has diverged", RuntimeWarning)
        macro_keys = [k for k in next(iter(table.values()))
                      if k not in ('num_queries', 'num_candidates')]
        result['macro'] = {k: sum(r[k] for r in table.values()) / len(table)
                           for k in macro_keys}
    result['num_queries'] = sum(r['num_queries'] for r in table.values())
    result['num_relations'] = len(table)
    result['per_relation'] = table
    result['ties_policy'] = ties_policy
    result['candidate_set'] = candidate_set
    result['seconds'] = time.perf_counter() - start_time
    return result


def _rank_relation(model: FewShotModel, learner: MetaLearner,
                   data: HeteroData, rel: int, support: Tensor,
                   sup_neg: Tensor, query: Tensor, cand: Tensor,
                   ties_policy: str, chunk_size: int,
                   device: torch.device) -> Dict[str, Tensor]:
    embed = model.embed
    sup_h = embed(support[:, 0].to(device)).unsqueeze(0)
    sup_t = embed(support[:, 1].to(device)).unsqueeze(0)
    neg_t = embed(sup_neg.to(device)).unsqueeze(0)
    local = model.init_local(support.unsqueeze(0).to(device), sup_h,
                             sup_t).local
    local = learner.adapt(local, sup_h, sup_t, neg_t)

    cand_emb = embed(cand.to(device)).unsqueeze(0)
    # Column of each query's true tail among the sorted candidates.
    true_col = torch.searchsorted(cand, query[:, 1].contiguous())
    rows = max(1, chunk_size // max(1, cand.numel()))
    higher, ties, nonfinite = [], [], []
    for i in range(0, query.size(0), rows):
        q = query[i:i + rows]
        h = embed(q[:, 0].to(device)).unsqueeze(0)
        scores = model.score_candidates(h, cand_emb, local)[0].cpu()
        pos = scores.gather(1, true_col[i:i + rows].unsqueeze(1)).squeeze(1)
        # Filter every known true tail of (h, r); this drops the query's own
        # tail as well, so it is neither above nor tied with itself.
        valid = ~is_true_triple(data, torch.tensor(rel), q[:, :1],
                                cand.unsqueeze(0))
        hi, eq = count_rank_terms(pos, scores, valid)
        higher.append(hi)
        ties.append(eq)
        nonfinite.append(count_nonfinite(pos, scores, valid))
    out = ranking_metrics(torch.cat(higher), torch.cat(ties), ties_policy)
    out['nonfinite'] = torch.tensor([sum(nonfinite)])
    return out


def _split_queries(data: HeteroData, split: str, shots: int,
                   candidate_set: str) -> Iterator[Tuple[Tensor, Tensor,
                                                         Tensor]]:
    r"""``(query, cand, valid)`` of every relation of ``split`` that has
    queries, exactly as :func:`evaluate` ranks them: the sorted candidates
    and the mask of those left after filtering (the true tail kept)."""
    if candidate_set not in ('relation', 'all'):
        raise ValueError(f"Unknown candidate_set '{candidate_set}': expected "
                         f"'relation' or 'all'")
    num_entities = data[ENTITY].num_nodes
    for rel in split_relations(data, split).tolist():
        query = task_triples(data, rel)[shots:]
        if query.numel() == 0:
            continue
        if candidate_set == 'relation':
            cand = torch.unique(torch.cat([candidates(data, rel),
                                           query[:, 1]]))
        else:
            cand = torch.arange(num_entities)
        # Every known true tail of (h, r) is filtered, the query's own
        # among them: it is ranked, not counted.
        valid = ~is_true_triple(data, torch.tensor(rel), query[:, :1],
                                cand.unsqueeze(0))
        yield query, cand, valid


def _pooled(parts: List[Dict[str, Tensor]]) -> Dict[str, Any]:
    pooled = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    out: Dict[str, Any] = summarize(pooled)
    out['num_queries'] = pooled['rr'].numel()
    return out


def chance_level(data: HeteroData, split: str = 'test', shots: int = 1,
                 candidate_set: str = 'relation',
                 ks: tuple = (1, 5, 10)) -> Dict[str, Any]:
    r"""The exact expected metrics of a random ranking under the same
    protocol as :func:`evaluate` (each query's true tail uniformly placed
    among its filtered candidates); the floor every model must clear."""
    parts: List[Dict[str, Tensor]] = []
    for _, _, valid in _split_queries(data, split, shots, candidate_set):
        others = valid.sum(1)
        parts.append(ranking_metrics(torch.zeros_like(others), others,
                                     'expected', ks))
    return _pooled(parts)


def degree_baseline(data: HeteroData, split: str = 'test', shots: int = 1,
                    candidate_set: str = 'relation',
                    ks: tuple = (1, 5, 10)) -> Dict[str, Any]:
    r"""The metrics of ranking every query's filtered candidates by their
    degree in the background graph (in plus out, over all background
    relations), under the same protocol as :func:`evaluate`.

    The score ignores the head, the relation and the support set: it is
    what a model earns by learning only which entities are common, a
    second floor beside :func:`chance_level` (on some KGs it is far above
    chance). Candidates of equal degree are ordered at random, in
    expectation (tie policy ``'expected'``)."""
    deg = background_degree(data)
    parts: List[Dict[str, Tensor]] = []
    for query, cand, valid in _split_queries(data, split, shots,
                                             candidate_set):
        scores = deg[cand].expand(query.size(0), -1)
        higher, ties = count_rank_terms(deg[query[:, 1]], scores, valid)
        parts.append(ranking_metrics(higher, ties, 'expected', ks))
    return _pooled(parts)
