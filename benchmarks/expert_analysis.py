"""Expert activation of finished MoEMeta runs: the relation x expert heatmap
(the MoEMeta paper's expert-activation figure), the expert load and the
collapse check, through ``pyg-fewshot experts``.

    python benchmarks/expert_analysis.py RUN_DIR [RUN_DIR ...]
        [--dataset PATH_OR_NAME] [--figures docs/figures] [--output FILE]

Each RUN_DIR holds the ``best.pt`` and ``results.json`` of
``pyg-fewshot train --model moemeta`` (or of a benchmark grid: the
experiment-only layers of ``_modules.py`` are known here, unlike to the
``pyg-fewshot`` command); ``--dataset`` overrides the dataset
recorded in the checkpoint (a NELL-One run made elsewhere). The heatmap of
each run is copied to ``--figures`` as ``experts_<run>.png``; the table of
load statistics is printed (and written to ``--output``).
"""
import argparse
import json
import os
import shutil
import tempfile

import _modules  # noqa: F401  (runs with the experiment-only aggregators)
from _common import write_output
from pyg_fewshot.cli.main import main as cli


def analyse(run: str, dataset, figures) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        argv = ['experts', '--checkpoint', os.path.join(run, 'best.pt'),
                '--output', tmp]
        if dataset is not None:
            argv += ['--dataset', dataset]
        if figures is None:
            argv.append('--no-plot')
        if cli(argv) != 0:
            raise SystemExit(f"pyg-fewshot {' '.join(argv)} failed (its "
                             'error is printed above)')
        with open(os.path.join(tmp, 'experts.json')) as f:
            report = json.load(f)
        if figures is not None:
            os.makedirs(figures, exist_ok=True)
            name = os.path.basename(run.rstrip('/'))
            shutil.copyfile(os.path.join(tmp, 'experts.png'),
                            os.path.join(figures, f'experts_{name}.png'))
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--dataset', default=None)
    parser.add_argument('--figures', default=None,
                        help='folder for the heatmaps (none if omitted)')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    names = [os.path.basename(run.rstrip('/')) for run in args.runs]
    if args.figures is not None and len(set(names)) < len(names):
        # The heatmaps are named after the run folder: two runs named alike
        # would overwrite each other's picture.
        parser.error('--figures needs run folders with distinct names; got '
                     + ', '.join(args.runs))
    lines = [
        '| run | test MRR | effective experts | experts used | largest '
        'share | relation specificity | collapsed |',
        '|---|---|---|---|---|---|---|'
    ]
    for run in args.runs:
        stats = analyse(run, args.dataset, args.figures)['statistics']
        with open(os.path.join(run, 'results.json')) as f:
            mrr = json.load(f)['test']['mrr']
        M = stats['num_experts']
        lines.append(
            f"| `{os.path.basename(run.rstrip('/'))}` | {mrr:.3f} | "
            f"{stats['effective_experts']:.1f} of {M} | "
            f"{stats['experts_used']} | {stats['max_share']:.3f} | "
            f"{stats['relation_specificity']:.3f} | "
            f"{'yes' if stats['collapsed'] else 'no'} |")
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
