"""FusionAdapter next to MetaR and MoEMeta on the bundled UMLS-One, with
the text modality computed offline from the entity names, plus the
robustness and ablation runs of FusionAdapter.

    python benchmarks/fusion_adapter_umls.py [--quick] [--seeds 3]
        [--threads 1] [--docs docs/fusion_adapter.md] [--json out.json]

Everything goes through the library API: ``load_dataset('umls-one')``,
``text_features`` (cached in the processed folder), ``build_model`` of each
model configuration,
``MetaTrainer`` (dev-MRR model selection, best checkpoint), ``evaluate`` on
the test split. For every seed it trains

* MetaR, MoEMeta and FusionAdapter (MetaR backbone, m = 50, lambda = 1);
* the ablations lambda = 0 and adapter size m in {16, 128};

and evaluates the FusionAdapter checkpoint again with the text modality
removed for every entity (all masks False), with 50 % of the entities
missing it, and without test-time adapter tuning (T = 0). Numbers are
mean +/- std over seeds (never a best-of-N). ``--quick`` is a smoke run
(1 seed, few steps); the full run is sized for about 15 minutes on 2 cores.

``--nell-one PATH`` (a NELL-One folder in the standard layout) adds the text
modality on NELL-One: encoding time of the 68,544 entity names (or the
cached reload when ``--nell-root`` is reused) and a short-budget MetaR vs
FusionAdapter run (one seed, ``--nell-steps`` steps, default 2000, B = 1024,
random initial vectors; a demonstration that the pipeline scales, not the
published protocol).
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import torch

from _common import machine
from pyg_fewshot.data.modalities import mask_random_entities
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.data.text import text_features
from pyg_fewshot.evaluation import chance_level, evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import MetaRConfig, build_model

try:  # the package-level export, once pyg_fewshot.data exports it
    from pyg_fewshot.data import load_dataset
except ImportError:  # pragma: no cover
    from pyg_fewshot.data.dataset import load_dataset

METRICS = ('mrr', 'hits@1', 'hits@5', 'hits@10')
MARK_START = '<!-- fusion-adapter-umls:start -->'
MARK_END = '<!-- fusion-adapter-umls:end -->'
NELL_START = '<!-- fusion-adapter-nell:start -->'
NELL_END = '<!-- fusion-adapter-nell:end -->'


def command() -> str:
    # The invocation, minus the output-only options (--docs, --json).
    argv, out, skip = sys.argv[1:], [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ('--docs', '--json'):
            skip = True
        elif not a.startswith(('--docs=', '--json=')):
            out.append(a)
    return ' '.join(['python benchmarks/fusion_adapter_umls.py'] + out)


def configs() -> List[Dict[str, Any]]:
    return [
        dict(key='metar', label='MetaR',
             build=lambda d: build_model('metar', d)),
        dict(key='moemeta', label='MoEMeta',
             build=lambda d: build_model('moemeta', d)),
        dict(key='fa', label='FusionAdapter (MetaR backbone, text, m=50, '
             'λ=1)', build=lambda d: build_model('fusionadapter', d)),
        dict(key='fa_lambda0', label='FusionAdapter, λ=0 (no diversity '
             'loss)', build=lambda d: build_model(
                 'fusionadapter', d, diversity_weight=0.0)),
        dict(key='fa_m16', label='FusionAdapter, m=16',
             build=lambda d: build_model('fusionadapter', d,
                                         adapter_hidden=16)),
        dict(key='fa_m128', label='FusionAdapter, m=128',
             build=lambda d: build_model('fusionadapter', d,
                                         adapter_hidden=128)),
    ]


def train_one(build: Callable, data, args, seed: int, out: str):
    torch.manual_seed(seed)
    model = build(data)
    learner = MetaLearner(model)
    sampler = EpisodeSampler(data, args.shots, 3, args.batch_size, 'train',
                             seed=seed)

    def validate() -> float:
        return evaluate(model, data, 'dev', args.shots, learner,
                        seed=seed)['mrr']

    trainer = MetaTrainer(learner, sampler, out, validate=validate,
                          lr=1e-3, max_steps=args.max_steps,
                          eval_every=args.eval_every, patience=1000,
                          progress=False)
    t0 = time.perf_counter()
    summary = trainer.fit(resume=False)
    trainer.load_best()
    seconds = time.perf_counter() - t0
    return model, learner, summary, seconds


def test_metrics(model, data, learner, args, seed: int) -> Dict[str, float]:
    res = evaluate(model, data, 'test', args.shots, learner, seed=seed)
    return {k: res[k] for k in METRICS}


def fmt(values: List[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.3f}'
    return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def nell_one(args) -> str:
    root = args.nell_root or tempfile.mkdtemp(prefix='fa_nell_')
    t0 = time.perf_counter()
    dataset = load_dataset(args.nell_one, root=root, log=False)
    data = dataset[0]
    load_s = time.perf_counter() - t0
    cache = os.path.join(dataset.processed_dir, 'text_all-MiniLM-L6-v2.pt')
    was_cached = os.path.isfile(cache)
    t0 = time.perf_counter()
    text_features(data, dataset.processed_dir)
    text_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    text_features(data, dataset.processed_dir)
    reload_s = time.perf_counter() - t0
    n = data['entity'].num_nodes
    print(f'NELL-One: {n} entities loaded in {load_s:.1f} s; text modality '
          f"{'reloaded from cache' if was_cached else 'encoded'} in "
          f'{text_s:.1f} s, cached reload {reload_s:.1f} s', flush=True)
    nargs = argparse.Namespace(**{**vars(args), 'batch_size': 1024,
                                  'max_steps': args.nell_steps,
                                  'eval_every': min(args.nell_eval_every,
                                                    args.nell_steps)})
    rows = []
    for label, build in (('MetaR', lambda d: build_model('metar', d)),
                         ('FusionAdapter (MetaR backbone, text)',
                          lambda d: build_model('fusionadapter', d))):
        out = tempfile.mkdtemp(prefix='fa_nell_run_')
        model, learner, summary, secs = train_one(build, data, nargs, 0, out)
        t0 = time.perf_counter()
        m = test_metrics(model, data, learner, nargs, 0)
        eval_s = time.perf_counter() - t0
        print(f'NELL-One {label}: test MRR {m["mrr"]:.3f} ({secs:.0f} s '
              f'train + dev eval, {eval_s:.0f} s test eval)', flush=True)
        shutil.rmtree(out, ignore_errors=True)  # checkpoints: not needed
        rows.append(f'| {label} | ' + ' | '.join(f'{m[k]:.3f}'
                                                 for k in METRICS) +
                    f' | {secs:.0f} | {eval_s:.0f} |')
    chance = chance_level(data, 'test', args.shots)
    lines = [
        f'Command: `{command()}`  ',
        f'Machine: {machine()}.  ',
        f'Text modality: {n} entity names → `[{n}, 384]` '
        f"({'reloaded from the cache' if was_cached else 'encoded'} in "
        f'{text_s:.0f} s; cached reload {reload_s:.1f} s).  ',
        f'Short budget: one seed, {args.nell_steps} meta-training steps '
        f'(B = 1024, {args.shots}-shot, random initial vectors, no '
        f'pretraining), dev MRR every {nargs.eval_every} steps selects the '
        f'checkpoint; random-ranking test MRR '
        f'{chance["mrr"]:.3f}.',
        '',
        '| model | test MRR | Hits@1 | Hits@5 | Hits@10 | train s | test '
        'eval s |',
        '|---|---|---|---|---|---|---|',
    ] + rows
    return '\n'.join(lines)


def replace_block(path: str, start: str, end: str, table: str) -> None:
    with open(path) as f:
        doc = f.read()
    if start not in doc or end not in doc:
        raise SystemExit(f'{path} has no {start} ... {end} block')
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    stamp = time.strftime('%Y-%m-%d')
    with open(path, 'w') as f:
        f.write(f'{head}{start}\nRun on {stamp}.  \n{table}\n{end}{tail}')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true',
                   help='smoke run: 1 seed, 60 steps')
    p.add_argument('--seeds', type=int, default=None,
                   help='seeds 0..S-1 (default: 3, quick: 1)')
    p.add_argument('--max-steps', type=int, default=None,
                   help='meta-training steps per run (default: 1000, '
                   'quick: 60)')
    p.add_argument('--eval-every', type=int, default=None,
                   help='steps between dev evaluations (default: 100, '
                   'quick: 30)')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--shots', type=int, default=1)
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads (default: torch default)')
    p.add_argument('--data-root', default=None,
                   help='processed-data folder (default: a fresh temp dir, '
                   'so the text encoding is timed too)')
    p.add_argument('--docs', default=None,
                   help='markdown file whose results block is replaced')
    p.add_argument('--json', default=None, help='write raw results here')
    p.add_argument('--nell-one', default=None, metavar='PATH',
                   help='also run the NELL-One text-modality demonstration')
    p.add_argument('--nell-root', default=None,
                   help='processed-data folder for NELL-One (reuse it to '
                   'reload the cached text features)')
    p.add_argument('--nell-steps', type=int, default=2000)
    p.add_argument('--nell-eval-every', type=int, default=500)
    p.add_argument('--skip-umls', action='store_true',
                   help='only run the NELL-One part')
    args = p.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.max_steps = args.max_steps or (60 if args.quick else 1000)
    args.eval_every = args.eval_every or (30 if args.quick else 100)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.skip_umls:
        if not args.nell_one:
            raise SystemExit('--skip-umls needs --nell-one PATH')
        table = nell_one(args)
        print()
        print(table)
        if args.docs:
            replace_block(args.docs, NELL_START, NELL_END, table)
        return 0

    t_start = time.perf_counter()
    root = args.data_root or tempfile.mkdtemp(prefix='fa_umls_')
    dataset = load_dataset('umls-one', root=root, log=False)
    data = dataset[0]
    t0 = time.perf_counter()
    text_features(data, dataset.processed_dir)
    text_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    text_features(data, dataset.processed_dir)
    cached_seconds = time.perf_counter() - t0
    print(f'text modality: {tuple(data["entity"].x_text.shape)} encoded in '
          f'{text_seconds:.1f} s (cached reload {cached_seconds:.2f} s)',
          flush=True)

    results: Dict[str, Dict[str, List[float]]] = {}
    extra: Dict[str, Dict[str, List[float]]] = {}
    timing: Dict[str, List[float]] = {}
    work = tempfile.mkdtemp(prefix='fa_umls_runs_')
    for seed in range(args.seeds):
        for cfg in configs():
            out = os.path.join(work, f"{cfg['key']}_{seed}")
            model, learner, summary, secs = train_one(cfg['build'], data,
                                                      args, seed, out)
            m = test_metrics(model, data, learner, args, seed)
            for k, v in m.items():
                results.setdefault(cfg['key'], {}).setdefault(k, []).append(v)
            results[cfg['key']].setdefault('best_step', []).append(
                summary['best_step'])
            timing.setdefault(cfg['key'], []).append(secs)
            print(f"seed {seed} {cfg['label']}: test MRR {m['mrr']:.3f} "
                  f"H@1 {m['hits@1']:.3f} H@10 {m['hits@10']:.3f} "
                  f"(best step {summary['best_step']}, {secs:.0f} s)",
                  flush=True)
            if cfg['key'] != 'fa':
                continue
            # Robustness: the same checkpoint under other data / settings.
            state = model.state_dict()

            def rebuilt(d):
                fresh = build_model('fusionadapter', d,
                                    backbone=MetaRConfig(pretrained=False))
                fresh.load_state_dict(state)
                return fresh

            variants = {}
            no_text = data.clone()
            mask_random_entities(no_text, 'text', 1.0)
            variants['no_text'] = (rebuilt(no_text), no_text)
            half = data.clone()
            mask_random_entities(half, 'text', 0.5, seed=seed)
            variants['half_text'] = (rebuilt(half), half)
            no_tta = rebuilt(data)
            no_tta.tta_steps = 0
            variants['no_tta'] = (no_tta, data)
            for name, (vm, vd) in variants.items():
                vm_metrics = test_metrics(vm, vd, MetaLearner(vm), args,
                                          seed)
                for k, v in vm_metrics.items():
                    extra.setdefault(name, {}).setdefault(k, []).append(v)
                print(f'  {name}: test MRR {vm_metrics["mrr"]:.3f}',
                      flush=True)
    total = time.perf_counter() - t_start
    shutil.rmtree(work, ignore_errors=True)  # the runs' checkpoints
    if args.data_root is None:
        shutil.rmtree(root, ignore_errors=True)
    chance = chance_level(data, 'test', args.shots)

    labels = {c['key']: c['label'] for c in configs()}
    lines = [
        f'Command: `{command()}`  ',
        f'Budget: {args.seeds} seed(s) × {len(labels)} trainings, '
        f'{args.max_steps} meta-training steps each (B = {args.batch_size}, '
        f'{args.shots}-shot, 3 queries, Adam 1e-3, random initial entity '
        f'vectors), dev MRR every {args.eval_every} steps selects the '
        f'checkpoint; total {total / 60:.1f} min including '
        f'{text_seconds:.1f} s to encode the text modality.  ',
        f'Machine: {machine()}.  ',
        f'Test split: {chance["num_queries"]} queries over 5 relations; '
        f'random-ranking MRR {chance["mrr"]:.3f}, Hits@10 '
        f'{chance["hits@10"]:.3f}. Mean ± std over seeds '
        f'{list(range(args.seeds))}.',
        '',
        '| model | test MRR | Hits@1 | Hits@5 | Hits@10 | train s/run |',
        '|---|---|---|---|---|---|',
    ]
    for key in ('metar', 'moemeta', 'fa'):
        r = results[key]
        secs = statistics.mean(timing[key])
        lines.append(f'| {labels[key]} | ' + ' | '.join(
            fmt(r[k]) for k in METRICS) + f' | {secs:.0f} |')
    lines += ['', 'Robustness (the FusionAdapter checkpoints above, '
              'evaluated again):', '',
              '| evaluation | test MRR | Hits@1 | Hits@5 | Hits@10 |',
              '|---|---|---|---|---|']
    rows = [('fa', 'full text modality (as trained)', results),
            ('half_text', 'text missing for 50 % of entities (masks)',
             extra),
            ('no_text', 'text removed for every entity', extra),
            ('no_tta', 'no test-time adapter tuning (T = 0)', extra)]
    for key, label, src in rows:
        lines.append(f'| {label} | ' + ' | '.join(
            fmt(src[key][k]) for k in METRICS) + ' |')
    lines += ['', 'Ablations (trained separately):', '',
              '| model | test MRR | Hits@1 | Hits@5 | Hits@10 |',
              '|---|---|---|---|---|']
    for key in ('fa', 'fa_lambda0', 'fa_m16', 'fa_m128'):
        lines.append(f'| {labels[key]} | ' + ' | '.join(
            fmt(results[key][k]) for k in METRICS) + ' |')
    table = '\n'.join(lines)
    print()
    print(table)

    if args.docs:
        replace_block(args.docs, MARK_START, MARK_END, table)
    if args.nell_one:
        nell_table = nell_one(args)
        print()
        print(nell_table)
        if args.docs:
            replace_block(args.docs, NELL_START, NELL_END, nell_table)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(results=results, robustness=extra, timing=timing,
                           chance=chance, text_seconds=text_seconds,
                           total_seconds=total, args=vars(args)), f,
                      indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
