"""Meta-training throughput of two commits, measured in alternation.

    python benchmarks/compare_commits.py --base 07d4ddf [--head HEAD]
        [--rounds 4] [--only published full] [--steps 10]

On a shared virtual machine the same code runs up to 1.7x faster or slower
from one half hour to the next, so throughput measured on different days
(or even in different minutes) cannot be compared. This script checks both
commits out into temporary git worktrees and runs each commit's own
``benchmarks/throughput_nell_one.py`` (one round each, in its own process)
alternately, ``--rounds`` times, so both see the same machine. The table
gives the median tasks/s of each commit per configuration, the range over
rounds, and the median of the per-round ratios head / base.

The worktrees are created with ``git worktree add --detach`` in a temporary
folder and removed afterwards; nothing in the working tree changes.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Tuple

from _common import REPO, load_average, machine, shared_dataset, \
    write_output

LINE = re.compile(r'^round \d+: (?P<label>.+), (?P<k>\d+)-shot: '
                  r'(?P<rate>[\d,]+) tasks/s')


def worktree(commit: str, root: str) -> str:
    path = os.path.join(root, commit.replace('/', '_'))
    subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', path,
                    commit], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return path


def one_round(tree: str, args) -> Dict[Tuple[str, int], float]:
    cmd = [sys.executable, 'throughput_nell_one.py', '--steps',
           str(args.steps), '--data', args.data, '--only', *args.only]
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(cmd, cwd=os.path.join(tree, 'benchmarks'), env=env,
                         capture_output=True, text=True, check=True)
    rates = {}
    for line in out.stderr.splitlines():
        m = LINE.match(line.strip())
        if m:
            rates[(m['label'], int(m['k']))] = float(
                m['rate'].replace(',', ''))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--base', required=True)
    parser.add_argument('--head', default='HEAD')
    parser.add_argument('--rounds', type=int, default=4)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--only', nargs='+', default=['published', 'full'])
    parser.add_argument('--data', default=None)
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    args.data = shared_dataset('nell-one', args.data)

    root = tempfile.mkdtemp(prefix='pyg_fewshot_compare_')
    trees = {}
    try:
        for name, commit in (('base', args.base), ('head', args.head)):
            trees[name] = worktree(commit, root)
        rates: Dict[str, Dict[Tuple[str, int], List[float]]] = {
            'base': defaultdict(list), 'head': defaultdict(list)}
        ratios: Dict[Tuple[str, int], List[float]] = defaultdict(list)
        for r in range(args.rounds):
            got = {name: one_round(trees[name], args)
                   for name in ('base', 'head')}
            for key, rate in got['head'].items():
                rates['head'][key].append(rate)
                if key in got['base']:
                    rates['base'][key].append(got['base'][key])
                    ratios[key].append(rate / got['base'][key])
            print(f'round {r + 1}: ' + '; '.join(
                f'{label} {k}-shot {got["base"].get((label, k), 0):,.0f} -> '
                f'{rate:,.0f}' for (label, k), rate in got['head'].items()),
                file=sys.stderr)
    finally:
        for path in trees.values():
            subprocess.run(['git', '-C', REPO, 'worktree', 'remove',
                            '--force', path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)

    def cell(values: List[float]) -> str:
        return (f'{statistics.median(values):,.0f} '
                f'[{min(values):,.0f}-{max(values):,.0f}]')

    lines = [
        f'Throughput (tasks/s) of `{args.base}` and `{args.head}`, '
        f'alternating one round of `benchmarks/throughput_nell_one.py '
        f'--steps {args.steps}` per commit, {args.rounds} rounds: median '
        f'[range] ({machine()}; load average {load_average()}).', '',
        f'| model | K | {args.base} | {args.head} | speed-up (median of '
        f'per-round ratios) |', '|---|---|---|---|---|'
    ]
    for key, head in rates['head'].items():
        label, k = key
        base = rates['base'].get(key)
        if not base:
            continue
        lines.append(f'| {label} | {k} | {cell(base)} | {cell(head)} | '
                     f'{statistics.median(ratios[key]):.2f}x |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
