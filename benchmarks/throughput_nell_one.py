"""Meta-training throughput on NELL-One at B = 1024, with the time of a step
split into its phases.

    python benchmarks/throughput_nell_one.py [--data PATH] [--steps 20]
        [--only metar published full]

Configurations: MetaR (1- and 5-shot); MoEMeta in the published code's
configuration (no neighbour aggregation, 32 experts, top 5, random
projection vectors); the full MoEMeta (50-neighbour aggregator). Each phase
is timed with ``time.perf_counter`` around the same calls
``MetaLearner.loss`` makes (median over steps), so the phases add up to a
step.
"""
import argparse
import statistics
import sys
import time
from collections import defaultdict

import torch

from _common import machine, shared_dataset, write_output
from pyg_fewshot.data import EpisodeSampler, load_dataset
from pyg_fewshot.meta import MetaLearner, MetaTrainer, margin_loss
from pyg_fewshot.models import build_model

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
    t = time.perf_counter()
    ep = trainer.sampler.sample()
    timings['sampling'].append(time.perf_counter() - t)
    model.train()
    t = time.perf_counter()
    sh, st, sn, qh, qt, qn = learner.embed_episode(ep)
    timings['embedding / aggregation'].append(time.perf_counter() - t)
    t = time.perf_counter()
    local, aux = model.init_local(sh, st)
    timings['relation meta (MoE / MLP)'].append(time.perf_counter() - t)
    t = time.perf_counter()
    local = learner.adapt(local, sh, st, sn)
    timings['inner loop'].append(time.perf_counter() - t)
    t = time.perf_counter()
    pos = model.score(qh, qt, local)
    neg = model.score(qh, qn, local)
    loss = margin_loss(pos, neg, learner.margin).mean() + aux
    for opt in trainer.optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    timings['query loss and backward'].append(time.perf_counter() - t)
    t = time.perf_counter()
    for opt in trainer.optimizers:
        opt.step()
    timings['update'].append(time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--data', default=None)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--output', default=None)
    parser.add_argument('--only', nargs='+', default=None,
                        choices=sorted({c[0] for c in CONFIGS}),
                        help='run only these configurations')
    args = parser.parse_args()
    data = load_dataset(shared_dataset('nell-one', args.data))[0]

    lines = [
        f'Meta-training throughput on NELL-One, B = {args.batch_size}, '
        f'median of {args.steps} steps after 3 warm-up steps '
        f'({machine()}).', '',
        '| model | K | s / step | tasks / s | vs published code (6,800 '
        'tasks/s) | phases (ms) |', '|---|---|---|---|---|---|'
    ]
    for key, label, name, shots, kw in CONFIGS:
        if args.only is not None and key not in args.only:
            continue
        torch.manual_seed(0)
        model = build_model(name, data, embedding_dim=100, **kw)
        learner = MetaLearner(model)
        sampler = EpisodeSampler(data, shots, 3, args.batch_size, seed=0)
        trainer = MetaTrainer(learner, sampler, '/tmp/unused', progress=False)
        timings = defaultdict(list)
        for _ in range(3):
            timed_step(trainer, defaultdict(list))
        for _ in range(args.steps):
            timed_step(trainer, timings)
        phases = {k: statistics.median(v) for k, v in timings.items()}
        step = sum(phases.values())
        rate = args.batch_size / step
        detail = ', '.join(f'{k} {1000 * v:.1f}' for k, v in phases.items())
        lines.append(f'| {label} | {shots} | {step:.4f} | {rate:,.0f} | '
                     f'{rate / PUBLISHED_TASKS_PER_S:.1f}x | {detail} |')
        print(lines[-1], file=sys.stderr)
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
