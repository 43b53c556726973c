"""Test metrics per relation category (1-1, 1-N, N-1, N-N, computed from the
task triples) of finished runs, as in the MoEMeta paper's analysis.

    python benchmarks/categories.py --dataset PATH_OR_NAME RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds a results.json written by ``pyg-fewshot train``.
"""
import argparse
import json
import os

from _common import write_output
from pyg_fewshot.data import load_dataset, relation_categories
from pyg_fewshot.evaluation.experts import metrics_by_category


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--dataset', required=True)
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    data = load_dataset(args.dataset)[0]
    cats = {name: info['category'] for name, info in
            relation_categories(data, include='tasks').items()}
    order = ['1-1', '1-N', 'N-1', 'N-N']
    lines = [f'### Test MRR by relation category '
             f'({os.path.basename(args.dataset.rstrip("/"))})', '',
             '| run | ' + ' | '.join(order) + ' |',
             '|---|' + '---|' * len(order)]
    counts = None
    for run in args.runs:
        with open(os.path.join(run, 'results.json')) as f:
            res = json.load(f)
        groups = metrics_by_category(res['test']['per_relation'], cats)
        counts = {c: (g['num_relations'], g['num_queries'])
                  for c, g in groups.items()}
        cells = [f"{groups[c]['mrr']:.3f}" if c in groups else '—'
                 for c in order]
        lines.append(f"| `{os.path.basename(run.rstrip('/'))}` | "
                     + ' | '.join(cells) + ' |')
    if counts:
        lines.append('| relations / queries (last run) | ' + ' | '.join(
            f'{counts[c][0]} / {counts[c][1]}' if c in counts else '0'
            for c in order) + ' |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
