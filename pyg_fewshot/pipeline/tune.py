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

The first trials are *starting points*: the base configuration itself, so
that a search never ends below where it started, then any further
configurations given (*e.g.* a preset). A starting point fixes the values
it holds for the keys of the space; a key it leaves unset (a layer default
not written in its ``*_kwargs``) or sets outside the space (*e.g.*
:obj:`None` for "the model's default" where the space holds numbers) is
drawn by the sampler instead.
"""
import json
import math
import os
from typing import Any, Dict, Mapping, Sequence

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


_UNSET = object()


def _lookup(config: RunConfig, key: str) -> Any:
    value: Any = config.to_dict()
    for part in key.split('.'):
        if not isinstance(value, Mapping) or part not in value:
            return _UNSET
        value = value[part]
    return value


def _in_space(value: Any, spec: Mapping[str, Any]) -> bool:
    if spec['type'] == 'categorical':
        return any(value == c and type(value) is type(c)
                   for c in spec['choices'])
    want = float if spec['type'] == 'float' else int
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if want is int and not isinstance(value, int):
        return False
    return float(spec['low']) <= value <= float(spec['high'])


def start_values(config: RunConfig,
                 space: Mapping[str, Any]) -> Dict[str, Any]:
    r"""The values a starting point ``config`` fixes in ``space``: those of
    its settings that lie in the space (the others are drawn)."""
    values = {key: _lookup(config, key) for key in space}
    return {k: v for k, v in values.items()
            if v is not _UNSET and _in_space(v, space[k])}


def tune(config: RunConfig, space: Mapping[str, Any], trials: int,
         output: str, seed: int = 0, progress: bool = False,
         where: str = 'the search space',
         starts: Sequence[RunConfig] = ()) -> Dict[str, Any]:
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
        starts (Sequence[RunConfig], optional): Starting points tried
            after the base configuration, before the sampler's draws.

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
    if not study.trials:
        for start in [config, *starts]:
            fixed = start_values(start, space)
            if fixed:
                study.enqueue_trial(fixed, skip_if_exists=True)

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
