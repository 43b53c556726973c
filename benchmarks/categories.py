"""Test metrics per relation category (1-1, 1-N, N-1, N-N, computed from the
task triples) of finished runs, as in the MoEMeta paper's analysis.

    python benchmarks/categories.py --dataset PATH_OR_NAME RUN_DIR [RUN_DIR ...]
        [--group-seeds]

Each RUN_DIR holds a results.json written by ``pyg-fewshot train``. With
``--group-seeds``, runs whose folder names differ only in a trailing
``_s<seed>`` make one row, mean ± std over their seeds.
"""
import argparse
import json
import os
import re
from typing import Dict, List

from _common import mean_std, write_output
from pyg_fewshot.data import load_dataset, relation_categories
from pyg_fewshot.evaluation.experts import metrics_by_category

ORDER = ['1-1', '1-N', 'N-1', 'N-N']


def group_runs(runs: List[str], by_seed: bool) -> Dict[str, List[str]]:
    r"""Row label -> run folders (``name_s0``, ``name_s1`` ... share the
    label ``name`` when ``by_seed``)."""
    groups: Dict[str, List[str]] = {}
    for run in runs:
        name = os.path.basename(run.rstrip('/'))
        if by_seed:
            name = re.sub(r'_s\d+$', '', name)
        groups.setdefault(name, []).append(run)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--dataset', required=True)
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--group-seeds', action='store_true',
                        help='one row per run name without its _s<seed> '
                        'suffix, mean ± std over the seeds')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    data = load_dataset(args.dataset)[0]
    cats = {name: info['category'] for name, info in
            relation_categories(data, include='tasks').items()}
    lines = [f'### Test MRR by relation category '
             f'({os.path.basename(args.dataset.rstrip("/"))})', '',
             '| run | ' + ' | '.join(ORDER) + ' |',
             '|---|' + '---|' * len(ORDER)]
    counts = None
    for label, runs in group_runs(args.runs, args.group_seeds).items():
        values: Dict[str, List[float]] = {c: [] for c in ORDER}
        for run in runs:
            with open(os.path.join(run, 'results.json')) as f:
                res = json.load(f)
            groups = metrics_by_category(res['test']['per_relation'], cats)
            counts = {c: (g['num_relations'], g['num_queries'])
                      for c, g in groups.items()}
            for c in groups:
                values[c].append(groups[c]['mrr'])
        cells = [mean_std(values[c]) if values[c] else '—' for c in ORDER]
        if len(runs) > 1:
            label = f'{label} ({len(runs)} runs)'
        lines.append(f'| `{label}` | ' + ' | '.join(cells) + ' |')
    if counts:
        lines.append('| relations / queries (last run) | ' + ' | '.join(
            f'{counts[c][0]} / {counts[c][1]}' if c in counts else '0'
            for c in ORDER) + ' |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
