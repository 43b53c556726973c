r"""The "pretrained background" setting: TransE vectors of the background
graph, trained with :class:`torch_geometric.nn.kge.TransE` and cached.

The published MetaR / MoEMeta "Pre-Train" setting starts from TransE entity
vectors of the background graph (``ent2vec.txt`` in the original releases);
NELL-One as distributed here has none, so :func:`pretrain_transe` computes
them and :func:`load_or_pretrain` caches them next to the processed data.
"""
import hashlib
import json
import logging
import os
import os.path as osp
import warnings
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from .._io import atomic_torch_save
from .hetero import ENTITY

logger = logging.getLogger(__name__)

#: Defaults chosen on NELL-One (181 K triples, 68 K entities): held-out
#: filtered MRR of background link prediction peaks around 20-30 epochs at
#: lr 0.01 (later epochs overfit), and 20 epochs train in well under two
#: minutes on 2 CPU cores (see docs/benchmarks_data.md).
DEFAULT_EPOCHS = 20
DEFAULT_LR = 0.01
DEFAULT_BATCH_SIZE = 2048

#: Bumped when the training procedure changes (invalidates caches).
PRETRAIN_VERSION = 1


class _RowAdam:
    r"""Lazy Adam on sparse (row) gradients: the moments and values of only
    the rows in the batch are updated, as :class:`torch.optim.SparseAdam`
    does, but with dense row gathers/scatters instead of sparse-tensor
    arithmetic (about 10x faster on CPU for embedding tables)."""
    def __init__(self, params, lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.state = [(torch.zeros_like(p), torch.zeros_like(p))
                      for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        for p, (m, v) in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = p.grad.coalesce()
            idx, val = g.indices()[0], g.values()
            m_rows = m.index_select(0, idx).mul_(b1).add_(val, alpha=1 - b1)
            v_rows = v.index_select(0, idx).mul_(b2).addcmul_(
                val, val, value=1 - b2)
            m.index_copy_(0, idx, m_rows)
            v.index_copy_(0, idx, v_rows)
            denom = v_rows.div_(c2).sqrt_().add_(self.eps)
            p.index_add_(0, idx, m_rows.div_(denom), alpha=-self.lr / c1)


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
) -> Tuple[Tensor, Tensor]:
    r"""Trains :class:`~torch_geometric.nn.kge.TransE` on the background
    graph (``bg_edge_index`` / ``bg_edge_type``, forward edges only).

    PyG's model and loss (margin ranking, one corrupted head or tail per
    triple from :meth:`~torch_geometric.nn.kge.KGEModel.random_sample`), with
    two speed-ups that compute the same thing: the ``p=1`` score by
    elementwise ops, and sparse embedding gradients with a lazy (row-wise)
    Adam, so a step costs the same whatever the number of entities. The
    global RNG state is left untouched; equal arguments on the same device
    give equal vectors.

    Args:
        data (HeteroData): A few-shot KG (schema of
            :mod:`pyg_fewshot.data.hetero`).
        dim (int): Embedding size. (default: :obj:`100`)
        epochs (int): Passes over the background triples.
            (default: :obj:`DEFAULT_EPOCHS`)
        lr (float): Adam learning rate. (default: :obj:`DEFAULT_LR`)
        batch_size (int): Triples per step.
            (default: :obj:`DEFAULT_BATCH_SIZE`)
        margin (float): Margin of the ranking loss. (default: :obj:`1.0`)
        p_norm (float): Norm of the TransE distance. (default: :obj:`1.0`)
        seed (int): Random seed. (default: :obj:`0`)
        device (str or torch.device): Where to train. (default: ``'cpu'``)
        progress (bool): Show a :mod:`tqdm` progress bar per epoch.
        num_threads (int, optional): CPU threads while training (restored
            afterwards). The ops are small, so one thread is as fast as two
            on an idle machine and much faster on a busy one; :obj:`None`
            keeps torch's setting. (default: :obj:`1`)

    Returns:
        ``(ent_emb [N, dim], rel_emb [R, dim])`` on the CPU: entity vectors
        normalised as the model scores them (``p_norm``-unit rows) and the
        relation translations, relation ``r`` being ``data.relation_names[r]``.
    """
    from tqdm.auto import tqdm

    if epochs < 0 or batch_size < 1 or dim < 1:
        raise ValueError("'epochs' must be >= 0, 'batch_size' and 'dim' >= 1")
    N = int(data[ENTITY].num_nodes)
    R = len(data.relation_names)
    head = data.bg_edge_index[0]
    tail = data.bg_edge_index[1]
    rel = data.bg_edge_type
    E = head.numel()
    if E == 0 or R == 0:
        raise ValueError('The background graph has no triples to train on')
    device = torch.device(device)
    fork_devices = ([device.index or 0] if device.type == 'cuda' else [])
    threads = torch.get_num_threads()
    if num_threads is not None and device.type == 'cpu':
        torch.set_num_threads(int(num_threads))
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            model = _transe_class()(N, R, dim, margin=margin, p_norm=p_norm,
                                    sparse=True).to(device)
            opt = _RowAdam(model.parameters(), lr=lr)
            head, rel, tail = (head.to(device), rel.to(device),
                               tail.to(device))
            bar = tqdm(range(epochs), desc='TransE', unit='epoch',
                       disable=not progress)
            for _ in bar:
                perm = torch.randperm(E, device=device)
                total = torch.zeros((), device=device)
                for start in range(0, E, batch_size):
                    idx = perm[start:start + batch_size]
                    opt.zero_grad()
                    loss = model.loss(head[idx], rel[idx], tail[idx])
                    loss.backward()
                    opt.step()
                    total += loss.detach() * idx.numel()
                bar.set_postfix(loss=f'{float(total) / E:.4f}')
            bar.close()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        ent = F.normalize(model.node_emb.weight, p=p_norm, dim=-1)
        rel_emb = model.rel_emb.weight.clone()
    return ent.cpu(), rel_emb.cpu()


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
                    seed: int = 0) -> Dict[str, Any]:
    r"""The hyper-parameters that key the cache."""
    return {
        'model': 'TransE', 'optimizer': 'lazy-adam', 'version': PRETRAIN_VERSION, 'dim': int(dim),
        'epochs': int(epochs), 'lr': float(lr), 'batch_size': int(batch_size),
        'margin': float(margin), 'p_norm': float(p_norm), 'seed': int(seed)
    }


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
) -> Tuple[Tensor, Tensor]:
    r""":func:`pretrain_transe` with a cache in :obj:`cache_dir`.

    :obj:`data` is a few-shot :class:`~torch_geometric.data.HeteroData` or a
    :class:`~pyg_fewshot.data.FewShotKGDataset`, whose processed folder is
    then the default :obj:`cache_dir`.

    The file ``transe-<key>.pt`` is keyed by every hyper-parameter and by
    :func:`graph_fingerprint`; it is written atomically and reused while
    both match (the device is not part of the key). An unreadable cache file
    is trained again and replaced.
    """
    if not isinstance(data, HeteroData):  # a dataset
        if cache_dir is None:
            cache_dir = data.processed_dir
        data = data.data
    if cache_dir is None:
        raise ValueError("'cache_dir' is required when 'data' is a "
                         "HeteroData")
    params = pretrain_params(dim, epochs, lr, batch_size, margin, p_norm,
                             seed)
    fp = graph_fingerprint(data)
    key = hashlib.sha256(
        json.dumps([params, fp], sort_keys=True).encode()).hexdigest()[:16]
    path = osp.join(cache_dir, f'transe-{key}.pt')
    if osp.isfile(path) and not force:
        try:
            obj = torch.load(path, weights_only=True)
            if obj.get('params') == params and obj.get('graph') == fp:
                logger.info('Loaded cached TransE vectors from %s', path)
                return obj['ent_emb'], obj['rel_emb']
            warnings.warn(f"{path}: cache key collision; training again")
        except Exception as e:  # a corrupt cache is rebuilt, not fatal
            warnings.warn(f"{path}: unreadable cache ({e}); training again")
    ent, rel = pretrain_transe(data, dim=dim, epochs=epochs, lr=lr,
                               batch_size=batch_size, margin=margin,
                               p_norm=p_norm, seed=seed, device=device,
                               progress=progress, num_threads=num_threads)
    os.makedirs(cache_dir, exist_ok=True)
    atomic_torch_save({'ent_emb': ent, 'rel_emb': rel, 'params': params,
                       'graph': fp}, path)
    return ent, rel
