"""Dev and test MRR of trained MoEMeta runs with their neighbour aggregator
as trained and switched off at evaluation (the entity embeddings then enter
the relation meta and the score as they are).

    python benchmarks/aggregator_switch.py RUN_DIR [RUN_DIR ...]
        [--per-relation RUN_DIR] [--output FILE]

Each RUN_DIR is a ``pyg-fewshot train`` / ``reproduce_nell_one.py`` run
folder of a MoEMeta model with ``aggregate=True`` (its ``best.pt`` is
evaluated; the dataset is the one recorded in the checkpoint). Runs are
grouped by shots for the mean ± std rows. ``--per-relation`` adds the
per-relation MRR of one run under both settings.
"""
import argparse
import os
from collections import defaultdict
from typing import Dict, List, Tuple

import torch

from _common import machine, mean_std, write_output
from pyg_fewshot.data import load_dataset
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner, load_checkpoint
from pyg_fewshot.models import build_model

SPLITS = ('dev', 'test')


def load_run(run: str) -> Tuple[torch.nn.Module, object, dict]:
    state = load_checkpoint(os.path.join(run, 'best.pt'))
    meta = state['metadata']
    kwargs = dict(meta['model_kwargs'])
    if meta['model'] != 'moemeta' or not kwargs.get('aggregate', True):
        raise ValueError(f"'{run}' is not a MoEMeta run with the neighbour "
                         f"aggregator (model {meta['model']!r}, kwargs "
                         f"{kwargs})")
    data = load_dataset(meta['dataset'])[0]
    model = build_model('moemeta', data, pretrained=False, **kwargs)
    model.load_state_dict(state['model_state'])
    return model.eval(), data, meta


def evaluate_both(run: str) -> Dict[str, Dict[str, dict]]:
    model, data, meta = load_run(run)
    learner = MetaLearner(model, **meta['learner'])
    out: Dict[str, Dict[str, dict]] = {}
    aggregator = model.aggregator
    for setting in ('as trained', 'switched off'):
        model.aggregator = aggregator if setting == 'as trained' else None
        out[setting] = {
            split: evaluate(model, data, split, meta['shots'], learner,
                            seed=meta.get('seed', 0))
            for split in SPLITS
        }
    model.aggregator = aggregator
    out['shots'] = meta['shots']
    gamma = aggregator.gamma
    out['gamma'] = None if gamma is None else float(gamma.detach())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--per-relation', default=None)
    parser.add_argument('--output', default=None)
    args = parser.parse_args()

    results = {run: evaluate_both(run) for run in args.runs}
    by_shots: Dict[int, List[dict]] = defaultdict(list)
    for res in results.values():
        by_shots[res['shots']].append(res)

    lines = [
        'MoEMeta with the neighbour aggregator as trained and switched off '
        f'at evaluation; best dev checkpoints ({machine()}).', '',
        '| K | runs | dev MRR, as trained | dev MRR, switched off | '
        'test MRR, as trained | test MRR, switched off | learned scale γ |',
        '|---|---|---|---|---|---|---|'
    ]
    for shots, group in sorted(by_shots.items()):
        cells = []
        for split in SPLITS:
            for setting in ('as trained', 'switched off'):
                cells.append(mean_std([r[setting][split]['mrr']
                                       for r in group]))
        gammas = [r['gamma'] for r in group if r['gamma'] is not None]
        cells.append(', '.join(f'{g:.3f}' for g in gammas) or 'fixed 1')
        lines.append(f'| {shots} | {len(group)} | ' + ' | '.join(cells) +
                     ' |')

    if args.per_relation:
        res = results.get(args.per_relation) or evaluate_both(
            args.per_relation)
        lines += [
            '', f"Per relation, `{os.path.basename(args.per_relation)}`:", '',
            '| split | relation | queries | candidates | MRR, as trained | '
            'MRR, switched off |', '|---|---|---|---|---|---|'
        ]
        for split in SPLITS:
            on = res['as trained'][split]['per_relation']
            off = res['switched off'][split]['per_relation']
            for rel, m in on.items():
                lines.append(f"| {split} | {rel} | {m['num_queries']} | "
                             f"{m['num_candidates']} | {m['mrr']:.3f} | "
                             f"{off[rel]['mrr']:.3f} |")
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
