r"""Per-entity modality features (text, image, ...) in the few-shot
:class:`~torch_geometric.data.HeteroData`.

A modality ``<name>`` is stored on the entity node type as

* ``data['entity'].x_<name>``: ``[N, D]`` float features, row ``i`` is entity
  id ``i``; rows of entities that lack the modality are zero;
* ``data['entity'].mask_<name>``: ``[N]`` bool, :obj:`True` where the entity
  has the modality.

Multimodal benchmarks (WN9-IMG, FB-IMG) ship their features as ``.npy``
matrices with one row per entity id; :func:`attach_modalities` reads them,
checks their shape and derives the availability mask. A text modality that
works for any dataset is computed by
:func:`pyg_fewshot.data.text.text_features`.
"""
import os
import os.path as osp
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .hetero import ENTITY

#: File names searched for modality ``<name>`` in a folder, in order.
FEATURE_PATTERNS = ('{name}_features.npy', 'x_{name}.npy')
#: File names searched for the optional availability mask of ``<name>``.
MASK_PATTERNS = ('{name}_mask.npy', 'mask_{name}.npy')

_FEATURE_RE = (re.compile(r'^(?P<name>[A-Za-z0-9]+)_features\.npy$'),
               re.compile(r'^x_(?P<name>[A-Za-z0-9]+)\.npy$'))

ArrayLike = Union[str, 'os.PathLike[str]', np.ndarray, Tensor]


class ModalityError(ValueError):
    r"""Raised for a malformed modality matrix or mask; the message names the
    file (or modality) and the expected and actual shapes."""


def modality_names(data: HeteroData) -> List[str]:
    r"""The modalities stored in ``data['entity']`` (every ``x_<name>``), in
    sorted order."""
    store = data[ENTITY]
    return sorted(key[2:] for key in store.keys()
                  if key.startswith('x_') and isinstance(store[key], Tensor))


def modality_features(
    data: HeteroData,
    names: Optional[Sequence[str]] = None,
) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    r"""The features and availability masks of the modalities ``names``
    (default: all of :func:`modality_names`).

    A modality without ``mask_<name>`` is present for every entity.

    Returns:
        ``(features, masks)``: dicts ``{name: [N, D]}`` and
        ``{name: [N] bool}``.
    """
    store = data[ENTITY]
    available = modality_names(data)
    names = available if names is None else list(names)
    N = store.num_nodes
    features: Dict[str, Tensor] = {}
    masks: Dict[str, Tensor] = {}
    for name in names:
        if name not in available:
            raise ModalityError(
                f"No modality '{name}' in data['entity'] (has: "
                f"{available or 'none'}); attach it with attach_modalities() "
                f"or pyg_fewshot.data.text.text_features()")
        x = store[f'x_{name}']
        if x.dim() != 2 or x.size(0) != N:
            raise ModalityError(
                f"data['entity'].x_{name} has shape {tuple(x.shape)}, "
                f'expected ({N}, D)')
        mask = store.get(f'mask_{name}')
        if mask is None:
            mask = torch.ones(N, dtype=torch.bool, device=x.device)
        elif tuple(mask.shape) != (N, ):
            raise ModalityError(
                f"data['entity'].mask_{name} has shape {tuple(mask.shape)}, "
                f'expected ({N},)')
        features[name] = x
        masks[name] = mask.bool()
    return features, masks


def present_rows(x: Tensor) -> Tensor:
    r"""``[N]`` bool: rows of ``x`` (``[N, D]``) that hold a usable feature
    vector, *i.e.* are finite and not all zero (released matrices fill
    entities without an image or description with zeros or NaN)."""
    finite = torch.isfinite(x).all(dim=1)
    nonzero = (x != 0).any(dim=1)
    return finite & nonzero


