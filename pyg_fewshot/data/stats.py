r"""Statistics of a few-shot KG: relation categories (1-1, 1-N, N-1, N-N)
and graph statistics."""
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .hetero import ENTITY, SPLITS, summary

CATEGORIES = ('1-1', '1-N', 'N-1', 'N-N')


def _category(tph: float, hpt: float, threshold: float) -> str:
    many_tails = tph >= threshold
    many_heads = hpt >= threshold
    if many_tails and many_heads:
        return 'N-N'
    if many_tails:
        return '1-N'
    if many_heads:
        return 'N-1'
    return '1-1'


def _per_relation_ratios(rel: Tensor, head: Tensor, tail: Tensor,
                         num_relations: int, num_entities: int):
    r"""Per relation: distinct triples, distinct heads, distinct tails."""
    N = num_entities
    key = torch.unique((rel * N + head) * N + tail)
    rel_of = key // (N * N)
    triples = torch.bincount(rel_of, minlength=num_relations)
    rh = torch.unique(key // N)  # (rel, head) pairs
    heads = torch.bincount(rh // N, minlength=num_relations)
    rt = torch.unique(rel_of * N + key % N)  # (rel, tail) pairs
    tails = torch.bincount(rt // N, minlength=num_relations)
    return triples, heads, tails


def relation_categories(
    data: HeteroData,
    threshold: float = 1.5,
    include: str = 'all',
) -> Dict[str, Dict[str, Any]]:
    r"""The category of every relation, by the usual rule (Bordes et al.,
    2013; Wang et al., 2014): ``tph`` is the mean number of distinct tails
    per head and ``hpt`` the mean number of distinct heads per tail; a side
    is "N" when its mean reaches :obj:`threshold` (1.5).

    ``tph < 1.5, hpt < 1.5`` → ``'1-1'``; ``tph >= 1.5, hpt < 1.5`` →
    ``'1-N'``; ``tph < 1.5, hpt >= 1.5`` → ``'N-1'``; both → ``'N-N'``.

    Args:
        data (HeteroData): A few-shot KG.
        threshold (float): The threshold. (default: :obj:`1.5`)
        include (str): ``'all'``, ``'background'`` or ``'tasks'``.

    Returns:
        ``{relation name: {'category', 'tph', 'hpt', 'num_triples', 'split'}}``
        with ``split`` one of ``'background'``, ``'train'``, ``'dev'``,
        ``'test'``. Task relations use their task triples, background
        relations their background edges; a background relation whose name
        is also a task relation's is keyed ``'<name> (background)'``.
        Relations without triples are left out.
    """
    if include not in ('all', 'background', 'tasks'):
        raise ValueError("'include' must be 'all', 'background' or 'tasks'")
    N = int(data[ENTITY].num_nodes)
    out: Dict[str, Dict[str, Any]] = {}
    task_names: List[str] = list(data.task_relation_names)
    if include in ('all', 'tasks') and task_names:
        T = len(task_names)
        sizes = data.task_ptr[1:] - data.task_ptr[:-1]
        rel = torch.repeat_interleave(torch.arange(T), sizes)
        trip = data.task_triples
        n, nh, nt = _per_relation_ratios(rel, trip[:, 0], trip[:, 1], T, N)
        split_of = {}
        for split in SPLITS:
            for r in data[f'{split}_rel'].tolist():
                split_of[r] = split
        for r, name in enumerate(task_names):
            if int(n[r]) == 0:
                continue
            tph = float(n[r]) / float(nh[r])
            hpt = float(n[r]) / float(nt[r])
            out[name] = {
                'category': _category(tph, hpt, threshold),
                'tph': tph,
                'hpt': hpt,
                'num_triples': int(n[r]),
                'split': split_of.get(r, 'task'),
            }
    if include in ('all', 'background'):
        names = list(data.relation_names)
        R = len(names)
        if R:
            ei, et = data.bg_edge_index, data.bg_edge_type
            n, nh, nt = _per_relation_ratios(et, ei[0], ei[1], R, N)
            for r, name in enumerate(names):
                if int(n[r]) == 0:
                    continue
                tph = float(n[r]) / float(nh[r])
                hpt = float(n[r]) / float(nt[r])
                key = name if name not in out else f'{name} (background)'
                out[key] = {
                    'category': _category(tph, hpt, threshold),
                    'tph': tph,
                    'hpt': hpt,
                    'num_triples': int(n[r]),
                    'split': 'background',
                }
    return out


def category_counts(categories: Dict[str, Dict[str, Any]],
                    split: Optional[str] = None) -> Dict[str, int]:
    r"""How many relations of each category (optionally of one ``split``)
    are in the output of :func:`relation_categories`."""
    counts = {c: 0 for c in CATEGORIES}
    for info in categories.values():
        if split is None or info['split'] == split:
            counts[info['category']] += 1
    return counts


def _describe(x: Tensor, prefix: str) -> Dict[str, float]:
    if x.numel() == 0:
        return {f'{prefix}_{k}': 0.0 for k in ('min', 'max', 'mean', 'median')}
    xf = x.double()
    return {
        f'{prefix}_min': float(x.min()),
        f'{prefix}_max': float(x.max()),
        f'{prefix}_mean': float(xf.mean()),
        f'{prefix}_median': float(xf.median()),
    }


def _quantiles(x: Tensor, prefix: str,
               qs: Sequence[float] = (0.9, 0.99)) -> Dict[str, float]:
    if x.numel() == 0:
        return {f'{prefix}_p{int(q * 100)}': 0.0 for q in qs}
    xs = torch.sort(x.double()).values
    out = {}
    for q in qs:
        idx = min(int(round(q * (xs.numel() - 1))), xs.numel() - 1)
        out[f'{prefix}_p{int(q * 100)}'] = float(xs[idx])
    return out


def graph_statistics(data: HeteroData,
                     threshold: float = 1.5) -> Dict[str, Any]:
    r"""Statistics of a few-shot KG.

    Returns a flat ``dict`` with the counts of
    :func:`~pyg_fewshot.data.hetero.summary`, and:

    * degrees in the background graph (``degree_*``: in + out,
      ``out_degree_max``, ``in_degree_max``, quantiles ``p90``/``p99``),
      ``num_isolated_entities`` (no background edge),
      ``num_self_loops``, ``num_duplicate_background_triples``,
      ``density`` (``E / N^2``);
    * background relation frequencies (``relation_triples_*``);
    * per split: ``<split>_triples_per_relation_*`` and
      ``<split>_candidates_per_relation_*``;
    * ``num_task_entities_isolated``: entities of task triples without a
      background edge;
    * ``num_true_triples`` (filter set size) and relation category counts
      (``categories_<split>``, :func:`relation_categories`).
    """
    N = int(data[ENTITY].num_nodes)
    R = len(data.relation_names)
    ei, et = data.bg_edge_index, data.bg_edge_type
    E = ei.size(1)
    stats: Dict[str, Any] = dict(summary(data))
    out_deg = torch.bincount(ei[0], minlength=N)
    in_deg = torch.bincount(ei[1], minlength=N)
    deg = out_deg + in_deg
    stats.update(_describe(deg, 'degree'))
    stats.update(_quantiles(deg, 'degree'))
    stats['degree_std'] = float(deg.double().std()) if N > 1 else 0.0
    stats['out_degree_max'] = int(out_deg.max()) if N else 0
    stats['in_degree_max'] = int(in_deg.max()) if N else 0
    stats['num_isolated_entities'] = int((deg == 0).sum())
    stats['num_self_loops'] = int((ei[0] == ei[1]).sum())
    key = (et * N + ei[0]) * N + ei[1]
    stats['num_duplicate_background_triples'] = int(
        E - torch.unique(key).numel()) if E else 0
    stats['density'] = E / float(N * N) if N else 0.0
    stats.update(
        _describe(torch.bincount(et, minlength=R), 'relation_triples'))

    tsizes = data.task_ptr[1:] - data.task_ptr[:-1]
    csizes = data.cand_ptr[1:] - data.cand_ptr[:-1]
    for split in SPLITS:
        rels = data[f'{split}_rel']
        stats.update(_describe(tsizes[rels], f'{split}_triples_per_relation'))
        stats.update(
            _describe(csizes[rels], f'{split}_candidates_per_relation'))
    trip = data.task_triples
    if trip.numel():
        ents = torch.unique(trip.view(-1))
        stats['num_task_entities'] = int(ents.numel())
        stats['num_task_entities_isolated'] = int((deg[ents] == 0).sum())
    else:
        stats['num_task_entities'] = 0
        stats['num_task_entities_isolated'] = 0
    stats['num_true_triples'] = int(data.true_keys.numel())
    cats = relation_categories(data, threshold)
    for split in ('background', ) + SPLITS:
        stats[f'categories_{split}'] = category_counts(cats, split)
    return stats
