import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pyg_fewshot.cli.main import build_parser, main
from pyg_fewshot.data.writer import write_fewshot_folder
from pyg_fewshot.pipeline import RunConfig

FAST = ['--max-steps', '4', '--eval-every', '2', '--batch-size', '16',
        '--dim', '8', '--quiet']
#: What FAST (with --model metar and a smaller relation-meta MLP) sets, as
#: a run file.
FAST_CONFIG = {
    'model': {'name': 'metar', 'embedding_dim': 8, 'hidden_channels': [16]},
    'episodes': {'batch_size': 16},
    'trainer': {'max_steps': 4, 'eval_every': 2},
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))


def read_results(out):
    with open(os.path.join(out, 'results.json')) as f:
        return json.load(f)


def metrics(res):
    r"""The dev and test metrics of a results.json, without timings."""
    return {split: {k: v for k, v in res[split].items() if k != 'seconds'}
            for split in ('dev', 'test')}


def test_train_writes_results_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / 'run')
    assert main(['train', '--model', 'metar', '--output', out] + FAST +
                ['--set', 'model.hidden_channels=[16]']) == 0
    res = read_results(out)
    for key in ('model', 'dataset', 'shots', 'seed', 'steps', 'best_step',
                'train_seconds', 'stopped_early', 'dev', 'test',
                'test_random_baseline', 'test_degree_baseline', 'history',
                'config', 'config_hash',
                'threads', 'nproc', 'version', 'torch_version',
                'data_fingerprint'):
        assert key in res, key
    for split in ('dev', 'test'):
        for key in ('mrr', 'hits@1', 'hits@5', 'hits@10', 'num_queries',
                    'per_relation'):
            assert key in res[split]
    assert res['model'] == 'metar' and res['dataset'] == 'umls-one'
    assert res['steps'] == 4 and res['test']['num_queries'] == 295
    # The full nested configuration, every option in its section.
    config = res['config']
    assert config['model'] == {'name': 'metar', 'embedding_dim': 8,
                               'hidden_channels': [16], 'dropout': 0.5,
                               'sparse': True, 'pretrained': True}
    assert config['trainer']['lr'] == 0.001
    assert config['trainer']['max_steps'] == 4
    assert config['episodes'] == {'shots': 1, 'num_queries': 3,
                                  'batch_size': 16}
    assert res['config_hash'] == RunConfig.from_dict(config).config_hash()
    # The tests pin one thread (conftest); benchmark tables read this back.
    assert res['threads'] == 1
    assert 0 < res['test_random_baseline']['mrr'] < res['test']['mrr'] + 1
    assert sorted(os.listdir(out)) == ['best.pt', 'config.yaml', 'last.pt',
                                       'results.json']
    assert RunConfig.load(os.path.join(out, 'config.yaml')) == \
        RunConfig.from_dict(config)

    capsys.readouterr()
    assert main(['evaluate', '--checkpoint', out, '--split', 'test']) == 0
    printed = capsys.readouterr().out
    assert f"MRR {res['test']['mrr']:.4f}" in printed
    # The same two floors as training wrote for the test split.
    for name, key in (('random-scoring', 'test_random_baseline'),
                      ('degree', 'test_degree_baseline')):
        assert (f"test {name} baseline" in printed
                and f"MRR {res[key]['mrr']:.4f}" in printed), name


def test_train_resumes_instead_of_restarting(tmp_path):
    out = str(tmp_path / 'run')
    assert main(['train', '--model', 'metar', '--output', out] + FAST) == 0
    first = read_results(out)
    os.remove(os.path.join(out, 'results.json'))
    args = FAST.copy()
    args[args.index('--max-steps') + 1] = '6'
    assert main(['train', '--model', 'metar', '--output', out] + args) == 0
    second = read_results(out)
    assert second['steps'] == 6
    assert [h['step'] for h in second['history']] == [2, 4, 6]
    assert second['history'][:2] == first['history']


