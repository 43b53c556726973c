r"""Expert dispatch of SparseMoERelationMeta against dense and masked-loop
baselines.

All methods share the gate and the parameters of one
:class:`pyg_fewshot.nn.SparseMoERelationMeta` (M = 32 experts, top N = 5,
d = 100 so pair features are 200-d, expert hidden size 64) and compute the
per-pair relation vectors r_i for P support pairs:

* ``sparse grouped_mm``: the layer, sort by expert + one
  ``torch.nn.functional.grouped_mm`` per expert layer + weighted scatter-sum;
* ``sparse loop``: the layer with ``dispatch='loop'`` (sort + loop over
  ``weight.unbind(0)`` slices);
* ``(a) dense, published``: every expert on every pair, stacked, then the
  top-N gathered: the published MoEMeta code's computation;
* ``(a') dense einsum``: the same dense computation batched into two
  einsums (a stronger dense baseline than the published one); both dense
  baselines are the tests' references (tests/nn/_moe_reference.py);
* ``(b) mask loop``: a Python loop over experts, each selecting its pairs
  with a boolean mask.

Each cell is the wall-clock median of several repeats, run round-robin
over the methods (the machine is shared with other jobs); the columns of a
row are measured in the same run, so compare ratios within a row.
Run ``python benchmarks/bench_moe_dispatch.py --help`` for the options.

On a machine shared with other jobs, run with ``OMP_WAIT_POLICY=passive``
(or ``--threads 1 --timer cpu``): OpenMP threads that spin while their
partner thread is descheduled make multi-threaded timings meaningless
there (docs/benchmarks_layers.md).
"""
import argparse
import datetime
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from _common import REPO, add_timing_args, interleaved_medians, write_output

# The dense baselines are the tests' references of the layer (one copy).
sys.path.insert(0, os.path.join(REPO, 'tests', 'nn'))
from _moe_reference import dense_einsum, dense_published  # noqa: E402

# Set by --timer: wall-clock time, or the process's CPU time, which a
# single-threaded run (--threads 1) keeps meaningful on a loaded machine.
CLOCK: Callable[[], float] = time.perf_counter

from pyg_fewshot.nn import SparseMoERelationMeta


def _timer_name() -> str:
    return 'wall-clock' if CLOCK is time.perf_counter else 'process CPU time'


def _interleaved_medians(calls: Dict[str, Callable[[], None]], rounds: int,
                         warmup: bool) -> Dict[str, float]:
    # Shared helper; CLOCK is read at call time (set by --timer).
    return interleaved_medians(calls, rounds, CLOCK, warmup)


def mask_loop(moe: SparseMoERelationMeta, x, weights, experts):
    ex = moe.experts
    out = x.new_zeros(x.size(0), moe.out_channels)
    for j in range(moe.num_experts):
        rows, slot = (experts == j).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        y = ex.act(x[rows] @ ex.weight1[j] + ex.bias1[j])
        y = (y @ ex.weight2[j] + ex.bias2[j]) * weights[rows, slot, None]
        out = out.index_add(0, rows, y)
    return out


def make_methods(moe: SparseMoERelationMeta) -> Dict[str, Callable]:
    def layer(dispatch: str) -> Callable:
        def fn(x):
            moe.dispatch = dispatch
            return moe.forward_pairs(x)[0]
        return fn

    def baseline(kernel: Callable) -> Callable:
        def fn(x):
            _, weights, experts = moe.route(x)
            return kernel(moe, x, weights, experts)
        return fn

    return {
        'sparse grouped_mm': layer('grouped_mm'),
        'sparse loop': layer('loop'),
        '(a) dense, published': baseline(dense_published),
        "(a') dense einsum": baseline(dense_einsum),
        '(b) mask loop': baseline(mask_loop),
    }


