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