def test_moemeta_and_experts(tmp_path):
    out = str(tmp_path / 'moe')
    assert main(['train', '--model', 'moemeta', '--output', out] + FAST +
                ['--set', 'model.relation_meta_kwargs.num_experts=4',
                 '--set', 'model.relation_meta_kwargs.top_k=2']) == 0
    kwargs = read_results(out)['config']['model']['relation_meta_kwargs']
    assert kwargs == {'num_experts': 4, 'top_k': 2}
    assert main(['experts', '--checkpoint', out, '--no-plot']) == 0
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
        main(['train', '--model', 'metar', '--set', 'oops',
              '--output', str(tmp_path / 'o')])
    assert e.value.code == 2
    assert 'KEY=VALUE' in capsys.readouterr().err.splitlines()[-1]
    # Neither --model nor --config: nothing to train.
    assert main(['train', '--output', str(tmp_path / 'o')]) == 2
    assert capsys.readouterr().err.splitlines() == [
        'pyg-fewshot train: error: argument --model is required without '
        '--config or --preset (one of fusionadapter, metar, moemeta)']


def test_module_entry_point():
    out = subprocess.run([sys.executable, '-m', 'pyg_fewshot', '--help'],
                         capture_output=True, text=True, check=True)
    assert 'train' in out.stdout and 'evaluate' in out.stdout


# Configuration files ---------------------------------------------------------

def write_config(path, d):
    with open(path, 'w') as f:
        if str(path).endswith('.json'):
            json.dump(d, f)
        else:
            import yaml
            yaml.safe_dump(d, f)
    return str(path)


@pytest.fixture(scope='module')
def flags_run(tmp_path_factory):
    r"""The run of FAST_CONFIG given as options (and a module-wide cache)."""
    cache = str(tmp_path_factory.mktemp('cache'))
    out = str(tmp_path_factory.mktemp('flags') / 'run')
    before = os.environ.get('PYG_FEWSHOT_HOME')
    os.environ['PYG_FEWSHOT_HOME'] = cache
    try:
        assert main(['train', '--model', 'metar', '--output', out] + FAST +
                    ['--set', 'model.hidden_channels=[16]']) == 0
    finally:
        if before is None:
            del os.environ['PYG_FEWSHOT_HOME']
        else:
            os.environ['PYG_FEWSHOT_HOME'] = before
    return out, cache


@pytest.mark.parametrize('suffix', ['yaml', 'json'])
def test_config_file_equals_the_flags(suffix, flags_run, tmp_path,
                                      monkeypatch):
    flags_out, cache = flags_run
    monkeypatch.setenv('PYG_FEWSHOT_HOME', cache)
    path = write_config(tmp_path / f'run.{suffix}', FAST_CONFIG)
    out = str(tmp_path / 'run')
    assert main(['train', '--config', path, '--output', out,
                 '--quiet']) == 0
    expected, res = read_results(flags_out), read_results(out)
    assert res['config'] == expected['config']
    assert res['config_hash'] == expected['config_hash']
    untimed = [[{k: v for k, v in h.items() if k != 'train_seconds'}
                for h in r['history']] for r in (res, expected)]
    assert untimed[0] == untimed[1]
    assert metrics(res) == metrics(expected)


def test_flags_override_the_config_file(flags_run, tmp_path, monkeypatch):
    _, cache = flags_run
    monkeypatch.setenv('PYG_FEWSHOT_HOME', cache)
    d = json.loads(json.dumps(FAST_CONFIG))
    d['trainer'].update(lr=0.01, max_steps=100)
    d['seed'] = 3
    path = write_config(tmp_path / 'run.yaml', d)
    out = str(tmp_path / 'run')
    # Options, then --set (in order), win over the file's values; the
    # file's other values stay.
    assert main(['train', '--config', path, '--output', out, '--quiet',
                 '--max-steps', '2', '--eval-every', '1', '--seed', '1',
                 '--set', 'trainer.lr=0.005', '--set', 'seed=2']) == 0
    config = read_results(out)['config']
    assert config['trainer']['max_steps'] == 2
    assert config['trainer']['eval_every'] == 1
    assert config['trainer']['lr'] == 0.005
    assert config['seed'] == 2
    assert config['model']['hidden_channels'] == [16]
    assert config['episodes']['batch_size'] == 16
    assert RunConfig.load(os.path.join(out, 'config.yaml')) == \
        RunConfig.load(path).override(
            ['trainer.max_steps=2', 'trainer.eval_every=1',
             'trainer.lr=0.005', 'seed=2'])


