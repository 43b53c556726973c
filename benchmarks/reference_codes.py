"""Runs the published MetaR (AnselCmy/MetaR) and MoEMeta
(Anonymous20220610/KDD) code on a data folder, beside the library, at the
same budget, and records their test metrics.

Nothing of the published code is in this project: pass the path of a
checkout made outside the repository. The checkout is not modified; the
run happens in a scratch folder, through a small launcher that applies the
runtime patches current torch on a CPU needs:

* ``params.get_params`` builds a CUDA device: the launcher replaces it with
  the CPU device after the call;
* ``tensorboardX`` is imported for logging: a module of that name with a
  no-op ``SummaryWriter`` is put on the path when the package is missing
  (and the log folder its writer would make is made beforehand);
* MetaR's margin-loss target ``torch.Tensor([1])`` no longer broadcasts
  against ``[B, 1]`` scores: the launcher wraps
  ``torch.nn.functional.margin_ranking_loss`` to expand a target to the
  scores' shape (a no-op for the MoEMeta fork, which already passes the
  right shape).

``--dataset NELL-One`` only chooses the published layer sizes (embedding
100, hidden 500/200), and the loop validates at ``e % eval_epoch == 0 and
e != 0``, so a budget of N steps runs ``--epoch N + 1``.

    python benchmarks/reference_codes.py --code metar=PATH [--code \
        moemeta=PATH] [--data ../shared/data/umls-one] [--form Discard] \
        [--shots 1] [--seeds 0 1 2] [--max-steps 1000] [--eval-every 200] \
        [--batch-size 1024] [--runs-dir runs/reference] [--output FILE]

Each run's metrics are written as JSON under --runs-dir and reused. With no
--code, the script says so and exits (skipped).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from _common import load_average, machine, write_output

LAUNCHER = r'''
import runpy, sys, importlib.util
import torch
if importlib.util.find_spec('tensorboardX') is None:
    import types
    class SummaryWriter:
        def __init__(self, *a, **k): pass
        def __getattr__(self, name): return lambda *a, **k: None
    sys.modules['tensorboardX'] = types.SimpleNamespace(
        SummaryWriter=SummaryWriter)
import params
_get_params = params.get_params
def get_params():
    p = _get_params()
    p['device'] = torch.device('cpu')
    return p
params.get_params = get_params
_mrl = torch.nn.functional.margin_ranking_loss
def margin_ranking_loss(input1, input2, target, *args, **kwargs):
    return _mrl(input1, input2, target.expand_as(input1), *args, **kwargs)
torch.nn.functional.margin_ranking_loss = margin_ranking_loss
sys.argv = ['main.py'] + sys.argv[1:]
runpy.run_path('main.py', run_name='__main__')
'''

METRIC = re.compile(r'MRR: ([0-9.]+)\tHits@10: ([0-9.]+)\tHits@5: '
                    r'([0-9.]+)\tHits@1: ([0-9.]+)')
BEST = re.compile(r'Best epoch is (\d+)')


def parse_output(text: str) -> Dict[str, float]:
    """Test metrics from the published code's stdout: the last metric line
    printed after ``test``."""
    tail = text[text.rfind('\ntest\n'):]
    lines = [m for m in METRIC.finditer(tail)]
    if not lines:
        raise RuntimeError('no test metrics in the output:\n' + text[-2000:])
    mrr, h10, h5, h1 = (float(x) for x in lines[-1].groups())
    best = BEST.search(text)
    return {'mrr': mrr, 'hits@10': h10, 'hits@5': h5, 'hits@1': h1,
            'best_step': int(best.group(1)) if best else None}


def run_reference(code: str, data: str, form: str, shots: int, seed: int,
                  max_steps: int, eval_every: int, batch_size: int,
                  out: str, threads: int) -> dict:
    path = os.path.join(out, 'result.json')
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    argv = ['--dataset', 'NELL-One', '--data_path', data, '--data_form',
            form, '--few', str(shots), '--seed', str(seed), '--epoch',
            str(max_steps + 1), '--eval_epoch', str(eval_every),
            '--checkpoint_epoch', str(eval_every), '--batch_size',
            str(batch_size), '--prefix', 'run', '--step', 'train']
    env = dict(os.environ, PYTHONPATH=os.path.abspath(code),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as scratch:
        # The published code writes its logs and states into the working
        # folder; main.py is found there through a link.
        os.symlink(os.path.join(os.path.abspath(code), 'main.py'),
                   os.path.join(scratch, 'main.py'))
        # tensorboardX's writer would have made the log folder.
        os.makedirs(os.path.join(scratch, 'log', 'run'))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, '-c', LAUNCHER] + argv,
                              cwd=scratch, env=env, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - t0
    with open(os.path.join(out, 'stdout.txt'), 'w') as f:
        f.write(proc.stdout + '\n--- stderr ---\n' + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f'the published code failed (see '
                           f"{os.path.join(out, 'stdout.txt')}):\n"
                           + proc.stderr[-2000:])
    res = parse_output(proc.stdout)
    res.update(seconds=round(seconds, 1), seed=seed, threads=threads,
               argv=argv)
    with open(path, 'w') as f:
        json.dump(res, f, indent=2)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--code', action='append', default=[],
                        metavar='NAME=PATH',
                        help='a checkout of the published code, e.g. '
                        'metar=/path/to/MetaR or moemeta=/path/to/KDD')
    parser.add_argument('--data', default=None,
                        help='data folder in the standard layout (default: '
                        '$PYG_FEWSHOT_SHARED_DATA/umls-one or '
                        '../shared/data/umls-one)')
    parser.add_argument('--form', default='Discard',
                        choices=['Discard', 'Pre-Train', 'In-Train'])
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--max-steps', type=int, default=1000)
    parser.add_argument('--eval-every', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--runs-dir', default='runs/reference')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    if not args.code:
        raise SystemExit('skipped: no checkout of the published code given '
                         '(--code metar=PATH / --code moemeta=PATH)')
    from _common import shared_dataset
    data = shared_dataset('umls-one', args.data)
    codes: List = []
    for item in args.code:
        name, _, path = item.partition('=')
        if not os.path.isfile(os.path.join(path, 'main.py')):
            raise SystemExit(f"skipped: '{path}' holds no main.py (--code "
                             f"{item})")
        codes.append((name, path))
    lines = [f'Published code on {os.path.basename(data)} ({args.form}), '
             f'{args.shots}-shot, {args.max_steps} steps of B = '
             f'{args.batch_size}, validation every {args.eval_every}; '
             f'seeds {args.seeds}; {args.threads} thread(s) per run; '
             f'{machine()}; load {load_average()}.', '',
             '| code | test MRR | Hits@1 | Hits@10 | per seed | best step '
             '| seconds |', '|---|---|---|---|---|---|---|']
    for name, path in codes:
        rows = []
        for seed in args.seeds:
            out = os.path.join(args.runs_dir, f'{name}_{os.path.basename(data)}'
                               f'_{args.form}_k{args.shots}_s{seed}')
            rows.append(run_reference(path, data, args.form, args.shots,
                                      seed, args.max_steps, args.eval_every,
                                      args.batch_size, out, args.threads))
            print(f"{name} seed {seed}: test MRR {rows[-1]['mrr']:.3f} "
                  f"({rows[-1]['seconds']} s)", file=sys.stderr)

        def ms(key):
            v = [r[key] for r in rows]
            return (f'{v[0]:.3f}' if len(v) == 1 else
                    f'{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}')
        lines.append(
            f"| {name} | {ms('mrr')} | {ms('hits@1')} | {ms('hits@10')} | "
            + ', '.join(f"{r['mrr']:.3f}" for r in rows) + ' | '
            + ', '.join(str(r['best_step']) for r in rows) + ' | '
            + ', '.join(f"{r['seconds']:.0f}" for r in rows) + ' |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
