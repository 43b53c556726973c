"""TransE pretraining for the few-shot task: held-out link-prediction MRR of
the vectors beside the few-shot dev MRR of MetaR trained from them.

    OMP_NUM_THREADS=1 python benchmarks/transe_pretraining.py \
        [--data PATH] [--settings NAME ...] [--seeds 0] \
        [--output-dir runs/transe_pretraining] [--table docs/table.md]

For every setting (TransE epochs / early stopping, learning rate, whether
the vectors are rescaled as the CLI does) the script pretrains TransE with
:func:`pyg_fewshot.data.pretrain.load_or_pretrain` on the background graph
minus a seeded held-out slice (1 %, at most 1,000 triples; the ``full-``
setting is the library default, trained on every triple), reads the
filtered tail-prediction MRR of the slice at the kept epoch, then runs
``pyg-fewshot train --model metar --pretrain --max-steps 2000 --eval-every
500 --seed S`` (the CLI's code path, through ``_common.run_train``) with
those vectors in place of the CLI's default ones. The dev MRR (best of the
evaluations, the checkpoint the CLI keeps) is the selection criterion; the
test MRR is reported, never used to choose.

Resumable: the vectors are cached by the library (keyed by every setting),
every MetaR run folder is reused when finished, and each setting's result
is a JSON file in ``--output-dir`` that is read instead of recomputed.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, Iterator, List

import torch

from _common import machine, mean_std, run_train, shared_dataset, \
    write_output

# The held-out slice shared by every setting but 'full-e20'. Every setting
# spells out what it depends on, so a change of the library defaults does
# not change what a name means.
HOLDOUT = dict(holdout=0.01, max_holdout=1000, holdout_seed=0, eval_every=5,
               lr=0.01, patience=None)

# Setting name -> (load_or_pretrain keyword arguments, rescale like the CLI).
SETTINGS: Dict[str, Any] = {
    # The library default (20 epochs on every triple).
    'full-e20': (dict(epochs=20, lr=0.01, holdout=0.0), True),
    # The same on the background minus the held-out slice (last epoch kept).
    'e20': (dict(HOLDOUT, epochs=20, restore_best=False), True),
    'e20-raw': (dict(HOLDOUT, epochs=20, restore_best=False), False),
    # Control: PyG's initial vectors (uniform, normalised), no training.
    'e0': (dict(HOLDOUT, epochs=0), True),
    'e5': (dict(HOLDOUT, epochs=5, restore_best=False), True),
    'e10': (dict(HOLDOUT, epochs=10, restore_best=False), True),
    'e100': (dict(HOLDOUT, epochs=100, restore_best=False), True),
    'e100-raw': (dict(HOLDOUT, epochs=100, restore_best=False), False),
    # Early stopping on the held-out MRR (evaluated every epoch at lr >=
    # 0.01, where it peaks within a few epochs; stop after 3 evaluations
    # without a better one). 'es-lr0.01' is dev's choice
    # (pretrain.EARLY_STOPPED_PRETRAIN; the cap of 200 epochs is never
    # reached on NELL-One).
    'es-lr0.01': (dict(HOLDOUT, epochs=200, eval_every=1, patience=3), True),
    'es-lr0.01-raw': (dict(HOLDOUT, epochs=200, eval_every=1, patience=3),
                      False),
    'es-lr0.03': (dict(HOLDOUT, lr=0.03, epochs=200, eval_every=1,
                       patience=3), True),
    'es-lr0.003': (dict(HOLDOUT, lr=0.003, epochs=200, eval_every=2,
                        patience=3), True),
    'es-lr0.001': (dict(HOLDOUT, lr=0.001, epochs=300, eval_every=5,
                        patience=3), True),
    'e20-p2': (dict(HOLDOUT, epochs=20, p_norm=2.0, restore_best=False),
               True),
}
DEFAULT_ORDER = ['full-e20', 'e20', 'es-lr0.01', 'e20-raw', 'e100',
                 'es-lr0.003', 'es-lr0.03', 'e0', 'e10', 'e5',
                 'es-lr0.01-raw', 'es-lr0.001']


@contextlib.contextmanager
def vectors_for_cli(ent: torch.Tensor, rel: torch.Tensor,
                    rescale: bool) -> Iterator[None]:
    """Makes ``pyg-fewshot train --pretrain`` (in this process) start from
    ``ent`` / ``rel`` instead of the default pretraining; rescaled exactly as
    the run's data loading (:class:`~pyg_fewshot.data.ScaleEmbeddings`)
    does when ``rescale``. Patches the data loading of
    :func:`pyg_fewshot.pipeline.run` (``pipeline.runner.load_data``)."""
    import dataclasses
    import pyg_fewshot.pipeline.runner as pipeline_run

    original = pipeline_run.load_data

    def load(config, embedding_dim=100, text=False, progress=True):
        dataset, data = original(dataclasses.replace(config, pretrain=False),
                                 embedding_dim=embedding_dim, text=text,
                                 progress=progress)
        if config.pretrain:
            if ent.size(1) != embedding_dim:
                raise ValueError(f'vectors of size {ent.size(1)}, model '
                                 f'size {embedding_dim}')
            scale = (1.0 / ent.norm(dim=1).mean().clamp(min=1e-12)
                     if rescale else 1.0)
            data['entity'].emb = ent * scale
            data.relation_emb = rel * scale
        return dataset, data

    pipeline_run.load_data = load
    try:
        yield
    finally:
        pipeline_run.load_data = original


def dev_curve(res: Dict[str, Any]) -> List[List[float]]:
    """``[step, dev MRR]`` of every evaluation of a MetaR run."""
    return [[h['step'], h['score']] for h in res['history']]


def kept_record(history: Dict[str, Any]) -> Dict[str, Any]:
    """The curve entry of the epoch whose vectors were kept."""
    kept = history['kept_epoch']
    for rec in history['curve']:
        if rec['epoch'] == kept:
            return rec
    return {'epoch': kept, 'loss': None}


def run_setting(name: str, data_path: str, data_root: str, out_dir: str,
                seed: int, max_steps: int, eval_every: int,
                shots: int) -> Dict[str, Any]:
    path = os.path.join(out_dir, f'{name}-seed{seed}.json')
    run_dir = os.path.join(out_dir, 'runs', f'{name}-seed{seed}')
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
        if 'dev_curve' not in result:  # results of an earlier version
            with open(os.path.join(run_dir, 'results.json')) as f:
                result['dev_curve'] = dev_curve(json.load(f))
        return result
    from pyg_fewshot.data import load_dataset
    from pyg_fewshot.data.pretrain import load_or_pretrain

    kwargs, rescale = SETTINGS[name]
    dataset = load_dataset(data_path, root=data_root)
    t0 = time.perf_counter()
    ent, rel, history = load_or_pretrain(dataset, progress=False,
                                         return_history=True, **kwargs)
    pretrain_s = time.perf_counter() - t0
    rec = kept_record(history)
    print(f"[{name}] TransE: {history['epochs_run']} epochs run, kept "
          f"{history['kept_epoch']}, loss {rec.get('loss')}, held-out MRR "
          f"{rec.get('mrr')} ({pretrain_s:.0f} s incl. cache)", flush=True)
    argv = ['--model', 'metar', '--dataset', data_path, '--pretrain',
            '--shots', str(shots), '--seed', str(seed), '--max-steps',
            str(max_steps), '--eval-every', str(eval_every), '--output',
            run_dir, '--quiet']
    if data_root:
        argv += ['--data-root', data_root]
    with vectors_for_cli(ent, rel, rescale):
        res = run_train(argv)
    scale = float(1.0 / ent.norm(dim=1).mean()) if rescale else 1.0
    result = {
        'setting': name, 'pretrain': dict(kwargs),
        'rescaled': rescale, 'seed': seed, 'shots': shots,
        'max_steps': max_steps, 'eval_every': eval_every,
        'transe': {k: history.get(k) for k in (
            'epochs_run', 'kept_epoch', 'best_epoch', 'best_mrr',
            'stopped_early', 'num_train_triples', 'num_holdout_triples',
            'train_seconds', 'eval_seconds')},
        'kept': rec, 'curve': history['curve'],
        'entity_l2_norm': float((ent * scale).norm(dim=1).mean()),
        'relation_l2_norm': float((rel * scale).norm(dim=1).mean()),
        'dev_mrr': res['dev']['mrr'], 'test_mrr': res['test']['mrr'],
        'dev_macro_mrr': res['dev']['macro']['mrr'],
        'dev_curve': dev_curve(res), 'best_step': res['best_step'],
        'metar_train_seconds': res['train_seconds'],
        'threads': torch.get_num_threads(),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(result, f, indent=2)
    os.replace(path + '.tmp', path)
    print(f"[{name}] MetaR seed {seed}: dev MRR {result['dev_mrr']:.4f}, "
          f"test MRR {result['test_mrr']:.4f}", flush=True)
    return result


def _fmt(x: Any, digits: int = 3) -> str:
    return '—' if x is None else f'{x:.{digits}f}'


def table(results: List[Dict[str, Any]]) -> str:
    lines = [
        '| setting | lr | TransE epochs run / kept | rescaled | loss at '
        'kept epoch | held-out MRR | mean entity L2 norm | MetaR dev MRR | '
        'MetaR test MRR (report only) | dev MRR at each evaluation |',
        '|---|---:|---|---|---:|---:|---:|---:|---:|---|'
    ]
    for r in results:
        lr = r['pretrain'].get('lr', 0.01)
        t = r['transe']
        lines.append(
            f"| {r['setting']} (seed {r['seed']}) | {lr:g} | "
            f"{t['epochs_run']} / {t['kept_epoch']}"
            f"{' (early stop)' if t['stopped_early'] else ''} | "
            f"{'yes' if r['rescaled'] else 'no'} | {_fmt(r['kept']['loss'])} "
            f"| {_fmt(r['kept'].get('mrr'))} | {r['entity_l2_norm']:.3f} | "
            f"{r['dev_mrr']:.3f} | {r['test_mrr']:.3f} | "
            + ' / '.join(f'{m:.3f}' for _, m in r['dev_curve']) + ' |')
    return '\n'.join(lines)


def summary_table(results: List[Dict[str, Any]]) -> str:
    """Mean over MetaR seeds per setting, best mean dev MRR first."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r['setting'], []).append(r)

    lines = ['| setting | MetaR seeds | held-out MRR | MetaR dev MRR | '
             'MetaR test MRR (report only) |', '|---|---|---:|---:|---:|']
    order = sorted(groups, key=lambda k: -statistics.mean(
        r['dev_mrr'] for r in groups[k]))
    for name in order:
        rs = groups[name]
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in rs)} | "
            f"{_fmt(rs[0]['kept'].get('mrr'))} | "
            f"{mean_std([r['dev_mrr'] for r in rs])} | "
            f"{mean_std([r['test_mrr'] for r in rs])} |")
    return '\n'.join(lines)


