"""Item 12: numeric options and configuration values of the wrong type or
sign are rejected up front with a message naming the option or the dotted
configuration key, by the CLI, the configuration and
:class:`MetaTrainer` / :class:`MetaLearner`."""
import math
import os

import pytest

from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import build_model
from _cli import files_under, run_cli


pytestmark = pytest.mark.usefixtures('cli_cache')


# argparse reports these: its usage, then the one line naming the option.
OPTION_CASES = {
    'eval-every-zero': (['--eval-every', '0'],
                        'argument --eval-every: must be a positive integer, '
                        'got 0'),
    'max-steps-zero': (['--max-steps', '0'],
                       'argument --max-steps: must be a positive integer, '
                       'got 0'),
    'lr-nan': (['--lr', 'nan'],
               'argument --lr: must be a positive number, got nan'),
    'shots-not-a-number': (['--shots', 'two'],
                           "argument --shots: must be a positive integer, "
                           "got 'two'"),
    'inner-lr-negative': (['--inner-lr', 'rel=-5'],
                          'argument --inner-lr: step sizes must be '
                          'non-negative numbers, got rel=-5'),
    'set-no-equals': (['--set', 'oops'],
                      "argument --set: expected KEY=VALUE, got 'oops'"),
    'set-no-key': (['--set', '=1'],
                   "argument --set: expected KEY=VALUE, got '=1'"),
}


@pytest.mark.parametrize('case', sorted(OPTION_CASES))
def test_train_rejects_option(case, tmp_path, capsys):
    extra, message = OPTION_CASES[case]
    out = str(tmp_path / 'run')
    code, stdout, err = run_cli(['train', '--model', 'metar', '--output', out]
                                + extra, capsys)
    assert code == 2 and stdout == ''
    assert err.splitlines()[-1] == f'pyg-fewshot train: error: {message}'
    assert err.startswith('usage: pyg-fewshot train')
    assert 'Traceback' not in err
    assert not os.path.exists(out)


# Values the configuration holds but whose range the part that uses them
# checks (the trainer, the learner): one line naming the setting, before
# any checkpoint is written.
SET_VALUE_CASES = {
    'grad-clip-zero': ('trainer.grad_clip=0',
                       "'grad_clip' must be a positive number (got 0.0)"),
    'grad-clip-negative': ('trainer.grad_clip=-1',
                           "'grad_clip' must be a positive number (got "
                           "-1.0)"),
    'patience-zero': ('trainer.patience=0',
                      "'patience' must be a positive number (got 0)"),
    'margin-negative': ('learner.margin=-0.5',
                        "'margin' must be a non-negative number (got -0.5)"),
    'inner-steps-negative': ('learner.inner_steps=-1',
                             "'inner_steps' must be >= 0 (got -1)"),
}


@pytest.mark.parametrize('case', sorted(SET_VALUE_CASES))
def test_train_rejects_set_value(case, tmp_path, capsys):
    item, message = SET_VALUE_CASES[case]
    out = str(tmp_path / 'run')
    code, stdout, err = run_cli(['train', '--model', 'metar', '--output', out,
                                 '--dim', '8', '--quiet', '--set', item],
                                capsys)
    assert code == 2 and stdout == ''
    assert err.splitlines() == [f'pyg-fewshot train: error: {message}']
    assert files_under(out) == []


@pytest.mark.parametrize('shots', ['0', '-1'])
def test_evaluate_rejects_shots(shots, tmp_path, capsys):
    # 0 used to fall back silently to the checkpoint's shots.
    metrics = str(tmp_path / 'metrics.json')
    code, stdout, err = run_cli(['evaluate', '--checkpoint', str(tmp_path),
                                 '--shots', shots, '--output', metrics],
                                capsys)
    assert code == 2 and stdout == ''
    assert err.splitlines()[-1] == (
        f'pyg-fewshot evaluate: error: argument --shots: must be a positive '
        f'integer, got {shots}')
    assert 'Traceback' not in err
    assert not os.path.exists(metrics)


METAR_KEYS = 'embedding_dim, hidden_channels, dropout, sparse, pretrained'

