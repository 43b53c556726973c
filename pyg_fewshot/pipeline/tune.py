r"""Hyper-parameter search on dev with Optuna: ``pyg-fewshot tune``.

A search space names dotted configuration keys (as ``--set`` does) and how
to draw each:

.. code-block:: yaml

    learner.inner_lr: {type: float, low: 0.01, high: 10.0, log: true}
    trainer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    learner.margin: {type: categorical, choices: [0.5, 1.0, 2.0]}
    model.relation_meta_kwargs.top_k: {type: int, low: 1, high: 8}

Every trial is one :func:`~pyg_fewshot.pipeline.run` of the base
configuration with the drawn values, in its own folder; the objective is
the **dev** MRR of its best checkpoint (test metrics are recorded but never
used to choose). The search is resumable: the study lives in an SQLite file
in the output folder, and finished trials are kept.
"""
import json
import math
import os
from typing import Any, Dict, Mapping

from .. import _config
from .config import RunConfig
from .runner import run

#: Parameter types of a search space and the Optuna call each becomes.
SPACE_TYPES = ('float', 'int', 'categorical')


def _check_space(space: Mapping[str, Any], where: str) -> None:
    if not space:
        raise ValueError(f'the search space in {where} is empty')
    for key, spec in space.items():
        if not isinstance(spec, Mapping) or spec.get('type') not in \
                SPACE_TYPES:
            raise ValueError(f"search space key '{key}' in {where}: expected "
                             f"{{type: {'|'.join(SPACE_TYPES)}, ...}}, got "
                             f'{spec!r}')
        kind = spec['type']
        need = ('choices', ) if kind == 'categorical' else ('low', 'high')
        missing = [n for n in need if n not in spec]
        if missing:
            raise ValueError(f"search space key '{key}' in {where}: a "
                             f"{kind} needs {', '.join(missing)}")


def _suggest(trial: Any, key: str, spec: Mapping[str, Any]) -> Any:
    kind = spec['type']
    if kind == 'float':
        return trial.suggest_float(key, float(spec['low']),
                                   float(spec['high']),
                                   log=bool(spec.get('log', False)))
    if kind == 'int':
        return trial.suggest_int(key, int(spec['low']), int(spec['high']),
                                 log=bool(spec.get('log', False)))
    return trial.suggest_categorical(key, list(spec['choices']))


def tune(config: RunConfig, space: Mapping[str, Any], trials: int,
         output: str, seed: int = 0, progress: bool = False,
         where: str = 'the search space') -> Dict[str, Any]:
    r"""Searches ``space`` around ``config`` for the best dev MRR.

    Args:
        config (RunConfig): The base configuration.
        space (Mapping[str, Any]): Dotted key → ``{type, low, high, log}``
            or ``{type: categorical, choices}``.
        trials (int): Trials to have finished in the study (a resumed
            search runs only the missing ones).
        output (str): Folder of the study (``study.db``), the trials
            (``trial_<n>/``) and the summary (``best.json``,
            ``best_config.yaml``).
        seed (int, optional): Seed of the sampler (TPE). (default: ``0``)
        progress (bool, optional): Progress bars of the runs.
        where (str, optional): Where the space came from, for errors.

    Returns:
        The summary written to ``best.json``: the best trial's number,
        values, dev MRR, its test metrics (reported, not used to choose),
        and every finished trial's values and dev MRR.
    """
    try:
        import optuna
    except ImportError as e:
        raise ImportError("pyg-fewshot tune needs optuna: pip install "
                          "'pyg_fewshot[tune]'") from e
    _check_space(space, where)
    # Every key must be a setting of the configuration: fail before the
    # first trial, not after it.
    for key, spec in space.items():
        probe = (spec['choices'][0] if spec['type'] == 'categorical'
                 else spec['low'])
        config.override([f'{key}={json.dumps(probe)}'], where=where)
    os.makedirs(output, exist_ok=True)
    storage = 'sqlite:///' + os.path.abspath(os.path.join(output,
                                                          'study.db'))
    study = optuna.create_study(
        study_name='pyg_fewshot', storage=storage, direction='maximize',
        sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    done = [t for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE]

    def objective(trial: Any) -> float:
        values = {key: _suggest(trial, key, spec)
                  for key, spec in space.items()}
        trial_config = config.override(
            [f'{k}={json.dumps(v)}' for k, v in values.items()])
        result = run(trial_config,
                     os.path.join(output, f'trial_{trial.number}'),
                     progress=progress)
        trial.set_user_attr('test_mrr', result.test['mrr'])
        trial.set_user_attr('test_hits@10', result.test['hits@10'])
        dev = result.dev['mrr']
        # A diverged run scores below every valid one instead of stopping
        # the search.
        return dev if math.isfinite(dev) else -1.0

    if len(done) < trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=trials - len(done))
    best = study.best_trial
    best_config = config.override(
        [f'{k}={json.dumps(v)}' for k, v in best.params.items()])
    best_config.save(os.path.join(output, 'best_config.yaml'))
    summary = {
        'best_trial': best.number, 'best_params': best.params,
        'best_dev_mrr': best.value,
        'best_test_mrr': best.user_attrs.get('test_mrr'),
        'best_test_hits@10': best.user_attrs.get('test_hits@10'),
        'trials': [{'number': t.number, 'params': t.params,
                    'dev_mrr': t.value}
                   for t in study.trials
                   if t.state == optuna.trial.TrialState.COMPLETE],
    }
    _config.save_file(summary, os.path.join(output, 'best.json'))
    return summary


def load_space(path: str) -> Dict[str, Any]:
    r"""A search space from a YAML or JSON file."""
    return dict(_config.load_file(path))


__all__ = ['tune', 'load_space', 'SPACE_TYPES']
