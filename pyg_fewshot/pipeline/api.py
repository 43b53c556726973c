r"""The one-call Python API: :func:`pipeline` (also ``pyg_fewshot.pipeline(...)``)."""
import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .. import _config
from .config import RunConfig
from .presets import load_preset, merge
from .runner import RunResult, run

ConfigLike = Union[None, RunConfig, Mapping[str, Any], str]

#: Trackers (by name) whose files go into the run folder.
FOLDER_TRACKERS = ('tensorboard', 'csv', 'json')


def resolve_config(config: ConfigLike = None,
                   presets: Sequence[str] = (),
                   model: Optional[str] = None,
                   overrides: Sequence[str] = ()) -> RunConfig:
    r"""Assembles a :class:`RunConfig` the way ``pyg-fewshot train`` does:
    the presets in order, laid over the defaults, then ``config`` (a run
    file, a dict of its layout, or a :class:`RunConfig`), then ``model``
    (a model name: its default configuration replaces another model's),
    then the dotted ``overrides`` (``'trainer.lr=0.01'``) in order."""
    from ..models import model_config
    layers: Dict[str, Any] = {}
    where = 'the presets'
    for name in presets:
        layers = merge(layers, load_preset(name))
    if isinstance(config, RunConfig):
        layers = merge(layers, config.to_dict())
    elif isinstance(config, str):
        layers = merge(layers, _config.load_file(config))
        where = f"'{config}'"  # as RunConfig.load names its file
    elif config is not None:
        layers = merge(layers, dict(config))
        where = 'the configuration'
    resolved = RunConfig.from_dict(layers, where=where)
    if model is not None and model != resolved.model.name:
        resolved.model = model_config(model)
    return resolved.override(list(overrides))


def pipeline(config: ConfigLike = None, *,
             preset: Union[None, str, Sequence[str]] = None,
             model: Optional[str] = None, dataset: Optional[str] = None,
             shots: Optional[int] = None, seed: Optional[int] = None,
             max_steps: Optional[int] = None,
             overrides: Union[None, Mapping[str, Any], Sequence[str]] = None,
             output: Optional[str] = None, resume: bool = False,
             progress: bool = False,
             trackers: Optional[Sequence[Any]] = None) -> RunResult:
    r"""Trains and evaluates a model in one call and returns its
    :class:`RunResult` (metrics, history, the trained model, the resolved
    configuration; :meth:`RunResult.save_to_directory`,
    :meth:`RunResult.plot`).

    .. code-block:: python

        import pyg_fewshot as pf

        result = pf.pipeline(model='moemeta', dataset='umls-one', shots=1,
                             seed=0, max_steps=200)
        print(result)                    # test MRR, Hits@1, Hits@10
        result.save_to_directory('runs/moemeta')

    Args:
        config (RunConfig, dict or str, optional): A configuration, a dict
            of the run-file layout, or a run file (YAML or JSON).
        preset (str or Sequence[str], optional): Preset(s) laid under
            ``config`` (see :func:`~pyg_fewshot.pipeline.list_presets`).
        model (str, optional): ``'metar'``, ``'moemeta'`` or
            ``'fusionadapter'`` (its default configuration).
        dataset (str, optional): ``'umls-one'``, a folder, or a name in
            ``$PYG_FEWSHOT_DATA``.
        shots, seed, max_steps (int, optional): ``episodes.shots``,
            ``seed``, ``trainer.max_steps``.
        overrides (dict or Sequence[str], optional): Any other value, as
            ``{'trainer.lr': 0.01}`` or ``['trainer.lr=0.01']``.
        output (str, optional): Run folder (checkpoints, ``results.json``,
            ``config.yaml``); :obj:`None` trains in a temporary folder that
            is removed afterwards (the result keeps the model in memory).
        resume (bool, optional): Continue a run in ``output``.
            (default: :obj:`False`)
        progress (bool, optional): Show a progress bar.
            (default: :obj:`False`)
        trackers (Sequence, optional): Experiment trackers (names or
            objects), see :mod:`pyg_fewshot.pipeline.trackers`; those
            that write into the run folder (``'tensorboard'``, ``'csv'``,
            ``'json'``) need an ``output``.
    """
    import json
    items = []
    for key, value in (('data.dataset', dataset), ('episodes.shots', shots),
                       ('seed', seed), ('trainer.max_steps', max_steps)):
        if value is not None:
            items.append(f'{key}={json.dumps(value)}')
    if isinstance(overrides, Mapping):
        items += [f'{k}={json.dumps(v)}' for k, v in overrides.items()]
    elif overrides is not None:
        items += list(overrides)
    presets = [preset] if isinstance(preset, str) else list(preset or [])
    resolved = resolve_config(config, presets, model, items)
    if output is None:
        # Their files would go with the temporary folder.
        local = [t for t in trackers or () if isinstance(t, str)
                 and t.lower() in FOLDER_TRACKERS]
        if local:
            raise ValueError(
                f"the '{local[0]}' tracker writes into the run folder, "
                f'which output=None removes: pass output=FOLDER')
    if output is not None:
        return run(resolved, output, resume=resume, progress=progress,
                   trackers=trackers)
    with tempfile.TemporaryDirectory(prefix='pyg_fewshot-') as folder:
        result = run(resolved, os.path.join(folder, 'run'), resume=False,
                     progress=progress, trackers=trackers)
    result.output = None
    return result
