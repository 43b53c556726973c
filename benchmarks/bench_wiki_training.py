#!/usr/bin/env python
r"""Meta-training at Wiki-One size: MoEMeta step time and peak memory at
B = 1024 with a lazy or a dense-state sparse Adam for the entity table.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_wiki_training.py \
        [--steps 20] [--warmup 3] [--scale 1.0] [--timer wall|cpu] \
        [--optimizers lazy_adam sparse_adam] [--output PATH]

The graph is :func:`~pyg_fewshot.data.make_synthetic` at Wiki-One's size
(4,838,244 entities, 639 background relations, 5,859,240 background
triples, 133 / 16 / 34 task relations; ``--scale`` shrinks entities and
background triples for a quick try). The model is the full MoEMeta
(:math:`d = 50`, 50-neighbour aggregator, 32 experts) and a step is the
trainer's: sample a 1-shot meta-batch, ``MetaLearner.loss``, backward, a
dense :class:`torch.optim.Adam` step and a step of the sparse optimiser of
the entity table, :class:`~pyg_fewshot.optim.LazySparseAdam`
(``lazy_adam``) or :class:`torch.optim.SparseAdam` (``sparse_adam``).

Every optimiser runs in a fresh Python process, so each peak resident set
size (``ru_maxrss``) is its own. Times are medians over the timed steps,
after ``--warmup`` untimed steps; ``--timer cpu`` takes the process's CPU
time instead of wall time, which other jobs on a shared machine disturb
less. The rows each step updates are counted outside the timed phases.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

from _common import add_timing_args, load_average, machine, write_output

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
WIKI = dict(num_entities=4_838_244, num_background_relations=639,
            num_background_triples=5_859_240, num_train_relations=133,
            num_dev_relations=16, num_test_relations=34,
            triples_per_relation=(50, 500), num_candidates=1000,
            entity_names=False, seed=0)
PHASES = ('sampling', 'forward', 'backward', 'dense Adam', 'sparse step')
MiB = 1024.0**2


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mib() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def _sparse_state_bytes(opt) -> int:
    from pyg_fewshot.optim import LazySparseAdam
    if isinstance(opt, LazySparseAdam):
        return opt.state_bytes()
    return sum(t.numel() * t.element_size() for s in opt.state.values()
               for t in s.values() if hasattr(t, 'numel'))


def reachable_rows(data, split: str) -> int:
    r"""Entity rows that meta-training on ``split`` can ever update: the
    heads, tails and candidates (negatives) of its task relations and all
    of their background neighbours (a superset of the sampled ones)."""
    import torch

    from pyg_fewshot.data.hetero import split_relations
    from pyg_fewshot.ops import csr_gather
    parts = []
    for r in split_relations(data, split).tolist():
        for ptr, values in ((data.task_ptr, data.task_triples),
                            (data.cand_ptr, data.cand_idx)):
            parts.append(values[int(ptr[r]):int(ptr[r + 1])].reshape(-1))
    centers = torch.unique(torch.cat(parts))
    pos, _ = csr_gather(data.nbr_ptr, centers)
    return int(torch.unique(torch.cat([centers, data.nbr_ent[pos]])).numel())


def worker(args: argparse.Namespace) -> None:
    r"""Builds the graph and the model and times the steps of one sparse
    optimiser; prints one JSON line."""
    sys.path.insert(0, REPO)
    import torch

    from pyg_fewshot.data import EpisodeSampler, make_synthetic
    from pyg_fewshot.meta import MetaLearner
    from pyg_fewshot.optim import LazySparseAdam
    from pyg_fewshot.models import build_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out: Dict = {'optimizer': args.phase, 'threads': torch.get_num_threads(),
                 'rss_import_mib': _rss_mib()}
    kw = dict(WIKI)
    kw['num_entities'] = int(round(WIKI['num_entities'] * args.scale))
    kw['num_background_triples'] = int(
        round(WIKI['num_background_triples'] * args.scale))
    t = time.perf_counter()
    data = make_synthetic(**kw)
    out['data_seconds'] = time.perf_counter() - t
    out['rss_data_mib'] = _rss_mib()
    out['num_entities'] = int(data['entity'].num_nodes)
    out['num_background_triples'] = int(data.bg_edge_index.size(1))

    torch.manual_seed(0)
    model = build_model('moemeta', data, embedding_dim=args.dim)
    model.train()
    learner = MetaLearner(model)
    sampler = EpisodeSampler(data, args.shots, args.queries, args.batch_size,
                             seed=0)
    sparse_ids = {id(p) for p in model.sparse_parameters()}
    dense = [p for p in model.parameters()
             if p.requires_grad and id(p) not in sparse_ids]
    sparse = [p for p in model.parameters() if id(p) in sparse_ids]
    dense_opt = torch.optim.Adam(dense, lr=1e-3)
    cls = (LazySparseAdam
           if args.phase == 'lazy_adam' else torch.optim.SparseAdam)
    sparse_opt = cls(sparse, lr=1e-3)
    out['entity_table_mib'] = sum(p.numel() * p.element_size()
                                  for p in sparse) / MiB
    out['dense_params'] = sum(p.numel() for p in dense)
    out['rss_model_mib'] = _rss_mib()
    out['peak_before_training_mib'] = _peak_mib()

    times: Dict[str, List[float]] = {k: [] for k in PHASES}
    rows: List[int] = []
    seen = torch.zeros(out['num_entities'], dtype=torch.bool)
    entity = sparse[0]
    # CPU time of this process is less disturbed than wall time by other
    # jobs on a shared machine (with one thread, the two agree when idle).
    clock = time.process_time if args.timer == 'cpu' else time.perf_counter
    for i in range(args.warmup + args.steps):
        t0 = clock()
        ep = sampler.sample()
        t1 = clock()
        loss, _ = learner.loss(ep)
        t2 = clock()
        dense_opt.zero_grad(set_to_none=True)
        sparse_opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = clock()
        dense_opt.step()
        t4 = clock()
        sparse_opt.step()
        t5 = clock()
        # Not timed: the rows this step updated.
        index = entity.grad.coalesce()._indices()[0]
        seen[index] = True
        if i >= args.warmup:
            rows.append(index.numel())
            for k, a, b in zip(PHASES, (t0, t1, t2, t3, t4),
                               (t1, t2, t3, t4, t5)):
                times[k].append(b - a)
    out['phases'] = {k: statistics.median(v) for k, v in times.items()}
    out['step_median'] = statistics.median(
        sum(times[k][j] for k in PHASES) for j in range(args.steps))
    out['rows_per_step'] = statistics.median(rows)
    out['rows_seen'] = int(seen.sum())
    out['state_bytes'] = _sparse_state_bytes(sparse_opt)
    if isinstance(sparse_opt, LazySparseAdam):
        out['state_rows'] = sparse_opt.num_state_rows()
    out['rss_end_mib'] = _rss_mib()
    out['peak_mib'] = _peak_mib()
    out['rows_reachable'] = reachable_rows(data, 'train')
    print('RESULT ' + json.dumps(out), flush=True)


def run(name: str, args: argparse.Namespace) -> Dict:
    cmd = [sys.executable, osp.abspath(__file__), '--_worker', name,
           '--steps', str(args.steps), '--warmup', str(args.warmup),
           '--scale', str(args.scale), '--batch-size', str(args.batch_size),
           '--shots', str(args.shots), '--queries', str(args.queries),
           '--dim', str(args.dim), '--timer', args.timer]
    if args.threads is not None:
        cmd += ['--threads', str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    raise RuntimeError(f'{name} failed:\n{proc.stdout}\n{proc.stderr}')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=20,
                        help='timed steps per optimiser')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps first')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='fraction of the Wiki-One entity and background '
                        'triple counts (e.g. 0.01 for a quick try)')
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--queries', type=int, default=3)
    parser.add_argument('--dim', type=int, default=50)
    add_timing_args(parser)
    parser.add_argument('--optimizers', nargs='+',
                        default=['lazy_adam', 'sparse_adam'],
                        choices=['lazy_adam', 'sparse_adam'])
    parser.add_argument('--output', help='also write the table here')
    parser.add_argument('--_worker', dest='phase', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        worker(args)
        return 0

    load_before = load_average()
    results = []
    for name in args.optimizers:
        results.append(run(name, args))
        print(json.dumps(results[-1]), file=sys.stderr)

    sys.path.insert(0, REPO)
    import torch
    import torch_geometric

    cmd = 'python benchmarks/bench_wiki_training.py ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    r0 = results[0]
    lines = [
        f"Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}  ",
        f'Command: `OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "")} '
        f'{cmd.strip()}`  ',
        f'Machine: {machine()}, {os.cpu_count()} cores, torch threads in '
        f"the workers: {r0['threads']}; load average "
        f'(1/5/15 min) before {load_before}, after {load_average()}  ',
        f'Software: Python {platform.python_version()}, torch '
        f'{torch.__version__}, torch_geometric {torch_geometric.__version__}'
        f'  ',
        f"Graph: make_synthetic, {r0['num_entities']:,} entities, "
        f"{r0['num_background_triples']:,} background triples (built in "
        f"{r0['data_seconds']:.1f} s); MoEMeta d = {args.dim}, "
        f"{r0['dense_params']:,} dense parameters, entity table "
        f"{r0['entity_table_mib']:,.0f} MiB; B = {args.batch_size}, "
        f'K = {args.shots}, Q = {args.queries}; median of {args.steps} '
        f'steps after {args.warmup} warm-up steps, '
        f"{'process CPU' if args.timer == 'cpu' else 'wall-clock'} time",
        '',
        '| sparse optimiser | step (s) | ' + ' | '.join(
            f'{k} (ms)' for k in PHASES) +
        ' | entity rows / step | optimiser state (MiB) | RSS before '
        'training (MiB) | peak RSS (MiB) |',
        '|---' + '|---:' * (len(PHASES) + 5) + '|',
    ]
    for r in results:
        label = ('LazySparseAdam' if r['optimizer'] == 'lazy_adam' else
                 'torch.optim.SparseAdam')
        state = r['state_bytes'] / MiB
        if 'state_rows' in r:
            state_txt = f"{state:,.0f} ({r['state_rows']:,} rows)"
        else:
            state_txt = f'{state:,.0f} (all rows)'
        lines.append(
            f"| {label} | {r['step_median']:.3f} | " +
            ' | '.join(f"{1000 * r['phases'][k]:.0f}" for k in PHASES) +
            f" | {r['rows_per_step']:,.0f} | {state_txt} | "
            f"{r['rss_model_mib']:,.0f} | {r['peak_mib']:,.0f} |")
    seen = ', '.join(f"{r['optimizer']} {r['rows_seen']:,}" for r in results)
    moments = r0['rows_reachable'] * 2 * args.dim * 4 / MiB
    lines += [
        '',
        'RSS before training is the resident set after building the graph '
        "and the model; peak RSS is the whole process's (its peak before the "
        f"first step was {r0['peak_before_training_mib']:,.0f} MiB). "
        f'Distinct entity rows updated over all {args.warmup + args.steps} '
        f'steps: {seen}. Entity rows that training on the train split can '
        'ever update (its task heads and tails, candidates, and all their '
        f"background neighbours): {r0['rows_reachable']:,} of "
        f"{r0['num_entities']:,}, whose Adam moments take {moments:,.0f} MiB."
    ]
    write_output('\n'.join(lines) + '\n', args.output)
    return 0


if __name__ == '__main__':
    sys.exit(main())
