import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

import pytest
import yaml

from pyg_fewshot import _config
from pyg_fewshot._config import (apply_overrides, config_hash, flatten,
                                 from_dict, load_file, parse_value,
                                 save_file, to_dict)


@dataclass
class Inner:
    size: int = 3
    rate: float = 0.5


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    dims: Tuple[int, ...] = (4, 2)
    pair: Tuple[int, str] = (1, 'a')
    names: Optional[List[str]] = None
    step: Union[None, float, Dict[str, float]] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)
    flag: bool = False
    label: str = 'x'


@dataclass
class NoDefault:
    count: int


# A Union of named configurations, as FusionAdapterConfig.backbone.
@dataclass
class MetaRConfig:
    name: ClassVar[str] = 'metar'
    embedding_dim: int = 100
    dropout: float = 0.5


@dataclass
class MoEMetaConfig:
    name: ClassVar[str] = 'moemeta'
    embedding_dim: int = 100
    aggregator: Optional[str] = 'attentive'
    aggregator_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class FusionAdapterConfig:
    name: ClassVar[str] = 'fusionadapter'
    backbone: Union[MetaRConfig, MoEMetaConfig] = field(
        default_factory=MetaRConfig)
    modalities: Optional[List[str]] = None
    tta_lr: float = 1e-4


def test_to_dict_gives_nested_plain_values():
    d = to_dict(Outer(dims=(8, ), kwargs={'t': (1, 2)}))
    assert d == {'inner': {'size': 3, 'rate': 0.5}, 'dims': [8],
                 'pair': [1, 'a'], 'names': None, 'step': None,
                 'kwargs': {'t': [1, 2]}, 'flag': False, 'label': 'x'}
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(TypeError):
        to_dict(Outer)


def test_from_dict_round_trip_restores_tuples_and_nesting():
    cfg = Outer(inner=Inner(7, 0.25), dims=(5, 6), names=['a'],
                step={'rel': 5.0}, kwargs={'mix': 'convex'}, flag=True)
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert from_dict(Outer, {}) == Outer()
    back = from_dict(Outer, {'dims': [1, 2, 3], 'pair': [2, 'b']})
    assert back.dims == (1, 2, 3) and back.pair == (2, 'b')


def test_union_of_configs_is_written_and_read_by_name():
    cfg = FusionAdapterConfig(backbone=MoEMetaConfig(embedding_dim=16),
                              modalities=['text'])
    d = to_dict(cfg)
    assert list(d['backbone'])[0] == 'name'
    assert d['backbone']['name'] == 'moemeta'
    assert d['backbone']['embedding_dim'] == 16
    back = from_dict(FusionAdapterConfig, d)
    assert back == cfg and isinstance(back.backbone, MoEMetaConfig)
    # Spelling as model_config accepts it; no name: the default's class.
    d['backbone']['name'] = 'MoE-Meta'
    assert from_dict(FusionAdapterConfig, d) == cfg
    plain = from_dict(FusionAdapterConfig, {'backbone': {'dropout': 0.1}})
    assert plain.backbone == MetaRConfig(dropout=0.1)
    with pytest.raises(ValueError) as info:
        from_dict(FusionAdapterConfig, {'backbone': {'name': 'transe'}},
                  "'run.yaml'")
    assert str(info.value) == (
        "unknown backbone.name 'transe' in 'run.yaml'; known: metar, "
        "moemeta")
    # MoEMeta's settings are not MetaR's.
    with pytest.raises(ValueError, match="unknown key 'backbone.aggregator'"):
        from_dict(FusionAdapterConfig,
                  {'backbone': {'name': 'metar', 'aggregator': None}})


def test_unknown_key_is_one_line_naming_key_and_file():
    with pytest.raises(ValueError) as info:
        from_dict(Outer, {'inner': {'sise': 3}}, "'run.yaml'")
    assert str(info.value) == (
        "unknown key 'inner.sise' in 'run.yaml'; known: size, rate")
    with pytest.raises(ValueError, match="^unknown key 'foo'; known: "):
        from_dict(Outer, {'foo': 1})


