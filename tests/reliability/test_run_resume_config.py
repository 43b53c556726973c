"""Item 2: a run resumes only under the configuration (and the data) it was
started with; otherwise it refuses with one line, and --no-resume starts
afresh without leaving the old run's files behind."""
import json
import os

import pytest
import torch

from pyg_fewshot.cli.main import main
from pyg_fewshot.data.fingerprint import data_fingerprint
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import MetaLearner, MetaTrainer, load_checkpoint
from pyg_fewshot.meta.checkpoint import ConfigMismatchError
from pyg_fewshot.models import MetaR

FAST = ['--max-steps', '4', '--eval-every', '2', '--batch-size', '16',
        '--dim', '8', '--quiet', '--debug']
ADVICE = ("use another output folder (--output DIR) or start afresh "
          "(--no-resume, which deletes this folder's checkpoints)")


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp('cache'))


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', cache)


def train(out, *extra):
    return main(['train', '--model', 'metar', '--output', str(out)] + FAST +
                list(extra))


def snapshot(out):
    return {name: (out / name).read_bytes() for name in sorted(
        os.listdir(out))}


def refused(out, *extra):
    r"""Runs a changed rerun and returns its error message, after checking
    that it left every file of the run untouched."""
    before = snapshot(out)
    with pytest.raises(ConfigMismatchError) as info:
        train(out, *extra)
    assert snapshot(out) == before
    return str(info.value)


def message(out, listed):
    return (f"Cannot resume from '{out / 'last.pt'}': it was written with "
            f"other settings ({listed}); {ADVICE}")


@pytest.fixture(scope='module')
def first_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp('run')
    os.environ['PYG_FEWSHOT_HOME'] = cache
    try:
        assert train(out) == 0
    finally:
        del os.environ['PYG_FEWSHOT_HOME']
    return out


def test_run_other_shots_is_refused(first_run):
    assert refused(first_run, '--shots', '3') == message(
        first_run, 'shots: 1 → 3')


def test_run_other_lr_is_refused(first_run):
    assert refused(first_run, '--lr', '0.01') == message(
        first_run, 'lr: 0.001 → 0.01')


def test_run_other_seed_is_refused(first_run):
    assert refused(first_run, '--seed', '1') == message(
        first_run, 'seed: 0 → 1')


def test_run_other_model_is_refused_without_traceback(first_run):
    # Used to die in load_state_dict with a missing-keys traceback.
    before = snapshot(first_run)
    with pytest.raises(ConfigMismatchError) as info:
        main(['train', '--model', 'moemeta', '--output', str(first_run)] +
             FAST)
    assert str(info.value) == message(first_run,
                                      "model: 'metar' → 'moemeta'")
    assert snapshot(first_run) == before


def test_run_every_difference_is_named(first_run):
    assert refused(first_run, '--seed', '2', '--shots', '3', '--model-arg',
                   'hidden_channels=(16,)') == message(
        first_run, "model_kwargs: {'embedding_dim': 8} → "
        "{'hidden_channels': (16,), 'embedding_dim': 8}, seed: 0 → 2, "
        "shots: 1 → 3")


def test_run_refusal_is_one_line_on_the_command_line(first_run, capsys):
    args = ['train', '--model', 'metar', '--output', str(first_run),
            '--shots', '3'] + FAST[:-1]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"pyg-fewshot train: error: "
                   f"{message(first_run, 'shots: 1 → 3')}\n")


def test_run_more_steps_extends_the_run(first_run, tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    for name, data in snapshot(first_run).items():
        (out / name).write_bytes(data)
    first = json.loads((out / 'results.json').read_text())
    assert train(out, '--max-steps', '6') == 0
    second = json.loads((out / 'results.json').read_text())
    assert second['steps'] == 6
    assert second['history'][:2] == first['history']
    assert second['config'] == first['config']


def test_run_no_resume_starts_afresh(first_run, tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    for name, data in snapshot(first_run).items():
        (out / name).write_bytes(data)
    assert train(out, '--shots', '3', '--no-resume') == 0
    res = json.loads((out / 'results.json').read_text())
    assert res['shots'] == res['config']['shots'] == 3
    assert [h['step'] for h in res['history']] == [2, 4]
    for name in ('best.pt', 'last.pt'):
        assert load_checkpoint(str(out / name))['config']['shots'] == 3
    assert sorted(os.listdir(out)) == ['best.pt', 'last.pt', 'results.json']


def test_run_results_record_config_and_fingerprint(first_run):
    res = json.loads((first_run / 'results.json').read_text())
    last = load_checkpoint(str(first_run / 'last.pt'))
    best = load_checkpoint(str(first_run / 'best.pt'))
    assert res['config'] == json.loads(json.dumps(last['config']))
    assert best['config'] == last['config']
    assert res['data_fingerprint'] == last['config']['data_fingerprint']
    assert len(res['data_fingerprint']) == 64
    assert res['config']['lr'] == 0.001 and 'max_steps' not in res['config']


# Library level ---------------------------------------------------------------

def make_trainer(data, out, validate=None, **kw):
    torch.manual_seed(0)
    model = MetaR(data['entity'].num_nodes, 8, hidden_channels=(8, ))
    sampler = EpisodeSampler(data, 2, batch_size=8, seed=0)
    return MetaTrainer(MetaLearner(model), sampler, str(out),
                       validate=validate or (lambda: 0.0), max_steps=4,
                       eval_every=2, progress=False, **kw)


def test_run_other_data_is_refused(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, config={'seed': 0}).fit()
    other = tiny_data.clone()  # one candidate less for one relation
    other.cand_idx = other.cand_idx[1:]
    other.cand_ptr = (other.cand_ptr - 1).clamp(min=0)
    old, new = data_fingerprint(tiny_data), data_fingerprint(other)
    assert old != new
    with pytest.raises(ConfigMismatchError) as info:
        make_trainer(other, tmp_path, config={'seed': 0}).fit()
    assert str(info.value) == message(
        tmp_path, f"data_fingerprint: {old[:12]} → {new[:12]}")


def test_run_checkpoint_without_config_is_refused(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path).fit()
    last = str(tmp_path / 'last.pt')
    state = load_checkpoint(last)
    del state['config']  # as written before configurations were recorded
    torch.save(state, last)
    with pytest.raises(ConfigMismatchError) as info:
        make_trainer(tiny_data, tmp_path).fit()
    assert str(info.value) == (
        f"Cannot resume from '{last}': it records no run configuration "
        f"(written by an older version), so it cannot be checked against "
        f"this run's settings; {ADVICE}")


def test_run_fresh_start_removes_the_old_runs_files(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path).fit()
    (tmp_path / 'results.json').write_text('{}')

    def crash():
        raise RuntimeError('crashed before the first validation')

    with pytest.raises(RuntimeError, match='crashed before'):
        make_trainer(tiny_data, tmp_path, validate=crash).fit(resume=False)
    # No best.pt of the old run is left to pass for the new run's.
    assert os.listdir(tmp_path) == []
