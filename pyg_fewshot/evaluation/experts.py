r"""Which experts each relation activates in a
:class:`~pyg_fewshot.models.MoEMeta` model, and whether the experts
collapsed."""
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.hetero import split_relations, task_triples


@torch.no_grad()
def expert_activations(model: torch.nn.Module, data: HeteroData,
                       splits: Sequence[str] = ('train', 'dev', 'test'),
                       shots: Optional[int] = None) -> Dict[str, Any]:
    r"""Routes the pairs of every task relation through the model (the
    ``routing`` of its :class:`~pyg_fewshot.models.TaskOutput`) and counts,
    per relation,
    how often each expert is among the top :math:`N` and its mean gate
    weight.

    Args:
        model (FewShotModel): A model whose :meth:`init_local` reports the
            routing (:class:`~pyg_fewshot.models.MoEMeta` with its mixture
            of experts).
        data (HeteroData): The graph.
        splits (Sequence[str], optional): Splits whose relations are routed.
        shots (int, optional): Route only the first ``shots`` triples of each
            relation (its evaluation support set); all triples if
            :obj:`None`.

    Returns:
        A dict with ``relations`` (names), ``splits`` (split of each),
        ``pairs`` (``[R]`` pairs routed per relation), ``activation``
        (``[R, M]`` share of the relation's pairs that use each expert),
        ``gate`` (``[R, M]`` mean gate weight), ``load`` (``[M]`` share of
        all routed assignments) and ``statistics``: :func:`load_statistics`
        plus ``relation_specificity`` (:func:`relation_specificity`).
    """
    was_training = model.training
    model.eval()
    names: List[str] = []
    split_of: List[str] = []
    act_rows, gate_rows, pair_counts = [], [], []
    total: Optional[Tensor] = None
    top_k = 1
    try:
        for split in splits:
            for rel in split_relations(data, split).tolist():
                trip = task_triples(data, rel)
                if shots is not None:
                    trip = trip[:shots]
                # The relation's pairs as one task: the routing the model
                # reports is that of every pair.
                out = model.init_local(trip.unsqueeze(0),
                                       model.embed(trip[:, 0]).unsqueeze(0),
                                       model.embed(trip[:, 1]).unsqueeze(0))
                routing = out.routing
                if routing is None:
                    raise ValueError(
                        'expert analysis needs a model whose relation meta '
                        "routes pairs to experts (MoEMeta with "
                        "relation_meta='moe')")
                probs, experts = routing.probs, routing.experts
                num_experts, top_k = probs.size(-1), experts.size(-1)
                onehot = torch.zeros(trip.size(0), num_experts,
                                     dtype=torch.double)
                onehot.scatter_(1, experts, 1.0)
                act_rows.append(onehot.mean(0))
                gate_rows.append(probs.double().mean(0))
                total = onehot.sum(0) if total is None else (
                    total + onehot.sum(0))
                pair_counts.append(trip.size(0))
                names.append(data.task_relation_names[rel])
                split_of.append(split)
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError(f'no task relations in the splits {list(splits)}')
    load = total / total.sum()
    activation = torch.stack(act_rows)
    pairs = torch.tensor(pair_counts, dtype=torch.double)
    stats = load_statistics(load, top_k)
    stats['relation_specificity'] = relation_specificity(activation, pairs)
    return {'relations': names, 'splits': split_of, 'pairs': pairs,
            'activation': activation, 'gate': torch.stack(gate_rows),
            'load': load, 'statistics': stats}


def load_statistics(load: Tensor, top_k: int = 1,
                    tolerance: float = 1.5) -> Dict[str, Any]:
    r"""Summary of the expert load :math:`p` (shares summing to one).

    * ``normalized_entropy``: :math:`H(p) / \log M` (1 = perfectly
      balanced);
    * ``effective_experts``: the perplexity :math:`e^{H(p)}`, the number of
      equally used experts with the same entropy (:math:`N` when every
      pair goes to the same top-:math:`N` set);
    * ``experts_used``, ``num_experts``, ``max_share``;
    * ``collapsed``: ``effective_experts`` at most ``tolerance`` times
      :math:`N`, i.e. the router uses little more than one fixed set of
      :math:`N` experts (``collapse_threshold`` is that bound in
      normalised-entropy units, :math:`\log(\mathrm{tolerance} \cdot N) /
      \log M`).

    Args:
        load (torch.Tensor): Share of the routed assignments per expert,
            shape :obj:`[M]`.
        top_k (int, optional): Experts per pair :math:`N`. (default:
            :obj:`1`)
        tolerance (float, optional): How many fixed sets of :math:`N`
            experts' worth of perplexity still counts as collapse.
            (default: :obj:`1.5`)
    """
    M = load.numel()
    p = load[load > 0].double()
    entropy = float(-(p * p.log()).sum())
    norm = entropy / math.log(M) if M > 1 else 1.0
    effective = math.exp(entropy)
    bound = min(float(M), tolerance * top_k)
    floor = math.log(bound) / math.log(M) if M > 1 else 0.0
    return {'normalized_entropy': norm, 'effective_experts': effective,
            'experts_used': int((load > 0).sum()), 'num_experts': M,
            'max_share': float(load.max()), 'collapse_threshold': floor,
            # The perplexity of exactly N equal shares is N only up to
            # rounding: compare with a relative margin.
            'collapsed': bool(M > top_k
                              and effective <= bound * (1 + 1e-6))}


