r"""A run end to end: its configuration, composed of those of its parts
(:class:`RunConfig`), presets, experiment trackers, and the function that
runs it (:func:`run`, or in one call :func:`pipeline`).

The module itself is callable: ``pyg_fewshot.pipeline(...)`` is
:func:`pipeline`.
"""
import sys
import types
from typing import Any

from .config import RunConfig
from .runner import RunResult, load_run, run
from .presets import list_presets, load_preset
from .api import pipeline, resolve_config

__all__ = ['RunConfig', 'RunResult', 'run', 'load_run', 'pipeline',
           'resolve_config', 'list_presets', 'load_preset']


class _CallableModule(types.ModuleType):
    # ``import pyg_fewshot as pf; pf.pipeline(...)``, as PyKEEN's pipeline,
    # while ``pyg_fewshot.pipeline`` stays the package of its parts.
    def __call__(self, *args: Any, **kwargs: Any) -> RunResult:
        return pipeline(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