def curve_table(result: Dict[str, Any]) -> str:
    rows = [c for c in result['curve'] if c.get('mrr') is not None]
    head = '| epoch | ' + ' | '.join(str(c['epoch']) for c in rows) + ' |'
    sep = '|---|' + '---:|' * len(rows)
    loss = '| training loss | ' + ' | '.join(
        _fmt(c['loss']) for c in rows) + ' |'
    mrr = '| held-out MRR | ' + ' | '.join(
        _fmt(c['mrr']) for c in rows) + ' |'
    return '\n'.join([head, sep, loss, mrr])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', default=None,
                        help='NELL-One folder (default: '
                        '$PYG_FEWSHOT_SHARED_DATA/nell-one or '
                        '../shared/data/nell-one)')
    parser.add_argument('--data-root', default=None,
                        help='processed-data root (default: the CLI\'s)')
    parser.add_argument('--settings', nargs='+', default=DEFAULT_ORDER,
                        choices=sorted(SETTINGS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--max-steps', type=int, default=2000)
    parser.add_argument('--eval-every', type=int, default=500)
    parser.add_argument('--output-dir', default='runs/transe_pretraining')
    parser.add_argument('--report', action='store_true',
                        help='only tabulate the settings and seeds already '
                        'in --output-dir; run nothing')
    parser.add_argument('--table', default=None,
                        help='also write the markdown tables here')
    args = parser.parse_args()
    try:
        data = shared_dataset('nell-one', args.data)
    except SystemExit as e:
        print(e)
        return
    if os.environ.get('OMP_NUM_THREADS') is None:
        print('note: OMP_NUM_THREADS is unset; the documented runs use 1',
              file=sys.stderr)
    results = []
    for seed in args.seeds:
        for name in args.settings:
            if args.report and not os.path.isfile(os.path.join(
                    args.output_dir, f'{name}-seed{seed}.json')):
                continue
            results.append(run_setting(name, data, args.data_root,
                                       args.output_dir, seed, args.max_steps,
                                       args.eval_every, args.shots))
    if not results:
        print('no results')
        return
    text = [f'Machine: {machine()}', '', table(results), '',
            'Mean ± std over MetaR seeds (TransE seed 0):', '',
            summary_table(results)]
    longest = max(results, key=lambda r: sum(
        c.get('mrr') is not None for c in r['curve']))
    if any(c.get('mrr') is not None for c in longest['curve']):
        text += ['', f"Held-out curve of '{longest['setting']}':", '',
                 curve_table(longest)]
    write_output('\n'.join(text), args.table)


if __name__ == '__main__':
    main()