def test_config_file_with_another_model_option(flags_run, tmp_path,
                                               monkeypatch):
    # --model replaces the file's model section (its settings belong to
    # the file's model), the other sections stay.
    _, cache = flags_run
    monkeypatch.setenv('PYG_FEWSHOT_HOME', cache)
    path = write_config(tmp_path / 'run.yaml', FAST_CONFIG)
    out = str(tmp_path / 'run')
    assert main(['train', '--config', path, '--model', 'moemeta', '--output',
                 out, '--quiet', '--dim', '8', '--max-steps', '2']) == 0
    config = read_results(out)['config']
    assert config['model']['name'] == 'moemeta'
    assert config['model']['embedding_dim'] == 8
    assert config['episodes']['batch_size'] == 16


def test_resolved_config_reproduces_the_run(flags_run, tmp_path,
                                            monkeypatch):
    flags_out, cache = flags_run
    monkeypatch.setenv('PYG_FEWSHOT_HOME', cache)
    resolved = os.path.join(flags_out, 'config.yaml')
    expected = read_results(flags_out)
    assert RunConfig.load(resolved) == RunConfig.from_dict(
        expected['config'])
    out = str(tmp_path / 'again')
    assert main(['train', '--config', resolved, '--output', out,
                 '--quiet']) == 0
    res = read_results(out)
    assert res['config_hash'] == expected['config_hash']
    assert metrics(res) == metrics(expected)
    with open(resolved) as a, open(os.path.join(out, 'config.yaml')) as b:
        assert a.read() == b.read()


