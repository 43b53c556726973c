"""Item 12: numeric options and model arguments of the wrong type or sign are
rejected up front with a message naming the option, by the CLI and by
:class:`MetaTrainer` / :class:`MetaLearner`."""
import math
import os

import pytest

from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import MetaR
from _cli import files_under, run_cli


pytestmark = pytest.mark.usefixtures('cli_cache')


# argparse reports these: its usage, then the one line naming the option.
OPTION_CASES = {
    'grad-clip-zero': (['--grad-clip', '0'],
                       'argument --grad-clip: must be a positive number, '
                       'got 0'),
    'grad-clip-negative': (['--grad-clip', '-1'],
                           'argument --grad-clip: must be a positive number, '
                           'got -1'),
    'margin-negative': (['--margin', '-0.5'],
                        'argument --margin: must be a non-negative number, '
                        'got -0.5'),
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
    'model-arg-no-equals': (['--model-arg', 'oops'],
                            "argument --model-arg: expected KEY=VALUE, got "
                            "'oops'"),
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


# Checked against the model's constructor once --model is known, before any
# data is loaded: one line, no usage.
MODEL_ARG_CASES = {
    'not-a-number': ('metar', 'embedding_dim=abc',
                     "embedding_dim must be a positive integer, got 'abc'"),
    'negative-size': ('metar', 'embedding_dim=-5',
                      'embedding_dim must be a positive integer, got -5'),
    'float-for-int': ('moemeta', 'num_experts=4.5',
                      'num_experts must be a positive integer, got 4.5'),
    'dropout-out-of-range': ('metar', 'dropout=1.5',
                             'dropout must be a number in [0, 1), got 1.5'),
    'negative-float': ('moemeta', 'load_balance=-0.1',
                       'load_balance must be a non-negative number, got '
                       '-0.1'),
    'not-a-bool': ('metar', 'sparse=yes',
                   "sparse must be True or False, got 'yes'"),
    'not-a-tuple': ('metar', 'hidden_channels=16',
                    'hidden_channels must be a tuple of positive integers, '
                    'got 16'),
    'none-not-allowed': ('moemeta', 'top_k=None',
                         'top_k must be a positive integer, got None'),
    'unknown-key': ('metar', 'embeding_dim=8',
                    "metar has no argument 'embeding_dim'; known: dropout, "
                    "embedding_dim, hidden_channels, sparse"),
    'data-filled-key': ('metar', 'num_entities=8',
                        "metar has no argument 'num_entities'; known: "
                        "dropout, embedding_dim, hidden_channels, sparse"),
}


@pytest.mark.parametrize('case', sorted(MODEL_ARG_CASES))
def test_train_rejects_model_arg(case, tmp_path, capsys):
    model, arg, message = MODEL_ARG_CASES[case]
    out = str(tmp_path / 'run')
    code, stdout, err = run_cli(['train', '--model', model, '--output', out,
                                 '--model-arg', arg], capsys)
    assert code == 2 and stdout == ''
    assert err.splitlines() == [
        f'pyg-fewshot train: error: argument --model-arg: {message}']
    assert not os.path.exists(out)
    # Before the dataset was even processed.
    assert files_under(str(tmp_path / 'cache')) == []


def test_model_arg_of_fusion_backbone_is_known(tmp_path, capsys):
    # FusionAdapter passes backbone arguments on: they are checked too.
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'fusionadapter', '--output',
                            out, '--backbone', 'moemeta', '--model-arg',
                            'num_experts=0'], capsys)
    assert code == 2
    assert err.splitlines() == [
        'pyg-fewshot train: error: argument --model-arg: num_experts must '
        'be a positive integer, got 0']


def _trainer(data, out, **kwargs):
    model = MetaR(data['entity'].num_nodes, 8, hidden_channels=(8, ))
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
    model = MetaR(tiny_data['entity'].num_nodes, 8, hidden_channels=(8, ))
    with pytest.raises(ValueError, match=f"^'{name}' must be a non-negative"):
        MetaLearner(model, **kwargs)
    # The edge values stay valid: no margin, no inner step.
    MetaLearner(model, margin=0.0, inner_lr=0.0)
