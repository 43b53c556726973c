import dataclasses

import pytest
import torch

from pyg_fewshot._config import from_dict, to_dict
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import (LearnerConfig, MetaLearner, MetaTrainer,
                              TrainerConfig)
from pyg_fewshot.models import build_model


def test_defaults():
    assert to_dict(LearnerConfig()) == {
        'inner_steps': 1, 'inner_lr': None, 'margin': 1.0,
        'first_order': True, 'published_quirks': False}
    assert to_dict(TrainerConfig()) == {
        'lr': 1e-3, 'entity_lr': None, 'max_steps': 1000, 'eval_every': 200,
        'patience': 30, 'grad_clip': None, 'amp': False,
        'keep_eval_mode': False, 'monitor': []}


@pytest.mark.parametrize('inner_lr', [None, 5.0, {'rel': 5.0, '*': 0.05}])
def test_learner_config_round_trip(inner_lr):
    cfg = LearnerConfig(inner_steps=2, inner_lr=inner_lr, margin=0.5,
                        first_order=False)
    assert from_dict(LearnerConfig, to_dict(cfg)) == cfg


def test_inner_lr_accepts_numbers_and_dicts_only():
    assert from_dict(LearnerConfig, {'inner_lr': 5}).inner_lr == 5.0
    assert from_dict(LearnerConfig, {'inner_lr': {'rel': 1}}).inner_lr == {
        'rel': 1.0}
    with pytest.raises(ValueError, match="'inner_lr' in f must be null, "
                                         "float or a mapping of str to "
                                         "float"):
        from_dict(LearnerConfig, {'inner_lr': 'big'}, 'f')
    with pytest.raises(ValueError, match="'inner_steps' must be int"):
        from_dict(LearnerConfig, {'inner_steps': True})


def test_trainer_config_types():
    cfg = from_dict(TrainerConfig, {'lr': 1, 'grad_clip': 5, 'amp': True})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.grad_clip == 5.0 and cfg.amp is True
    with pytest.raises(ValueError, match="'max_steps' must be int, got str"):
        from_dict(TrainerConfig, {'max_steps': '100'})
    with pytest.raises(ValueError, match="unknown key 'lr_schedule'"):
        from_dict(TrainerConfig, {'lr_schedule': 'cosine'})


def make_model(data):
    torch.manual_seed(0)
    return build_model('metar', data, embedding_dim=8, hidden_channels=(8, ))


def test_learner_from_config(tiny_data):
    model = make_model(tiny_data)
    cfg = LearnerConfig(inner_steps=3, inner_lr={'*': 0.5}, margin=2.0,
                        first_order=False, published_quirks=True)
    learner = MetaLearner.from_config(model, cfg)
    assert repr(learner) == repr(MetaLearner(model, **dataclasses.asdict(
        cfg)))
    assert learner.model is model and learner.inner_steps == 3
    assert learner.margin == 2.0 and not learner.first_order
    assert learner.published_quirks
    # None: the model's own step size.
    assert MetaLearner.from_config(model, LearnerConfig()).inner_lr == (
        model.default_inner_lr)


def test_trainer_from_config(tiny_data, tmp_path):
    model = make_model(tiny_data)
    cfg = TrainerConfig(lr=1e-2, entity_lr=1e-4, max_steps=4, eval_every=2,
                        patience=5, grad_clip=1.0, keep_eval_mode=True)
    trainer = MetaTrainer.from_config(
        MetaLearner(model), EpisodeSampler(tiny_data, 2, batch_size=8),
        str(tmp_path), cfg, validate=lambda: 0.5,
        run_config={'trainer.lr': 1e-2}, metadata={'model': 'metar'},
        progress=False)
    assert (trainer.max_steps, trainer.eval_every, trainer.patience) == (
        4, 2, 5)
    assert trainer.grad_clip == 1.0 and trainer.keep_eval_mode
    assert not trainer.amp and not trainer.progress
    lrs = sorted(g['lr'] for o in trainer.optimizers for g in o.param_groups)
    assert lrs == [1e-4, 1e-2]
    assert trainer.run_config['trainer.lr'] == 1e-2
    assert 'data_fingerprint' in trainer.run_config
    assert trainer.metadata == {'model': 'metar'}
    summary = trainer.fit()
    assert summary['steps'] == 4 and summary['best_score'] == 0.5


def test_trainer_from_config_checks_values(tiny_data, tmp_path):
    model = make_model(tiny_data)
    sampler = EpisodeSampler(tiny_data, 2, batch_size=8)
    for bad in (dict(lr=0.0), dict(max_steps=0), dict(eval_every=-1),
                dict(entity_lr=-1.0)):
        with pytest.raises(ValueError):
            MetaTrainer.from_config(MetaLearner(model), sampler,
                                    str(tmp_path), TrainerConfig(**bad))
    frozen = MetaTrainer.from_config(MetaLearner(model), sampler,
                                     str(tmp_path), TrainerConfig(
                                         entity_lr=0.0))
    assert not frozen.sparse_params
    assert not any(p.requires_grad for p in model.sparse_parameters())
