"""A run killed mid-training (after a checkpoint) and resumed gives the
results of the uninterrupted run, apart from timings."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch.distributed as dist

from pyg_fewshot.cli.main import main
from pyg_fewshot.meta import MetaTrainer, load_checkpoint
from _proc import alive, children

STEPS = 100
ARGS = ['--model', 'metar', '--max-steps', str(STEPS), '--eval-every', '10',
        '--batch-size', '16', '--dim', '8', '--quiet']


def subprocess_env(cache):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYG_FEWSHOT_HOME=str(cache))
    env.pop('WORLD_SIZE', None)
    return env


def command(out, *extra):
    return [sys.executable, '-m', 'pyg_fewshot', 'train', '--output',
            str(out)] + ARGS + list(extra)


def without_timings(results):
    out = {k: v for k, v in results.items() if k != 'train_seconds'}
    out['history'] = [{k: v for k, v in h.items() if k != 'train_seconds'}
                      for h in out['history']]
    for split in ('dev', 'test'):
        out[split] = {k: v for k, v in out[split].items() if k != 'seconds'}
    return out


def read_results(out):
    return without_timings(json.loads((out / 'results.json').read_text()))


def kill_after_first_checkpoint(cmd, out, env):
    r"""Starts ``cmd``, kills it (``SIGKILL``, with any workers it started)
    once ``out/last.pt`` exists, and returns that checkpoint's step."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        deadline = time.monotonic() + 300
        while not (out / 'last.pt').exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, 'no checkpoint was written'
            time.sleep(0.02)
        workers = children(proc.pid)
        proc.kill()
        proc.wait()
        assert not (out / 'results.json').exists()  # killed mid-training
        deadline = time.monotonic() + 15
        while any(alive(w) for w in workers):
            assert time.monotonic() < deadline, 'workers outlived the kill'
            time.sleep(0.1)
    finally:
        for pid in [proc.pid] + workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    step = load_checkpoint(str(out / 'last.pt'))['step']
    assert 10 <= step < STEPS
    return step


@pytest.mark.skipif(not os.path.isdir('/proc/self'),
                    reason='reads the process table in /proc')
def test_run_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(cache))
    full, part = tmp_path / 'full', tmp_path / 'part'
    assert main(['train', '--output', str(full)] + ARGS) == 0

    step = kill_after_first_checkpoint(command(part), part,
                                       subprocess_env(cache))
    steps = []
    original = MetaTrainer.train_step

    def counted(self):
        steps.append(self.step)
        return original(self)

    monkeypatch.setattr(MetaTrainer, 'train_step', counted)
    assert main(['train', '--output', str(part)] + ARGS) == 0
    # It resumed (ran only the remaining steps) ...
    assert steps == list(range(step, STEPS))
    # ... to the uninterrupted run's results, and left no lock or temporary
    # file of the killed process behind.
    assert read_results(part) == read_results(full)
    assert sorted(os.listdir(part)) == ['best.pt', 'config.yaml', 'last.pt',
                                        'results.json']


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available()
                    or not os.path.isdir('/proc/self'),
                    reason='needs torch.distributed with gloo and /proc')
def test_run_killed_and_resumed_nproc_2_equals_uninterrupted(tmp_path):
    env = subprocess_env(tmp_path / 'cache')
    full, part = tmp_path / 'full', tmp_path / 'part'
    done = subprocess.run(command(full, '--nproc', '2'), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    kill_after_first_checkpoint(command(part, '--nproc', '2'), part, env)
    done = subprocess.run(command(part, '--nproc', '2'), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_results(part) == read_results(full)
    assert sorted(os.listdir(part)) == ['best.pt', 'config.yaml', 'last.pt',
                                        'results.json']
