"""Item 5: the workers of a --nproc launcher end with it, however it ends,
and a run folder never has two writers."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch.distributed as dist

from pyg_fewshot._io import FolderLockedError
from pyg_fewshot.cli.main import main
from pyg_fewshot.meta.checkpoint import ConfigMismatchError
from _proc import alive, children

linux_only = pytest.mark.skipif(not os.path.isdir('/proc/self'),
                                reason='reads the process table in /proc')
needs_gloo = pytest.mark.skipif(not dist.is_available() or
                                not dist.is_gloo_available(),
                                reason='torch.distributed with gloo is not '
                                'available in this build')

FAST = ['--max-steps', '4', '--eval-every', '2', '--batch-size', '16',
        '--dim', '8', '--quiet']


def subprocess_env(cache):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYG_FEWSHOT_HOME=str(cache))
    env.pop('WORLD_SIZE', None)
    return env


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.1)


@pytest.fixture
def lock_holder(tmp_path):
    r"""Another process holding the lock of ``tmp_path / 'run'``."""
    folder = tmp_path / 'run'
    code = ('import sys, time\n'
            'from pyg_fewshot._io import run_lock\n'
            'with run_lock(sys.argv[1]):\n'
            '    print("locked", flush=True)\n'
            '    time.sleep(600)\n')
    proc = subprocess.Popen([sys.executable, '-c', code, str(folder)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == 'locked\n'
        yield folder, proc.pid
    finally:
        proc.kill()
        proc.wait()


def lock_message(folder, pid):
    return (f"[Errno 11] The run folder '{folder}' is in use by process "
            f"{pid} (wait for it to finish, or choose another folder with "
            f"--output DIR); process {pid} holds its lock: "
            f"'{folder / '.lock'}'")


@linux_only
@needs_gloo
def test_run_killed_launcher_takes_its_workers_along(tmp_path):
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'pyg_fewshot', 'train', '--model', 'metar',
           '--nproc', '2', '--max-steps', '100000', '--eval-every', '10',
           '--batch-size', '16', '--dim', '8', '--output', str(out),
           '--quiet']
    # Started as from a script's 'cmd &': SIGINT ignored, which is what
    # made torch's own parent-death signal (SIGINT) a no-op.
    launcher = subprocess.Popen(
        cmd, env=subprocess_env(tmp_path / 'cache'), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    workers = []
    try:
        wait_for(lambda: (out / 'last.pt').exists() or
                 launcher.poll() is not None, 300, 'a first checkpoint')
        assert launcher.poll() is None
        workers = children(launcher.pid)
        assert len(workers) >= 2  # two ranks (and a resource tracker)
        launcher.kill()
        launcher.wait()
        wait_for(lambda: not any(alive(w) for w in workers), 15,
                 'the workers to end')
        # Nothing writes into the run folder any more.
        before = {n: (out / n).stat().st_mtime_ns for n in os.listdir(out)}
        time.sleep(1)
        assert {n: (out / n).stat().st_mtime_ns
                for n in os.listdir(out)} == before
    finally:
        for pid in [launcher.pid] + workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()


@linux_only
def test_run_worker_whose_launcher_is_already_gone_ends(tmp_path):
    # The launcher died before the worker could ask to be signalled: the
    # worker notices it was reparented and ends at once.
    code = ('import os, time\n'
            'from pyg_fewshot.meta.distributed import die_with_parent\n'
            'die_with_parent(os.getppid() + 1000000)\n'
            'time.sleep(60)\n')
    proc = subprocess.run([sys.executable, '-c', code], timeout=60)
    assert proc.returncode == -signal.SIGTERM


def test_run_second_writer_fails_at_once(lock_holder, tmp_path):
    folder, pid = lock_holder
    # A temporary file of the live writer: not ours to clean up.
    (folder / '.last.pt.abcdefgh.tmp').write_bytes(b'being written')
    start = time.monotonic()
    with pytest.raises(FolderLockedError) as info:
        main(['train', '--model', 'metar', '--output', str(folder),
              '--debug'] + FAST)
    assert time.monotonic() - start < 10  # no data loaded, nothing trained
    assert str(info.value) == lock_message(folder, pid)
    assert sorted(os.listdir(folder)) == ['.last.pt.abcdefgh.tmp', '.lock']


def test_run_second_launcher_fails_at_once(lock_holder, capsys):
    folder, pid = lock_holder
    with pytest.raises(FolderLockedError) as info:
        main(['train', '--model', 'metar', '--nproc', '2', '--output',
              str(folder), '--debug'] + FAST)
    assert str(info.value) == lock_message(folder, pid)
    assert os.listdir(folder) == ['.lock']
    # Without --debug: one line on stderr.
    capsys.readouterr()
    assert main(['train', '--model', 'metar', '--nproc', '2', '--output',
                 str(folder)] + FAST) == 2
    assert capsys.readouterr().err == (
        f"pyg-fewshot train: error: The run folder '{folder}' is in use by "
        f"process {pid} (wait for it to finish, or choose another folder "
        f"with --output DIR); process {pid} holds its lock: "
        f"'{folder / '.lock'}'\n")


@needs_gloo
def test_run_worker_error_reaches_the_launcher_as_itself(tmp_path,
                                                         monkeypatch):
    # A run started with one process cannot be resumed by two: the
    # launcher raises the workers' ConfigMismatchError, not torch's
    # ProcessRaisedException with a worker traceback.
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    out = tmp_path / 'run'
    assert main(['train', '--model', 'metar', '--output', str(out),
                 '--debug'] + FAST) == 0
    with pytest.raises(ConfigMismatchError) as info:
        main(['train', '--model', 'metar', '--nproc', '2', '--output',
              str(out), '--debug'] + FAST)
    assert str(info.value) == (
        f"Cannot resume from '{out / 'last.pt'}': it was written with other "
        f"settings (nproc: 1 → 2); use another output folder (--output DIR) "
        f"or start afresh (--no-resume, which deletes this folder's "
        f"checkpoints)")