@pytest.mark.parametrize('d,key,expected', [
    ({'inner': {'size': '3'}}, 'inner.size', 'int'),
    ({'inner': {'size': True}}, 'inner.size', 'int'),
    ({'inner': {'size': 3.0}}, 'inner.size', 'int'),
    ({'inner': {'rate': 'fast'}}, 'inner.rate', 'float'),
    ({'inner': {'rate': False}}, 'inner.rate', 'float'),
    ({'inner': 3}, 'inner', 'a mapping'),
    ({'flag': 1}, 'flag', 'bool'),
    ({'label': 3}, 'label', 'str'),
    ({'dims': 3}, 'dims', 'a list of int'),
    ({'dims': [1, 'a']}, 'dims[1]', 'int'),
    ({'pair': [1]}, 'pair', 'a list of 2'),
    ({'names': 'abc'}, 'names', 'a list of str or null'),
    ({'step': 'big'}, 'step', 'null, float or a mapping of str to float'),
    ({'step': {'rel': 'x'}}, 'step', 'null, float or a mapping'),
    ({'kwargs': [1]}, 'kwargs', 'a mapping of str to any value'),
])
def test_wrong_type_names_key_and_expected_type(d, key, expected):
    with pytest.raises(ValueError) as info:
        from_dict(Outer, d, "'f.yaml'")
    msg = str(info.value)
    assert '\n' not in msg
    assert msg.startswith(f"'{key}' in 'f.yaml' must be {expected}")


def test_ints_are_accepted_for_floats():
    cfg = from_dict(Outer, {'inner': {'rate': 1}, 'step': {'rel': 5}})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert cfg.step == {'rel': 5.0} and isinstance(cfg.step['rel'], float)
    assert from_dict(Outer, {'step': 2}).step == 2.0


def test_missing_required_key():
    with pytest.raises(ValueError, match="missing key 'count' in here"):
        from_dict(NoDefault, {}, 'here')
    assert from_dict(NoDefault, {'count': 2}) == NoDefault(2)


@pytest.mark.parametrize('suffix', ['.yaml', '.yml', '.json'])
def test_file_round_trip(tmp_path, suffix):
    d = to_dict(FusionAdapterConfig(backbone=MoEMetaConfig(
        aggregator_kwargs={'mix': 'convex'}), tta_lr=1e-5))
    path = tmp_path / 'sub' / f'run{suffix}'
    save_file(d, str(path))
    assert load_file(str(path)) == d
    assert from_dict(FusionAdapterConfig, load_file(path)) == (
        from_dict(FusionAdapterConfig, d))
    # Written in field order, nothing left behind.
    text = path.read_text()
    assert text.index('backbone') < text.index('tta_lr')
    assert os.listdir(path.parent) == [path.name]


