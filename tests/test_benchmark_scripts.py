r"""The scripts in benchmarks/ are not imported by the test suite; this at
least compiles every one of them, so a syntax error cannot hide there."""
import os
import py_compile

import pytest
import torch

from conftest import REPO

SCRIPTS = sorted(
    f for f in os.listdir(os.path.join(REPO, 'benchmarks')) if f.endswith('.py'))


@pytest.mark.parametrize('name', SCRIPTS)
def test_benchmark_script_compiles(name, tmp_path):
    py_compile.compile(os.path.join(REPO, 'benchmarks', name),
                       cfile=str(tmp_path / (name + 'c')), doraise=True)


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    import _common
    return _common


def test_machine_speed_is_the_geometric_mean_of_the_kernel_ratios(common):
    ref = common.REFERENCE_KERNEL_MS
    same = {k: v / 1e3 for k, v in ref.items()}
    assert common.machine_speed(same) == pytest.approx(1.0)
    # One kernel twice as slow, the other half as slow: they cancel.
    keys = sorted(ref)
    mixed = {keys[0]: 2 * ref[keys[0]] / 1e3, keys[1]: ref[keys[1]] / 2e3}
    assert common.machine_speed(mixed) == pytest.approx(1.0)
    slower = {k: 1.5 * v / 1e3 for k, v in ref.items()}
    assert common.machine_speed(slower) == pytest.approx(1.5)


def test_reference_kernels_time_both_kernels(common):
    probe = common.reference_kernels(repeats=1)
    assert set(probe) == set(common.REFERENCE_KERNEL_MS)
    assert all(t > 0 for t in probe.values())


def _reproduce_configs():
    import sys
    sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
    try:
        import reproduce_nell_one
    finally:
        sys.path.pop(0)
    return reproduce_nell_one.CONFIGS


@pytest.mark.parametrize('name', sorted(_reproduce_configs()))
def test_reproduce_configs_are_valid_training_commands(name, tiny_data):
    # A misspelt flag or model argument in a NELL-One configuration would
    # otherwise surface only minutes into a benchmark run.
    from pyg_fewshot.cli.main import _parse_kv, build_parser
    from pyg_fewshot.data import EpisodeSampler
    from pyg_fewshot.meta import MetaLearner
    from pyg_fewshot.models import build_model

    config = _reproduce_configs()[name]
    args = build_parser().parse_args(
        ['train', *config, '--dataset', 'unused', '--output', 'unused'])
    torch.manual_seed(0)
    model = build_model(args.model, tiny_data, embedding_dim=8,
                        **_parse_kv(args.model_arg))
    learner = MetaLearner(model, inner_steps=args.inner_steps,
                          inner_lr=args.inner_lr,
                          published_quirks=args.published_quirks)
    loss, _ = learner.loss(EpisodeSampler(tiny_data, 1, 2, 4, seed=0).sample())
    loss.backward()
    assert torch.isfinite(loss)


@pytest.fixture
def throughput(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    import throughput_nell_one
    return throughput_nell_one


def test_throughput_reference_without_main_py_is_skipped(throughput,
                                                         monkeypatch,
                                                         tmp_path):
    import sys
    monkeypatch.setattr(sys, 'argv', ['throughput_nell_one.py',
                                      '--reference', str(tmp_path)])
    with pytest.raises(SystemExit, match='skipped: .*holds no main.py'):
        throughput.main()


# A stand-in for the published code with the interface the worker drives
# (written here; nothing of the published code): it checks the run-time
# patches (CPU device, tensorboardX) and counts the calls.
FAKE_CODE = {
    'main.py': '',
    'params.py': '''
import argparse
import torch


def get_params():
    parser = argparse.ArgumentParser()
    for name in ('--dataset', '--data_path', '--data_form', '--step',
                 '--prefix', '--log_dir', '--state_dir'):
        parser.add_argument(name)
    parser.add_argument('--batch_size', type=int)
    parser.add_argument('--seed', type=int)
    p = vars(parser.parse_args())
    p['device'] = torch.device('cuda:0')
    return p
''',
    'data_loader.py': '''
class DataLoader:
    def __init__(self, dataset, parameter, step='train'):
        self.tasks = dataset[step + '_tasks']
        self.few = parameter['few']

    def next_batch(self):
        return [self.few] * 3, ['r'] * 3
''',
    'trainer.py': '''
import sys
from tensorboardX import SummaryWriter


class Trainer:
    def __init__(self, data_loaders, dataset, parameter):
        assert parameter['device'].type == 'cpu'
        assert parameter['batch_size'] == 3
        SummaryWriter('log').add_scalar('x', 0.0, 0)
        print('built a trainer')  # must not reach the protocol pipe

    def do_one_step(self, task, iseval=False, curr_rel=''):
        assert not iseval and task == [2] * 3
''',
}


def test_published_code_worker_times_steps(throughput, tmp_path):
    code, data = tmp_path / 'code', tmp_path / 'data'
    code.mkdir()
    data.mkdir()
    for name, text in FAKE_CODE.items():
        (code / name).write_text(text)
    for name in ('train_tasks.json', 'dev_tasks.json', 'test_tasks.json',
                 'rel2candidates.json', 'e1rel_e2.json', 'ent2ids'):
        (data / name).write_text('{}')
    published = throughput.PublishedCode(str(code), str(data), 3, 1)
    try:
        assert published.wait_ready()['threads'] == 1
        cpu = []
        for _ in range(2):
            phases = published.measure(2, warmup=1, steps=3, cpu=cpu)
            assert set(phases) == {
                'sampling', 'forward, inner step, loss, backward, update'}
            assert all(t >= 0 for t in phases.values())
        assert len(cpu) == 2
    finally:
        published.close()
