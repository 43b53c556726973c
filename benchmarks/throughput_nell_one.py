"""Meta-training throughput on NELL-One at B = 1024, with the time of a step
split into its phases.

    python benchmarks/throughput_nell_one.py [--data PATH] [--steps 20]
        [--only metar published full] [--repeats 5] [--amp]
        [--background-tasks]

Configurations: MetaR (1- and 5-shot); MoEMeta in the published code's
configuration (no neighbour aggregation, 32 experts, top 5, random
projection vectors); the full MoEMeta (50-neighbour aggregator). Each phase
is timed with ``time.perf_counter`` around the same calls
``MetaLearner.loss`` makes (median over steps), so the phases add up to a
step. ``--amp`` adds every configuration a second time under the trainer's
mixed precision (bfloat16 autocast), measured in the same rounds.
``--background-tasks`` does the same on the graph with every background
relation added as a train task (:class:`~pyg_fewshot.data.BackgroundTasks`,
MetaR's In-Train) and adds a table of the step time (wall clock and process
CPU time) with against without them.
"""
import argparse
import math
import statistics
import sys
import time
from collections import defaultdict
from typing import Dict, List, Optional

import torch

from _common import REFERENCE_KERNEL_MS, load_average, machine, \
    machine_speed, reference_kernels, shared_dataset, write_output
from pyg_fewshot.data import BackgroundTasks, EpisodeSampler, load_dataset
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import build_model
from pyg_fewshot.nn._dispatch import csr_gather, unique_pairs

PUBLISHED_TASKS_PER_S = 6800  # published MoEMeta code, 1-shot, this machine

# (key for --only, label, model, shots, model arguments)
CONFIGS = [
    ('metar', 'MetaR', 'metar', 1, {}),
    ('metar', 'MetaR', 'metar', 5, {}),
    ('published', 'MoEMeta, published config (no aggregator)', 'moemeta', 1,
     dict(aggregate=False, projection_init='random')),
    ('full', 'MoEMeta, full (50-neighbour aggregator)', 'moemeta', 1, {}),
    ('full', 'MoEMeta, full (50-neighbour aggregator)', 'moemeta', 5, {}),
]


def timed_step(trainer: MetaTrainer, timings: dict) -> None:
    learner, model = trainer.learner, trainer.model
    # The trainer's own mixed precision: forward under bfloat16 autocast,
    # backward and update outside it.
    amp = torch.autocast('cpu', dtype=torch.bfloat16, enabled=trainer.amp)
    t = time.perf_counter()
    ep = trainer.sampler.sample()
    timings['sampling'].append(time.perf_counter() - t)
    model.train()
    with amp:
        t = time.perf_counter()
        sh, s_tails, qh, q_tails = learner.embed_stacked(ep)
        timings['embedding / aggregation'].append(time.perf_counter() - t)
        t = time.perf_counter()
        local, aux = model.init_local(sh, s_tails[:, 0])
        timings['relation meta (MoE / MLP)'].append(time.perf_counter() - t)
        t = time.perf_counter()
        local = learner.adapt_stacked(local, sh, s_tails)
        timings['inner loop'].append(time.perf_counter() - t)
        t = time.perf_counter()
        loss = learner.margins(local, qh, q_tails).mean() + aux
    for opt in trainer.optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    timings['query loss and backward'].append(time.perf_counter() - t)
    t = time.perf_counter()
    for opt in trainer.optimizers:
        opt.step()
    timings['update'].append(time.perf_counter() - t)