def test_yaml_reads_exponent_floats(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('lr: 1e-3\nbig: 1E5\nn: 12\nx: 1.5\nname: e5\n')
    assert load_file(str(path)) == {'lr': 0.001, 'big': 100000.0, 'n': 12,
                                    'x': 1.5, 'name': 'e5'}
    assert yaml.safe_load('lr: 1e-3') == {'lr': '1e-3'}  # why _Loader


def test_empty_file_is_empty_mapping(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('')
    assert load_file(str(path)) == {}


def test_file_errors_are_one_line_with_name_and_line(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('a: 1\nb: [1, 2\nc: 3\n')
    with pytest.raises(ValueError) as info:
        load_file(str(bad))
    msg = str(info.value)
    assert '\n' not in msg and str(bad) in msg and '(line ' in msg
    bad_json = tmp_path / 'bad.json'
    bad_json.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(ValueError, match=r'bad\.json.*\(line 2, column 7\)'):
        load_file(str(bad_json))
    listed = tmp_path / 'list.yaml'
    listed.write_text('- 1\n- 2\n')
    with pytest.raises(ValueError, match='must hold a mapping'):
        load_file(str(listed))
    with pytest.raises(ValueError, match="cannot read .*missing.yaml'"):
        load_file(str(tmp_path / 'missing.yaml'))
    with pytest.raises(ValueError, match=r"unknown configuration format "
                                         r"'\.toml'"):
        load_file(str(tmp_path / 'run.toml'))
    with pytest.raises(ValueError, match='unknown configuration format'):
        save_file({}, str(tmp_path / 'run.txt'))


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'run.yaml'
    save_file({'a': 1}, str(path))

    def broken(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', broken)
    with pytest.raises(OSError, match='disk full'):
        save_file({'a': 2}, str(path))
    monkeypatch.undo()
    assert load_file(str(path)) == {'a': 1}
    assert os.listdir(tmp_path) == ['run.yaml']


def test_parse_value():
    assert parse_value('0.01') == 0.01
    assert parse_value('1e-3') == 0.001
    assert parse_value('3') == 3
    assert parse_value('true') is True
    assert parse_value('null') is None
    assert parse_value('[500, 200]') == [500, 200]
    assert parse_value('{rel: 5.0}') == {'rel': 5.0}
    assert parse_value('convex') == 'convex'
    assert parse_value('[1, 2') == '[1, 2'


def test_apply_overrides_sets_typed_values_on_a_copy():
    d = to_dict(Outer())
    out = apply_overrides(d, ['inner.rate=0.01', 'dims=[3, 3]',
                              'kwargs.mix=convex', 'names=null',
                              'flag=true', 'label=a=b'])
    assert d == to_dict(Outer())
    assert out['inner']['rate'] == 0.01 and out['dims'] == [3, 3]
    assert out['kwargs'] == {'mix': 'convex'} and out['flag'] is True
    assert out['label'] == 'a=b'
    cfg = from_dict(Outer, out)
    assert cfg.dims == (3, 3) and cfg.inner.rate == 0.01
    # Typing is from_dict's: a string for an int is refused there.
    with pytest.raises(ValueError, match="'inner.size' in args must be int"):
        from_dict(Outer, apply_overrides(d, ['inner.size=many']), 'args')
    with pytest.raises(ValueError, match="unknown key 'inner.foo'"):
        from_dict(Outer, apply_overrides(d, ['inner.foo.bar=1']))


@pytest.mark.parametrize('item', ['inner.rate', '=3', 'inner..rate=1',
                                  'inner.=1'])
def test_malformed_override(item):
    with pytest.raises(ValueError, match='is not KEY=VALUE'):
        apply_overrides({}, [item])


def test_override_through_a_plain_value_is_refused():
    with pytest.raises(ValueError, match="cannot set 'label.x': 'label' is "
                                         "'x', not a mapping"):
        apply_overrides(to_dict(Outer()), ['label.x=1'])


def test_renaming_a_named_config_starts_it_afresh():
    d = to_dict(FusionAdapterConfig(backbone=MetaRConfig(dropout=0.1)))
    # Order does not matter: the rename applies first.
    out = apply_overrides(d, ['backbone.embedding_dim=8',
                              'backbone.name=moemeta'])
    cfg = from_dict(FusionAdapterConfig, out)
    assert cfg.backbone == MoEMetaConfig(embedding_dim=8)
    # The same name (any spelling) keeps the settings.
    same = apply_overrides(d, ['backbone.name=MetaR'])
    assert from_dict(FusionAdapterConfig, same).backbone.dropout == 0.1


def test_flatten_opens_nested_configs_only():
    flat = flatten(FusionAdapterConfig(backbone=MoEMetaConfig(
        aggregator_kwargs={'mix': 'convex'})))
    assert flat['backbone.name'] == 'moemeta'
    assert flat['backbone.aggregator_kwargs'] == {'mix': 'convex'}
    assert flat['tta_lr'] == 1e-4 and 'backbone' not in flat
    assert flatten(Outer())['dims'] == [4, 2]


def test_config_hash_is_canonical():
    d = to_dict(Outer())
    h = config_hash(d)
    assert len(h) == 12 and int(h, 16) >= 0
    assert config_hash(dict(reversed(list(d.items())))) == h
    assert config_hash(to_dict(Outer(flag=True))) != h
    # Fixed across processes and versions (canonical JSON, SHA-256).
    import hashlib
    text = json.dumps(d, sort_keys=True, separators=(',', ':'))
    assert h == hashlib.sha256(text.encode()).hexdigest()[:12]


def test_only_true_and_false_are_booleans():
    # YAML 1.1's yes / no / on / off stay strings (a dataset called 'no'),
    # as in YAML 1.2 and JSON.
    assert _config.parse_value('no') == 'no'
    assert _config.parse_value('on') == 'on'
    assert _config.parse_value('true') is True
    assert _config.parse_value('False') is False
    assert _config.parse_value('{a: yes, b: false}') == {'a': 'yes',
                                                         'b': False}
