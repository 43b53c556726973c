"""Item 13: a user error (bad data or option, missing file, unwritable
folder, missing optional package, diverged run) ends the CLI with one line
on stderr and exit status 2, Ctrl-C with one line and status 130;
``--debug`` / ``PYG_FEWSHOT_DEBUG=1`` show the traceback, and bugs always
keep theirs."""
import os
import subprocess
import sys

import pytest
import torch

import pyg_fewshot.data as data_module
from pyg_fewshot.cli.main import main
from pyg_fewshot.data import load_dataset
from pyg_fewshot.meta import MetaLearner, load_checkpoint
from _cli import files_under, run_cli, write_dataset

FAST = ['--max-steps', '2', '--eval-every', '1', '--batch-size', '8',
        '--dim', '8', '--quiet']


pytestmark = pytest.mark.usefixtures('cli_cache')


def assert_one_line(code, err, message, status=2):
    assert code == status
    assert err.splitlines() == [message]
    assert 'Traceback' not in err


def test_missing_dataset_folder(tmp_path, capsys):
    missing, out = str(tmp_path / 'missing'), str(tmp_path / 'run')
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(missing)
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset',
                            missing, '--output', out] + FAST, capsys)
    assert_one_line(code, err, f'pyg-fewshot train: error: {e.value}')
    assert files_under(out) == []


def test_malformed_data_file(tmp_path, capsys):
    data, out = write_dataset(tmp_path / 'data'), str(tmp_path / 'run')
    with open(os.path.join(data, 'dev_tasks.json'), 'w') as f:
        f.write('{"dev0": [["e1", "dev0", ')
    with pytest.raises(ValueError) as e:
        load_dataset(data, root=str(tmp_path / 'probe'))
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', out] + FAST, capsys)
    assert_one_line(code, err, 'pyg-fewshot train: error: ' +
                    ' '.join(str(e.value).split()))
    assert files_under(out) == []


def test_missing_checkpoint(tmp_path, capsys):
    missing = str(tmp_path / 'nothing.pt')
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(missing)
    code, out, err = run_cli(['evaluate', '--checkpoint', missing], capsys)
    assert out == ''
    assert_one_line(code, err, f'pyg-fewshot evaluate: error: {e.value}')