def check_agreement(moe: SparseMoERelationMeta,
                    methods: Dict[str, Callable]) -> float:
    x = torch.randn(512, moe.in_channels)
    with torch.no_grad():
        ref = methods['(a) dense, published'](x)
        return max(float((m(x) - ref).abs().max())
                   for m in methods.values())


def run(sizes: List[int], repeats: int, large_repeats: int,
        dense_max: int, threads: Optional[int], seed: int) -> str:
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    moe = SparseMoERelationMeta(200, 100, num_experts=32, top_k=5,
                                hidden_channels=64)
    methods = make_methods(moe)
    err = check_agreement(moe, methods)
    names = list(methods)
    rows = []
    load_before = os.getloadavg()[0]
    for mode in ('forward', 'forward+backward'):
        for P in sizes:
            x = torch.randn(P, 200, requires_grad=(mode != 'forward'))
            calls = {}
            for name in names:
                if name.startswith('(a') and P > dense_max:
                    continue
                fn = methods[name]
                if mode == 'forward':
                    def call(fn=fn):
                        with torch.no_grad():
                            fn(x)
                else:
                    def call(fn=fn):
                        moe.zero_grad(set_to_none=True)
                        x.grad = None
                        out = fn(x)
                        out.backward(torch.ones_like(out))
                calls[name] = call
            small = P <= 16384
            med = _interleaved_medians(calls,
                                       repeats if small else large_repeats,
                                       warmup=small)
            cells = {name: med.get(name) for name in names}
            for name, v in med.items():
                print(f'  {mode:16s} P={P:6d} {name:22s} {v * 1e3:9.1f} ms',
                      file=sys.stderr)
            rows.append((mode, P, cells))

    best = 'sparse grouped_mm'
    lines = [
        '| pass | pairs P | ' + ' | '.join(f'{n} (ms)' for n in names) +
        ' | (a) / ours | (b) / ours |',
        '|---|---:|' + '---:|' * (len(names) + 2),
    ]
    for mode, P, cells in rows:
        def fmt(v: Optional[float]) -> str:
            return 'skipped' if v is None else f'{v * 1e3:.1f}'

        def ratio(name: str) -> str:
            v = cells[name]
            return '-' if v is None else f'{v / cells[best]:.1f}x'

        lines.append(f'| {mode} | {P:,} | ' +
                     ' | '.join(fmt(cells[n]) for n in names) +
                     f" | {ratio('(a) dense, published')} | "
                     f"{ratio('(b) mask loop')} |")
    header = (
        f'Expert dispatch, M=32, N=5, in=200 (d=100), hidden=64, out=100; '
        f'{_timer_name()} median of {repeats} interleaved repeats (order '
        f'rotated) after a warm-up ({large_repeats}, without warm-up, above '
        f'16,384 pairs); '
        f'ratios are baseline time / `sparse grouped_mm` time in the same '
        f'run.\n'
        f'Max abs difference of all methods from the published dense '
        f'computation on 512 pairs: {err:.1e}.\n'
        f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
        f'{platform.processor() or platform.machine()}, '
        f'1-min load average before / after: {load_before:.2f} / '
        f'{os.getloadavg()[0]:.2f}, '
        f'{datetime.date.today().isoformat()}.\n')
    return header + '\n' + '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[1024, 4096, 16384, 102400])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--large-repeats', type=int, default=1,
                        help='repeats above 16,384 pairs')
    parser.add_argument('--dense-max', type=int, default=102400,
                        help='skip the dense baselines above this many '
                        'pairs (memory)')
    add_timing_args(parser)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true',
                        help='sizes 1K, 4K, 16K and 3 repeats')
    parser.add_argument('--output', type=str, default=None,
                        help='also write the Markdown table to this file')
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.timer == 'wall' else time.process_time
    if args.quick:
        args.sizes, args.repeats = [1024, 4096, 16384], 3
    table = run(args.sizes, args.repeats, args.large_repeats, args.dense_max,
                args.threads, args.seed)
    write_output(table, args.output)


if __name__ == '__main__':
    main()
