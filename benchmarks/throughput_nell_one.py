"""Meta-training throughput on NELL-One at B = 1024, with the time of a step
split into its phases.

    python benchmarks/throughput_nell_one.py [--data PATH] [--steps 20]
        [--only metar published full] [--shots 1 5] [--repeats 5] [--amp]
        [--background-tasks] [--threads N] [--reference PATH]

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

Without ``--reference``, the comparison with the published code is an
estimate: tasks/s against the 6,800 tasks/s the published MoEMeta code made
at 1-shot on an idle machine (METHODS.md), also corrected for the machine's
speed now (probes with the METHODS.md kernels). ``--reference PATH`` (a
checkout of github.com/Anonymous20220610/KDD outside the repository; it is
not modified) measures it instead: the published code's meta-training step
is timed in the same rounds as ours, at every K of the chosen
configurations, and each row gets the measured ratio (the published code's
s / step over ours, per round, median over rounds). Its step is what its
training loop does per step: ``DataLoader.next_batch`` (sampling) and
``Trainer.do_one_step`` (embedding look-up, MoE relation meta, inner step,
query loss, backward, Adam update), the same work as our step, sampling
included. It runs in a worker process that loads the data once and times
on request, so the two codes alternate and never time at once (the other
process waits on a pipe): a process of its own keeps the published code's
global side effects out of ours (top-level modules named ``params``,
``models``, ``trainer``; the root logger it configures; the global
``random`` / NumPy generators it samples from; the training graphs it keeps
in a dict, ~8 GB over 1,000 steps, freed here by a fresh trainer per
round, as ours). Patches, at run time only: the device its ``get_params``
builds (CUDA) is replaced with the CPU; ``tensorboardX`` is stubbed with a
no-op ``SummaryWriter`` when not installed. It runs in the 'Discard' form
(random entity vectors: the work of a step does not depend on their
values), on the same data folder, with ``--threads`` (or torch's default
here) threads. The checkout's commit is recorded in the output.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Dict, List, Optional

import torch

from _common import REFERENCE_KERNEL_MS, load_average, machine, \
    machine_speed, reference_kernels, shared_dataset, write_output
from pyg_fewshot.data import BackgroundTasks, EpisodeSampler, load_dataset
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import build_model
from pyg_fewshot.ops import csr_gather, unique_pairs

PUBLISHED_TASKS_PER_S = 6800  # published MoEMeta code, 1-shot, this machine

# (key for --only, label, model, shots, model configuration values)
CONFIGS = [
    ('metar', 'MetaR', 'metar', 1, {}),
    ('metar', 'MetaR', 'metar', 5, {}),
    ('published', 'MoEMeta, published config (no aggregator)', 'moemeta', 1,
     dict(aggregator=None, projection_kwargs={'init': 'random'})),
    ('full', 'MoEMeta, full (50-neighbour aggregator)', 'moemeta', 1, {}),
    ('full', 'MoEMeta, full (50-neighbour aggregator)', 'moemeta', 5, {}),
]


# The worker that times the published code's training step, run with
# ``python -c`` in a scratch folder: argv = checkout, data folder, batch
# size, threads. It answers one JSON line per request (a JSON line
# {"shots", "warmup", "steps"} on stdin) on the original stdout; anything
# the published code prints goes to stderr.
WORKER = r'''
import importlib.util, json, os, random, resource, statistics, sys, time
import types

proto = os.fdopen(os.dup(1), 'w', buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
code, data, batch_size, threads = sys.argv[1], sys.argv[2], \
    int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
import numpy as np
import torch
torch.set_num_threads(threads)
if importlib.util.find_spec('tensorboardX') is None:
    class SummaryWriter:
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None
    sys.modules['tensorboardX'] = types.SimpleNamespace(
        SummaryWriter=SummaryWriter)
sys.path.insert(0, code)
import params
from data_loader import DataLoader
from trainer import Trainer

sys.argv = ['main.py', '--dataset', 'NELL-One', '--data_path', data,
            '--data_form', 'Discard', '--batch_size', str(batch_size),
            '--seed', '0', '--step', 'train', '--prefix', 'throughput',
            '--log_dir', 'log', '--state_dir', 'state']
base = params.get_params()
base['device'] = torch.device('cpu')
# The trainer's logging.basicConfig writes into this folder.
os.makedirs(os.path.join('log', 'throughput'), exist_ok=True)
random.seed(0)
np.random.seed(0)
torch.manual_seed(0)


def load(name):
    with open(os.path.join(data, name)) as f:
        return json.load(f)


dataset = {'train_tasks': load('train_tasks.json'),
           'dev_tasks': load('dev_tasks.json'),
           'test_tasks': load('test_tasks.json'),
           'rel2candidates': load('rel2candidates.json'),
           'e1rel_e2': load('e1rel_e2.json'),
           'ent2id': load('ent2ids')}


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


proto.write(json.dumps({'load_s': time.perf_counter() - t0,
                        'threads': torch.get_num_threads(),
                        'peak_gb': peak_gb()}) + '\n')
loaders = {}
for line in sys.stdin:
    req = json.loads(line)
    p = dict(base, few=req['shots'])
    if req['shots'] not in loaders:
        loaders[req['shots']] = DataLoader(dataset, p, step='train')
    loader = loaders[req['shots']]
    torch.manual_seed(0)
    trainer = Trainer([loader, None, None], dataset, p)
    sampling, step, cpu = [], [], []
    for i in range(req['warmup'] + req['steps']):
        c = time.process_time()
        t = time.perf_counter()
        task, rel = loader.next_batch()
        t1 = time.perf_counter()
        trainer.do_one_step(task, iseval=False, curr_rel=rel)
        t2 = time.perf_counter()
        if i >= req['warmup']:
            sampling.append(t1 - t)
            step.append(t2 - t1)
            cpu.append(time.process_time() - c)
    del trainer
    proto.write(json.dumps({
        'sampling': statistics.median(sampling),
        'forward, inner step, loss, backward, update':
            statistics.median(step),
        'cpu': statistics.median(cpu), 'peak_gb': peak_gb()}) + '\n')
'''


class PublishedCode:
    r"""The published MoEMeta code's training step, timed in a worker
    process (:data:`WORKER`) that loads the data once; :meth:`measure` asks
    it for one round and waits, idle, for the answer."""

    def __init__(self, path: str, data: str, batch_size: int,
                 threads: int):
        self.path = os.path.abspath(path)
        self.commit = checkout_commit(self.path)
        self.scratch = tempfile.TemporaryDirectory(
            prefix='pyg_fewshot_published_')
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, '-c', WORKER, self.path, data,
             str(batch_size), str(threads)], cwd=self.scratch.name,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env)
        self.info: Optional[dict] = None
        self.peak_gb = 0.0

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(
                f'the published code\'s worker exited (status '
                f'{self.proc.wait()}); its error is printed above')
        answer = json.loads(line)
        self.peak_gb = max(self.peak_gb, answer.pop('peak_gb'))
        return answer

    def wait_ready(self) -> dict:
        r"""Blocks until the worker has loaded the data (so that the
        loading never overlaps a measurement)."""
        if self.info is None:
            self.info = self._answer()
        return self.info

    def measure(self, shots: int, warmup: int, steps: int,
                cpu: Optional[List[float]] = None) -> Dict[str, float]:
        r"""Median phase times of ``steps`` steps of a fresh trainer after
        ``warmup`` untimed ones, as :func:`measure` gives ours."""
        self.wait_ready()
        self.proc.stdin.write(json.dumps(
            {'shots': shots, 'warmup': warmup, 'steps': steps}) + '\n')
        self.proc.stdin.flush()
        phases = self._answer()
        if cpu is not None:
            cpu.append(phases.pop('cpu'))
        else:
            phases.pop('cpu')
        return phases

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.scratch.cleanup()


def checkout_commit(path: str) -> str:
    r"""The commit of a git checkout (with a note when tracked files are
    modified), or a note that it is none."""
    try:
        head = subprocess.run(['git', '-C', path, 'rev-parse', 'HEAD'],
                              capture_output=True, text=True, check=True)
        dirty = subprocess.run(['git', '-C', path, 'status', '--porcelain',
                                '--untracked-files=no'],
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return 'not a git checkout (commit unknown)'
    return head.stdout.strip() + (' (with local changes to tracked files)'
                                  if dirty.stdout.strip() else '')


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
        out = model.init_local(ep.support, sh, s_tails[:, 0])
        local, aux = out.local, out.aux_loss
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
    parser.add_argument('--shots', nargs='+', type=int, default=None,
                        choices=sorted({c[3] for c in CONFIGS}),
                        help='run only the configurations at these K '
                        '(default: all); with --reference, the published '
                        'code is timed at every K that runs')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads, of ours and of the published '
                        'code (default: torch\'s default here)')
    parser.add_argument('--reference', default=None, metavar='PATH',
                        help='a checkout of the published MoEMeta code '
                        '(github.com/Anonymous20220610/KDD): time its '
                        'training step in the same rounds as ours and give '
                        'the measured ratio (the published code\'s runs '
                        'without background tasks or autocast)')
    args = parser.parse_args()
    if args.reference is not None and not os.path.isfile(
            os.path.join(args.reference, 'main.py')):
        raise SystemExit(f"skipped: '{args.reference}' holds no main.py "
                         f'(--reference takes a checkout of '
                         f'github.com/Anonymous20220610/KDD)')
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = shared_dataset('nell-one', args.data)
    # (key, label, model, shots, model arguments, amp, background tasks)
    configs = [c + (False, False) for c in CONFIGS
               if (args.only is None or c[0] in args.only)
               and (args.shots is None or c[3] in args.shots)]
    if not configs:
        raise SystemExit('no configuration matches --only and --shots')
    published = None
    if args.reference is not None:
        # Started first: it loads its data while we load ours.
        published = PublishedCode(args.reference, folder, args.batch_size,
                                  torch.get_num_threads())
    try:
        run(args, folder, configs, published)
    finally:
        if published is not None:
            published.close()


def run(args, folder: str, configs: list,
        published: Optional[PublishedCode]) -> None:
    data = load_dataset(folder)[0]
    graphs = {False: data}
    if args.amp:
        configs += [(key, label + ', bf16 autocast', name, shots, kw, True,
                     False)
                    for key, label, name, shots, kw, _, _ in configs]
    if args.background_tasks:
        graphs[True] = BackgroundTasks()(data)
        configs += [(key, label + ', background tasks', name, shots, kw,
                     amp, True)
                    for key, label, name, shots, kw, amp, _ in configs]
    # K at which the published code is timed: those of our configurations.
    ref_shots = sorted({c[3] for c in configs}) if published else []
    if published is not None:
        published.wait_ready()

    # Round-robin over the configurations, so that a burst of load on a
    # shared machine hits one round of every configuration, not one
    # configuration. With --reference, every round starts with the
    # published code at each K (its worker times while we wait, then waits
    # while we time).
    rounds: Dict[int, List[dict]] = defaultdict(list)
    ref_rounds: Dict[int, List[dict]] = defaultdict(list)
    # The machine's speed now against when the 6,800 tasks/s anchor was
    # taken, probed with the METHODS.md kernels right before and right after
    # every measurement (the speed drifts within a round too).
    probes: List[Dict[str, float]] = [reference_kernels()]
    speed: Dict[int, List[float]] = defaultdict(list)
    ref_speed: Dict[int, List[float]] = defaultdict(list)
    cpu: Dict[int, List[float]] = defaultdict(list)
    ref_cpu: Dict[int, List[float]] = defaultdict(list)
    for r in range(args.repeats):
        for shots in ref_shots:
            before = machine_speed(probes[-1])
            ref_rounds[shots].append(published.measure(
                shots, args.warmup, args.steps, ref_cpu[shots]))
            probes.append(reference_kernels())
            slow = math.sqrt(before * machine_speed(probes[-1]))
            ref_speed[shots].append(slow)
            step = sum(ref_rounds[shots][-1].values())
            print(f'round {r + 1}: published code, {shots}-shot: '
                  f'{args.batch_size / step:,.0f} tasks/s (machine '
                  f'{slow:.2f}x the anchor\'s time)', file=sys.stderr)
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
        '| model | K | s / step | tasks / s | '
        + ('measured: published code\'s s / step over ours (same K, same '
           'round) | ' if published else '')
        + 'estimate: vs published code (6,800 tasks/s anchor) | estimate, '
        'speed-adjusted | phases (ms) |',
        '|---|---|---|---|' + ('---|' if published else '') + '---|---|---|'
    ]
    ref_label = 'MoEMeta, published code'
    for shots in ref_shots:
        lines.append(table_row(ref_label, shots, ref_rounds[shots],
                               ref_speed[shots], args.batch_size, '-'))
    for i, (_, label, name, shots, _, _, _) in enumerate(configs):
        measured = None
        if published is not None:
            ratios = sorted(sum(p.values()) / sum(o.values())
                            for p, o in zip(ref_rounds[shots], rounds[i]))
            measured = f'{statistics.median(ratios):.1f}x' + (
                f' ({ratios[0]:.1f}-{ratios[-1]:.1f})'
                if len(ratios) > 1 else '')
        lines.append(table_row(label, shots, rounds[i], speed[i],
                               args.batch_size, measured))
    probe = {k: statistics.median(p[k] for p in probes)
             for k in REFERENCE_KERNEL_MS}
    slows = [machine_speed(p) for p in probes]
    if published is not None:
        info = published.wait_ready()
        lines += [
            '', f'{ref_label}: {published.path} at commit '
            f'{published.commit}, timed in a worker process '
            f'({info["threads"]} threads; \'Discard\' form, random entity '
            f'vectors; data loaded once, in {info["load_s"]:.1f} s; peak '
            f'resident memory {published.peak_gb:.1f} GB; a fresh trainer '
            f'each round), alternating with ours: sampling = its '
            f'DataLoader.next_batch, the rest = its Trainer.do_one_step. '
            f'Process CPU s / step (median over rounds): '
            + ', '.join(f'{k}-shot {statistics.median(ref_cpu[k]):.4f}'
                        for k in ref_shots)
            + '. Measured ratio: its s / step over ours in the same round, '
            'the median over rounds' + (' (range)' if args.repeats > 1
                                        else '') + '.']
    lines += [
        '', 'Estimates: tasks/s against the published code\'s 6,800 tasks/s '
        '(1-shot, METHODS.md; also for 5-shot rows), not measured in this '
        'run. Speed-adjusted: each round\'s tasks/s times the machine\'s '
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


def table_row(label: str, shots: int, rounds: List[dict],
              speed: List[float], batch_size: int,
              measured: Optional[str]) -> str:
    r"""A row of the main table: the median round's step and phases, the
    range of tasks/s over rounds, the measured ratio to the published code
    (``None``: no column) and the estimates against the anchor."""
    steps = sorted(rounds, key=lambda p: sum(p.values()))
    phases = steps[len(steps) // 2]
    step = sum(phases.values())
    rate = batch_size / step
    rates = f'{rate:,.0f}'
    if len(steps) > 1:
        lo = batch_size / sum(steps[-1].values())
        hi = batch_size / sum(steps[0].values())
        rates += f' [{lo:,.0f}-{hi:,.0f}]'
    detail = ', '.join(f'{k} {1000 * v:.1f}' for k, v in phases.items())
    adjusted = statistics.median(
        batch_size / sum(p.values()) * s / PUBLISHED_TASKS_PER_S
        for p, s in zip(rounds, speed))
    return (f'| {label} | {shots} | {step:.4f} | {rates} | '
            + (f'{measured} | ' if measured is not None else '')
            + f'{rate / PUBLISHED_TASKS_PER_S:.1f}x | {adjusted:.1f}x | '
            f'{detail} |')


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
