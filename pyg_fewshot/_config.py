r"""Configuration dataclasses to and from plain values and files.

The configurations (``models/config.py``, ``meta/config.py``,
``data/config.py``, ``pipeline/config.py``) are plain dataclasses; this
module turns them into nested dicts of plain values (the form written to
YAML or JSON files, and hashed) and back, checking every key and type on
the way in, so a typo in a configuration file fails at once and names the
key instead of surfacing as an odd error (or a silently ignored setting)
steps into training.

A field typed as a :obj:`typing.Union` of configuration classes (*e.g.*
``FusionAdapterConfig.backbone``) is written with a ``name`` entry, the
class's ``name`` :obj:`~typing.ClassVar`, by which it is read back.

Bottom layer: the standard library and :mod:`yaml` only.
"""
import copy
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import typing
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

__all__ = ['to_dict', 'from_dict', 'flatten', 'load_file', 'save_file',
           'parse_value', 'apply_overrides', 'config_hash']

NoneType = type(None)
YAML_SUFFIXES = ('.yaml', '.yml')
JSON_SUFFIXES = ('.json', )


class _Loader(yaml.SafeLoader):
    r""":class:`yaml.SafeLoader` reading numbers and booleans as YAML 1.2
    (and JSON) do.

    PyYAML follows YAML 1.1, where a float needs a dot, so ``lr: 1e-3``
    would arrive as the *string* ``'1e-3'`` (and be refused as a float),
    and where ``yes``, ``no``, ``on`` and ``off`` are booleans, so a dataset
    called ``no`` would be refused as a string; here only ``true`` and
    ``false`` are booleans.
    """


