r"""Neighbour aggregation: AttentiveNeighborAggregator (flat edge list)
against the padded [B, 50, d] layout of the published code family.

Setting: an entity table of 68,544 rows (NELL-One's size), 582 relations
(291 background relations and their inverses), d = 100, and B = 10,000
distinct entities to enrich, each with up to 50 neighbours (the cap). The
degrees are drawn from a skewed distribution like NELL-One's (default: a
discretised log-normal with median 2, ~1% of entities above 50 and a mean
degree of ~4.1 after the cap, matched to NELL-One's background graph whose
values are 2, 1.05% and 3.83; ``--graph PATH`` samples the degrees of a
real ``path_graph`` file instead), or, with ``--degrees full``, every
entity has 50 or more neighbours (the padded layout's best case).

Methods, all with the same parameters (outputs are checked to agree):

* ``ours, CSR forward``: :meth:`AttentiveNeighborAggregator.forward` in
  evaluation mode (first 50 neighbours), including the CSR gather;
* ``ours, CSR forward, sampled``: the same in training mode (random 50);
* ``ours, forward_edges``: the aggregation alone on a pre-gathered edge list
  (distinct neighbour entities and their inverse index precomputed), with
  one message per edge and gather / multiply / scatter for the weighted sum
  (the layer's path without ``pair_index`` and ``ptr``);
* ``ours, forward_edges, pairs + segment sum``: the same edge list with one
  message per distinct (relation, neighbour) pair (``pair_index``, through
  the hand-written ReLU-message function) and the weighted sum as one
  weighted ``embedding_bag`` over the sorted edges (``ptr``), the path
  :class:`~pyg_fewshot.models.MoEMeta` takes in training;
* ``padded``: a precomputed ``[num_entities, 50, 2]`` neighbour table and
  degree mask (as the published code builds at load time), gathered to
  ``[B, 50, 2d]``, with a masked softmax over the 50 slots.

Time is the median of interleaved repeats (wall clock, or process CPU time
with ``--timer cpu``); peak memory is the largest total size of tensors
allocated during one call and alive at the same time (forward+backward:
including the gradients of the embedding tables), tracked with a
``TorchDispatchMode``.

On a machine shared with other jobs, run with ``OMP_WAIT_POLICY=passive``
(or ``--threads 1 --timer cpu``): OpenMP threads that spin while their
partner thread is descheduled make multi-threaded timings meaningless
there (docs/benchmarks_layers.md).
"""
import argparse
import datetime
import math
import os
import platform
import sys
import time
import weakref
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from _common import add_timing_args, write_output
from _common import interleaved_medians as _interleaved

# Set by --timer: wall-clock time, or the process's CPU time, which a
# single-threaded run (--threads 1) keeps meaningful on a loaded machine.
CLOCK: Callable[[], float] = time.perf_counter
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch_geometric.index import index2ptr

from pyg_fewshot.nn import AttentiveNeighborAggregator
from pyg_fewshot.ops import csr_gather, unique_pairs

CAP = 50


class PeakMemory(TorchDispatchMode):
    r"""Tracks the bytes of tensor storages created inside the context and
    still alive, and their peak."""
    def __init__(self) -> None:
        super().__init__()
        self.live: Dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int, nbytes: int) -> None:
        if self.live.pop(key, None) is not None:
            self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            if t.layout != torch.strided:
                # A sparse tensor wraps index and value tensors, which are
                # counted when they are allocated.
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self.live:
                continue
            self.live[key] = nbytes
            self.current += nbytes
            weakref.finalize(storage, self._free, key, nbytes)
            self.peak = max(self.peak, self.current)
        return out


def degrees_lognormal(n: int, rng: np.random.Generator) -> np.ndarray:
    # Matched to NELL-One's background graph (inverse edges included:
    # median 2, 90th percentile 7, 1.05% of entities above 50, mean degree
    # after the cap 3.83); this gives median 2, 90th percentile 9, ~0.9%
    # above 50 and a capped mean of ~4.1.
    return np.maximum(1, np.ceil(rng.lognormal(math.log(2.0) - 0.6, 1.6,
                                               n))).astype(np.int64)


def degrees_from_graph(path: str, n: int,
                       rng: np.random.Generator) -> np.ndarray:
    counts: Dict[str, int] = {}
    with open(path) as f:
        for line in f:
            h, _, t = line.rstrip('\n').split('\t')
            counts[h] = counts.get(h, 0) + 1
            counts[t] = counts.get(t, 0) + 1
    deg = np.fromiter(counts.values(), dtype=np.int64)
    return rng.choice(deg, size=n, replace=False)


