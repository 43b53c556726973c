import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from pyg_fewshot.data.sampler import Episode
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer, load_checkpoint
from pyg_fewshot.meta import distributed as dist_utils
from pyg_fewshot.pipeline import RunConfig

WORKER = osp.join(osp.dirname(__file__), 'dist_worker.py')
STEPS = 4

pytestmark = pytest.mark.skipif(not dist.is_available() or
                                not dist.is_gloo_available(),
                                reason='torch.distributed with gloo is '
                                'not available in this build')


def load_worker():
    spec = importlib.util.spec_from_file_location('dist_worker', WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('WORLD_SIZE', None)
    return env


class CombinedSampler:
    r"""One process's view of a two-rank job: both ranks' task streams
    concatenated into one meta-batch."""
    def __init__(self, samplers):
        self.samplers = samplers

    def sample(self) -> Episode:
        parts = [s.sample() for s in self.samplers]
        return Episode(*(torch.cat(ts, 0) for ts in zip(*parts)))

    def state_dict(self):
        return [s.state_dict() for s in self.samplers]

    def load_state_dict(self, state):
        for s, st in zip(self.samplers, state):
            s.load_state_dict(st)


@pytest.fixture(scope='module')
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc-per-node', '2', WORKER, str(out), str(STEPS)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(out / f'rank{r}.pt', weights_only=False)
             for r in range(2)]
    return out, ranks


def test_ranks_stay_identical(two_rank_run):
    _, (r0, r1) = two_rank_run
    assert r0['world'] == r1['world'] == 2
    for key, value in r0['state'].items():
        assert torch.equal(value, r1['state'][key]), key


def test_equals_one_process_on_combined_meta_batch(two_rank_run, tmp_path):
    _, (r0, _) = two_rank_run
    w = load_worker()
    data = w.build_data()
    model = w.build_model(data)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    sampler = CombinedSampler([w.rank_sampler(data, r, 2) for r in (0, 1)])
    trainer = MetaTrainer(MetaLearner(model), sampler, str(tmp_path),
                          validate=None, max_steps=STEPS, eval_every=2,
                          progress=False)
    trainer.fit(resume=False)
    moved = False
    for key, value in model.state_dict().items():
        assert torch.allclose(value, r0['state'][key], atol=1e-5,
                              rtol=1e-4), key
        moved |= not torch.equal(value, start[key])
    assert moved

    # Relations split over the ranks, gathered: the single-process result.
    ref = evaluate(model, data, 'test', 1, MetaLearner(model))
    assert r0['num_queries'] == ref['num_queries']
    assert list(r0['per_relation']) == list(ref['per_relation'])
    assert r0['mrr'] == pytest.approx(ref['mrr'], abs=1e-5)


def test_checkpoint_written_once_with_every_ranks_state(two_rank_run):
    out, _ = two_rank_run
    names = sorted(os.listdir(out))
    assert names == ['best.pt', 'last.pt', 'rank0.pt', 'rank1.pt']
    last = load_checkpoint(str(out / 'last.pt'))
    assert last['world_size'] == 2 and last['step'] == STEPS
    assert len(last['ranks']) == 2
    s0, s1 = (r['sampler'] for r in last['ranks'])
    assert not all(torch.equal(s0[k], s1[k]) for k in s0)


def test_resume_needs_the_same_number_of_processes(two_rank_run, tmp_path):
    out, _ = two_rank_run
    w = load_worker()
    data = w.build_data()
    model = w.build_model(data)
    trainer = MetaTrainer(MetaLearner(model), w.rank_sampler(data, 0, 1),
                          str(tmp_path), progress=False)
    with pytest.raises(ValueError, match='same number'):
        trainer.load_state_dict(load_checkpoint(str(out / 'last.pt')))


def test_gradient_averager_edge_cases(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc-per-node', '2', WORKER, str(tmp_path), 'averager']
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in range(2):
        out = torch.load(tmp_path / f'avg{rank}.pt', weights_only=True)
        assert torch.equal(out['both'], torch.full((3, ), 2.0))
        # A gradient on one rank only is averaged with zeros ...
        assert torch.equal(out['one'], torch.tensor([2.0, -1.0]))
        # ... and none on any rank stays None (Adam skips the parameter).
        assert out['none'] is None
        assert out['table_sparse']
        expected = torch.zeros(5, 2)
        expected[0] = 0.5
        expected[2] = 0.5 + 1.0
        expected[3] = 2.0
        assert torch.equal(out['table'], expected)


def test_rank_seeds_and_batch_split():
    assert dist_utils.rank_seed(7, 0) == 7
    seeds = {dist_utils.rank_seed(7, r) for r in range(8)}
    assert len(seeds) == 8
    assert dist_utils.split_batch_size(1024, 4) == 256
    with pytest.raises(ValueError, match='not divisible'):
        dist_utils.split_batch_size(10, 4)
    assert dist_utils.get_world_size() == 1 and dist_utils.get_rank() == 0


def test_cli_nproc_2(tmp_path):
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'pyg_fewshot', 'train', '--model', 'metar',
           '--nproc', '2', '--max-steps', '2', '--eval-every', '2',
           '--batch-size', '8', '--dim', '8', '--output', str(out),
           '--data-root', str(tmp_path / 'data'), '--quiet']
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    assert results['nproc'] == 2 and results['steps'] == 2
    assert 0 < results['test']['mrr'] <= 1
    assert sorted(os.listdir(out)) == ['best.pt', 'config.yaml', 'last.pt',
                                       'results.json']
    # The run's configuration, as run.
    config = RunConfig.load(str(out / 'config.yaml'))
    assert config.nproc == 2 and config.model.name == 'metar'
    assert config.model.embedding_dim == 8 and config.trainer.max_steps == 2
    assert results['config'] == config.to_dict()
    assert results['config_hash'] == config.config_hash()
    # The summary is printed once, by rank 0.
    assert proc.stdout.count('results written to') == 1

    bad = subprocess.run(cmd[:-1] + ['--batch-size', '7', '--quiet'],
                         env=subprocess_env(), capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode != 0 and 'not divisible' in bad.stderr
