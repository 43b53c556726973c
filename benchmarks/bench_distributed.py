"""Data-parallel meta-training: steps per second with 1, 2, ... processes
(gloo on CPU, NCCL with ``--device cuda``) at a fixed *global* meta-batch.

    python benchmarks/bench_distributed.py [--data PATH] [--nproc 1 2] \
        [--model moemeta] [--set model.aggregator=null ...] \
        [--batch-size 1024] [--steps 20] [--output FILE]

Every configuration is launched the way ``pyg-fewshot train --nproc N``
launches (``pyg_fewshot.meta.distributed.launch``: fresh processes,
``OMP_NUM_THREADS=1`` each unless set), runs ``MetaTrainer.train_step``
(sampling, forward, backward, gradient all-reduce, optimiser step) for
``--warmup`` untimed and ``--steps`` timed steps, and rank 0 reports the
median step time; the time of the all-reduce alone is reported too. The
global batch is split evenly, so N processes do the same work per step as
one (strong scaling).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from _common import machine, shared_dataset, write_output
from pyg_fewshot.data import EpisodeSampler, load_dataset
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.meta import distributed as dist_utils
from pyg_fewshot.models import build_model, model_config
from pyg_fewshot.pipeline import RunConfig


def worker(cfg: dict) -> None:
    rank, world, device = dist_utils.init_distributed(device=cfg['device'])
    try:
        data = load_dataset(cfg['data'], root=cfg['root'])[0]
        torch.manual_seed(0)
        model = build_model(cfg['model'], data).to(device)
        sampler = EpisodeSampler(
            data, cfg['shots'], 3,
            dist_utils.split_batch_size(cfg['batch_size'], world), 'train',
            seed=dist_utils.rank_seed(0, rank))
        with tempfile.TemporaryDirectory() as tmp:
            trainer = MetaTrainer(
                MetaLearner.from_config(model, cfg['learner']), sampler, tmp,
                progress=False)
            # Time the all-reduce on its own by wrapping it.
            sync_times = []
            average = trainer.average_gradients

            def timed_average() -> None:
                t = time.perf_counter()
                average()
                sync_times.append(time.perf_counter() - t)

            if not cfg['sync']:
                # Contention check: the same processes and per-rank work,
                # but no gradient exchange.
                average = lambda: None  # noqa: E731
            trainer.average_gradients = timed_average
            for _ in range(cfg['warmup']):
                trainer.train_step()
            dist_utils.barrier()
            times = []
            for _ in range(cfg['steps']):
                t = time.perf_counter()
                trainer.train_step()
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        # A step takes as long as its slowest rank.
        all_times = dist_utils.all_gather_objects(times)
        slowest = [max(ts) for ts in zip(*all_times)]
        sync = sync_times[cfg['warmup']:]
        if rank == 0:
            with open(cfg['result'], 'w') as f:
                json.dump({'step': statistics.median(slowest),
                           'sync': statistics.median(sync) if world > 1
                           else 0.0}, f)
    finally:
        dist_utils.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--data', default=None,
                        help='NELL-One folder (default: the shared copy)')
    parser.add_argument('--dataset', default=None,
                        help="any dataset name or folder, e.g. 'umls-one', "
                        'instead of NELL-One')
    parser.add_argument('--model', default='moemeta')
    parser.add_argument('--set', action='append', default=[],
                        metavar='KEY=VALUE',
                        help="a model or learner setting, as pyg-fewshot "
                        "train's --set (e.g. model.aggregator=null, "
                        'model.projection_kwargs.init=random; repeatable)')
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--nproc', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--no-sync', action='store_true',
                        help='skip the gradient all-reduce: measures how '
                        'much N processes slow each other down by sharing '
                        'the machine alone')
    parser.add_argument('--root', default=None,
                        help='processed-data cache (default: the library '
                        'default)')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    for kv in args.set:
        if not kv.startswith(('model.', 'learner.')):
            parser.error(f"--set {kv}: only model.* and learner.* settings "
                         'apply here')
    config = RunConfig(model=model_config(args.model)).override(
        args.set, where='--set')
    settings = ' '.join(f'`--set {kv}`' for kv in args.set)
    data = args.dataset or shared_dataset('nell-one', args.data)
    load_dataset(data, root=args.root)  # process once, before the workers

    rows = []
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nproc:
            result = os.path.join(tmp, f'nproc{n}.json')
            cfg = dict(data=data, root=args.root, model=config.model,
                       learner=config.learner,
                       shots=args.shots, batch_size=args.batch_size,
                       steps=args.steps, warmup=args.warmup,
                       device=args.device, result=result,
                       sync=not args.no_sync)
            dist_utils.launch(worker, n, (cfg, ))
            with open(result) as f:
                res = json.load(f)
            base = base or res['step']
            rows.append(
                f"| {n} | {res['step'] * 1e3:.0f} | {1 / res['step']:.2f} | "
                f"{args.batch_size / res['step']:,.0f} | "
                f"{res['sync'] * 1e3:.1f} | {base / res['step']:.2f}x |")
            print(rows[-1], file=sys.stderr)

    text = '\n'.join([
        f'Command: `python {" ".join(sys.argv)}`  ',
        f'Machine: {machine()} (launcher); workers: '
        f"{os.environ.get('OMP_NUM_THREADS', '1')} torch thread(s) each  ",
        f'Data: {data}; model {args.model} {settings}, '
        f'{args.shots}-shot, global '
        f'meta-batch {args.batch_size}, device {args.device}; median of '
        f'{args.steps} steps after {args.warmup} warm-up steps '
        f'(slowest rank per step)' + ('; NO gradient all-reduce '
                                       '(--no-sync)' if args.no_sync
                                       else ''),
        '',
        '| processes | ms / step | steps / s | tasks / s | all-reduce ms '
        '| speed-up |',
        '|---:|---:|---:|---:|---:|---:|',
        *rows,
        '',
    ])
    write_output(text, args.output)


if __name__ == '__main__':
    main()
