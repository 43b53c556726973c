import json
import os

import pytest

from pyg_fewshot.cli.main import main
from pyg_fewshot.pipeline import RunConfig
from pyg_fewshot.pipeline.tune import tune

optuna = pytest.importorskip('optuna')

# Tiny runs on the bundled UMLS-One.
FAST = ['--model', 'metar', '--max-steps', '2', '--eval-every', '2',
        '--batch-size', '8', '--dim', '8', '--set',
        'model.hidden_channels=[8]', '--quiet']


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))


def _space(tmp_path, space):
    path = tmp_path / 'space.json'
    path.write_text(json.dumps(space))
    return str(path)


def test_tune_chooses_on_dev_and_writes_the_best_configuration(tmp_path,
                                                               capsys):
    space = _space(tmp_path, {
        'learner.inner_lr': {'type': 'float', 'low': 0.1, 'high': 10.0,
                             'log': True},
        'learner.margin': {'type': 'categorical', 'choices': [0.5, 2.0]}})
    out = str(tmp_path / 'tune')
    assert main(['tune'] + FAST + ['--space', space, '--trials', '3',
                                   '--output', out]) == 0
    with open(os.path.join(out, 'best.json')) as f:
        summary = json.load(f)
    assert len(summary['trials']) == 3
    devs = [t['dev_mrr'] for t in summary['trials']]
    # The best is the trial with the highest dev MRR (not test).
    assert summary['best_dev_mrr'] == max(devs)
    best = summary['trials'][summary['best_trial']]
    assert best['params'] == summary['best_params']
    with open(os.path.join(out, f"trial_{summary['best_trial']}",
                           'results.json')) as f:
        res = json.load(f)
    assert res['dev']['mrr'] == summary['best_dev_mrr']
    assert res['test']['mrr'] == summary['best_test_mrr']
    config = RunConfig.load(os.path.join(out, 'best_config.yaml'))
    assert config.learner.margin == summary['best_params']['learner.margin']
    assert config.learner.inner_lr == pytest.approx(
        summary['best_params']['learner.inner_lr'])
    assert 'dev MRR' in capsys.readouterr().out
    # Resumed: the finished trials are kept, only the missing one runs.
    assert main(['tune'] + FAST + ['--space', space, '--trials', '4',
                                   '--output', out]) == 0
    with open(os.path.join(out, 'best.json')) as f:
        again = json.load(f)
    assert len(again['trials']) == 4
    assert again['trials'][:3] == summary['trials']


@pytest.mark.parametrize('space,message', [
    ({}, 'is empty'),
    ({'learner.inner_lr': {'type': 'gauss'}}, 'expected {type'),
    ({'learner.inner_lr': {'type': 'float', 'low': 0.1}}, 'needs high'),
    ({'learner.foo': {'type': 'float', 'low': 0.1, 'high': 1.0}},
     "unknown key 'learner.foo'"),
])
def test_bad_search_space_is_one_line_before_any_trial(space, message,
                                                       tmp_path, capsys):
    out = tmp_path / 'tune'
    code = main(['tune'] + FAST + ['--space', _space(tmp_path, space),
                                   '--trials', '1', '--output', str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (out / 'trial_0').exists()


def test_tune_function_with_a_run_config(tmp_path):
    config = RunConfig.from_dict({
        'model': {'name': 'metar', 'embedding_dim': 8,
                  'hidden_channels': [8]},
        'episodes': {'batch_size': 8},
        'trainer': {'max_steps': 2, 'eval_every': 2}})
    summary = tune(config, {'trainer.lr': {'type': 'float', 'low': 1e-4,
                                           'high': 1e-2, 'log': True}},
                   trials=2, output=str(tmp_path / 't'))
    assert len(summary['trials']) == 2
    assert os.path.isfile(tmp_path / 't' / 'study.db')


def test_tune_tries_the_base_configuration_then_the_starting_points(
        tmp_path):
    space = _space(tmp_path, {
        'learner.margin': {'type': 'categorical', 'choices': [0.5, 1.0, 2.0]},
        'learner.published_quirks': {'type': 'categorical',
                                     'choices': [True, False]},
        'trainer.lr': {'type': 'float', 'low': 1e-4, 'high': 1e-2,
                       'log': True}})
    start = tmp_path / 'start.yaml'
    # margin 3.0 lies outside the space: drawn instead.
    start.write_text('learner:\n  margin: 3.0\ntrainer:\n  lr: 0.005\n')
    out = str(tmp_path / 'tune')
    assert main(['tune'] + FAST + [
        '--space', space, '--trials', '3', '--output', out, '--start',
        'published-code', '--start', str(start)]) == 0
    with open(os.path.join(out, 'best.json')) as f:
        trials = json.load(f)['trials']
    assert trials[0]['params'] == {'learner.margin': 1.0,
                                   'learner.published_quirks': False,
                                   'trainer.lr': 1e-3}
    assert trials[1]['params'] == {'learner.margin': 1.0,
                                   'learner.published_quirks': True,
                                   'trainer.lr': 1e-3}
    assert trials[2]['params']['trainer.lr'] == 0.005
    assert trials[2]['params']['learner.published_quirks'] is False
    assert trials[2]['params']['learner.margin'] in (0.5, 1.0, 2.0)


def test_a_missing_starting_point_is_one_line(tmp_path, capsys):
    space = _space(tmp_path, {'learner.margin': {
        'type': 'categorical', 'choices': [0.5, 1.0]}})
    code = main(['tune'] + FAST + ['--space', space, '--trials', '1',
                                   '--output', str(tmp_path / 'tune'),
                                   '--start', 'no-such-preset'])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and 'no-such-preset' in err[0]


def test_start_values_fix_what_the_configuration_holds_in_the_space():
    from pyg_fewshot.pipeline import resolve_config
    from pyg_fewshot.pipeline.tune import start_values
    space = {
        'model.aggregator_kwargs.residual_scale': {
            'type': 'categorical', 'choices': [None, 0.0]},
        'model.projection': {'type': 'categorical',
                             'choices': ['transd', None]},
        'learner.inner_lr': {'type': 'float', 'low': 0.01, 'high': 10.0}}
    base = resolve_config(model='moemeta')
    # residual_scale is not written (the layer's default) and inner_lr is
    # None (the model's default): both are drawn.
    assert start_values(base, space) == {'model.projection': 'transd'}
    given = base.override(['model.aggregator_kwargs.residual_scale=null',
                           'model.projection=null', 'learner.inner_lr=5'])
    assert start_values(given, space) == {
        'model.aggregator_kwargs.residual_scale': None,
        'model.projection': None, 'learner.inner_lr': 5.0}
