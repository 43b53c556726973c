r"""Experiment trackers: where a run reports its progress.

A tracker is told of the configuration when the run starts, of the losses
after every step (``query_loss``, ``aux_loss``, each ``aux/<name>`` loss
and, for a mixture of experts, ``routing/max_share``: the busiest expert's
share of the step's assignments), of every validation (dev MRR and the mean
training loss since the previous one) and of the final metrics. Each
writes through its own library: :class:`TensorBoardTracker` through
:class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard``
package), :class:`MLflowTracker` and :class:`WandbTracker` through
``mlflow`` and ``wandb`` when those are installed; :class:`CSVTracker` and
:class:`JSONTracker` write plain files with the standard library.

Choose them by name with :func:`tracker_resolver` (``pyg-fewshot train
--tracker tensorboard``).
"""
import csv
import json
import os
from typing import Any, Dict, List, Optional, Sequence

#: Tracker names and the package each needs (``None``: none).
TRACKERS = {'tensorboard': 'tensorboard', 'csv': None, 'json': None,
            'mlflow': 'mlflow', 'wandb': 'wandb'}


def _flat(d: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in d.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.update(_flat(value, name + '.'))
        else:
            out[name] = value
    return out


def final_metrics(results: Dict[str, Any]) -> Dict[str, float]:
    r"""The headline numbers of a ``results.json`` dict: ``dev/mrr``,
    ``test/mrr``, ``test/hits@1`` ... (micro-averaged)."""
    keys = ('mrr', 'hits@1', 'hits@5', 'hits@10', 'mean_rank')
    return {f'{split}/{k}': float(results[split][k])
            for split in ('dev', 'test') for k in keys
            if k in results.get(split, {})}


class Tracker:
    r"""Base class of the trackers; every method does nothing by default."""
    def start(self, config: Dict[str, Any]) -> None:
        r"""The run starts with the configuration ``config`` (nested)."""

    def on_step(self, step: int, logs: Dict[str, float]) -> None:
        r"""Training step ``step`` has the losses ``logs``."""

    def on_validation(self, step: int, entry: Dict[str, float]) -> None:
        r"""The validation at ``step``: ``score`` (dev MRR) and
        ``train_loss``."""

    def finish(self, results: Dict[str, Any]) -> None:
        r"""The run ended with ``results`` (the ``results.json`` dict)."""


class JSONTracker(Tracker):
    r"""Appends one JSON object per event to ``<folder>/metrics.jsonl``:
    ``{"event": "config" | "step" | "validation" | "final", ...}``."""
    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, 'metrics.jsonl')
        self._file: Any = None

    def _write(self, record: Dict[str, Any]) -> None:
        if self._file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file = open(self.path, 'a', encoding='utf-8')
        self._file.write(json.dumps(record) + '\n')

    def start(self, config: Dict[str, Any]) -> None:
        self._write({'event': 'config', 'config': config})

    def on_step(self, step: int, logs: Dict[str, float]) -> None:
        self._write({'event': 'step', 'step': step, **logs})

    def on_validation(self, step: int, entry: Dict[str, float]) -> None:
        self._write({'event': 'validation', **entry})

    def finish(self, results: Dict[str, Any]) -> None:
        self._write({'event': 'final', **final_metrics(results)})
        self._file.close()
        self._file = None


class CSVTracker(Tracker):
    r"""Writes ``<folder>/train.csv`` (one row per step: ``step`` and the
    losses), ``<folder>/validation.csv`` (``step``, ``score``,
    ``train_loss``) and ``<folder>/final.csv`` (``metric``, ``value``)."""
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._writers: Dict[str, Any] = {}
        self._files: List[Any] = []

    def _row(self, name: str, row: Dict[str, Any]) -> None:
        writer = self._writers.get(name)
        if writer is None:
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, name)
            new = not os.path.isfile(path) or os.path.getsize(path) == 0
            f = open(path, 'a', newline='', encoding='utf-8')
            self._files.append(f)
            # The first row fixes the columns (every step logs the same
            # keys); later keys a row lacks are left empty.
            writer = csv.DictWriter(f, fieldnames=list(row),
                                    extrasaction='ignore')
            if new:
                writer.writeheader()
            self._writers[name] = writer
        writer.writerow(row)

    def on_step(self, step: int, logs: Dict[str, float]) -> None:
        self._row('train.csv', {'step': step, **logs})

    def on_validation(self, step: int, entry: Dict[str, float]) -> None:
        self._row('validation.csv', {'step': step,
                                     'score': entry.get('score'),
                                     'train_loss': entry.get('train_loss')})

    def finish(self, results: Dict[str, Any]) -> None:
        for key, value in final_metrics(results).items():
            self._row('final.csv', {'metric': key, 'value': value})
        for f in self._files:
            f.close()
        self._writers, self._files = {}, []


