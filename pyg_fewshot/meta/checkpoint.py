r"""Checkpoints: written atomically, read with ``weights_only=True``."""
import os
from typing import Any, Dict

import torch

from .._io import atomic_torch_save


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    r"""Saves a checkpoint dict (tensors and plain Python values only)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    r"""Loads a checkpoint saved by :func:`save_checkpoint` without running
    pickled code (``weights_only=True``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at '{path}'")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or foreign files
        raise ValueError(f"Could not read checkpoint '{path}': {e}") from e