def test_config_file_errors_name_the_key_and_file(tmp_path, capsys):
    d = json.loads(json.dumps(FAST_CONFIG))
    d['trainer']['lr'] = 'fast'
    path = write_config(tmp_path / 'bad.yaml', d)
    out = str(tmp_path / 'run')
    capsys.readouterr()
    assert main(['train', '--config', path, '--output', out]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"pyg-fewshot train: error: 'trainer.lr' in '{path}' must be float, "
        f"got str 'fast'"]
    d['trainer']['lr'] = 0.01
    d['trainer']['learning_rate'] = 0.01
    write_config(path, d)
    assert main(['train', '--config', path, '--output', out]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("pyg-fewshot train: error: unknown key "
                             f"'trainer.learning_rate' in '{path}'")
    missing = str(tmp_path / 'missing.yaml')
    assert main(['train', '--config', missing, '--output', out]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and missing in err[0]
    assert not os.path.exists(out)
    assert not os.path.exists(tmp_path / 'cache')  # no data was loaded


# Help ------------------------------------------------------------------------

def _actions(parser):
    return [a for a in parser._actions if a.option_strings and
            a.dest != 'help']


def test_train_help_gives_every_default():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices['train']
    actions = _actions(train)
    assert {a.dest for a in actions} >= {
        'config', 'model', 'dataset', 'data_root', 'device', 'shots', 'seed',
        'max_steps', 'batch_size', 'eval_every', 'lr', 'dim', 'inner_lr',
        'pretrain', 'background_tasks', 'set', 'nproc', 'output',
        'no_resume', 'quiet', 'debug'}
    for action in actions:
        assert 'default' in (action.help or ''), action.dest
    # And the help text shows them all.
    text = train.format_help()
    assert text.count('default') >= len(actions)


@pytest.mark.parametrize('command', ['evaluate', 'experts', 'pretrain',
                                     'tune'])
def test_other_commands_help_gives_every_default(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in _actions(sub):
        if action.required:  # --checkpoint
            continue
        assert 'default' in (action.help or ''), action.dest


def test_train_help_defaults_are_the_configuration_defaults():
    # The defaults the help text states are those a run gets.
    train = build_parser()._subparsers._group_actions[0].choices['train']
    helps = {a.dest: ' '.join(a.help.split()) for a in _actions(train)}
    default = RunConfig()

    def stated(dest):
        return re.search(r'\(default: ([^)]*)\)$', helps[dest]).group(1)

    assert stated('dataset') == default.data.dataset
    assert stated('device') == default.device
    assert int(stated('shots')) == default.episodes.shots
    assert int(stated('seed')) == default.seed
    assert int(stated('max_steps')) == default.trainer.max_steps
    assert int(stated('batch_size')) == default.episodes.batch_size
    assert int(stated('eval_every')) == default.trainer.eval_every
    assert float(stated('lr')) == default.trainer.lr
    assert int(stated('dim')) == default.model.embedding_dim
    assert int(stated('nproc')) == default.nproc


def test_help_does_not_import_torch():
    code = ('import sys\n'
            'from pyg_fewshot.cli.main import build_parser\n'
            'parser = build_parser()\n'
            'text = parser.format_help()\n'
            'for name in ("train", "evaluate", "experts", "pretrain"):\n'
            '    text += parser._subparsers._group_actions[0]'
            '.choices[name].format_help()\n'
            'assert "train" in text\n'
            'assert "torch" not in sys.modules\n'
            'assert "torch_geometric" not in sys.modules\n'
            'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout == 'ok\n', out.stderr
    # The console command itself, too.
    res = subprocess.run([sys.executable, '-X', 'importtime', '-m',
                          'pyg_fewshot', 'train', '--help'],
                         capture_output=True, text=True, check=True)
    assert '--set KEY=VALUE' in res.stdout
    assert not re.search(r'\|\s+torch$', res.stderr, re.M)


# FusionAdapter ---------------------------------------------------------------

def test_fusionadapter_evaluate_equals_train(tiny_data, tmp_path, capsys):
    # Test-time tuning of the adapters runs the run's learner in both.
    data = str(tmp_path / 'data')
    write_fewshot_folder(tiny_data, data)
    modalities = tmp_path / 'modalities'
    modalities.mkdir()
    rng = np.random.default_rng(0)
    np.save(modalities / 'x_image.npy',
            rng.standard_normal((40, 6)).astype(np.float32))
    out = str(tmp_path / 'run')
    capsys.readouterr()
    assert main(['train', '--model', 'fusionadapter', '--dataset', data,
                 '--output', out] + FAST +
                ['--set', 'data.text=false', '--set',
                 f'data.modality_dir={modalities}', '--set',
                 'model.backbone.hidden_channels=[8]', '--set',
                 'model.tta_steps=2', '--set', 'learner.inner_lr=0.5',
                 '--set', 'learner.margin=2']) == 0
    printed = capsys.readouterr().out
    res = read_results(out)
    assert res['config']['model']['backbone']['embedding_dim'] == 8
    assert res['config']['learner']['margin'] == 2.0
    # The test metrics and the two floors, as training printed them.
    test_lines = [line for line in printed.splitlines()
                  if line.startswith('test')]
    assert len(test_lines) == 3
    assert main(['evaluate', '--checkpoint', out, '--split', 'test',
                 '--output', str(tmp_path / 'test.json')]) == 0
    assert capsys.readouterr().out.splitlines() == test_lines
    with open(tmp_path / 'test.json') as f:
        again = json.load(f)
    for key in ('mrr', 'hits@1', 'hits@5', 'hits@10', 'mean_rank',
                'num_queries', 'macro', 'per_relation'):
        assert again[key] == res['test'][key], key
    # The tuning depends on the learner: with the default learner (another
    # margin and inner step), the same checkpoint scores otherwise.
    from pyg_fewshot.evaluation import evaluate
    from pyg_fewshot.meta import MetaLearner
    from pyg_fewshot.pipeline import load_run
    model, data, config = load_run(out)
    other = evaluate(model, data, 'test', 1, MetaLearner(model),
                     seed=config.seed)
    assert json.loads(json.dumps(other['per_relation'])) != \
        res['test']['per_relation']


def test_default_output_is_one_folder_per_configuration(tmp_path,
                                                        monkeypatch):
    # Without --output, the same configuration finds (and resumes) its own
    # folder and another configuration never lands in it.
    monkeypatch.chdir(tmp_path)
    args = ['train', '--model', 'metar'] + FAST
    assert main(args) == 0
    first = os.listdir(tmp_path / 'runs')
    assert len(first) == 1 and first[0].startswith('metar-umls-one-1shot-s0-')
    assert main(args) == 0  # resumes the finished run: no second folder
    assert os.listdir(tmp_path / 'runs') == first
    assert main(args + ['--lr', '0.01']) == 0
    assert len(os.listdir(tmp_path / 'runs')) == 2
    # Raising the budget extends the same run (max_steps is not part of
    # what a run must match to resume).
    longer = list(args)
    longer[longer.index('--max-steps') + 1] = '6'
    assert main(longer) == 0
    assert len(os.listdir(tmp_path / 'runs')) == 2
