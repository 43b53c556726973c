"""Item 9: every split is checked for ``--shots`` (and for having task
relations at all) before any training or evaluation, so bad data fails in
seconds with one line instead of after a whole training run."""
import os

import pytest

from _cli import files_under, run_cli, write_dataset

FAST = ['--max-steps', '2', '--eval-every', '1', '--batch-size', '8',
        '--dim', '8', '--quiet', '--set', 'model.hidden_channels=[8]']


pytestmark = pytest.mark.usefixtures('cli_cache')


def assert_fails_before_training(code, err, out_dir, message):
    assert code == 2
    assert err.splitlines() == [message]
    assert 'Traceback' not in err
    # Rejected before any checkpoint or results file (the run folder's lock
    # may have created the folder itself).
    assert files_under(out_dir) == []


def test_dev_relation_too_small_for_shots(tmp_path, capsys):
    data = write_dataset(tmp_path / 'data', dev_triples=3)
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--shots', '3', '--output', out] + FAST, capsys)
    assert_fails_before_training(
        code, err, out, "pyg-fewshot train: error: 1 task relation(s) have "
        "fewer than 4 triples, too few for 3-shot episodes (K support + 1 "
        "query): 'dev0' (dev, 3 triple(s))")


def test_test_relation_too_small_for_shots(tmp_path, capsys):
    data = write_dataset(tmp_path / 'data', test_triples=2)
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--shots', '3', '--output', out] + FAST, capsys)
    assert_fails_before_training(
        code, err, out, "pyg-fewshot train: error: 1 task relation(s) have "
        "fewer than 4 triples, too few for 3-shot episodes (K support + 1 "
        "query): 'test0' (test, 2 triple(s))")


def test_empty_dev_tasks(tmp_path, capsys):
    data = write_dataset(tmp_path / 'data', dev_triples=0)
    with open(os.path.join(data, 'dev_tasks.json')) as f:
        assert f.read().strip() == '{}'
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', out] + FAST, capsys)
    assert_fails_before_training(
        code, err, out, 'pyg-fewshot train: error: The dev split has no '
        'task relations (dev_tasks.json is empty); at least one is needed '
        'to pick the best checkpoint on')


def test_empty_test_tasks(tmp_path, capsys):
    data = write_dataset(tmp_path / 'data', test_triples=0)
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', out] + FAST, capsys)
    assert_fails_before_training(
        code, err, out, 'pyg-fewshot train: error: The test split has no '
        'task relations (test_tasks.json is empty); at least one is needed '
        'to report test metrics on')


def test_evaluate_shots_too_many_for_split(tmp_path, capsys):
    data = write_dataset(tmp_path / 'data', test_triples=6)
    run = str(tmp_path / 'run')
    assert run_cli(['train', '--model', 'metar', '--dataset', data,
                    '--output', run] + FAST, capsys)[0] == 0
    metrics = str(tmp_path / 'metrics.json')
    code, out, err = run_cli(['evaluate', '--checkpoint', run, '--shots',
                              '6', '--output', metrics], capsys)
    assert code == 2 and out == ''
    assert err.splitlines() == [
        "pyg-fewshot evaluate: error: 1 task relation(s) have fewer than 7 "
        "triples, too few for 6-shot episodes (K support + 1 query): "
        "'test0' (test, 6 triple(s))"]
    assert not os.path.exists(metrics)
