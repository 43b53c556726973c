r"""The "pretrained background" setting: TransE vectors of the background
graph, trained with :class:`torch_geometric.nn.kge.TransE` and cached.

The published MetaR / MoEMeta "Pre-Train" setting starts from TransE entity
vectors of the background graph (``ent2vec.txt`` in the original releases);
NELL-One as distributed here has none, so :func:`pretrain_transe` computes
them and :func:`load_or_pretrain` caches them next to the processed data.

Optionally a seeded slice of the background triples is held out
(``holdout``; the default ``holdout=0`` trains on every triple for a fixed
number of epochs; :data:`EARLY_STOPPED_PRETRAIN` is the held-out setting
chosen on the few-shot dev set): TransE then
trains on the rest, the filtered tail-prediction MRR of the slice
(:func:`link_prediction_metrics`) is measured every ``eval_every`` epochs,
training stops after ``patience`` evaluations without improvement, and the
best evaluation's vectors are kept. The curve
(epoch, loss, held-out MRR) is returned with ``return_history=True`` and
stored beside the cached vectors (``transe-<key>.json``). See
docs/pretraining.md for what the held-out MRR does and does not say about
the few-shot task.
"""
import hashlib
import json
import logging
import os
import os.path as osp
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from .._io import atomic_torch_save, atomic_write_json
from ..optim import LazySparseAdam
from .hetero import ENTITY

logger = logging.getLogger(__name__)

#: The default: 20 epochs at lr 0.01 on every background triple, the
#: setting every NELL-One number in docs/results.md was made with. The
#: pretraining study (docs/pretraining.md) favours
#: :data:`EARLY_STOPPED_PRETRAIN` on the few-shot dev set, within noise of
#: untrained vectors; the default changes when the NELL-One tables are rerun.
DEFAULT_EPOCHS = 20
DEFAULT_LR = 0.01
DEFAULT_BATCH_SIZE = 2048
#: Held-out fraction of the background triples (0: train on all of them,
#: no evaluation, no early stopping) and its cap in triples.
DEFAULT_HOLDOUT = 0.0
DEFAULT_MAX_HOLDOUT = 1000
#: Epochs between two held-out evaluations.
DEFAULT_EVAL_EVERY = 1
#: Evaluations without a better held-out MRR before training stops.
DEFAULT_PATIENCE = 3

#: Dev's choice in the pretraining study (`es-lr0.01`): early stopping on
#: the filtered tail-prediction MRR of a held-out 1 % of the background (at
#: most 1,000 triples), evaluated every epoch, patience 3, at most 200
#: epochs; on NELL-One it keeps epoch 1 (MetaR dev MRR 0.109 ± 0.008 against
#: 0.089 ± 0.010 for the default, five seeds). Pass it to select it, e.g.
#: ``dataset.pretrained_embeddings(**EARLY_STOPPED_PRETRAIN)``.
EARLY_STOPPED_PRETRAIN: Dict[str, Any] = {'epochs': 200, 'lr': 0.01,
                                          'holdout': 0.01}

#: Bumped when the training procedure changes (invalidates caches).
PRETRAIN_VERSION = 2


def _transe_class():
    from torch_geometric.nn.kge import TransE

    class FastTransE(TransE):
        r""":class:`~torch_geometric.nn.kge.TransE` with the same score
        computed by elementwise ops (``torch.norm`` with ``p=1`` takes a slow
        generic path on CPU)."""
        def forward(self, head_index: Tensor, rel_type: Tensor,
                    tail_index: Tensor) -> Tensor:
            if float(self.p_norm) != 1.0:
                return super().forward(head_index, rel_type, tail_index)
            head = self.node_emb(head_index)
            rel = self.rel_emb(rel_type)
            tail = self.node_emb(tail_index)
            head = head / _l1(head).clamp_min(1e-12).unsqueeze(-1)
            tail = tail / _l1(tail).clamp_min(1e-12).unsqueeze(-1)
            return -_l1((head + rel) - tail)

    return FastTransE


def _l1(x: Tensor) -> Tensor:
    return x.abs().sum(-1)


