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