def build_csr(deg: np.ndarray, index: np.ndarray, num_ent: int,
              num_rel: int, rng: np.random.Generator):
    full_deg = np.zeros(num_ent, dtype=np.int64)
    full_deg[index] = deg
    rowptr = np.zeros(num_ent + 1, dtype=np.int64)
    rowptr[1:] = np.cumsum(full_deg)
    E = int(rowptr[-1])
    col_ent = rng.integers(0, num_ent, E)
    col_rel = rng.integers(0, num_rel, E)
    return (torch.from_numpy(rowptr), torch.from_numpy(col_ent),
            torch.from_numpy(col_rel))


def build_padded(rowptr: torch.Tensor, col_ent: torch.Tensor,
                 col_rel: torch.Tensor, pad_rel: int, pad_ent: int):
    r"""The published layout: a [num_entities, 50, 2] table of the first 50
    (relation, entity) pairs of each entity, padded, plus its degree."""
    num_ent = rowptr.numel() - 1
    deg = (rowptr[1:] - rowptr[:-1]).clamp(max=CAP)
    table = torch.empty(num_ent, CAP, 2, dtype=torch.long)
    table[..., 0] = pad_rel
    table[..., 1] = pad_ent
    row = torch.repeat_interleave(torch.arange(num_ent), deg)
    local = torch.arange(row.numel()) - (deg.cumsum(0) - deg)[row]
    pos = rowptr[row] + local
    table[row, local, 0] = col_rel[pos]
    table[row, local, 1] = col_ent[pos]
    return table, deg


def padded_forward(agg: AttentiveNeighborAggregator, x_ent, x_rel, table,
                   deg, index):
    # Embedding lookups as in the published code (nn.Embedding).
    nb = table[index]  # [B, 50, 2]
    mask = torch.arange(CAP) < deg[index].unsqueeze(-1)
    c = torch.cat([F.embedding(nb[..., 0], x_rel),
                   F.embedding(nb[..., 1], x_ent)], dim=-1)
    W = torch.cat([agg.lin_rel.weight, agg.lin_ent.weight], dim=1)
    c = agg.act(F.linear(c, W, agg.lin_ent.bias))  # [B, 50, hidden]
    score = (c @ agg.att).masked_fill(~mask, -1e9)
    alpha = torch.softmax(score, dim=-1) * mask  # empty rows -> 0
    alpha = alpha * torch.sigmoid(c @ agg.beta)
    return F.embedding(index, x_ent) + (alpha.unsqueeze(-1) * c).sum(dim=1)


def _timer_name() -> str:
    return 'wall-clock' if CLOCK is time.perf_counter else 'process CPU time'


def interleaved_medians(calls: Dict[str, Callable[[], None]],
                        rounds: int) -> Dict[str, float]:
    return _interleaved(calls, rounds, CLOCK)