def split_holdout(data: HeteroData, fraction: float,
                  max_count: int = DEFAULT_MAX_HOLDOUT,
                  seed: int = 0) -> Tuple[Tensor, Tensor]:
    r"""Splits the background triples into training and held-out indices.

    ``min(round(fraction * E), max_count)`` triples (at least one when
    both are positive) are drawn in a seeded
    random order, skipping any whose removal would leave its head, its tail
    or its relation without a training triple (their vectors would stay at
    their random initialisation), so fewer may be returned on a tiny graph.

    Returns:
        ``(train_idx, holdout_idx)``, sorted indices into ``bg_edge_type``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"'holdout' must be in [0, 1) (got {fraction})")
    if max_count < 0:
        raise ValueError(f"'max_holdout' must be >= 0 (got {max_count})")
    head, tail = data.bg_edge_index
    rel = data.bg_edge_type
    E = rel.numel()
    want = min(int(round(fraction * E)), int(max_count))
    if fraction > 0 and max_count > 0:
        want = max(want, 1)
    if want == 0:
        return torch.arange(E), torch.empty(0, dtype=torch.long)
    N = int(data[ENTITY].num_nodes)
    deg = torch.bincount(torch.cat([head, tail]), minlength=N).tolist()
    rel_count = torch.bincount(rel, minlength=len(data.relation_names))
    rel_count = rel_count.tolist()
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(E, generator=g).tolist()
    h_l, t_l, r_l = head.tolist(), tail.tolist(), rel.tolist()
    chosen: List[int] = []
    for i in perm:
        h, t, r = h_l[i], t_l[i], r_l[i]
        need = 2 if h == t else 1  # a self-loop counts twice in deg
        if deg[h] <= need or deg[t] <= need or rel_count[r] <= 1:
            continue
        deg[h] -= 1
        deg[t] -= 1
        rel_count[r] -= 1
        chosen.append(i)
        if len(chosen) == want:
            break
    held = torch.tensor(sorted(chosen), dtype=torch.long)
    mask = torch.ones(E, dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().view(-1), held


class _TailFilter:
    r"""The known tails of every (head, relation) pair, for filtered
    ranking: pairs sorted by ``head * R + relation``."""
    def __init__(self, head: Tensor, rel: Tensor, tail: Tensor, R: int):
        key = head.long() * R + rel.long()
        self.keys, order = torch.sort(key)
        self.tails = tail.long()[order]
        self.R = R

    def pairs(self, head: Tensor, rel: Tensor) -> Tuple[Tensor, Tensor]:
        r"""``(row, tail)`` of every known tail of query ``row``."""
        key = head.long() * self.R + rel.long()
        lo = torch.searchsorted(self.keys, key)
        hi = torch.searchsorted(self.keys, key, right=True)
        count = hi - lo
        rows = torch.repeat_interleave(torch.arange(key.numel()), count)
        first = torch.cumsum(count, 0) - count
        offset = (torch.arange(int(count.sum())) +
                  torch.repeat_interleave(lo - first, count))
        return rows, self.tails[offset]


@torch.no_grad()
def link_prediction_metrics(
    ent: Tensor,
    rel: Tensor,
    triples: Tuple[Tensor, Tensor, Tensor],
    known: Tuple[Tensor, Tensor, Tensor],
    p_norm: float = 1.0,
    batch_size: int = 256,
    _filter: Optional[_TailFilter] = None,
) -> Dict[str, float]:
    r"""Filtered tail-prediction metrics of TransE vectors.

    Every triple ``(h, r, t)`` of :obj:`triples` ranks ``t`` among all
    entities by the TransE distance ``||ent[h] + rel[r] - ent[e]||_p``
    (smaller is better), other tails of ``(h, r)`` in :obj:`known` removed
    (filtered setting); ties count half (mean rank of the tied block).

    Args:
        ent (Tensor): Entity vectors ``[N, d]`` as the model scores them
            (already normalised, as :func:`pretrain_transe` returns them).
        rel (Tensor): Relation translations ``[R, d]``.
        triples: ``(head, relation, tail)`` index tensors to rank.
        known: ``(head, relation, tail)`` of every known triple (the filter;
            it may or may not contain :obj:`triples`).
        p_norm (float): Norm of the distance. (default: :obj:`1.0`)
        batch_size (int): Queries scored at once. (default: :obj:`256`)

    Returns:
        ``{'mrr', 'hits@1', 'hits@10', 'mean_rank', 'num_triples'}``.
    """
    h, r, t = (x.long().cpu() for x in triples)
    n = h.numel()
    if n == 0:
        raise ValueError('No triples to rank')
    ent = ent.detach().float().cpu()
    rel = rel.detach().float().cpu()
    filt = _filter if _filter is not None else _TailFilter(
        *known, R=rel.size(0))
    ranks = []
    for s in range(0, n, batch_size):
        hb, rb, tb = h[s:s + batch_size], r[s:s + batch_size], \
            t[s:s + batch_size]
        dist = torch.cdist(ent[hb] + rel[rb], ent, p=p_norm)
        target = dist.gather(1, tb.view(-1, 1))
        rows, cols = filt.pairs(hb, rb)
        dist[rows, cols] = float('inf')
        dist[torch.arange(hb.numel()), tb] = float('inf')
        better = (dist < target).sum(1)
        ties = (dist == target).sum(1)
        ranks.append(1.0 + better + 0.5 * ties)
    rank = torch.cat(ranks).double()
    return {'mrr': float((1.0 / rank).mean()),
            'hits@1': float((rank <= 1).double().mean()),
            'hits@10': float((rank <= 10).double().mean()),
            'mean_rank': float(rank.mean()), 'num_triples': int(n)}


def pretrain_transe(
    data: HeteroData,
    dim: int = 100,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    margin: float = 1.0,
    p_norm: float = 1.0,
    seed: int = 0,
    device: Union[str, torch.device] = 'cpu',
    progress: bool = True,
    num_threads: Optional[int] = 1,
    holdout: float = DEFAULT_HOLDOUT,
    max_holdout: int = DEFAULT_MAX_HOLDOUT,
    holdout_seed: int = 0,
    eval_every: int = DEFAULT_EVAL_EVERY,
    patience: Optional[int] = DEFAULT_PATIENCE,
    restore_best: bool = True,
    return_history: bool = False,
) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Dict[str, Any]]]:
    r"""Trains :class:`~torch_geometric.nn.kge.TransE` on the background
    graph (``bg_edge_index`` / ``bg_edge_type``, forward edges only).

    PyG's model and loss (margin ranking, one corrupted head or tail per
    triple from :meth:`~torch_geometric.nn.kge.KGEModel.random_sample`), with
    two speed-ups that compute the same thing: the ``p=1`` score by
    elementwise ops, and sparse embedding gradients with a lazy (row-wise)
    Adam, so a step costs the same whatever the number of entities. The
    global RNG state is left untouched; equal arguments on the same device
    give equal vectors.

    With ``holdout > 0`` a seeded slice of the background
    (:func:`split_holdout`) is left out of training and its filtered
    tail-prediction metrics (:func:`link_prediction_metrics`, filtered by
    the whole background graph, all entities ranked) are measured every
    :obj:`eval_every` epochs and after the last one; training stops early
    after :obj:`patience` evaluations in a row without a better held-out MRR,
    and the vectors of the best evaluation are returned
    (:obj:`restore_best`). Evaluation draws no random numbers, so the best
    epoch's vectors equal those of a run of exactly that many epochs.

    Args:
        data (HeteroData): A few-shot KG (schema of
            :mod:`pyg_fewshot.data.hetero`).
        dim (int): Embedding size. (default: :obj:`100`)
        epochs (int): Passes over the (training) background triples; with
            early stopping, the most. (default: :obj:`DEFAULT_EPOCHS`)
        lr (float): Adam learning rate. (default: :obj:`DEFAULT_LR`)
        batch_size (int): Triples per step.
            (default: :obj:`DEFAULT_BATCH_SIZE`)
        margin (float): Margin of the ranking loss. (default: :obj:`1.0`)
        p_norm (float): Norm of the TransE distance. (default: :obj:`1.0`)
        seed (int): Random seed of the initialisation and the batches.
            (default: :obj:`0`)
        device (str or torch.device): Where to train. (default: ``'cpu'``)
        progress (bool): Show a :mod:`tqdm` progress bar per epoch.
        num_threads (int, optional): CPU threads while training (restored
            afterwards). The ops are small, so one thread is as fast as two
            on an idle machine and much faster on a busy one; :obj:`None`
            keeps torch's setting. (default: :obj:`1`)
        holdout (float): Fraction of the background triples held out for
            evaluation; ``0`` trains on all of them and evaluates nothing.
            (default: :obj:`DEFAULT_HOLDOUT`)
        max_holdout (int): Cap on the held-out triples.
            (default: :obj:`DEFAULT_MAX_HOLDOUT`)
        holdout_seed (int): Seed of the held-out slice, separate from
            :obj:`seed` so that runs with different seeds are measured on the
            same slice. (default: :obj:`0`)
        eval_every (int): Epochs between held-out evaluations.
            (default: :obj:`DEFAULT_EVAL_EVERY`)
        patience (int, optional): Stop after this many evaluations without
            a better held-out MRR; :obj:`None` runs all :obj:`epochs`.
            (default: :obj:`DEFAULT_PATIENCE`)
        restore_best (bool): Return the vectors of the best held-out
            evaluation rather than the last epoch's. (default: :obj:`True`)
        return_history (bool): Also return the training record: ``curve``
            (one entry per epoch: ``epoch``, ``loss``, and on evaluated
            epochs ``mrr``, ``hits@1``, ``hits@10``), ``best_epoch``,
            ``best_mrr``, ``epochs_run``, ``stopped_early``, triple counts and
            seconds. (default: :obj:`False`)

    Returns:
        ``(ent_emb [N, dim], rel_emb [R, dim])`` on the CPU: entity vectors
        normalised as the model scores them (``p_norm``-unit rows) and the
        relation translations, relation ``r`` being ``data.relation_names[r]``;
        and the record when :obj:`return_history`.
    """
    from tqdm.auto import tqdm

    if epochs < 0 or batch_size < 1 or dim < 1:
        raise ValueError("'epochs' must be >= 0, 'batch_size' and 'dim' >= 1")
    if eval_every < 1:
        raise ValueError(f"'eval_every' must be >= 1 (got {eval_every})")
    if patience is not None and patience < 1:
        raise ValueError(f"'patience' must be >= 1 or None (got {patience})")
    N = int(data[ENTITY].num_nodes)
    R = len(data.relation_names)
    all_head = data.bg_edge_index[0]
    all_tail = data.bg_edge_index[1]
    all_rel = data.bg_edge_type
    if all_rel.numel() == 0 or R == 0:
        raise ValueError('The background graph has no triples to train on')
    train_idx, held_idx = split_holdout(data, holdout, max_holdout,
                                        holdout_seed)
    if holdout > 0 and max_holdout > 0 and held_idx.numel() == 0:
        warnings.warn('No background triple can be held out without leaving '
                      'an entity or relation untrained; training all '
                      f'{epochs} epochs without evaluation')
    if held_idx.numel() > 0:
        head, rel, tail = (all_head[train_idx], all_rel[train_idx],
                           all_tail[train_idx])
        held = (all_head[held_idx], all_rel[held_idx], all_tail[held_idx])
        filt = _TailFilter(all_head, all_rel, all_tail, R)
    else:
        head, rel, tail = all_head, all_rel, all_tail
        held = filt = None
    E = head.numel()
    device = torch.device(device)
    fork_devices = ([device.index or 0] if device.type == 'cuda' else [])
    threads = torch.get_num_threads()
    if num_threads is not None and device.type == 'cpu':
        torch.set_num_threads(int(num_threads))
    curve: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {'epoch': 0, 'mrr': None, 'state': None}
    stopped_early = False
    train_s = eval_s = 0.0
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            model = _transe_class()(N, R, dim, margin=margin, p_norm=p_norm,
                                    sparse=True).to(device)
            # eps after the bias correction: the update every cached
            # vector (and the NELL-One results) was made with.
            params = list(model.parameters())
            opt = LazySparseAdam(params, lr=lr, eps_mode='adam')
            head, rel, tail = (head.to(device), rel.to(device),
                               tail.to(device))
            bar = tqdm(total=epochs, desc='TransE', unit='epoch',
                       disable=not progress)
            bad = 0
            if held is not None and epochs == 0:  # the initial vectors
                t0 = time.perf_counter()
                ent, rel_emb = _vectors(model, p_norm)
                res = link_prediction_metrics(ent, rel_emb, held, (), p_norm,
                                              _filter=filt)
                eval_s += time.perf_counter() - t0
                curve.append({'epoch': 0, 'loss': None, **{
                    k: res[k] for k in ('mrr', 'hits@1', 'hits@10')}})
                best = {'epoch': 0, 'mrr': res['mrr'],
                        'state': (ent, rel_emb)}
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                perm = torch.randperm(E, device=device)
                total = torch.zeros((), device=device)
                for start in range(0, E, batch_size):
                    idx = perm[start:start + batch_size]
                    opt.zero_grad()
                    loss = model.loss(head[idx], rel[idx], tail[idx])
                    loss.backward()
                    # coalesce() sums duplicate rows in the order every
                    # cached vector was made with, and in a fixed order on
                    # every device (the optimiser's sort-free path adds them
                    # with index_add_, atomics on CUDA).
                    for p in params:
                        p.grad = p.grad.coalesce()
                    opt.step()
                    total += loss.detach() * idx.numel()
                record: Dict[str, Any] = {'epoch': epoch,
                                          'loss': float(total) / E}
                train_s += time.perf_counter() - t0
                postfix = {'loss': f"{record['loss']:.4f}"}
                if held is not None and (epoch % eval_every == 0
                                         or epoch == epochs):
                    t0 = time.perf_counter()
                    ent, rel_emb = _vectors(model, p_norm)
                    res = link_prediction_metrics(ent, rel_emb, held, (),
                                                  p_norm, _filter=filt)
                    eval_s += time.perf_counter() - t0
                    record.update({k: res[k]
                                   for k in ('mrr', 'hits@1', 'hits@10')})
                    postfix['mrr'] = f"{res['mrr']:.4f}"
                    logger.info('TransE epoch %d: loss %.4f, held-out MRR '
                                '%.4f', epoch, record['loss'], res['mrr'])
                    if best['mrr'] is None or res['mrr'] > best['mrr']:
                        best = {'epoch': epoch, 'mrr': res['mrr'],
                                'state': (ent, rel_emb)}
                        bad = 0
                    else:
                        bad += 1
                curve.append(record)
                bar.update(1)
                bar.set_postfix(postfix)
                if patience is not None and bad >= patience:
                    stopped_early = True
                    break
            bar.close()
    finally:
        torch.set_num_threads(threads)
    if best['state'] is not None and restore_best:
        ent, rel_emb = best['state']
        kept = best['epoch']
    else:
        ent, rel_emb = _vectors(model, p_norm)
        kept = curve[-1]['epoch'] if curve else 0
    if not return_history:
        return ent, rel_emb
    history = {
        'curve': curve,
        'best_epoch': best['epoch'] if held is not None else None,
        'best_mrr': best['mrr'], 'kept_epoch': kept,
        'epochs_run': curve[-1]['epoch'] if curve else 0,
        'stopped_early': stopped_early,
        'num_train_triples': int(E),
        'num_holdout_triples': int(held_idx.numel()),
        'train_seconds': round(train_s, 2), 'eval_seconds': round(eval_s, 2),
    }
    return ent, rel_emb, history


@torch.no_grad()
def _vectors(model, p_norm: float) -> Tuple[Tensor, Tensor]:
    ent = F.normalize(model.node_emb.weight, p=p_norm, dim=-1)
    return ent.cpu().clone(), model.rel_emb.weight.detach().cpu().clone()


def graph_fingerprint(data: HeteroData) -> str:
    r"""A digest of the background graph (entity count, relation names,
    edges), part of the pretraining cache key."""
    h = hashlib.sha256()
    h.update(str(int(data[ENTITY].num_nodes)).encode())
    h.update(json.dumps(list(data.relation_names)).encode())
    for t in (data.bg_edge_index, data.bg_edge_type):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pretrain_params(dim: int = 100, epochs: int = DEFAULT_EPOCHS,
                    lr: float = DEFAULT_LR,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    margin: float = 1.0, p_norm: float = 1.0,
                    seed: int = 0, holdout: float = DEFAULT_HOLDOUT,
                    max_holdout: int = DEFAULT_MAX_HOLDOUT,
                    holdout_seed: int = 0,
                    eval_every: int = DEFAULT_EVAL_EVERY,
                    patience: Optional[int] = DEFAULT_PATIENCE,
                    restore_best: bool = True) -> Dict[str, Any]:
    r"""The hyper-parameters that key the cache: every argument of
    :func:`pretrain_transe` that changes the vectors. Without a held-out
    slice the evaluation settings change nothing and are keyed as
    :obj:`None`, so the cache of a plain run does not depend on them."""
    held = float(holdout) > 0 and int(max_holdout) > 0
    return {
        'model': 'TransE', 'optimizer': 'lazy-adam',
        'version': PRETRAIN_VERSION, 'dim': int(dim), 'epochs': int(epochs),
        'lr': float(lr), 'batch_size': int(batch_size),
        'margin': float(margin), 'p_norm': float(p_norm), 'seed': int(seed),
        'holdout': float(holdout) if held else 0.0,
        'max_holdout': int(max_holdout) if held else None,
        'holdout_seed': int(holdout_seed) if held else None,
        'eval_every': int(eval_every) if held else None,
        'patience': (None if patience is None or not held
                     else int(patience)),
        'restore_best': bool(restore_best) if held else None,
    }


def cache_paths(data: HeteroData, cache_dir: str,
                **settings: Any) -> Tuple[str, str]:
    r"""The cache files of :func:`load_or_pretrain` for these settings
    (keyword arguments of :func:`pretrain_params`): the vectors
    ``transe-<key>.pt`` and the training record ``transe-<key>.json``."""
    params = pretrain_params(**settings)
    key = _cache_key(params, graph_fingerprint(data))
    base = osp.join(cache_dir, f'transe-{key}')
    return base + '.pt', base + '.json'


def _cache_key(params: Dict[str, Any], fp: str) -> str:
    return hashlib.sha256(
        json.dumps([params, fp], sort_keys=True).encode()).hexdigest()[:16]


def load_or_pretrain(
    data: Any,
    cache_dir: Optional[str] = None,
    dim: int = 100,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    margin: float = 1.0,
    p_norm: float = 1.0,
    seed: int = 0,
    device: Union[str, torch.device] = 'cpu',
    progress: bool = True,
    num_threads: Optional[int] = 1,
    force: bool = False,
    holdout: float = DEFAULT_HOLDOUT,
    max_holdout: int = DEFAULT_MAX_HOLDOUT,
    holdout_seed: int = 0,
    eval_every: int = DEFAULT_EVAL_EVERY,
    patience: Optional[int] = DEFAULT_PATIENCE,
    restore_best: bool = True,
    return_history: bool = False,
) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Dict[str, Any]]]:
    r""":func:`pretrain_transe` with a cache in :obj:`cache_dir`.

    :obj:`data` is a few-shot :class:`~torch_geometric.data.HeteroData` or a
    :class:`~pyg_fewshot.data.FewShotKGDataset`, whose processed folder is
    then the default :obj:`cache_dir`.

    The file ``transe-<key>.pt`` is keyed by every hyper-parameter
    (:func:`pretrain_params`, the held-out and early-stopping settings
    included) and by :func:`graph_fingerprint`; it is written atomically and
    reused while both match (the device, threads and progress bar are not
    part of the key). The training record (:func:`pretrain_transe`'s
    history, with the settings) is stored in it and, for reading, in
    ``transe-<key>.json`` beside it; :obj:`return_history` returns it as a
    third element. An unreadable cache file is trained again and replaced.
    """
    if not isinstance(data, HeteroData):  # a dataset
        if cache_dir is None:
            cache_dir = data.processed_dir
        data = data.data
    if cache_dir is None:
        raise ValueError("'cache_dir' is required when 'data' is a "
                         "HeteroData")
    settings = dict(dim=dim, epochs=epochs, lr=lr, batch_size=batch_size,
                    margin=margin, p_norm=p_norm, seed=seed, holdout=holdout,
                    max_holdout=max_holdout, holdout_seed=holdout_seed,
                    eval_every=eval_every, patience=patience,
                    restore_best=restore_best)
    params = pretrain_params(**settings)
    fp = graph_fingerprint(data)
    path, json_path = cache_paths(data, cache_dir, **settings)
    if osp.isfile(path) and not force:
        try:
            obj = torch.load(path, weights_only=True)
            if obj.get('params') == params and obj.get('graph') == fp:
                logger.info('Loaded cached TransE vectors from %s', path)
                if return_history:
                    return obj['ent_emb'], obj['rel_emb'], obj['history']
                return obj['ent_emb'], obj['rel_emb']
            warnings.warn(f"{path}: cache key collision; training again")
        except Exception as e:  # a corrupt cache is rebuilt, not fatal
            warnings.warn(f"{path}: unreadable cache ({e}); training again")
    ent, rel, history = pretrain_transe(
        data, device=device, progress=progress, num_threads=num_threads,
        return_history=True, **settings)
    history = dict(history, params=params, graph=fp)
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write_json(history, json_path)
    atomic_torch_save({'ent_emb': ent, 'rel_emb': rel, 'params': params,
                       'graph': fp, 'history': history}, path)
    if return_history:
        return ent, rel, history
    return ent, rel