class TensorBoardTracker(Tracker):
    r"""TensorBoard event files in ``<folder>/tensorboard`` through
    :class:`torch.utils.tensorboard.SummaryWriter`: scalars ``train/<loss>``
    per step, ``dev/mrr`` and ``train/mean_query_loss`` per validation,
    ``final/<split>/<metric>``, and the configuration as text."""
    def __init__(self, folder: str) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=os.path.join(folder,
                                                         'tensorboard'))

    def start(self, config: Dict[str, Any]) -> None:
        import yaml
        text = yaml.safe_dump(config, sort_keys=False)
        # Markdown code block: TensorBoard renders text as Markdown.
        self.writer.add_text('config', '    ' + text.replace('\n', '\n    '))

    def on_step(self, step: int, logs: Dict[str, float]) -> None:
        for key, value in logs.items():
            self.writer.add_scalar(f'train/{key}', value, step)

    def on_validation(self, step: int, entry: Dict[str, float]) -> None:
        self.writer.add_scalar('dev/mrr', entry['score'], step)
        if 'train_loss' in entry:
            self.writer.add_scalar('train/mean_query_loss',
                                   entry['train_loss'], step)

    def finish(self, results: Dict[str, Any]) -> None:
        step = int(results.get('steps', 0))
        for key, value in final_metrics(results).items():
            self.writer.add_scalar(f'final/{key}', value, step)
        self.writer.close()


class MLflowTracker(Tracker):
    r"""An MLflow run (``mlflow.start_run``): the flattened configuration as
    parameters, the step losses, dev MRR and final metrics as metrics."""
    def __init__(self, folder: str) -> None:
        import mlflow
        self.mlflow = mlflow

    def start(self, config: Dict[str, Any]) -> None:
        self.mlflow.start_run()
        self.mlflow.log_params({k: str(v) for k, v in _flat(config).items()})

    def on_step(self, step: int, logs: Dict[str, float]) -> None:
        self.mlflow.log_metrics({k.replace('/', '.'): v
                                 for k, v in logs.items()}, step=step)

    def on_validation(self, step: int, entry: Dict[str, float]) -> None:
        self.mlflow.log_metric('dev.mrr', entry['score'], step=step)

    def finish(self, results: Dict[str, Any]) -> None:
        self.mlflow.log_metrics({k.replace('/', '.'): v for k, v in
                                 final_metrics(results).items()})
        self.mlflow.end_run()


class WandbTracker(Tracker):
    r"""A Weights & Biases run (``wandb.init``): the configuration, the
    step losses, dev MRR and the final metrics (as the run summary)."""
    def __init__(self, folder: str) -> None:
        import wandb
        self.wandb = wandb
        self.folder = folder
        self.run: Any = None

    def start(self, config: Dict[str, Any]) -> None:
        self.run = self.wandb.init(config=config, dir=self.folder)

    def on_step(self, step: int, logs: Dict[str, float]) -> None:
        self.run.log(logs, step=step)

    def on_validation(self, step: int, entry: Dict[str, float]) -> None:
        self.run.log({'dev/mrr': entry['score']}, step=step)

    def finish(self, results: Dict[str, Any]) -> None:
        self.run.summary.update(final_metrics(results))
        self.run.finish()


_CLASSES = {'tensorboard': TensorBoardTracker, 'csv': CSVTracker,
            'json': JSONTracker, 'mlflow': MLflowTracker,
            'wandb': WandbTracker}


def tracker_resolver(name: str, folder: str) -> Tracker:
    r"""The tracker ``name`` (``'tensorboard'``, ``'csv'``, ``'json'``,
    ``'mlflow'``, ``'wandb'``) writing into the run folder ``folder``; a
    tracker whose package is missing raises an :class:`ImportError` that
    says what to install."""
    key = str(name).lower()
    if key not in _CLASSES:
        raise ValueError(f"Unknown tracker '{name}': expected one of "
                         f"{', '.join(_CLASSES)}")
    try:
        return _CLASSES[key](folder)
    except ImportError as e:
        raise ImportError(f"the '{key}' tracker needs the "
                          f"'{TRACKERS[key]}' package: pip install "
                          f"{TRACKERS[key]}") from e


def resolve_trackers(trackers: Optional[Sequence[Any]],
                     folder: str) -> List[Tracker]:
    r"""Tracker objects from names or objects."""
    return [tracker_resolver(t, folder) if isinstance(t, str) else t
            for t in (trackers or [])]
