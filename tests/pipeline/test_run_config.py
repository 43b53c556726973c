import json

import pytest

from pyg_fewshot.data.config import DataConfig, EpisodeConfig
from pyg_fewshot.meta import LearnerConfig, TrainerConfig
from pyg_fewshot.models.config import (FusionAdapterConfig, MetaRConfig,
                                       MoEMetaConfig)
from pyg_fewshot.pipeline import RunConfig


def full_config():
    return RunConfig(
        data=DataConfig(dataset='nell-one', pretrain=True,
                        modality_dir='/data/mod'),
        episodes=EpisodeConfig(shots=5, num_queries=2, batch_size=64),
        model=FusionAdapterConfig(
            backbone=MoEMetaConfig(
                embedding_dim=50, aggregator_kwargs={'mix': 'convex'},
                relation_meta_kwargs={'num_experts': 4,
                                      'hidden_channels': [64, 32]}),
            modalities=['text', 'image'], tta_lr=1e-5),
        learner=LearnerConfig(inner_lr={'rel': 5.0, '*': 0.05},
                              first_order=False),
        trainer=TrainerConfig(lr=5e-4, entity_lr=0.0, grad_clip=1.0,
                              max_steps=20000),
        seed=3, ties='optimistic', device='cuda', nproc=2)


def test_defaults():
    cfg = RunConfig()
    assert cfg.model == MetaRConfig() and cfg.data == DataConfig()
    assert cfg.episodes == EpisodeConfig()
    assert cfg.learner == LearnerConfig() and cfg.trainer == TrainerConfig()
    assert (cfg.seed, cfg.ties, cfg.device, cfg.nproc) == (0, 'mean', 'cpu',
                                                           1)
    assert RunConfig.from_dict({}) == cfg
    d = cfg.to_dict()
    assert list(d) == ['data', 'episodes', 'model', 'learner', 'trainer',
                       'seed', 'ties', 'device', 'nproc']
    assert d['model']['name'] == 'metar'
    assert d['model']['hidden_channels'] == [500, 200]


@pytest.mark.parametrize('suffix', ['.yaml', '.yml', '.json'])
def test_file_round_trip_gives_identical_config(tmp_path, suffix):
    cfg = full_config()
    path = tmp_path / f'run{suffix}'
    cfg.save(str(path))
    back = RunConfig.load(str(path))
    assert back == cfg
    assert isinstance(back.model, FusionAdapterConfig)
    assert isinstance(back.model.backbone, MoEMetaConfig)
    assert back.model.modalities == ['text', 'image']
    assert back.to_dict() == cfg.to_dict()
    assert back.config_hash() == cfg.config_hash()


def test_yaml_and_json_files_agree(tmp_path):
    cfg = full_config()
    cfg.save(str(tmp_path / 'run.yaml'))
    cfg.save(str(tmp_path / 'run.json'))
    assert RunConfig.load(str(tmp_path / 'run.yaml')) == RunConfig.load(
        str(tmp_path / 'run.json'))
    d = json.loads((tmp_path / 'run.json').read_text())
    assert d['model']['backbone']['name'] == 'moemeta'


