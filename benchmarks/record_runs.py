"""Keeps what finished runs measured in the repository.

    python benchmarks/record_runs.py RUN_DIR [RUN_DIR ...]
        [--into benchmarks/records]

Run folders live under ``runs/``, which git ignores: their checkpoints
weigh tens of MB, and they do not outlive the machine they were trained
on. What a table or a learning curve needs of a finished run is its
``results.json`` (metrics, configuration and the whole validation history,
a few KB) and its resolved ``config.yaml``; this copies those two files to
``INTO/<runs directory>/<run>/``, the layout of the runs directory itself.
So the benchmarks read the records where they read run folders, without
training again (a folder with a ``results.json`` counts as a finished
run)::

    python benchmarks/reproduce_nell_one.py ... --runs-dir benchmarks/records/nell_one_10k
    python benchmarks/learning_curves.py benchmarks/records/nell_one_10k/RUN ...

A folder without ``results.json`` (a run still training, or interrupted)
is refused with a one-line error before anything is copied.
"""
import argparse
import os
import shutil
import sys
from typing import List, Tuple

KEPT = ('results.json', 'config.yaml')


def plan(runs: List[str], into: str) -> List[Tuple[str, str]]:
    r"""``(source file, destination file)`` pairs for ``runs``; raises
    :class:`SystemExit` naming the first folder that is not a finished
    run."""
    pairs = []
    for run in runs:
        run = os.path.normpath(run)
        if not os.path.isfile(os.path.join(run, 'results.json')):
            raise SystemExit(f'error: {run}: no results.json (not a '
                             f'finished run); nothing was recorded')
        parent = os.path.basename(os.path.dirname(os.path.abspath(run)))
        dest = os.path.join(into, parent, os.path.basename(run))
        pairs += [(os.path.join(run, name), os.path.join(dest, name))
                  for name in KEPT if os.path.isfile(os.path.join(run, name))]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--into', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'records'))
    args = parser.parse_args()
    for src, dst in plan(args.runs, args.into):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
        print(dst, file=sys.stderr)


if __name__ == '__main__':
    main()