def run_case(label: str, deg: np.ndarray, args, rng) -> List[str]:
    num_ent, num_rel, d, B = 68_544, 582, 100, deg.size
    torch.manual_seed(args.seed)
    index_np = rng.choice(num_ent, size=B, replace=False)
    rowptr, col_ent, col_rel = build_csr(deg, index_np, num_ent, num_rel,
                                         rng)
    index = torch.from_numpy(index_np)
    # Padding ids point at an extra zero row of each table.
    table, pdeg = build_padded(rowptr, col_ent, col_rel, num_rel, num_ent)

    agg = AttentiveNeighborAggregator(d, max_neighbors=CAP)
    x_ent = torch.randn(num_ent + 1, d).requires_grad_()
    x_rel = torch.randn(num_rel + 1, d).requires_grad_()

    # Pre-gathered edge list with its distinct neighbour entities, as a
    # data loader could hand it over.
    pos, batch = csr_gather(rowptr, index, CAP)
    e_rel = col_rel[pos]
    uniq, e_ent = torch.unique(col_ent[pos], return_inverse=True)
    pair_rel, pair_ent, pair_index = unique_pairs(col_rel[pos], col_ent[pos],
                                                  num_ent)
    p_uniq, p_ent = torch.unique(pair_ent, return_inverse=True)
    ptr = index2ptr(batch, B)

    def ours_csr():
        agg.eval()
        return agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)

    def ours_sampled():
        agg.train()
        return agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)

    def ours_edges():
        agg.eval()
        return agg.forward_edges(x_ent[index], x_rel, x_ent[uniq], batch, B,
                                 rel_index=e_rel, ent_index=e_ent)

    def ours_pairs():
        agg.eval()
        return agg.forward_edges(x_ent[index], x_rel, x_ent[p_uniq], batch, B,
                                 rel_index=pair_rel, ent_index=p_ent,
                                 pair_index=pair_index, ptr=ptr)

    def padded():
        return padded_forward(agg, x_ent, x_rel, table, pdeg, index)

    methods = {
        'ours, CSR forward': ours_csr,
        'ours, CSR forward, sampled': ours_sampled,
        'ours, forward_edges': ours_edges,
        'ours, forward_edges, pairs + segment sum': ours_pairs,
        'padded [B, 50, d]': padded,
    }
    with torch.no_grad():
        ref = padded()
        err = max(float((ours_csr() - ref).abs().max()),
                  float((ours_edges() - ref).abs().max()),
                  float((ours_pairs() - ref).abs().max()))

    kept = int(pdeg[index].sum())
    waste = 1.0 - kept / (B * CAP)
    lines = [
        f'**{label}**: B = {B:,} entities, {kept:,} neighbour slots used '
        f'of {B * CAP:,} padded ({100 * waste:.1f}% of the padded layout '
        f'is padding; mean capped degree {kept / B:.2f}, max degree '
        f'{int(deg.max()):,}). Max abs difference ours vs padded: '
        f'{err:.1e}.',
        '',
        '| pass | method | time (ms) | peak memory (MB) | time / ours | '
        'memory / ours |',
        '|---|---|---:|---:|---:|---:|',
    ]
    for mode in ('forward', 'forward+backward'):
        calls = {}
        for name, fn in methods.items():
            if mode == 'forward':
                def call(fn=fn):
                    with torch.no_grad():
                        fn()
            else:
                def call(fn=fn):
                    agg.zero_grad(set_to_none=True)
                    x_ent.grad = x_rel.grad = None
                    out = fn()
                    out.backward(torch.ones_like(out))
            calls[name] = call
        med = interleaved_medians(calls, args.repeats)
        peak = {}
        for name, call in calls.items():
            with PeakMemory() as tracker:
                call()
            peak[name] = tracker.peak / 2**20
        base = 'ours, CSR forward'
        for name in methods:
            print(f'  {label[:20]:20s} {mode:16s} {name:28s} '
                  f'{med[name] * 1e3:8.1f} ms {peak[name]:8.1f} MB',
                  file=sys.stderr)
            lines.append(
                f'| {mode} | {name} | {med[name] * 1e3:.1f} | '
                f'{peak[name]:.1f} | {med[name] / med[base]:.2f}x | '
                f'{peak[name] / peak[base]:.2f}x |')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--num-entities', type=int, default=10_000,
                        help='entities to enrich (B)')
    parser.add_argument('--degrees', choices=['skewed', 'full', 'both'],
                        default='both')
    parser.add_argument('--graph', type=str, default=None,
                        help='sample the skewed degrees from this '
                        'path_graph file instead of the log-normal fit')
    parser.add_argument('--repeats', type=int, default=5)
    add_timing_args(parser)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true',
                        help='B = 2,000 and 3 repeats')
    parser.add_argument('--output', type=str, default=None)
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.timer == 'wall' else time.process_time
    if args.quick:
        args.num_entities, args.repeats = 2_000, 3
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    B = args.num_entities
    out: List[str] = []
    if args.degrees in ('skewed', 'both'):
        if args.graph:
            deg = degrees_from_graph(args.graph, B, rng)
            label = f'Skewed degrees sampled from {args.graph}'
        else:
            deg = degrees_lognormal(B, rng)
            label = 'Skewed degrees (log-normal fit to NELL-One)'
        out += run_case(label, deg, args, rng) + ['']
    if args.degrees in ('full', 'both'):
        deg = rng.integers(CAP, 2 * CAP, B)
        out += run_case('Full degrees (every entity has >= 50 neighbours)',
                        deg, args, rng) + ['']
    header = (
        f'Neighbour aggregation, d = 100, cap 50, entity table 68,544 x 100, '
        f'582 relations; {_timer_name()} median of {args.repeats} interleaved '
        f'repeats (order rotated) after a warm-up; ratios are method / `ours, CSR forward` '
        f'in the same run.\n'
        f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
        f'{platform.processor() or platform.machine()}, 1-min load average '
        f'before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}, '
        f'{datetime.date.today().isoformat()}.\n')
    table = header + '\n' + '\n'.join(out)
    write_output(table, args.output)


if __name__ == '__main__':
    main()