def set_modality(data: HeteroData, name: str, x: Tensor,
                 mask: Optional[Tensor] = None,
                 source: Optional[str] = None) -> HeteroData:
    r"""Stores ``x`` (``[N, D]``) as modality ``name`` of ``data['entity']``
    with the availability mask ``mask & present_rows(x)``; rows that are
    missing are zeroed so that no NaN ever reaches a model.

    Args:
        data (HeteroData): The graph (modified in place and returned).
        name (str): Modality name (letters and digits, *e.g.* ``'text'``).
        x (torch.Tensor): ``[N, D]`` features.
        mask (torch.Tensor, optional): ``[N]`` bool (or 0/1) availability.
            (default: :obj:`None`, all rows that are present)
        source (str, optional): File name used in error messages.
    """
    if not re.fullmatch(r'[A-Za-z0-9]+', name):
        raise ModalityError(f"Modality name '{name}' must be letters and "
                            f'digits only (it becomes x_{name})')
    N = data[ENTITY].num_nodes
    what = source or f"modality '{name}'"
    if x.dim() != 2 or x.size(0) != N:
        got = tuple(x.shape)
        raise ModalityError(
            f'{what}: expected a matrix of shape ({N}, D) with one row per '
            f'entity id (N = {N} entities), got shape {got}')
    if x.size(1) == 0:
        raise ModalityError(f'{what}: feature dimension is 0')
    x = x.float()
    present = present_rows(x)
    if mask is not None:
        if tuple(mask.shape) != (N, ):
            raise ModalityError(
                f'mask of {what}: expected shape ({N},), got '
                f'{tuple(mask.shape)}')
        present = present & mask.bool()
    x = torch.where(present.view(-1, 1), x, x.new_zeros(()))
    data[ENTITY][f'x_{name}'] = x.contiguous()
    data[ENTITY][f'mask_{name}'] = present
    return data


def remove_modality(data: HeteroData, name: str) -> HeteroData:
    r"""Deletes modality ``name`` (features and mask) from ``data``."""
    store = data[ENTITY]
    for key in (f'x_{name}', f'mask_{name}'):
        if key in store:
            del store[key]
    return data


