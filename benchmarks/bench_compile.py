r"""torch.compile on each pyg_fewshot.nn layer: graph breaks and speed-up.

For every layer's default path this script counts graph breaks with
``torch._dynamo.explain``, compiles it with Inductor (``fullgraph=True``)
and compares the wall-clock median of forward+backward (and, with
``--forward``, of an inference forward) between eager mode and the compiled
module, at sizes typical of a meta-training step:

* SparseMoERelationMeta: 4,096 support pairs (1,024 tasks x 4 shots),
  M = 32, N = 5, d = 100, hidden 64;
* AttentiveNeighborAggregator.forward_edges: 10,000 entities, ~41,000
  edges (skewed degrees capped at 50), d = 100;
* AttentiveNeighborAggregator.forward (CSR, evaluation mode, edge count
  passed): the same graph from a CSR layout;
* ProjectionAdapter (both forms): 1,024 tasks x 8 pairs, d = 100;
* ModalityFusion + diversity_loss: 2,048 entities, text 768-d and image
  4,096-d features (20% missing images), d = 100.

The compiled time excludes the first call, whose time (compilation
included; Inductor's on-disk cache may make it shorter on a re-run) is
reported separately.

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
from typing import Callable, Dict, List, Optional, Tuple

import torch

from _common import add_timing_args, interleaved_medians, write_output

# Set by --timer: wall-clock time, or the process's CPU time, which a
# single-threaded run (--threads 1) keeps meaningful on a loaded machine.
CLOCK: Callable[[], float] = time.perf_counter

from pyg_fewshot.nn import (
    AttentiveNeighborAggregator,
    ModalityFusion,
    ProjectionAdapter,
    SparseMoERelationMeta,
    diversity_loss,
)
from pyg_fewshot.ops import csr_gather

Case = Tuple[torch.nn.Module, Callable[..., torch.Tensor], tuple]


def make_cases(scale: float) -> Dict[str, Case]:
    torch.manual_seed(0)
    d = 100
    cases: Dict[str, Case] = {}

    P = int(4096 * scale)
    moe = SparseMoERelationMeta(2 * d, d, num_experts=32, top_k=5)
    x = torch.randn(P, 2 * d, requires_grad=True)
    batch = torch.arange(P) // 4
    T = (P + 3) // 4

    def moe_fn(x, batch):
        return moe(x, batch, T)

    cases['SparseMoERelationMeta'] = (moe, moe_fn, (x, batch))

    B = int(10_000 * scale)
    num_ent, num_rel = 68_544, 582
    gen = torch.Generator().manual_seed(0)
    deg = torch.distributions.LogNormal(math.log(2.0) - 0.6, 1.6) \
        .sample((B, )).ceil().clamp(min=1).long()
    index = torch.randperm(num_ent, generator=gen)[:B]
    full_deg = torch.zeros(num_ent, dtype=torch.long)
    full_deg[index] = deg
    rowptr = torch.cat([torch.zeros(1, dtype=torch.long),
                        full_deg.cumsum(0)])
    E = int(rowptr[-1])
    col_ent = torch.randint(0, num_ent, (E, ), generator=gen)
    col_rel = torch.randint(0, num_rel, (E, ), generator=gen)
    pos, ebatch = csr_gather(rowptr, index, 50)
    e_ent, e_rel = col_ent[pos], col_rel[pos]
    x_ent = torch.randn(num_ent, d, requires_grad=True)
    x_rel = torch.randn(num_rel, d, requires_grad=True)
    agg = AttentiveNeighborAggregator(d, max_neighbors=50)

    def agg_edges(x_ent, x_rel, index, ebatch, e_rel, e_ent):
        return agg.forward_edges(x_ent[index], x_rel, x_ent[e_ent], ebatch,
                                 B, rel_index=e_rel)

    cases['AttentiveNeighborAggregator (edges)'] = (
        agg, agg_edges, (x_ent, x_rel, index, ebatch, e_rel, e_ent))

    agg_eval = AttentiveNeighborAggregator(d, max_neighbors=50).eval()
    num_edges = int(pos.numel())

    def agg_csr(x_ent, x_rel, index):
        return agg_eval(x_ent, x_rel, index, rowptr, col_ent, col_rel,
                        num_edges=num_edges)

    cases['AttentiveNeighborAggregator (CSR, eval)'] = (
        agg_eval, agg_csr, (x_ent, x_rel, index))

    nt = int(1024 * scale)
    h = torch.randn(nt, 8, d, requires_grad=True)
    t = torch.randn(nt, 8, d, requires_grad=True)
    r = torch.randn(nt, d, requires_grad=True)
    for mode in ('transd', 'paper'):
        adapter = ProjectionAdapter(d, mode=mode)

        def proj_fn(h, t, r, adapter=adapter):
            h2, t2, r2 = adapter(h, t, r, adapter.init_local(nt))
            return (h2 + r2.unsqueeze(1) - t2).norm(dim=-1)

        cases[f'ProjectionAdapter ({mode})'] = (adapter, proj_fn, (h, t, r))

    N = int(2048 * scale)
    fusion = ModalityFusion({'text': 768, 'image': 4096}, d)
    xs = torch.randn(N, d, requires_grad=True)
    text, image = torch.randn(N, 768), torch.randn(N, 4096)
    mask = torch.rand(N, generator=gen) > 0.2

    def fusion_fn(xs, text, image, mask):
        out, per = fusion(xs, {'text': text, 'image': image},
                          {'image': mask})
        return out + diversity_loss(per, xs, masks={'image': mask})

    cases['ModalityFusion + diversity_loss'] = (fusion, fusion_fn,
                                                (xs, text, image, mask))
    return cases


def _timer_name() -> str:
    return 'wall-clock' if CLOCK is time.perf_counter else 'process CPU time'


def _train_call(module, fn, args) -> Callable[[], None]:
    def call():
        module.zero_grad(set_to_none=True)
        for a in args:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                a.grad = None
        out = fn(*args)
        out.backward(torch.ones_like(out))
    return call


def _infer_call(fn, args) -> Callable[[], None]:
    def call():
        with torch.no_grad():
            fn(*args)
    return call


def _medians(calls: Dict[str, Callable[[], None]],
             rounds: int) -> Dict[str, float]:
    return interleaved_medians(calls, rounds, CLOCK, warmup=False)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--forward', action='store_true',
                        help='also time an inference forward (one more '
                        'compilation per layer)')
    parser.add_argument('--layers', type=str, nargs='*', default=None,
                        help='substrings selecting the layers to run')
    add_timing_args(parser)
    parser.add_argument('--quick', action='store_true',
                        help='quarter-size inputs and 3 repeats')
    parser.add_argument('--output', type=str, default=None)
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.timer == 'wall' else time.process_time
    if args.quick:
        args.repeats = 3
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    cases = make_cases(0.25 if args.quick else 1.0)
    if args.layers:
        cases = {k: v for k, v in cases.items()
                 if any(s in k for s in args.layers)}

    rows = []
    for name, (module, fn, inputs) in cases.items():
        torch._dynamo.reset()
        breaks = torch._dynamo.explain(fn)(*inputs).graph_break_count
        compiled = torch.compile(fn, fullgraph=True)
        passes = [('forward+backward', _train_call(module, fn, inputs),
                   _train_call(module, compiled, inputs))]
        if args.forward:
            passes.append(('forward', _infer_call(fn, inputs),
                           _infer_call(compiled, inputs)))
        for pass_name, eager_call, compiled_call in passes:
            t0 = time.perf_counter()
            compiled_call()  # compiles
            first = time.perf_counter() - t0
            eager_call()  # warm-up
            med = _medians({'eager': eager_call, 'compiled': compiled_call},
                           args.repeats)
            print(f'  {name:42s} {pass_name:16s} eager '
                  f"{med['eager'] * 1e3:8.2f} ms  compiled "
                  f"{med['compiled'] * 1e3:8.2f} ms  first call "
                  f'{first:6.1f} s  graph breaks {breaks}', file=sys.stderr)
            rows.append((name, pass_name, breaks, med['eager'],
                         med['compiled'], first))

    lines = [
        f'torch.compile (Inductor, fullgraph=True) vs eager; {_timer_name()} '
        f'median of {args.repeats} interleaved repeats; ' +
        ('quarter-size inputs (--quick).' if args.quick else
         'full-size inputs.'),
        f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
        f'{platform.processor() or platform.machine()}, 1-min load average '
        f'before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}, '
        f'{datetime.date.today().isoformat()}.',
        '',
        '| layer | pass | graph breaks | eager (ms) | compiled (ms) | '
        'speed-up | first compiled call (s) |',
        '|---|---|---:|---:|---:|---:|---:|',
    ]
    for name, pass_name, breaks, eager, comp, first in rows:
        lines.append(f'| {name} | {pass_name} | {breaks} | '
                     f'{eager * 1e3:.2f} | {comp * 1e3:.2f} | '
                     f'{eager / comp:.2f}x | {first:.1f} |')
    table = '\n'.join(lines) + '\n'
    write_output(table, args.output)


if __name__ == '__main__':
    main()
