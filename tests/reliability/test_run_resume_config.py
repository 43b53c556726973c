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
from pyg_fewshot.models import build_model
from pyg_fewshot.pipeline import RunConfig

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
        first_run, 'episodes.shots: 1 → 3')


def test_run_other_lr_is_refused(first_run):
    assert refused(first_run, '--lr', '0.01') == message(
        first_run, 'trainer.lr: 0.001 → 0.01')


def test_run_other_seed_is_refused(first_run):
    assert refused(first_run, '--seed', '1') == message(
        first_run, 'seed: 0 → 1')


def test_run_other_model_is_refused_without_traceback(first_run):
    # Used to die in load_state_dict with a missing-keys traceback.
    before = snapshot(first_run)
    with pytest.raises(ConfigMismatchError) as info:
        main(['train', '--model', 'moemeta', '--output', str(first_run)] +
             FAST)
    text = str(info.value)
    prefix, _, listed = message(first_run, '@').partition('@')
    assert text.startswith(prefix) and text.endswith(listed)
    # Every setting of both models is named, the model's name among them.
    assert "model.name: 'metar' → 'moemeta'" in text
    assert 'model.hidden_channels: [500, 200] → None' in text
    assert "model.relation_meta: None → 'moe'" in text
    assert snapshot(first_run) == before


def test_run_every_difference_is_named(first_run):
    assert refused(first_run, '--seed', '2', '--shots', '3', '--set',
                   'model.hidden_channels=[16]', '--set',
                   'learner.published_quirks=true') == message(
        first_run, "episodes.shots: 1 → 3, learner.published_quirks: False "
        "→ True, model.hidden_channels: [500, 200] → [16], seed: 0 → 2")


def test_run_config_file_of_other_settings_is_refused(first_run, tmp_path):
    # The run's own config.yaml with one value changed.
    config = RunConfig.load(str(first_run / 'config.yaml')).override(
        ['trainer.patience=5'])
    path = str(tmp_path / 'changed.yaml')
    config.save(path)
    before = snapshot(first_run)
    with pytest.raises(ConfigMismatchError) as info:
        main(['train', '--config', path, '--output', str(first_run),
              '--quiet', '--debug'])
    assert str(info.value) == message(first_run, 'trainer.patience: 30 → 5')
    assert snapshot(first_run) == before


def test_run_refusal_is_one_line_on_the_command_line(first_run, capsys):
    args = ['train', '--model', 'metar', '--output', str(first_run),
            '--shots', '3'] + FAST[:-1]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"pyg-fewshot train: error: "
                   f"{message(first_run, 'episodes.shots: 1 → 3')}\n")


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
    # max_steps is the one setting that changed, and it is not part of
    # what a run must match to resume.
    assert second['config']['trainer'].pop('max_steps') == 6
    assert first['config']['trainer'].pop('max_steps') == 4
    assert second['config'] == first['config']


def test_run_resolved_config_file_resumes_the_run(first_run, tmp_path):
    # Training again from the run's config.yaml resumes it: same settings.
    out = tmp_path / 'run'
    out.mkdir()
    for name, data in snapshot(first_run).items():
        (out / name).write_bytes(data)
    first = json.loads((out / 'results.json').read_text())
    assert main(['train', '--config', str(out / 'config.yaml'),
                 '--output', str(out), '--max-steps', '6', '--quiet']) == 0
    second = json.loads((out / 'results.json').read_text())
    assert [h['step'] for h in second['history']] == [2, 4, 6]
    assert second['history'][:2] == first['history']


def test_run_no_resume_starts_afresh(first_run, tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    for name, data in snapshot(first_run).items():
        (out / name).write_bytes(data)
    assert train(out, '--shots', '3', '--no-resume') == 0
    res = json.loads((out / 'results.json').read_text())
    assert res['shots'] == res['config']['episodes']['shots'] == 3
    assert [h['step'] for h in res['history']] == [2, 4]
    for name in ('best.pt', 'last.pt'):
        state = load_checkpoint(str(out / name))
        assert state['config']['episodes.shots'] == 3
        assert state['metadata']['run_config'] == res['config']
    assert RunConfig.load(str(out / 'config.yaml')).episodes.shots == 3
    assert sorted(os.listdir(out)) == ['best.pt', 'config.yaml', 'last.pt',
                                       'results.json']


def test_run_results_record_config_and_fingerprint(first_run):
    res = json.loads((first_run / 'results.json').read_text())
    last = load_checkpoint(str(first_run / 'last.pt'))
    best = load_checkpoint(str(first_run / 'best.pt'))
    # results.json: the full configuration, nested; the checkpoints: what
    # a run must match to resume (flat dotted keys, without max_steps) and
    # the data's fingerprint.
    config = RunConfig.from_dict(res['config'])
    assert RunConfig.load(str(first_run / 'config.yaml')) == config
    assert res['config_hash'] == config.config_hash()
    assert last['config'] == dict(config.resume_key(),
                                  data_fingerprint=res['data_fingerprint'])
    assert best['config'] == last['config']
    assert last['metadata']['run_config'] == res['config']
    assert len(res['data_fingerprint']) == 64
    assert res['config']['trainer']['lr'] == 0.001
    assert res['config']['trainer']['max_steps'] == 4
    assert last['config']['trainer.lr'] == 0.001
    assert last['config']['episodes.shots'] == 1
    assert last['config']['model.name'] == 'metar'
    assert 'trainer.max_steps' not in last['config']


# Library level ---------------------------------------------------------------

def make_trainer(data, out, validate=None, **kw):
    torch.manual_seed(0)
    model = build_model('metar', data, embedding_dim=8,
                        hidden_channels=(8, ))
    sampler = EpisodeSampler(data, 2, batch_size=8, seed=0)
    return MetaTrainer(MetaLearner(model), sampler, str(out),
                       validate=validate or (lambda: 0.0), max_steps=4,
                       eval_every=2, progress=False, **kw)


def test_run_other_data_is_refused(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, run_config={'seed': 0}).fit()
    other = tiny_data.clone()  # one candidate less for one relation
    other.cand_idx = other.cand_idx[1:]
    other.cand_ptr = (other.cand_ptr - 1).clamp(min=0)
    old, new = data_fingerprint(tiny_data), data_fingerprint(other)
    assert old != new
    with pytest.raises(ConfigMismatchError) as info:
        make_trainer(other, tmp_path, run_config={'seed': 0}).fit()
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


def test_run_checkpoint_of_the_flat_layout_is_refused_in_one_short_line(
        tiny_data, tmp_path):
    # Written before the configuration files: flat keys ('model_kwargs',
    # 'lr', ...), none of them comparable with this version's dotted ones.
    make_trainer(tiny_data, tmp_path,
                 run_config={'trainer.lr': 0.001}).fit()
    last = str(tmp_path / 'last.pt')
    state = load_checkpoint(last)
    state['config'] = {'model': 'metar', 'model_kwargs': {}, 'lr': 0.001,
                       'data_fingerprint': state['config']['data_fingerprint']}
    torch.save(state, last)
    with pytest.raises(ConfigMismatchError) as info:
        make_trainer(tiny_data, tmp_path,
                     run_config={'trainer.lr': 0.001}).fit()
    assert str(info.value) == (
        f"Cannot resume from '{last}': it was written by a version before "
        f"the run configuration files (its settings are not comparable with "
        f"this run's); {ADVICE}")