_FLOAT = re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$''', re.X)
_BOOL = re.compile(r'^(?:true|True|TRUE|false|False|FALSE)$')
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers
          if tag not in ('tag:yaml.org,2002:float', 'tag:yaml.org,2002:bool')]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver('tag:yaml.org,2002:float', _FLOAT,
                              list('-+0123456789.'))
_Loader.add_implicit_resolver('tag:yaml.org,2002:bool', _BOOL, list('tTfF'))


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _config_union(tp: Any) -> Optional[Tuple[type, ...]]:
    r"""The configuration classes of a Union of them (``Optional`` allowed),
    else :obj:`None`."""
    if typing.get_origin(tp) is not typing.Union:
        return None
    args = [a for a in typing.get_args(tp) if a is not NoneType]
    if len(args) > 1 and all(_is_config_class(a) and isinstance(
            getattr(a, 'name', None), str) for a in args):
        return tuple(args)
    return None


def _hints(cls: type) -> Dict[str, Any]:
    # Resolves string annotations (``from __future__ import annotations``).
    return typing.get_type_hints(cls)


def _fields(cls: type) -> List[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _name_key(name: str) -> str:
    # The spellings model_config accepts: case, '-' and '_' ignored.
    return str(name).lower().replace('-', '').replace('_', '')


# Writing ---------------------------------------------------------------------

def _plain(value: Any, tp: Any = Any) -> Any:
    union = _config_union(tp)
    if union is not None and value is not None:
        return {'name': type(value).name, **to_dict(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_dict(obj: Any) -> Dict[str, Any]:
    r"""The configuration dataclass ``obj`` as nested plain values (tuples
    become lists, nested configurations dicts; a field typed as a Union of
    configuration classes gets a leading ``name`` entry)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f'to_dict() expects a dataclass instance, got '
                        f'{type(obj).__name__}')
    hints = _hints(type(obj))
    return {f.name: _plain(getattr(obj, f.name), hints.get(f.name, Any))
            for f in _fields(type(obj))}


def flatten(obj: Any, prefix: str = '') -> Dict[str, Any]:
    r"""The plain values of the configuration dataclass ``obj`` on one
    level of dotted keys (``{'trainer.lr': 0.001, 'model.name': 'metar',
    ...}``): nested configurations are opened up, other values (lists,
    the ``*_kwargs`` dicts) stay whole. Differences between two of them
    name the setting that differs."""
    hints = _hints(type(obj))
    out: Dict[str, Any] = {}
    for f in _fields(type(obj)):
        key = f'{prefix}{f.name}'
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if _config_union(hints.get(f.name, Any)) is not None:
                out[f'{key}.name'] = type(value).name
            out.update(flatten(value, f'{key}.'))
        else:
            out[key] = _plain(value)
    return out


# Reading ---------------------------------------------------------------------

def _describe(tp: Any) -> str:
    r"""``tp`` the way a configuration file spells it."""
    if tp is Any:
        return 'any value'
    if tp is NoneType:
        return 'null'
    if tp in (int, float, str, bool):
        return tp.__name__
    if _is_config_class(tp):
        return f'a mapping ({tp.__name__})'
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        union = _config_union(tp)
        if union is not None:
            names = ', '.join(repr(a.name) for a in union)
            kinds = f"a mapping with 'name' in {names}"
            return f'null or {kinds}' if NoneType in args else kinds
        parts = [_describe(a) for a in args]
        return ', '.join(parts[:-1]) + ' or ' + parts[-1]
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(map(_describe, args))})"
        return f'a list of {_describe(args[0]) if args else "any value"}'
    if origin is dict:
        value = args[1] if args else Any
        return f'a mapping of str to {_describe(value)}'
    return getattr(tp, '__name__', str(tp))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _in(where: str) -> str:
    return f' in {where}' if where else ''


def _wrong_type(key: str, tp: Any, value: Any, where: str) -> ValueError:
    return ValueError(
        f"'{key}'{_in(where)} must be {_describe(tp)}, got "
        f"{type(value).__name__} {_shown(value)}")


def _convert(value: Any, tp: Any, key: str, where: str,
             default_class: Optional[type] = None) -> Any:
    if tp is Any:
        return copy.deepcopy(value)
    if tp is NoneType:
        if value is None:
            return None
        raise _wrong_type(key, tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong_type(key, tp, value, where)
    if tp is int:
        # bool is an int subclass, but 'true' for a step count is a mistake.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong_type(key, tp, value, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong_type(key, tp, value, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong_type(key, tp, value, where)
    if _is_config_class(tp):
        if not isinstance(value, dict):
            raise _wrong_type(key, tp, value, where)
        return _from_dict(tp, value, where, key)

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        if value is None:
            if NoneType in args:
                return None
            raise _wrong_type(key, tp, value, where)
        union = _config_union(tp)
        if union is not None:
            return _convert_named(value, tp, union, key, where, default_class)
        for arg in args:
            try:
                return _convert(value, arg, key, where)
            except ValueError:
                continue
        raise _wrong_type(key, tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(key, tp, value, where)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            items = [_convert(v, item, f'{key}[{i}]', where)
                     for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                raise _wrong_type(key, tp, value, where)
            items = [_convert(v, a, f'{key}[{i}]', where)
                     for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong_type(key, tp, value, where)
        key_tp, value_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is not Any:
                _convert(k, key_tp, f'{key} key', where)
            out[k] = _convert(v, value_tp, f'{key}.{k}', where)
        return out
    raise TypeError(f"'{key}': unsupported configuration type {tp!r}")


def _convert_named(value: Any, tp: Any, union: Tuple[type, ...], key: str,
                   where: str, default_class: Optional[type]) -> Any:
    if not isinstance(value, dict):
        raise _wrong_type(key, tp, value, where)
    classes = {_name_key(c.name): c for c in union}
    known = ', '.join(sorted(c.name for c in union))
    name_key = f'{key}.name' if key else 'name'
    if 'name' in value:
        name = value['name']
        if not isinstance(name, str) or _name_key(name) not in classes:
            raise ValueError(f"unknown {name_key} {_shown(name)}{_in(where)}"
                             f"; known: {known}")
        cls = classes[_name_key(name)]
    elif default_class is not None:
        # Without a name, the settings are those of the field's default.
        cls = default_class
    else:
        raise ValueError(f"missing '{name_key}'{_in(where)}; known: {known}")
    rest = {k: v for k, v in value.items() if k != 'name'}
    return _from_dict(cls, rest, where, key)


def _from_dict(cls: type, d: Any, where: str, prefix: str) -> Any:
    if not isinstance(d, dict):
        what = f"'{prefix}'" if prefix else 'the configuration'
        raise ValueError(f'{what}{_in(where)} must be a mapping, got '
                         f'{type(d).__name__} {_shown(d)}')
    fields = {f.name: f for f in _fields(cls)}
    for k in d:
        if k not in fields:
            dotted = f'{prefix}.{k}' if prefix else str(k)
            raise ValueError(f"unknown key '{dotted}'{_in(where)}; known: "
                             f"{', '.join(fields)}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        dotted = f'{prefix}.{name}' if prefix else name
        if name not in d:
            if (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING):
                raise ValueError(f"missing key '{dotted}'{_in(where)}")
            continue
        default_class = None
        if f.default_factory is not dataclasses.MISSING:
            default_class = type(f.default_factory())
        elif f.default is not dataclasses.MISSING and f.default is not None:
            default_class = type(f.default)
        kwargs[name] = _convert(d[name], hints.get(name, Any), dotted, where,
                                default_class)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        # The configuration's own checks (__post_init__) know neither the
        # file nor where in it the section is.
        what = f"'{prefix}'" if prefix else 'the configuration'
        raise ValueError(f'{what}{_in(where)}: {_one_line(e)}') from e


def from_dict(cls: type, d: Dict[str, Any], where: str = '') -> Any:
    r"""The configuration dataclass ``cls`` built from the nested plain
    values ``d`` (as :func:`to_dict` writes them).

    Every key and value is checked against the fields of ``cls``: an
    unknown key or a value of the wrong type (a string for a number, a
    boolean for an integer, ...) raises a one-line :class:`ValueError`
    naming the dotted key (``'model.embedding_dim'``) and ``where`` (*e.g.*
    the file it came from). Integers are accepted for floats, lists for
    tuples; missing keys take their defaults. A field typed as a Union of
    configuration classes picks its class by the ``name`` entry (case,
    ``-`` and ``_`` ignored), or the class of the field's default when
    there is none.

    Args:
        cls (type): The configuration dataclass.
        d (dict): Its plain values.
        where (str, optional): Where ``d`` came from, for error messages.
            (default: :obj:`''`)
    """
    if not _is_config_class(cls):
        raise TypeError(f'from_dict() expects a dataclass, got {cls!r}')
    return _from_dict(cls, d, where, '')


# Files -----------------------------------------------------------------------

def _suffix(path: str) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in YAML_SUFFIXES + JSON_SUFFIXES:
        raise ValueError(f"unknown configuration format '{suffix}' of "
                         f"'{path}'; expected .yaml, .yml or .json")
    return suffix


def _one_line(text: Any) -> str:
    return ' '.join(str(text).split())


def load_file(path: str) -> Dict[str, Any]:
    r"""The plain values of a configuration file: YAML (``.yaml``,
    ``.yml``) or JSON (``.json``), by suffix. An empty file is an empty
    mapping.

    Raises:
        ValueError: One line naming the file (and the line of a syntax
            error) when it cannot be read or parsed, or does not hold a
            mapping.
    """
    path = os.fspath(path)
    suffix = _suffix(path)
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise ValueError(f"cannot read configuration file '{path}': "
                         f"{_one_line(reason)}") from e
    try:
        if suffix in JSON_SUFFIXES:
            d = json.loads(text) if text.strip() else None
        else:
            d = yaml.load(text, Loader=_Loader)
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot parse '{path}' (line {e.lineno}, column "
                         f"{e.colno}): {e.msg}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        at = (f' (line {mark.line + 1}, column {mark.column + 1})'
              if mark is not None else '')
        problem = getattr(e, 'problem', None) or e
        raise ValueError(f"cannot parse '{path}'{at}: "
                         f"{_one_line(problem)}") from e
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"'{path}' must hold a mapping of settings, not a "
                         f'{type(d).__name__}')
    return d


def save_file(d: Dict[str, Any], path: str) -> None:
    r"""Writes the plain values ``d`` to ``path`` atomically, as YAML
    (keys in their order) or JSON by the suffix, so a crash never leaves a
    half-written configuration behind."""
    path = os.fspath(path)
    if _suffix(path) in JSON_SUFFIXES:
        text = json.dumps(d, indent=2) + '\n'
    else:
        text = yaml.safe_dump(d, sort_keys=False, default_flow_style=False,
                              allow_unicode=True)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Named as pyg_fewshot._io.atomic_path names its temporary files, so
    # remove_stale_tmp also clears one left by a killed process.
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                               suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


# Overrides and hashing -------------------------------------------------------

def parse_value(text: str) -> Any:
    r"""A command-line value read as YAML: ``0.01``, ``1e-3``, ``true``,
    ``null``, ``[500, 200]``, ``{rel: 5.0}``; anything else is the string
    itself."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def _split(item: str) -> Tuple[List[str], Any]:
    key, sep, text = str(item).partition('=')
    parts = key.strip().split('.')
    if not sep or not all(parts):
        raise ValueError(f"override '{item}' is not KEY=VALUE with a dotted "
                         f"KEY (e.g. 'trainer.lr=0.01')")
    return parts, parse_value(text)


def apply_overrides(d: Dict[str, Any], items: Iterable[str]
                    ) -> Dict[str, Any]:
    r"""A copy of the plain values ``d`` with ``items`` set, each
    ``'dotted.key=value'`` (*e.g.* ``'trainer.lr=0.01'``,
    ``'model.aggregator_kwargs.mix=convex'``), the value read as YAML (see
    :func:`parse_value`). Mappings on the way are created as needed.

    Setting the ``name`` of a named configuration (``'model.name=moemeta'``)
    to another name starts that mapping afresh, so the previous class's
    settings do not carry over; such overrides are applied before the
    others, whatever their order. The result is not checked here: build
    the configuration from it with :func:`from_dict`.
    """
    out = copy.deepcopy(d)
    parsed = [_split(item) for item in items]
    # Shallower first: 'model.name' must not wipe 'model.backbone.name'.
    renames = sorted([(p, v) for p, v in parsed if p[-1] == 'name'],
                     key=lambda pv: len(pv[0]))
    others = [(p, v) for p, v in parsed if p[-1] != 'name']
    for parts, value in renames + others:
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                dotted, at = '.'.join(parts), '.'.join(parts[:i + 1])
                raise ValueError(f"cannot set '{dotted}': '{at}' is "
                                 f"{_shown(child)}, not a mapping")
            node = child
        last = parts[-1]
        if last == 'name' and 'name' in node and (
                _name_key(value) != _name_key(node['name'])):
            node.clear()
        node[last] = copy.deepcopy(value)
    return out


def config_hash(d: Dict[str, Any]) -> str:
    r"""The first 12 hex digits of the SHA-256 of ``d`` as canonical JSON
    (keys sorted, no spaces): equal plain values, equal hash, across
    processes and versions of Python."""
    text = json.dumps(d, sort_keys=True, separators=(',', ':'),
                      ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]