def _load_array(value: ArrayLike, what: str) -> Tuple[Tensor, str]:
    if isinstance(value, Tensor):
        return value.detach().cpu(), what
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.asarray(value)), what
    path = os.fspath(value)
    try:
        # mmap: released image matrices are hundreds of MB; only the float32
        # copy below is materialised.
        arr = np.load(path, mmap_mode='r', allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ModalityError(f"Could not read '{path}' as a .npy matrix: "
                            f'{e}') from e
    if arr.dtype == np.bool_:
        return torch.from_numpy(np.array(arr)), path
    if not np.issubdtype(arr.dtype, np.number):
        raise ModalityError(f"'{path}' holds dtype {arr.dtype}, expected "
                            f'a numeric matrix')
    return torch.from_numpy(np.array(arr, dtype=np.float32)), path


def _find(folder: str, patterns: Sequence[str], name: str) -> Optional[str]:
    for pattern in patterns:
        path = osp.join(folder, pattern.format(name=name))
        if osp.isfile(path):
            return path
    return None


def find_modality_files(folder: str) -> Dict[str, Tuple[str, Optional[str]]]:
    r"""The modality files of ``folder``: ``{name: (features, mask or
    None)}`` for every ``<name>_features.npy`` or ``x_<name>.npy``."""
    found: Dict[str, Tuple[str, Optional[str]]] = {}
    for fname in sorted(os.listdir(folder)):
        for regex in _FEATURE_RE:
            match = regex.match(fname)
            if match and match.group('name') not in found:
                name = match.group('name')
                found[name] = (_find(folder, FEATURE_PATTERNS, name),
                               _find(folder, MASK_PATTERNS, name))
    return found


def attach_modalities(
    data: HeteroData,
    source: Union[str, 'os.PathLike[str]', Mapping[str, ArrayLike]],
    names: Optional[Sequence[str]] = None,
    masks: Optional[Mapping[str, ArrayLike]] = None,
    dims: Optional[Mapping[str, int]] = None,
) -> HeteroData:
    r"""Loads per-entity modality matrices into ``data['entity']``.

    ``source`` is either a folder or a mapping ``{name: path or array}``.
    In a folder, modality ``<name>`` is read from ``<name>_features.npy`` or
    ``x_<name>.npy`` (one row per entity id, as the WN9-IMG / FB-IMG
    releases ship them) and its optional availability mask from
    ``<name>_mask.npy`` or ``mask_<name>.npy``. Rows that are all zero or
    hold a NaN/inf are counted as missing (see :func:`set_modality`).

    Args:
        data (HeteroData): Graph from
            :func:`~pyg_fewshot.data.hetero.build_fewshot_data` (modified in
            place and returned).
        source (str or Mapping): Folder, or ``{name: .npy path, numpy array
            or tensor}``.
        names (Sequence[str], optional): Modalities to load; each must be
            found. (default: :obj:`None`, every modality found)
        masks (Mapping[str, Any], optional): Extra ``{name: [N] mask}``
            (path or array), combined with the folder's mask files.
            (default: :obj:`None`)
        dims (Mapping[str, int], optional): Expected feature size of each
            modality, *e.g.* the one a checkpoint was trained with.
            (default: :obj:`None`, any)

    Raises:
        ModalityError: A file is missing or unreadable, or a matrix has the
            wrong number of rows or the wrong dimension; the message names
            the file and the expected and actual shapes.
    """
    N = data[ENTITY].num_nodes
    mask_src: Dict[str, ArrayLike] = {}
    if isinstance(source, Mapping):
        feat_src: Dict[str, ArrayLike] = dict(source)
        if names is not None:
            missing = [n for n in names if n not in feat_src]
            if missing:
                raise ModalityError(f'No features given for modalities '
                                    f'{missing}')
            feat_src = {n: feat_src[n] for n in names}
    else:
        folder = os.fspath(source)
        if not osp.isdir(folder):
            raise ModalityError(f"Modality folder '{folder}' does not exist")
        found = find_modality_files(folder)
        if names is None:
            names = list(found)
            if not names:
                raise ModalityError(
                    f"No modality matrices in '{folder}' (expected files "
                    f"named <name>_features.npy or x_<name>.npy)")
        feat_src = {}
        for name in names:
            path = _find(folder, FEATURE_PATTERNS, name)
            if path is None:
                tried = [p.format(name=name) for p in FEATURE_PATTERNS]
                raise ModalityError(
                    f"Modality '{name}' not found in '{folder}' (looked for "
                    f'{tried})')
            feat_src[name] = path
            mask_path = _find(folder, MASK_PATTERNS, name)
            if mask_path is not None:
                mask_src[name] = mask_path
    for name, value in (masks or {}).items():
        if name in mask_src:
            # Both given: an entity must be present in both.
            m0, w0 = _load_array(mask_src[name], f"mask of '{name}'")
            m1, w1 = _load_array(value, f"mask of '{name}'")
            _check_mask(m0, N, w0)
            _check_mask(m1, N, w1)
            mask_src[name] = m0.bool() & m1.bool()
        else:
            mask_src[name] = value

    for name, value in feat_src.items():
        x, what = _load_array(value, f"modality '{name}'")
        if x.dim() != 2 or x.size(0) != N:
            raise ModalityError(
                f'{what}: expected a matrix of shape ({N}, D) with one row '
                f'per entity id (N = {N} entities), got shape '
                f'{tuple(x.shape)}')
        if dims is not None and name in dims and x.size(1) != dims[name]:
            raise ModalityError(
                f'{what}: expected feature dimension {dims[name]} '
                f'(shape ({N}, {dims[name]})), got shape {tuple(x.shape)}')
        mask = None
        if name in mask_src:
            mask, mwhat = _load_array(mask_src[name], f"mask of '{name}'")
            _check_mask(mask, N, mwhat)
            mask = mask.bool()
        set_modality(data, name, x, mask, source=what)
    return data


def _check_mask(mask: Tensor, N: int, what: str) -> None:
    if tuple(mask.shape) != (N, ):
        raise ModalityError(f'{what}: expected a mask of shape ({N},) with '
                            f'one entry per entity id, got shape '
                            f'{tuple(mask.shape)}')
    if mask.dtype != torch.bool and not bool(((mask == 0) |
                                              (mask == 1)).all()):
        raise ModalityError(f'{what}: a mask must hold only 0/1 or '
                            f'True/False values')


def mask_random_entities(data: HeteroData, name: str, fraction: float,
                         seed: int = 0) -> HeteroData:
    r"""Marks a random ``fraction`` of the entities that have modality
    ``name`` as missing it (a robustness check: how much does a model rely
    on the modality?). Features of the newly missing rows are zeroed."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"'fraction' must be in [0, 1] (got {fraction})")
    feats, masks = modality_features(data, [name])
    mask = masks[name].clone()
    idx = mask.nonzero().view(-1)
    g = torch.Generator().manual_seed(seed)
    drop = idx[torch.randperm(idx.numel(), generator=g)[:int(
        round(fraction * idx.numel()))]]
    mask[drop] = False
    store = data[ENTITY]
    store[f'mask_{name}'] = mask
    store[f'x_{name}'] = torch.where(mask.view(-1, 1), feats[name],
                                     feats[name].new_zeros(()))
    return data


__all__ = [
    'ModalityError', 'attach_modalities', 'find_modality_files',
    'modality_names', 'modality_features', 'present_rows', 'set_modality',
    'remove_modality', 'mask_random_entities', 'FEATURE_PATTERNS',
    'MASK_PATTERNS'
]
