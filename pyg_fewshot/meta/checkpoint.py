r"""Checkpoints: written atomically with a checksum, read with
``weights_only=True`` and verified, and tied to the run configuration and
the data they were trained on."""
import hashlib
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from .._io import atomic_torch_save

CHECKSUM = 'checksum'


class CheckpointError(ValueError):
    r"""A checkpoint cannot be read, is corrupt, or does not belong to the
    data or run it is used with."""


class ConfigMismatchError(CheckpointError):
    r"""A run would resume from a checkpoint written with other settings or
    other data."""


def _hash_into(h: 'hashlib._Hash', obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        h.update(f'T{t.dtype}{tuple(t.shape)}{t.layout};'.encode())
        if t.layout == torch.sparse_coo:
            parts = [t._indices(), t._values()]
        elif t.layout != torch.strided:
            parts = [t.to_dense()]
        else:
            parts = [t]
        for p in parts:
            # Raw bytes of any dtype (bfloat16 has no NumPy twin).
            h.update(p.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f'D{len(obj)};'.encode())
        for key, value in obj.items():
            _hash_into(h, key)
            _hash_into(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f'L{len(obj)};'.encode())
        for value in obj:
            _hash_into(h, value)
    else:
        # Plain values: repr is exact for floats (and -inf, nan) and ints.
        h.update(f'V{type(obj).__name__}:{obj!r};'.encode())


def state_checksum(state: Dict[str, Any]) -> str:
    r"""The SHA-256 of a checkpoint dict: every tensor's dtype, shape and
    bytes and every plain value, in order (the ``'checksum'`` entry itself
    left out)."""
    h = hashlib.sha256()
    _hash_into(h, {k: v for k, v in state.items() if k != CHECKSUM})
    return 'sha256:' + h.hexdigest()


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    r"""Saves a checkpoint dict (tensors and plain Python values only), with
    its :func:`state_checksum` under ``'checksum'``."""
    state = dict(state)
    state[CHECKSUM] = state_checksum(state)
    atomic_torch_save(state, path)


def load_checkpoint(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    r"""Loads a checkpoint saved by :func:`save_checkpoint` without running
    pickled code (``weights_only=True``) and verifies its checksum.

    Raises:
        FileNotFoundError: No file at ``path``.
        CheckpointError: The file cannot be read, or its contents differ
            from what was written (*e.g.* flipped bytes).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or foreign files
        msg = ' '.join(str(e).split())  # one line
        raise CheckpointError(
            f"Could not read checkpoint '{path}': {msg}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"Could not read checkpoint '{path}': it holds "
                              f"a {type(state).__name__}, not a dict")
    stored = state.pop(CHECKSUM, None)
    # Checkpoints from before checksums were written are read unchecked.
    if stored is not None:
        found = state_checksum(state)
        if found != stored:
            raise CheckpointError(
                f"Checkpoint '{path}' is corrupt: its contents do not match "
                f"the checksum written with it ({stored[:19]}... stored, "
                f"{found[:19]}... found); restore it from a copy or retrain")
    return state


def _show(key: str, value: Any) -> str:
    if key == 'data_fingerprint' and isinstance(value, str):
        return value[:12]
    return repr(value)


def config_differences(old: Dict[str, Any], new: Dict[str, Any]
                       ) -> List[Tuple[str, Any, Any]]:
    r"""The ``(key, old, new)`` of every key whose value differs between two
    run configurations (a missing key counts as :obj:`None`), sorted by
    key."""
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def check_config(state: Dict[str, Any], config: Dict[str, Any],
                 path: str) -> None:
    r"""Raises :class:`ConfigMismatchError` unless the checkpoint ``state``
    (read from ``path``) was written with the run configuration ``config``
    (stored under ``state['config']``); the one-line message
    names every differing setting as ``old → new``."""
    old: Optional[Dict[str, Any]] = state.get('config')
    advice = ('use another output folder (--output DIR) or start afresh '
              "(--no-resume, which deletes this folder's checkpoints)")
    if old is None:
        raise ConfigMismatchError(
            f"Cannot resume from '{path}': it records no run configuration "
            f"(written by an older version), so it cannot be checked against "
            f"this run's settings; {advice}")
    dotted = [k for k in config if '.' in k]
    if dotted and not any('.' in k for k in old):
        # Flat keys ('model_kwargs', 'lr', ...): the layout from before the
        # configuration files, which no setting of this version matches.
        raise ConfigMismatchError(
            f"Cannot resume from '{path}': it was written by a version "
            f"before the run configuration files (its settings are not "
            f"comparable with this run's); {advice}")
    diffs = config_differences(old, config)
    if diffs:
        listed = ', '.join(f'{k}: {_show(k, a)} → {_show(k, b)}'
                           for k, a, b in diffs)
        raise ConfigMismatchError(
            f"Cannot resume from '{path}': it was written with other "
            f"settings ({listed}); {advice}")


def check_data(state: Dict[str, Any], fingerprint: str, path: str) -> None:
    r"""Raises :class:`CheckpointError` unless the checkpoint ``state`` (read
    from ``path``) was trained on the KG whose
    :func:`~pyg_fewshot.data.fingerprint.data_fingerprint` is
    ``fingerprint``. Checkpoints that record no fingerprint (older versions)
    pass unchecked."""
    stored = (state.get('config') or {}).get('data_fingerprint')
    if stored is not None and stored != fingerprint:
        raise CheckpointError(
            f"Checkpoint '{path}' was trained on other data: its data "
            f"fingerprint is {stored[:12]}, the loaded dataset's is "
            f"{fingerprint[:12]} (other entity ids, edges, task triples or "
            f"candidates); evaluate it on the dataset it was trained on")