def test_output_folder_cannot_be_created(tmp_path, capsys):
    # OSError of file access: --output below a regular file.
    data = write_dataset(tmp_path / 'data')
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    out = str(blocker / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', out] + FAST, capsys)
    assert_one_line(code, err, f"pyg-fewshot train: error: Not a directory: "
                    f"'{out}'")
    assert blocker.read_text() == 'not a folder'


@pytest.fixture
def moemeta_run(tmp_path, capsys):
    data = write_dataset(tmp_path / 'data')
    run = str(tmp_path / 'moe')
    assert run_cli(['train', '--model', 'moemeta', '--dataset', data,
                    '--output', run, '--set',
                    'model.relation_meta_kwargs.num_experts=4', '--set',
                    'model.relation_meta_kwargs.top_k=2'] + FAST,
                   capsys)[0] == 0
    return run


def test_experts_without_matplotlib(moemeta_run, monkeypatch, capsys):
    # None in sys.modules makes `import matplotlib` fail, installed or not.
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    before = sorted(os.listdir(moemeta_run))
    code, out, err = run_cli(['experts', '--checkpoint', moemeta_run],
                             capsys)
    assert out == ''
    assert_one_line(code, err, "pyg-fewshot experts: error: the heatmap "
                    "needs matplotlib: pip install 'pyg_fewshot[plot]', or "
                    "pass --no-plot")
    # Said before computing, so no experts.json is left without its plot.
    assert sorted(os.listdir(moemeta_run)) == before


def test_diverged_training(tmp_path, monkeypatch, capsys):
    data, out = write_dataset(tmp_path / 'data'), str(tmp_path / 'run')

    def nan_loss(self, ep):
        loss = torch.tensor(float('nan'), requires_grad=True)
        return loss, {'query_loss': loss.detach(),
                      'aux_loss': loss.detach()}

    monkeypatch.setattr(MetaLearner, 'loss', nan_loss)
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', out] + FAST, capsys)
    assert code == 2 and 'Traceback' not in err
    # FloatingPointError: the trainer's message, on one line.
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith('pyg-fewshot train: error: Training '
                               'diverged at step 1: the loss is nan')
    assert not any(f.endswith(('.pt', '.json')) for f in files_under(out))


def test_keyboard_interrupt(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # The pretrain command imports it when it runs.
    monkeypatch.setattr(data_module, 'load_dataset', interrupted)
    code, out, err = run_cli(['pretrain', '--dim', '8'], capsys)
    assert out == ''
    assert_one_line(code, err, 'pyg-fewshot pretrain: interrupted',
                    status=130)


@pytest.mark.parametrize('error', [
    RuntimeError('a bug'), KeyError('mrr'),
    ImportError("cannot import name 'x' from 'pyg_fewshot.data'",
                name='pyg_fewshot.data')],
    ids=['RuntimeError', 'KeyError', 'ImportError-of-pyg_fewshot'])
def test_programming_error_keeps_traceback(error, monkeypatch):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(data_module, 'load_dataset', broken)
    with pytest.raises(type(error)) as e:
        main(['pretrain', '--dim', '8'])
    assert e.value is error


@pytest.mark.parametrize('how', ['after', 'before', 'env'])
def test_debug_shows_traceback(how, tmp_path, monkeypatch):
    missing = str(tmp_path / 'nothing.pt')
    argv = ['evaluate', '--checkpoint', missing]
    if how == 'after':
        argv.append('--debug')
    elif how == 'before':
        argv.insert(0, '--debug')
    else:
        monkeypatch.setenv('PYG_FEWSHOT_DEBUG', '1')
    with pytest.raises(FileNotFoundError, match='nothing.pt'):
        main(argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available')
def test_device_cuda_without_cuda(tmp_path, capsys):
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--device', 'cuda',
                            '--output', out] + FAST, capsys)
    assert_one_line(code, err, "pyg-fewshot train: error: device 'cuda' "
                    "asked for, but no CUDA device is available")
    assert files_under(out) == []


def test_console_entry_point(tmp_path):
    # The real process (sys.exit(main())): exit status 2 and one line.
    missing = str(tmp_path / 'nothing.pt')
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(missing)
    env = {k: v for k, v in os.environ.items() if k != 'PYG_FEWSHOT_DEBUG'}
    res = subprocess.run([sys.executable, '-m', 'pyg_fewshot', 'evaluate',
                          '--checkpoint', missing], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 2 and res.stdout == ''
    assert res.stderr.splitlines() == [
        f'pyg-fewshot evaluate: error: {e.value}']


@pytest.mark.parametrize('name,text,message', [
    ('run.yaml', 'trainer:\n  lr: [0.01\n',
     "cannot parse '{path}' (line 3, column 1): expected ',' or ']', but "
     "got '<stream end>'"),
    ('run.json', '{"trainer": {"lr": 0.01,}}',
     "cannot parse '{path}' (line 1, column 25): Expecting property name "
     "enclosed in double quotes"),
    ('run.yaml', '- 1\n- 2\n',
     "'{path}' must hold a mapping of settings, not a list"),
    ('run.toml', 'lr = 1\n',
     "unknown configuration format '.toml' of '{path}'; expected .yaml, "
     ".yml or .json"),
], ids=['yaml-syntax', 'json-syntax', 'not-a-mapping', 'unknown-suffix'])
def test_unreadable_config_file(name, text, message, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(text)
    out = str(tmp_path / 'run')
    code, stdout, err = run_cli(['train', '--config', str(path), '--output',
                                 out], capsys)
    assert stdout == ''
    assert_one_line(code, err, 'pyg-fewshot train: error: ' +
                    message.format(path=path))
    assert not os.path.exists(out)
