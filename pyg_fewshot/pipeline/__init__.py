r"""A run end to end: its configuration, composed of those of its parts."""
from .config import RunConfig
from .run import RunResult, load_run, run

__all__ = ['RunConfig', 'RunResult', 'run', 'load_run']
