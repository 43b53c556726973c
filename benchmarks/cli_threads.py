"""Wall time of the README's main job under thread settings, with and
without background load.

    python benchmarks/cli_threads.py [--model metar] [--max-steps 1000]
        [--load 0 1] [--settings default passive one-thread]

Each setting runs ``pyg-fewshot train --model MODEL`` (the README's main
job, same seed and steps) in a fresh process; ``--load N`` starts N busy
processes (one core each, a tight float loop) beside it, the way another
user's job occupies a shared machine. Settings:

* ``default``: what the CLI does without the user's help (it sets
  ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported, unless the user
  set it);
* ``before``: what the CLI did before it chose for the user: torch imported
  first, so OpenMP keeps its own default wait policy (workers spin a while
  before they sleep), at torch's default thread count;
* ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (workers always spin);
* ``one-thread``: ``OMP_NUM_THREADS=1``.

The environment variables the CLI reads (``OMP_NUM_THREADS``,
``OMP_WAIT_POLICY``) are removed from the child's environment for the
settings that do not set them.
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from _common import load_average, machine, write_output

SETTINGS: Dict[str, Dict[str, str]] = {
    'default': {},
    'before': {},
    'active': {'OMP_WAIT_POLICY': 'ACTIVE'},
    'one-thread': {'OMP_NUM_THREADS': '1'},
}
# torch (and its OpenMP runtime) loaded before the CLI runs, so the CLI's
# choice of wait policy comes too late: the behaviour before it chose.
_BEFORE = ('import sys, torch; from pyg_fewshot.cli.main import main; '
           'sys.exit(main(sys.argv[1:]))')


def _busy() -> None:
    x = 1.0
    while True:
        x = x * 1.0000001 + 1e-9


def one_run(model: str, max_steps: int, setting: str, folder: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY',
                        'MKL_NUM_THREADS')}
    env.update(SETTINGS[setting])
    out = os.path.join(folder, setting)
    head = ([sys.executable, '-c', _BEFORE] if setting == 'before' else
            [sys.executable, '-m', 'pyg_fewshot'])
    cmd = head + ['train', '--model', model, '--max-steps', str(max_steps),
                  '--output', out, '--no-resume', '--quiet']
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    return {'wall': wall, 'threads': res['threads'],
            'mrr': res['test']['mrr']}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--model', default='metar')
    parser.add_argument('--max-steps', type=int, default=1000)
    parser.add_argument('--load', type=int, nargs='+', default=[0, 1],
                        help='busy background processes (one core each)')
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS),
                        choices=list(SETTINGS))
    parser.add_argument('--output', default=None)
    args = parser.parse_args()

    rows: List[str] = []
    with tempfile.TemporaryDirectory() as folder:
        for load in args.load:
            busy = [multiprocessing.Process(target=_busy, daemon=True)
                    for _ in range(load)]
            for p in busy:
                p.start()
            try:
                for setting in args.settings:
                    r = one_run(args.model, args.max_steps, setting, folder)
                    print(f'load {load}, {setting}: {r["wall"]:.1f} s '
                          f'({r["threads"]} threads, test MRR '
                          f'{r["mrr"]:.4f})', file=sys.stderr)
                    rows.append(f'| {load} | {setting} | {r["threads"]} | '
                                f'{r["wall"]:.1f} | {r["mrr"]:.4f} |')
            finally:
                for p in busy:
                    p.terminate()
    lines = [
        f'`pyg-fewshot train --model {args.model} --max-steps '
        f'{args.max_steps}` wall time, one fresh process per row '
        f'({machine()}; load average at the end {load_average()}).', '',
        '| busy background processes | setting | threads | wall s | '
        'test MRR |', '|---|---|---|---|---|'] + rows
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