# Checked by the configuration once the model is known, before any data is
# loaded: one line naming the dotted key, no usage.
MODEL_KEY_CASES = {
    'not-a-number': ('metar', ['model.embedding_dim=abc'],
                     "'model.embedding_dim' in the overrides must be int, "
                     "got str 'abc'"),
    'float-for-int': ('metar', ['model.embedding_dim=4.5'],
                      "'model.embedding_dim' in the overrides must be int, "
                      "got float 4.5"),
    'bool-for-int': ('metar', ['model.embedding_dim=true'],
                     "'model.embedding_dim' in the overrides must be int, "
                     "got bool True"),
    'not-a-bool': ('metar', ['model.sparse=maybe'],
                   "'model.sparse' in the overrides must be bool, got str "
                   "'maybe'"),
    'not-a-list': ('metar', ['model.hidden_channels=16'],
                   "'model.hidden_channels' in the overrides must be a list "
                   "of int, got int 16"),
    'not-a-list-of-int': ('metar', ['model.hidden_channels=[16, x]'],
                          "'model.hidden_channels[1]' in the overrides must "
                          "be int, got str 'x'"),
    'none-not-allowed': ('metar', ['model.dropout=null'],
                         "'model.dropout' in the overrides must be float, "
                         "got NoneType None"),
    'unknown-key': ('metar', ['model.embeding_dim=8'],
                    f"unknown key 'model.embeding_dim' in the overrides; "
                    f"known: {METAR_KEYS}"),
    'data-filled-key': ('metar', ['model.num_entities=8'],
                        f"unknown key 'model.num_entities' in the "
                        f"overrides; known: {METAR_KEYS}"),
    'key-of-another-model': ('metar', ['model.relation_meta=mlp'],
                             f"unknown key 'model.relation_meta' in the "
                             f"overrides; known: {METAR_KEYS}"),
    'unknown-section': ('metar', ['modle.embedding_dim=8'],
                        "unknown key 'modle' in the overrides; known: data, "
                        "episodes, model, learner, trainer, seed, ties, "
                        "device, nproc"),
    'unknown-model-name': ('metar', ['model.name=metaR2'],
                           "unknown model.name 'metaR2' in the overrides; "
                           "known: fusionadapter, metar, moemeta"),
    'moemeta-not-a-dict': ('moemeta', ['model.relation_meta_kwargs=4'],
                           "'model.relation_meta_kwargs' in the overrides "
                           "must be a mapping of str to any value, got int "
                           "4"),
    'learner-wrong-type': ('metar', ['learner.inner_steps=one'],
                           "'learner.inner_steps' in the overrides must be "
                           "int, got str 'one'"),
    'trainer-wrong-type': ('metar', ['trainer.amp=1'],
                           "'trainer.amp' in the overrides must be bool, "
                           "got int 1"),
    'episodes-not-positive': ('metar', ['episodes.num_queries=0'],
                              "'episodes' in the overrides: EpisodeConfig: "
                              "'num_queries' must be positive (got 0)"),
    'fusion-backbone-key': ('fusionadapter',
                            ['model.backbone.num_experts=4'],
                            f"unknown key 'model.backbone.num_experts' in "
                            f"the overrides; known: {METAR_KEYS}"),
}


@pytest.mark.parametrize('case', sorted(MODEL_KEY_CASES))
def test_train_rejects_configuration_value(case, tmp_path, capsys):
    model, items, message = MODEL_KEY_CASES[case]
    out = str(tmp_path / 'run')
    argv = ['train', '--model', model, '--output', out]
    for item in items:
        argv += ['--set', item]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2 and stdout == ''
    assert err.splitlines() == [f'pyg-fewshot train: error: {message}']
    assert not os.path.exists(out)
    # Before the dataset was even processed.
    assert files_under(str(tmp_path / 'cache')) == []


# Out of range: checked by the model's configuration, before any data is
# loaded; one line naming the setting and the value (the wording is the
# configuration's).
RANGE_CASES = {
    'negative-size': ('metar', 'model.embedding_dim=-5', 'embedding_dim',
                      '-5'),
    'zero-size': ('moemeta', 'model.embedding_dim=0', 'embedding_dim', '0'),
    'dropout-out-of-range': ('metar', 'model.dropout=1.5', 'dropout', '1.5'),
    'unknown-projection': ('moemeta', 'model.projection=bogus', 'projection',
                           "'bogus'"),
    'fusion-dropout-out-of-range': ('fusionadapter',
                                    'model.adapter_dropout=2',
                                    'adapter_dropout', '2'),
    'fusion-backbone-negative-size': ('fusionadapter',
                                      'model.backbone.embedding_dim=-1',
                                      'embedding_dim', '-1'),
}