def test_hand_written_yaml(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('model:\n'
                    '  name: moemeta\n'
                    '  aggregator_kwargs: {mix: convex}\n'
                    'trainer:\n'
                    '  lr: 1e-3\n'        # an exponent without a dot
                    '  grad_clip: 5\n'    # an int for a float
                    'seed: 1\n')
    cfg = RunConfig.load(str(path))
    assert cfg.model == MoEMetaConfig(aggregator_kwargs={'mix': 'convex'})
    assert cfg.trainer.lr == 1e-3 and cfg.trainer.grad_clip == 5.0
    assert cfg.seed == 1 and cfg.data == DataConfig()


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('model:\n  name: metar\n  foo: 1\n')
    with pytest.raises(ValueError) as info:
        RunConfig.load(str(path))
    msg = str(info.value)
    assert msg.startswith(f"unknown key 'model.foo' in '{path}'; known: "
                          f"embedding_dim, hidden_channels")
    assert '\n' not in msg
    path.write_text('trainer:\n  lr_schedule: cosine\n')
    with pytest.raises(ValueError, match="unknown key 'trainer.lr_schedule'"):
        RunConfig.load(str(path))
    path.write_text('modell: {}\n')
    with pytest.raises(ValueError, match="unknown key 'modell' in .*; known: "
                                         "data, episodes, model,"):
        RunConfig.load(str(path))
    path.write_text('model:\n  name: transe\n')
    with pytest.raises(ValueError, match="unknown model.name 'transe' in "
                                         ".*; known: fusionadapter, metar, "
                                         "moemeta"):
        RunConfig.load(str(path))


@pytest.mark.parametrize('text,key,expected', [
    ('trainer:\n  max_steps: many\n', 'trainer.max_steps', 'int'),
    ('trainer:\n  max_steps: true\n', 'trainer.max_steps', 'int'),
    ('episodes:\n  shots: 1.5\n', 'episodes.shots', 'int'),
    ('data:\n  pretrain: "false"\n', 'data.pretrain', 'bool'),
    ('model:\n  hidden_channels: 500\n', 'model.hidden_channels',
     'a list of int'),
    ('seed: null\n', 'seed', 'int'),
    ('learner: 3\n', 'learner', 'a mapping (LearnerConfig)'),
])
def test_wrong_type_names_key_and_file(tmp_path, text, key, expected):
    path = tmp_path / 'run.yaml'
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        RunConfig.load(str(path))
    assert str(info.value).startswith(
        f"'{key}' in '{path}' must be {expected}, got ")


def test_own_checks_of_a_section_name_it_and_the_file(tmp_path):
    path = tmp_path / 'run.json'
    path.write_text('{"episodes": {"shots": 0}}')
    with pytest.raises(ValueError, match=f"^'episodes' in '{path}': "
                                         f".*'shots' must be positive"):
        RunConfig.load(str(path))


def test_unreadable_file(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('model: [1, 2\n')
    with pytest.raises(ValueError, match=r"cannot parse '.*run\.yaml' "
                                         r"\(line \d+, column \d+\)"):
        RunConfig.load(str(path))
    with pytest.raises(ValueError, match='cannot read'):
        RunConfig.load(str(tmp_path / 'missing.json'))


def test_override_is_typed_and_returns_a_new_config():
    cfg = RunConfig()
    new = cfg.override(['trainer.lr=0.01', 'trainer.max_steps=50',
                        'trainer.grad_clip=1', 'episodes.shots=5',
                        'learner.inner_lr={rel: 5, p_h: 0.05}',
                        'data.pretrain=true', 'data.root=null',
                        'model.hidden_channels=[64, 32]'])
    assert cfg == RunConfig()
    assert new.trainer.lr == 0.01 and new.trainer.max_steps == 50
    assert new.trainer.grad_clip == 1.0
    assert isinstance(new.trainer.grad_clip, float)
    assert new.episodes.shots == 5 and new.data.pretrain is True
    assert new.learner.inner_lr == {'rel': 5.0, 'p_h': 0.05}
    assert new.model.hidden_channels == (64, 32)
    with pytest.raises(ValueError, match="'trainer.max_steps' in the "
                                         "overrides must be int, got str"):
        cfg.override(['trainer.max_steps=lots'])
    with pytest.raises(ValueError, match="unknown key 'trainer.foo' in "
                                         "--set; known: lr,"):
        cfg.override(['trainer.foo=1'], where='--set')


def test_override_switches_model():
    cfg = RunConfig().override(['model.aggregator_kwargs.mix=convex',
                                'model.name=moemeta'])
    assert cfg.model == MoEMetaConfig(aggregator_kwargs={'mix': 'convex'})
    fusion = cfg.override(['model.name=fusionadapter',
                           'model.backbone.name=moemeta',
                           'model.backbone.embedding_dim=32'])
    assert fusion.model == FusionAdapterConfig(
        backbone=MoEMetaConfig(embedding_dim=32))


def test_config_hash_is_stable_and_follows_values():
    cfg = full_config()
    h = cfg.config_hash()
    assert len(h) == 12 and all(c in '0123456789abcdef' for c in h)
    assert full_config().config_hash() == h
    assert RunConfig.from_dict(json.loads(json.dumps(
        cfg.to_dict()))).config_hash() == h
    assert cfg.override(['trainer.lr=0.01']).config_hash() != h
    assert cfg.override(['model.backbone.aggregator_kwargs.mix=sum']
                        ).config_hash() != h


def test_resume_key_leaves_out_what_a_run_may_change():
    cfg = full_config()
    key = cfg.resume_key()
    for display_only in ('trainer.max_steps', 'device', 'data.root'):
        assert display_only not in key
    assert key['trainer.lr'] == 5e-4 and key['nproc'] == 2
    assert key['model.name'] == 'fusionadapter'
    assert key['model.backbone.name'] == 'moemeta'
    assert key['model.backbone.aggregator_kwargs'] == {'mix': 'convex'}
    assert key['seed'] == 3 and key['ties'] == 'optimistic'
    assert key['episodes.batch_size'] == 64
    assert json.loads(json.dumps(key)) == key
    longer = cfg.override(['trainer.max_steps=50000', 'device=cpu',
                           'data.root=/elsewhere'])
    assert longer.resume_key() == key
    assert cfg.override(['trainer.lr=0.01']).resume_key() != key
    assert cfg.override(['nproc=1']).resume_key() != key
