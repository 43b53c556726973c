import json
import os
import subprocess
import sys

import pytest

from pyg_fewshot.cli.main import main

FAST = ['--max-steps', '4', '--eval-every', '2', '--batch-size', '16',
        '--dim', '8', '--quiet']


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))


def test_train_writes_results_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / 'run')
    assert main(['train', '--model', 'metar', '--output', out] + FAST +
                ['--model-arg', 'hidden_channels=(16,)']) == 0
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    for key in ('model', 'dataset', 'shots', 'seed', 'steps',
                'train_seconds', 'dev', 'test'):
        assert key in res
    for split in ('dev', 'test'):
        for key in ('mrr', 'hits@1', 'hits@5', 'hits@10', 'num_queries',
                    'per_relation'):
            assert key in res[split]
    assert res['model'] == 'metar' and res['dataset'] == 'umls-one'
    assert res['steps'] == 4 and res['test']['num_queries'] == 295
    # The tests pin one thread (conftest); benchmark tables read this back.
    assert res['threads'] == 1
    assert 0 < res['test_random_baseline']['mrr'] < res['test']['mrr'] + 1
    assert sorted(os.listdir(out)) == ['best.pt', 'last.pt', 'results.json']

    capsys.readouterr()
    main(['evaluate', '--checkpoint', out, '--split', 'test'])
    printed = capsys.readouterr().out
    assert f"MRR {res['test']['mrr']:.4f}" in printed


def test_train_resumes_instead_of_restarting(tmp_path):
    out = str(tmp_path / 'run')
    main(['train', '--model', 'metar', '--output', out] + FAST)
    first = json.load(open(os.path.join(out, 'results.json')))
    os.remove(os.path.join(out, 'results.json'))
    args = FAST.copy()
    args[args.index('--max-steps') + 1] = '6'
    main(['train', '--model', 'metar', '--output', out] + args)
    second = json.load(open(os.path.join(out, 'results.json')))
    assert second['steps'] == 6
    assert [h['step'] for h in second['history']] == [2, 4, 6]
    assert second['history'][:2] == first['history']


def test_moemeta_and_experts(tmp_path):
    out = str(tmp_path / 'moe')
    main(['train', '--model', 'moemeta', '--output', out] + FAST +
         ['--model-arg', 'num_experts=4', '--model-arg', 'top_k=2'])
    main(['experts', '--checkpoint', out, '--no-plot'])
    with open(os.path.join(out, 'experts.json')) as f:
        report = json.load(f)
    assert len(report['relations']) == 20
    assert len(report['activation'][0]) == 4
    assert abs(sum(report['load']) - 1) < 1e-9
    assert 'collapsed' in report['statistics']


def test_errors_are_clear(tmp_path, capsys):
    # User errors end with one line on stderr and status 2 (see
    # tests/reliability/test_cli_errors.py).
    with pytest.raises(SystemExit):
        main(['train', '--model', 'nope'])
    assert main(['train', '--model', 'metar', '--dataset',
                 str(tmp_path / 'missing'), '--output',
                 str(tmp_path / 'o')]) == 2
    assert 'neither a bundled dataset' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(['train', '--model', 'metar', '--model-arg', 'oops',
              '--output', str(tmp_path / 'o')])
    assert e.value.code == 2
    assert 'KEY=VALUE' in capsys.readouterr().err.splitlines()[-1]


def test_module_entry_point():
    out = subprocess.run([sys.executable, '-m', 'pyg_fewshot', '--help'],
                         capture_output=True, text=True, check=True)
    assert 'train' in out.stdout and 'evaluate' in out.stdout
