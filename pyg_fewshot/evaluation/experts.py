r"""Which experts each relation activates in a
:class:`~pyg_fewshot.models.MoEMeta` model, and whether the experts
collapsed."""
import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.hetero import split_relations, task_triples


@torch.no_grad()
def expert_activations(model: torch.nn.Module, data: HeteroData,
                       splits: Sequence[str] = ('train', 'dev', 'test'),
                       shots: Optional[int] = None) -> Dict[str, Any]:
    r"""Routes the pairs of every task relation through the model's
    :class:`~pyg_fewshot.nn.SparseMoERelationMeta` and counts, per relation,
    how often each expert is among the top :math:`N` and its mean gate
    weight.

    Args:
        model (MoEMeta): A model with a ``moe`` layer.
        data (HeteroData): The graph.
        splits (Sequence[str], optional): Splits whose relations are routed.
        shots (int, optional): Route only the first ``shots`` triples of each
            relation (its evaluation support set); all triples if
            :obj:`None`.

    Returns:
        A dict with ``relations`` (names), ``splits`` (split of each),
        ``activation`` (``[R, M]`` share of the relation's pairs that use
        each expert), ``gate`` (``[R, M]`` mean gate weight), ``load``
        (``[M]`` share of all routed assignments) and :func:`load_statistics`.
    """
    moe = getattr(model, 'moe', None)
    if moe is None:
        raise ValueError('expert analysis needs a model with a mixture of '
                         'experts (MoEMeta with moe=True)')
    was_training = model.training
    model.eval()
    names: List[str] = []
    split_of: List[str] = []
    act_rows, gate_rows = [], []
    total = torch.zeros(moe.num_experts, dtype=torch.double)
    try:
        for split in splits:
            for rel in split_relations(data, split).tolist():
                trip = task_triples(data, rel)
                if shots is not None:
                    trip = trip[:shots]
                x = torch.cat([model.embed(trip[:, 0]),
                               model.embed(trip[:, 1])], dim=-1)
                probs, weights, experts = moe.route(x)
                onehot = torch.zeros(x.size(0), moe.num_experts,
                                     dtype=torch.double)
                onehot.scatter_(1, experts, 1.0)
                act_rows.append(onehot.mean(0))
                gate_rows.append(probs.double().mean(0))
                total += onehot.sum(0)
                names.append(data.task_relation_names[rel])
                split_of.append(split)
    finally:
        model.train(was_training)
    load = total / total.sum()
    return {'relations': names, 'splits': split_of,
            'activation': torch.stack(act_rows),
            'gate': torch.stack(gate_rows), 'load': load,
            'statistics': load_statistics(load, moe.top_k)}


def load_statistics(load: Tensor, top_k: int = 1) -> Dict[str, float]:
    r"""Summary of the expert load :math:`p` (shares summing to one): the
    normalised entropy :math:`H(p) / \log M` (1 = perfectly balanced), the
    number of experts ever used, the largest share, and ``collapsed`` when
    the normalised entropy is below :math:`\log N / \log M` (no better than
    always routing to the same :math:`N` experts)."""
    M = load.numel()
    p = load[load > 0]
    entropy = float(-(p * p.log()).sum())
    norm = entropy / math.log(M) if M > 1 else 1.0
    floor = math.log(top_k) / math.log(M) if M > 1 else 0.0
    return {'normalized_entropy': norm, 'experts_used': int((load > 0).sum()),
            'num_experts': M, 'max_share': float(load.max()),
            'collapse_threshold': floor, 'collapsed': bool(norm <= floor)}


def plot_activation_heatmap(analysis: Dict[str, Any], path: str,
                            title: str = 'Expert activation') -> None:
    r"""Saves the relation × expert activation heatmap (the MoEMeta paper's
    expert-activation figure) as a PNG. Needs :mod:`matplotlib`
    (``pip install pyg_fewshot[plot]``)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError("plotting needs matplotlib: pip install "
                          "'pyg_fewshot[plot]'") from e
    act = analysis['activation'].numpy()
    names = [f"{n.split(':')[-1]} ({s})"
             for n, s in zip(analysis['relations'], analysis['splits'])]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * act.shape[1] + 3),
                                    max(3, 0.22 * len(names) + 1.5)))
    im = ax.imshow(act, aspect='auto', cmap='viridis', vmin=0, vmax=1)
    ax.set_xlabel('expert')
    ax.set_ylabel('relation')
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=6)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label='share of pairs routed to the expert')
    fig.tight_layout()
    from .._io import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format='png')
    plt.close(fig)


def metrics_by_category(per_relation: Dict[str, Dict[str, Any]],
                        categories: Dict[str, str]) -> Dict[str, Any]:
    r"""Query-weighted metrics of an :func:`~pyg_fewshot.evaluation.evaluate`
    ``per_relation`` table grouped by relation category (*e.g.* 1-1, 1-N,
    N-1, N-N)."""
    groups: Dict[str, Dict[str, float]] = {}
    for name, row in per_relation.items():
        cat = categories.get(name, 'unknown')
        g = groups.setdefault(cat, {'num_relations': 0, 'num_queries': 0})
        n = row['num_queries']
        g['num_relations'] += 1
        g['num_queries'] += n
        for key in ('mrr', 'hits@1', 'hits@5', 'hits@10'):
            g[key] = g.get(key, 0.0) + row[key] * n
    for g in groups.values():
        for key in ('mrr', 'hits@1', 'hits@5', 'hits@10'):
            g[key] /= max(1, g['num_queries'])
    return groups
