import json
import math
import os
import sys
import tempfile
import types

import pytest
import torch

import pyg_fewshot
from pyg_fewshot.pipeline import (RunConfig, RunResult, pipeline,
                                  resolve_config)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'reliability'))
from _cli import files_under, run_cli, write_dataset  # noqa: E402

#: pipeline() keywords and the `pyg-fewshot train` options of one run.
SETTINGS = dict(model='metar', seed=3, max_steps=3,
                overrides={'trainer.eval_every': 2, 'episodes.batch_size': 4,
                           'model.embedding_dim': 8,
                           'model.hidden_channels': [16]})
OPTIONS = ['--model', 'metar', '--seed', '3', '--max-steps', '3',
           '--eval-every', '2', '--batch-size', '4', '--dim', '8',
           '--set', 'model.hidden_channels=[16]', '--quiet']


def read_results(out):
    with open(os.path.join(out, 'results.json')) as f:
        return json.load(f)


def untimed(history):
    """The validation history without its timings."""
    return [{k: v for k, v in h.items() if k != 'train_seconds'}
            for h in history]


def numbers(res):
    r"""What must be equal between two runs of the same configuration."""
    d = res if isinstance(res, dict) else res.to_dict()
    return dict(
        metrics={split: {k: v for k, v in d[split].items() if k != 'seconds'}
                 for split in ('dev', 'test')},
        history=untimed(d['history']), steps=d['steps'],
        best_step=d['best_step'],
        config=d['config'], config_hash=d['config_hash'])


@pytest.fixture
def data(tmp_path, cli_cache):
    return write_dataset(tmp_path / 'data')


@pytest.fixture
def result(data):
    return pipeline(dataset=data, **SETTINGS)


def test_the_module_is_callable(data, result):
    assert isinstance(pyg_fewshot.pipeline, types.ModuleType)
    assert callable(pyg_fewshot.pipeline)
    again = pyg_fewshot.pipeline(dataset=data, **SETTINGS)
    assert isinstance(again, RunResult)
    assert numbers(again) == numbers(result)


def test_pipeline_equals_the_cli(data, result, tmp_path, capsys):
    out = str(tmp_path / 'cli')
    code, stdout, err = run_cli(['train', '--dataset', data, '--output', out]
                                + OPTIONS, capsys)
    assert code == 0, err
    res = read_results(out)
    assert numbers(res) == numbers(result)
    assert result.config == RunConfig.load(os.path.join(out, 'config.yaml'))
    assert f"MRR {result.test['mrr']:.4f}" in stdout
    # Another seed, other numbers.
    other = pipeline(dataset=data, **dict(SETTINGS, seed=4))
    assert other.config.config_hash() != result.config.config_hash()
    assert other.history != result.history


def test_overrides_as_strings_and_config_as_object_or_file(data, result,
                                                          tmp_path):
    items = [f'{k}={json.dumps(v)}' for k, v in SETTINGS['overrides'].items()]
    by_strings = pipeline(dataset=data, model='metar', seed=3, max_steps=3,
                          overrides=items)
    assert numbers(by_strings) == numbers(result)
    by_object = pipeline(result.config)
    assert numbers(by_object) == numbers(result)
    path = str(tmp_path / 'run.json')
    result.config.save(path)
    by_file = pipeline(path)
    assert numbers(by_file) == numbers(result)
    assert resolve_config(path) == result.config


def test_monitored_test_curve_changes_nothing_else(data, result):
    settings = dict(SETTINGS, overrides=dict(SETTINGS['overrides'],
                                             **{'trainer.monitor': ['test']}))
    monitored = pipeline(dataset=data, **settings)
    assert all('test_mrr' in h for h in monitored.history)
    # The same training and the same choice of checkpoint ...
    mine, plain = numbers(monitored), numbers(result)
    for h in mine['history']:
        del h['test_mrr']
    for key in ('metrics', 'history', 'steps', 'best_step'):
        assert mine[key] == plain[key]
    # ... and the curve's point at the best step is the reported test MRR.
    at_best = [h for h in monitored.history
               if h['step'] == monitored.best_step]
    assert at_best[0]['test_mrr'] == pytest.approx(monitored.test['mrr'])
    # Resuming under another monitor is allowed: it trains the same.
    assert 'trainer.monitor' not in monitored.config.resume_key()
    for split in ('train', 'dev'):
        with pytest.raises(ValueError, match="'trainer.monitor' may list"):
            RunConfig.from_dict({'model': {'name': 'metar'},
                                 'trainer': {'monitor': [split]}})


def test_output_none_leaves_no_folder(data, tmp_path, monkeypatch):
    temp = tmp_path / 'tmp'
    temp.mkdir()
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(temp))
    monkeypatch.chdir(work)
    res = pipeline(dataset=data, **SETTINGS)
    assert res.output is None
    assert os.listdir(temp) == [] and os.listdir(work) == []
    # The trained model stays in memory.
    assert isinstance(res.model, torch.nn.Module)
    assert res.steps == 3 and len(res.history) == 2


def test_output_folder_and_save_to_directory(data, result, tmp_path):
    out = str(tmp_path / 'run')
    res = pipeline(dataset=data, output=out, **SETTINGS)
    assert res.output == out
    assert sorted(os.listdir(out)) == ['best.pt', 'config.yaml', 'last.pt',
                                       'results.json']
    assert numbers(res) == numbers(result)

    folder = str(tmp_path / 'saved')
    path = result.save_to_directory(folder)
    assert path == os.path.join(folder, 'results.json')
    assert sorted(os.listdir(folder)) == ['config.yaml', 'results.json']
    assert RunConfig.load(os.path.join(folder, 'config.yaml')) == \
        result.config
    d = read_results(folder)
    back = RunResult.from_dict(d, output=folder)
    assert back.config == result.config
    assert back.to_dict() == d
    assert back.output == folder and back.model is None
    assert (back.dev, back.test, back.history) == (
        result.dev, result.test, result.history)
    assert str(back) == str(result)


def test_results_record_the_environment(data, tmp_path):
    out = str(tmp_path / 'run')
    pipeline(dataset=data, output=out, **SETTINGS)
    res = read_results(out)
    assert res['version'] == pyg_fewshot.__version__
    assert res['torch_version'] == torch.__version__
    import numpy
    import torch_geometric
    assert res['pyg_version'] == torch_geometric.__version__
    assert res['numpy_version'] == numpy.__version__
    assert res['git_commit'] is None or isinstance(res['git_commit'], str)
    if res['git_commit'] is not None:
        assert len(res['git_commit'].split('+')[0]) == 40
    assert res['threads'] == 1  # tests/conftest.py pins one thread
    assert res['device'] == 'cpu'
    assert res['nproc'] == 1
    # Every validation records the mean query loss since the previous one.
    assert [h['step'] for h in res['history']] == [2, 3]
    for h in res['history']:
        assert set(h) == {'step', 'score', 'train_loss', 'train_seconds'}
        assert math.isfinite(h['train_loss']) and h['train_loss'] > 0


def test_plot_writes_a_png(result, tmp_path):
    pytest.importorskip('matplotlib')
    path = str(tmp_path / 'curves.png')
    fig = result.plot(path)
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    title = fig.get_suptitle()
    assert 'metar' in title and 'seed 3' in title and '1-shot' in title
    assert f"{result.test['mrr']:.3f}" in title
    assert files_under(str(tmp_path)).count(path) == 1
