r"""Named run configurations shipped with the package.

A preset is a (partial) run file under ``pyg_fewshot/pipeline/presets/``
whose first line is a ``# comment`` saying what it reproduces; it is laid
over the defaults of :class:`~pyg_fewshot.pipeline.RunConfig` (or over the
presets before it), so a preset names only what differs. A preset may
start from others: ``extends: <name>`` (or a list of names, laid in order)
takes those presets first and lays the file's own keys over them, so a
setting shared by a family of presets is written once. ``nell-one/*``
presets read the dataset ``nell-one``, found through
``$PYG_FEWSHOT_DATA`` (see :func:`~pyg_fewshot.data.load_dataset`).
"""
import os
from typing import Any, Dict, List, Tuple

from .. import _config

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'presets')
_SUFFIX = '.yaml'
#: The key through which a preset starts from other presets.
EXTENDS = 'extends'


def _path(name: str) -> str:
    return os.path.join(PRESET_DIR, *name.split('/')) + _SUFFIX


def list_presets() -> List[Tuple[str, str]]:
    r"""Every preset as ``(name, description)``, sorted by name."""
    out = []
    for folder, _, files in os.walk(PRESET_DIR):
        for file in files:
            if not file.endswith(_SUFFIX):
                continue
            path = os.path.join(folder, file)
            name = os.path.relpath(path, PRESET_DIR)[:-len(_SUFFIX)]
            with open(path, encoding='utf-8') as f:
                first = f.readline().strip()
            out.append((name.replace(os.sep, '/'),
                        first.lstrip('#').strip()))
    return sorted(out)


def load_preset(name: str) -> Dict[str, Any]:
    r"""The (partial) run configuration dict of preset ``name`` (*e.g.*
    ``'nell-one/moemeta-1shot'``), with the presets it ``extends`` laid
    under it; an unknown name, a malformed or circular ``extends`` raise
    a one-line :class:`ValueError` (the first listing the presets)."""
    return _load(name, ())


def _load(name: str, chain: Tuple[str, ...]) -> Dict[str, Any]:
    path = _path(name)
    if not os.path.isfile(path):
        what = (f"preset '{chain[-1]}' extends an unknown preset"
                if chain else 'Unknown preset')
        names = ', '.join(n for n, _ in list_presets())
        raise ValueError(f"{what} '{name}'; the presets are: "
                         f'{names} (pyg-fewshot presets describes them)')
    if name in chain:
        raise ValueError(f"preset '{name}' extends itself: "
                         f"{' -> '.join(chain + (name, ))}")
    layer = _config.load_file(path)
    bases = layer.pop(EXTENDS, [])
    if isinstance(bases, str):
        bases = [bases]
    if not (isinstance(bases, list)
            and all(isinstance(b, str) and b for b in bases)):
        raise ValueError(f"'{path}': '{EXTENDS}' must be a preset name or "
                         f'a list of them, not {bases!r}')
    out: Dict[str, Any] = {}
    for base in bases:
        out = merge(out, _load(base, chain + (name, )))
    return merge(out, layer)


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    r"""``over`` laid over ``base``: nested sections are merged key by key,
    other values replaced. A section whose ``name`` changes (another
    model) is replaced whole, since its other keys belong to the old
    class."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if (isinstance(old, dict) and isinstance(value, dict)
                and value.get('name', old.get('name')) == old.get('name')):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out