def relation_specificity(activation: Tensor, pairs: Tensor) -> float:
    r"""How much the routing depends on the relation: the mutual
    information between a pair's relation and the experts it is routed to,
    divided by the entropy of the expert load, :math:`I(R; E) / H(E)`, where
    :math:`E` is one of a pair's :math:`N` experts. It is 0 when every
    relation is routed alike (whatever the load) and grows as relations use
    different experts, up to :math:`1 - \log N / H(E)` when each relation
    always uses its own :math:`N`.

    Args:
        activation (torch.Tensor): Share of each relation's pairs that use
            each expert, :obj:`[R, M]` (rows sum to :math:`N`).
        pairs (torch.Tensor): Pairs routed per relation, :obj:`[R]`.
    """
    act = activation.double()
    cond = act / act.sum(dim=1, keepdim=True).clamp(min=1e-300)  # p(e | r)
    p_r = pairs.double() / pairs.double().sum()
    p_e = (p_r.unsqueeze(1) * cond).sum(0)

    def entropy(p: Tensor) -> Tensor:
        return -(p * p.clamp(min=1e-300).log()).sum(-1)

    h_e = float(entropy(p_e))
    if h_e <= 0.0:
        return 0.0
    mutual = h_e - float((p_r * entropy(cond)).sum())
    return max(0.0, mutual) / h_e


def describe_configuration(config: Any) -> str:
    r"""One line naming a run by its configuration: model, dataset, shots,
    seed and configuration hash, *e.g.* ``'moemeta on umls-one, 1-shot,
    seed 0, config 3f2a9c0d1b7e'``.

    Args:
        config (RunConfig or dict): The run's configuration (as
            :func:`~pyg_fewshot.pipeline.load_run` returns it), or its
            nested dict (the ``config`` of ``results.json``).
    """
    from .. import _config
    d = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
    dataset = str(d['data']['dataset'])
    if os.sep in dataset or (os.altsep and os.altsep in dataset):
        # A folder: its name, as the dataset's processed cache names it.
        dataset = os.path.basename(os.path.normpath(dataset))
    return (f"{d['model']['name']} on {dataset}, "
            f"{d['episodes']['shots']}-shot, seed {d['seed']}, config "
            f'{_config.config_hash(d)}')


def describe_statistics(stats: Dict[str, Any]) -> str:
    r"""The collapse statistics of :func:`load_statistics` (and
    :func:`expert_activations`) as two lines of text."""
    lines = [
        f"effective experts {stats['effective_experts']:.2f}, experts used "
        f"{stats['experts_used']}/{stats['num_experts']}, largest share "
        f"{stats['max_share']:.3f}",
        f"normalised entropy {stats['normalized_entropy']:.3f}, collapsed: "
        f"{'yes' if stats['collapsed'] else 'no'}",
    ]
    if 'relation_specificity' in stats:
        lines[1] += (f", relation specificity "
                     f"{stats['relation_specificity']:.3f}")
    return '\n'.join(lines)


def plot_activation_heatmap(analysis: Dict[str, Any], path: str,
                            title: str = 'Expert activation',
                            config: Any = None) -> Any:
    r"""Saves the relation × expert activation heatmap (the MoEMeta paper's
    expert-activation figure) as a PNG, with the collapse statistics of
    ``analysis['statistics']`` (effective experts, experts used, largest
    share, normalised entropy, collapsed or not) written under it. Needs
    :mod:`matplotlib` (``pip install pyg_fewshot[plot]``).

    Args:
        analysis (dict): What :func:`expert_activations` returns.
        path (str): The PNG file.
        title (str, optional): The figure's title.
            (default: :obj:`'Expert activation'`)
        config (RunConfig or dict, optional): The run's configuration: the
            title then names its model, dataset, shots, seed and
            configuration hash (:func:`describe_configuration`).
            (default: :obj:`None`)

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError("plotting needs matplotlib: pip install "
                          "'pyg_fewshot[plot]'") from e
    act = analysis['activation'].numpy()
    names = [f"{n.split(':')[-1]} ({s})"
             for n, s in zip(analysis['relations'], analysis['splits'])]
    stats = analysis.get('statistics')
    if config is not None:
        title = f'{title}: {describe_configuration(config)}'
    # A Figure without pyplot: no GUI backend, no global state (PNG through
    # the Agg canvas).
    fig = Figure(figsize=(max(6, 0.25 * act.shape[1] + 3),
                          max(3, 0.22 * len(names) + 1.5)
                          + (0.5 if stats else 0)),
                 layout='constrained')
    ax = fig.subplots()
    im = ax.imshow(act, aspect='auto', cmap='viridis', vmin=0, vmax=1)
    ax.set_xlabel('expert')
    ax.set_ylabel('relation')
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.colorbar(im, ax=ax, label='share of pairs routed to the expert')
    if stats:
        fig.supxlabel(describe_statistics(stats), fontsize=8)
    from .._io import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format='png')
    return fig


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