def measure(data, name: str, shots: int, kw: dict, args,
            amp: bool = False, cpu: Optional[List[float]] = None) -> dict:
    r"""Median time of each phase over ``args.steps`` steps of a fresh
    model and trainer, after ``args.warmup`` warm-up steps (the row-wise
    Adam's moment buffers grow by doubling over the first steps of a fresh
    model; a long run sees only the steady state). With ``cpu``, the median
    CPU time of the process per step is appended to it (at one thread, the
    work done, unaffected by other processes waiting for the cores)."""
    torch.manual_seed(0)
    model = build_model(name, data, embedding_dim=100, **kw)
    learner = MetaLearner(model)
    sampler = EpisodeSampler(data, shots, 3, args.batch_size, seed=0)
    trainer = MetaTrainer(learner, sampler, '/tmp/unused', progress=False,
                          amp=amp)
    timings = defaultdict(list)
    for _ in range(args.warmup):
        timed_step(trainer, defaultdict(list))
    cpu_times = []
    for _ in range(args.steps):
        t = time.process_time()
        timed_step(trainer, timings)
        cpu_times.append(time.process_time() - t)
    if cpu is not None:
        cpu.append(statistics.median(cpu_times))
    return {k: statistics.median(v) for k, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--data', default=None)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=10,
                        help='untimed steps before the timed ones')
    parser.add_argument('--repeats', type=int, default=1,
                        help='rounds over all configurations; the table '
                        'gives the median round and the range of tasks/s')
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--output', default=None)
    parser.add_argument('--amp', action='store_true',
                        help='also measure every configuration under '
                        'bfloat16 autocast (the trainer\'s --amp), in the '
                        'same rounds')
    parser.add_argument('--background-tasks', action='store_true',
                        help='also measure every configuration with the '
                        'background relations as extra train tasks, in the '
                        'same rounds, and compare the step times')
    parser.add_argument('--only', nargs='+', default=None,
                        choices=sorted({c[0] for c in CONFIGS}),
                        help='run only these configurations')
    args = parser.parse_args()
    data = load_dataset(shared_dataset('nell-one', args.data))[0]
    graphs = {False: data}
    # (key, label, model, shots, model arguments, amp, background tasks)
    configs = [c + (False, False) for c in CONFIGS
               if args.only is None or c[0] in args.only]
    if args.amp:
        configs += [(key, label + ', bf16 autocast', name, shots, kw, True,
                     False)
                    for key, label, name, shots, kw, _, _ in configs]
    if args.background_tasks:
        graphs[True] = BackgroundTasks()(data)
        configs += [(key, label + ', background tasks', name, shots, kw,
                     amp, True)
                    for key, label, name, shots, kw, amp, _ in configs]

    # Round-robin over the configurations, so that a burst of load on a
    # shared machine hits one round of every configuration, not one
    # configuration.
    rounds: Dict[int, List[dict]] = defaultdict(list)
    # The machine's speed now against when the 6,800 tasks/s anchor was
    # taken, probed with the METHODS.md kernels right before and right after
    # every measurement (the speed drifts within a round too).
    probes: List[Dict[str, float]] = [reference_kernels()]
    speed: Dict[int, List[float]] = defaultdict(list)
    cpu: Dict[int, List[float]] = defaultdict(list)
    for r in range(args.repeats):
        for i, (_, label, name, shots, kw, amp, bg) in enumerate(configs):
            before = machine_speed(probes[-1])
            rounds[i].append(measure(graphs[bg], name, shots, kw, args,
                                     amp, cpu[i]))
            probes.append(reference_kernels())
            slow = math.sqrt(before * machine_speed(probes[-1]))
            speed[i].append(slow)
            step = sum(rounds[i][-1].values())
            print(f'round {r + 1}: {label}, {shots}-shot: '
                  f'{args.batch_size / step:,.0f} tasks/s (machine '
                  f'{slow:.2f}x the anchor\'s time)', file=sys.stderr)

    load = load_average()
    lines = [
        f'Meta-training throughput on NELL-One, B = {args.batch_size}, '
        f'median of {args.steps} steps after {args.warmup} warm-up steps'
        + (f', {args.repeats} rounds over the configurations: the median '
           f'round, with the range of the rounds in brackets'
           if args.repeats > 1 else '')
        + f' ({machine()}; load average {load}).', '',
        '| model | K | s / step | tasks / s | vs published code (6,800 '
        'tasks/s) | speed-adjusted | phases (ms) |',
        '|---|---|---|---|---|---|---|'
    ]
    for i, (_, label, name, shots, _, _, _) in enumerate(configs):
        steps = sorted(rounds[i], key=lambda p: sum(p.values()))
        phases = steps[len(steps) // 2]
        step = sum(phases.values())
        rate = args.batch_size / step
        rates = f'{rate:,.0f}'
        if len(steps) > 1:
            lo = args.batch_size / sum(steps[-1].values())
            hi = args.batch_size / sum(steps[0].values())
            rates += f' [{lo:,.0f}-{hi:,.0f}]'
        detail = ', '.join(f'{k} {1000 * v:.1f}' for k, v in phases.items())
        adjusted = statistics.median(
            args.batch_size / sum(p.values()) * s / PUBLISHED_TASKS_PER_S
            for p, s in zip(rounds[i], speed[i]))
        lines.append(f'| {label} | {shots} | {step:.4f} | {rates} | '
                     f'{rate / PUBLISHED_TASKS_PER_S:.1f}x | '
                     f'{adjusted:.1f}x | {detail} |')
    probe = {k: statistics.median(p[k] for p in probes)
             for k in REFERENCE_KERNEL_MS}
    slows = [machine_speed(p) for p in probes]
    lines += [
        '', 'Speed-adjusted: each round\'s tasks/s times the machine\'s '
        'slowdown against the time of the anchor (geometric mean of probes '
        'right before and right after the measurement) '
        'with the expert-dispatch kernels of METHODS.md (top-2 of 32, '
        '4,096 tokens, 100 -> 100, forward and backward): '
        + ', '.join(f'{k} {1e3 * probe[k]:.1f} ms (METHODS.md '
                    f'{v:.1f} ms)' for k, v in REFERENCE_KERNEL_MS.items())
        + f' (medians over the probes); slowdown {min(slows):.2f}-'
        f'{max(slows):.2f}x over the probes (geometric mean of the two '
        f'kernels; meaningful at 2 threads, the anchor\'s setting); the '
        f'median over rounds.',
        '', neighbourhood_sizes(data, args.batch_size)]
    if args.background_tasks:
        lines += ['', *background_table(configs, rounds, cpu, graphs[True],
                                        args.batch_size)]
    write_output('\n'.join(lines), args.output)


def background_table(configs, rounds, cpu, data,
                     batch_size: int) -> List[str]:
    r"""Step and sampling time with against without background tasks,
    wall clock and CPU time, each configuration paired with its own round
    (ratios are medians over rounds of the per-round ratio, so load shared
    by a round cancels)."""
    new = data.bg_task_rel
    sizes = data.cand_ptr[new + 1] - data.cand_ptr[new]
    lines = [
        f'With background tasks (BackgroundTasks(): {new.numel()} extra '
        f'train relations, {data.train_rel.numel()} in all; candidate sets '
        f'of {int(sizes.min()):,}-{int(sizes.max()):,} entities, '
        f'{int((data.task_ptr[new + 1] - data.task_ptr[new]).sum()):,} '
        f'triples, {data.true_keys.numel():,} filter keys), B = '
        f'{batch_size}:', '',
        '| model | K | s / step without | s / step with | with / without '
        '(range) | CPU s / step without / with | CPU with / without (range) '
        '| sampling ms without / with |', '|---|---|---|---|---|---|---|---|'
    ]
    # The configurations with background tasks follow those without, in
    # the same order.
    half = len(configs) // 2
    for i, (_, _, _, shots, _, _, _) in enumerate(configs[half:], half):
        j = i - half
        ratios = sorted(sum(w.values()) / sum(wo.values())
                        for w, wo in zip(rounds[i], rounds[j]))
        cpu_ratios = sorted(w / wo for w, wo in zip(cpu[i], cpu[j]))
        step = statistics.median(sum(p.values()) for p in rounds[i])
        base = statistics.median(sum(p.values()) for p in rounds[j])
        samp = statistics.median(p['sampling'] for p in rounds[i])
        samp0 = statistics.median(p['sampling'] for p in rounds[j])
        lines.append(
            f'| {configs[j][1]} | {shots} | '
            f'{base:.4f} | {step:.4f} | '
            f'{statistics.median(ratios):.3f} ({ratios[0]:.3f}-'
            f'{ratios[-1]:.3f}) | {statistics.median(cpu[j]):.4f} / '
            f'{statistics.median(cpu[i]):.4f} | '
            f'{statistics.median(cpu_ratios):.3f} ({cpu_ratios[0]:.3f}-'
            f'{cpu_ratios[-1]:.3f}) | {1e3 * samp0:.1f} / {1e3 * samp:.1f} |')
    # The models' work grows with the distinct entities of a meta-batch,
    # which the more varied tasks raise.
    lines += ['', 'With background tasks: ' +
              neighbourhood_sizes(data, batch_size)]
    return lines


def neighbourhood_sizes(data, batch_size: int) -> str:
    r"""Edges, distinct (relation, neighbour) pairs and distinct
    neighbour entities the full model aggregates over in one 1-shot step."""
    sampler = EpisodeSampler(data, 1, 3, batch_size, seed=0)
    ep = sampler.sample()
    parts = (ep.support[..., 0], ep.support[..., 1], ep.support_neg,
             ep.query[..., 0], ep.query[..., 1], ep.query_neg)
    centers = torch.unique(torch.cat([p.reshape(-1) for p in parts]))
    pos, _ = csr_gather(data.nbr_ptr, centers, 50, sample=True,
                        generator=torch.Generator().manual_seed(0))
    pair_rel, pair_ent, _ = unique_pairs(data.nbr_rel[pos],
                                         data.nbr_ent[pos],
                                         data['entity'].num_nodes)
    return (f'One 1-shot meta-batch of the full model (seed 0): '
            f'{centers.numel():,} distinct entities to enrich, '
            f'{pos.numel():,} neighbour edges (cap 50), '
            f'{pair_rel.numel():,} distinct (relation, neighbour) pairs, '
            f'{torch.unique(pair_ent).numel():,} distinct neighbour '
            f'entities.')


if __name__ == '__main__':
    main()
