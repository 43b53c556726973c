"""Dev and test MRR of trained MoEMeta runs with their neighbour aggregator
as trained and switched off at evaluation (the entity embeddings then enter
the relation meta and the score as they are).

    python benchmarks/aggregator_switch.py RUN_DIR [RUN_DIR ...]
        [--per-relation RUN_DIR] [--output FILE]

Each RUN_DIR is a ``pyg-fewshot train`` / ``reproduce_nell_one.py`` run
folder of a MoEMeta model with a neighbour aggregator (``model.aggregator``
not null; its ``best.pt`` is evaluated, rebuilt by
:func:`pyg_fewshot.pipeline.load_run` on the dataset recorded in the
checkpoint). Runs are grouped by shots for the mean ± std rows.
``--per-relation`` adds the per-relation MRR of one run under both
settings.
"""
import argparse
import contextlib
import os
import types
from collections import defaultdict
from typing import Dict, Iterator, List, Tuple

import torch

import _modules  # noqa: F401  (runs with the experiment-only aggregators)
from _common import machine, mean_std, write_output
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner
from pyg_fewshot.nn import EntityEncoder
from pyg_fewshot.pipeline import RunConfig, load_run

SPLITS = ('dev', 'test')


def load_moemeta_run(run: str) -> Tuple[torch.nn.Module, object, RunConfig]:
    model, data, config = load_run(run)
    if config.model.name != 'moemeta' or config.model.aggregator is None:
        aggregator = getattr(config.model, 'aggregator', None)
        raise ValueError(f"'{run}' is not a MoEMeta run with the neighbour "
                         f"aggregator (model {config.model.name!r}, "
                         f'aggregator {aggregator!r})')
    return model.eval(), data, config


@contextlib.contextmanager
def aggregator_off(encoder: torch.nn.Module) -> Iterator[None]:
    r"""The :class:`~pyg_fewshot.nn.NeighborEncoder` ``encoder`` returns its
    entity table's rows as they are (an
    :class:`~pyg_fewshot.nn.EntityEncoder`'s forward) inside the block."""
    encoder.forward = types.MethodType(EntityEncoder.forward, encoder)
    try:
        yield
    finally:
        del encoder.forward


def evaluate_both(run: str) -> Dict[str, Dict[str, dict]]:
    model, data, config = load_moemeta_run(run)
    learner = MetaLearner.from_config(model, config.learner)
    shots = config.episodes.shots
    out: Dict[str, Dict[str, dict]] = {}
    for setting in ('as trained', 'switched off'):
        scope = (aggregator_off(model.encoder) if setting == 'switched off'
                 else contextlib.nullcontext())
        with scope:
            out[setting] = {
                split: evaluate(model, data, split, shots, learner,
                                seed=config.seed)
                for split in SPLITS
            }
    out['shots'] = shots
    gamma = model.encoder.aggregator.gamma
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