@pytest.mark.parametrize('case', sorted(RANGE_CASES))
def test_train_rejects_out_of_range_value(case, tmp_path, capsys):
    model, item, name, value = RANGE_CASES[case]
    out = str(tmp_path / 'run')
    code, stdout, err = run_cli(['train', '--model', model, '--output', out,
                                 '--set', item], capsys)
    assert code == 2 and stdout == ''
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('pyg-fewshot train: error: ')
    assert f"'{name}'" in lines[0] and value in lines[0]
    assert not os.path.exists(out)
    assert files_under(str(tmp_path / 'cache')) == []


# Checked by the layer the value is passed to (the *_kwargs dicts), when the
# model is built: one line naming the argument, before any checkpoint is
# written.
LAYER_CASES = {
    'experts-zero': ('moemeta', ['model.relation_meta_kwargs.num_experts=0'],
                     "'top_k' must be in [1, num_experts] (got 5 of 0)"),
    'unknown-mix': ('moemeta', ['model.aggregator_kwargs.mix=bogus'],
                    "Unknown mix 'bogus' (expected one of ('add', "
                    "'convex'))"),
    'fusion-backbone-experts-zero': (
        'fusionadapter',
        ['model.backbone.name=moemeta',
         'model.backbone.relation_meta_kwargs.num_experts=0'],
        "'top_k' must be in [1, num_experts] (got 5 of 0)"),
}


@pytest.mark.parametrize('case', sorted(LAYER_CASES))
def test_train_rejects_layer_argument(case, tmp_path, capsys):
    model, items, message = LAYER_CASES[case]
    out = str(tmp_path / 'run')
    argv = ['train', '--model', model, '--output', out, '--dim', '8',
            '--quiet', '--set', 'data.text=false']
    for item in items:
        argv += ['--set', item]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2 and stdout == ''
    assert err.splitlines() == [f'pyg-fewshot train: error: {message}']
    assert files_under(out) == []


# A layer argument the configuration does not know (before any data is
# loaded), or a value the layer cannot take (when the model is built): one
# line either way, never a traceback.
UNCHECKED_CASES = {
    'none-for-top-k': ('moemeta', 'model.relation_meta_kwargs.top_k=null',
                       'top_k'),
    'unknown-layer-argument': ('moemeta',
                               'model.relation_meta_kwargs.bogus=1',
                               'bogus'),
}


@pytest.mark.parametrize('case', sorted(UNCHECKED_CASES))
def test_train_rejects_unchecked_value(case, tmp_path, capsys):
    model, item, name = UNCHECKED_CASES[case]
    out = str(tmp_path / 'run')
    try:
        code, stdout, err = run_cli(['train', '--model', model, '--output',
                                     out, '--set', item], capsys)
    except Exception as e:  # a traceback
        pytest.fail(f'{type(e).__name__}: {e}')
    assert code == 2 and stdout == ''
    lines = err.splitlines()
    assert len(lines) == 1 and name in lines[0]


def _trainer(data, out, **kwargs):
    model = build_model('metar', data, embedding_dim=8, hidden_channels=(8, ))
    return MetaTrainer(MetaLearner(model), EpisodeSampler(data, 1, 3, 4),
                       str(out), progress=False, **kwargs)


@pytest.mark.parametrize('name,value', [
    ('grad_clip', 0.0), ('grad_clip', -1.0), ('grad_clip', math.nan),
    ('eval_every', 0), ('max_steps', 0), ('lr', -1e-3), ('lr', 0.0),
    ('patience', 0)])
def test_trainer_rejects(name, value, tiny_data, tmp_path):
    with pytest.raises(ValueError, match=f"^'{name}' must be a positive "
                       f"number"):
        _trainer(tiny_data, tmp_path / 'run', **{name: value})
    assert not os.path.exists(tmp_path / 'run')


def test_trainer_accepts_infinite_patience(tiny_data, tmp_path):
    assert _trainer(tiny_data, tmp_path, patience=math.inf).patience == \
        math.inf


@pytest.mark.parametrize('kwargs,name', [
    (dict(margin=-1.0), 'margin'), (dict(margin=math.nan), 'margin'),
    (dict(inner_lr=-5.0), 'inner_lr'), (dict(inner_lr={'rel': -1.0}),
                                        'inner_lr')],
    ids=['margin-negative', 'margin-nan', 'inner-lr-negative',
         'inner-lr-dict-negative'])
def test_learner_rejects(kwargs, name, tiny_data):
    model = build_model('metar', tiny_data, embedding_dim=8,
                        hidden_channels=(8, ))
    with pytest.raises(ValueError, match=f"^'{name}' must be a non-negative"):
        MetaLearner(model, **kwargs)
    # The edge values stay valid: no margin, no inner step.
    MetaLearner(model, margin=0.0, inner_lr=0.0)
