import json
import os
import subprocess
import sys

import pytest

from pyg_fewshot.data import load_dataset
from pyg_fewshot.pipeline import (RunConfig, list_presets, load_preset,
                                  resolve_config, run)
from pyg_fewshot.pipeline.presets import merge

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'reliability'))
from _cli import run_cli, write_dataset  # noqa: E402

PRESETS = [name for name, _ in list_presets()]
#: Settings that make any preset train in a moment on the tiny dataset.
TINY = ['data.pretrain=false', 'episodes.batch_size=4',
        'trainer.max_steps=1', 'trainer.eval_every=1']
FAST = ['--batch-size', '4', '--dim', '8', '--eval-every', '1', '--quiet']


def read_results(out):
    with open(os.path.join(out, 'results.json')) as f:
        return json.load(f)


def test_shipped_presets_are_listed_with_their_description():
    assert {'umls-one/metar', 'umls-one/moemeta', 'umls-one/fusionadapter',
            'nell-one/metar-1shot', 'nell-one/metar-5shot',
            'nell-one/moemeta-1shot', 'nell-one/moemeta-5shot',
            'nell-one/metar-hybrid-1shot', 'nell-one/moemeta-hybrid-1shot',
            'nell-one/metar-hybrid-5shot', 'nell-one/moemeta-hybrid-5shot',
            'nell-one/metar-intrain-1shot', 'nell-one/moemeta-intrain-1shot',
            'published-code'} <= set(PRESETS)
    assert PRESETS == sorted(PRESETS)
    for name, description in list_presets():
        assert description and not description.startswith('#'), name
        assert '\n' not in description


@pytest.mark.parametrize('name', PRESETS)
def test_every_preset_resolves(name):
    preset = load_preset(name)
    assert isinstance(preset, dict) and preset
    config = resolve_config(presets=[name])
    assert isinstance(config, RunConfig)
    # What the preset names is what the configuration holds.
    assert config.to_dict() == RunConfig.from_dict(
        merge(RunConfig().to_dict(), preset)).to_dict()
    if name.startswith('nell-one/'):
        assert config.data.dataset == 'nell-one'
        # In-Train starts from random vectors; the others from TransE.
        assert config.data.pretrain == ('intrain' not in name)
        assert config.episodes.shots == int(name.split('-')[-1][0])
        assert config.data.background_tasks == (
            'hybrid' in name or 'intrain' in name)
    if name.startswith('umls-one/'):
        assert config.data.dataset == 'umls-one'
        assert config.model.name == name.split('/')[1]


@pytest.mark.parametrize('name', PRESETS)
def test_every_preset_trains_a_step(name, tmp_path, cli_cache):
    config = resolve_config(presets=[name])
    if config.model.name == 'fusionadapter':
        # Its text modality encodes the entity names.
        pytest.importorskip('sentence_transformers')
    data = write_dataset(tmp_path / 'data')
    dim = ('model.backbone.embedding_dim'
           if config.model.name == 'fusionadapter' else 'model.embedding_dim')
    config = resolve_config(presets=[name], overrides=TINY + [
        f'data.dataset={data}', f'{dim}=8'])
    result = run(config, str(tmp_path / 'run'), progress=False)
    assert result.steps == 1
    assert [h['step'] for h in result.history] == [1]
    assert 0 < result.test['mrr'] <= 1
    # The preset's other settings are those the run used.
    preset = load_preset(name)
    for section in ('learner', 'episodes'):
        for key, value in preset.get(section, {}).items():
            assert getattr(getattr(result.config, section), key) == value
    assert result.config.model.name == config.model.name


def test_presets_merge_in_order():
    config = resolve_config(presets=['nell-one/moemeta-1shot',
                                     'published-code'])
    assert config.model.name == 'moemeta'
    assert config.model.aggregator_kwargs['mix'] == 'convex'
    assert config.learner.inner_lr == 5.0
    assert config.learner.published_quirks
    assert config.trainer.keep_eval_mode
    assert config.trainer.max_steps == 10000
    # A later preset wins where both set a value.
    five = resolve_config(presets=['nell-one/metar-1shot',
                                   'nell-one/metar-5shot'])
    one = resolve_config(presets=['nell-one/metar-5shot',
                                  'nell-one/metar-1shot'])
    assert (five.episodes.shots, five.trainer.max_steps) == (5, 5000)
    assert (one.episodes.shots, one.trainer.max_steps) == (1, 10000)
    # Then the configuration, the model, the overrides, in that order.
    config = resolve_config({'trainer': {'max_steps': 7}},
                            presets=['nell-one/metar-1shot'],
                            overrides=['trainer.eval_every=3'])
    assert (config.trainer.max_steps, config.trainer.eval_every) == (7, 3)
    assert config.data.dataset == 'nell-one'


def test_merge_is_per_key_within_a_model_and_replaces_another_model():
    base = {'model': {'name': 'moemeta', 'relation_init': 'translation',
                      'aggregator_kwargs': {'mix': 'convex', 'gate': False}},
            'trainer': {'lr': 0.01, 'max_steps': 5}}
    before = json.loads(json.dumps(base))
    same = merge(base, {'model': {'aggregator_kwargs': {'gate': True}},
                        'trainer': {'max_steps': 9}})
    assert same == {'model': {'name': 'moemeta',
                              'relation_init': 'translation',
                              'aggregator_kwargs': {'mix': 'convex',
                                                    'gate': True}},
                    'trainer': {'lr': 0.01, 'max_steps': 9}}
    # Another model: its section replaces the old one whole (the old keys
    # belong to the old class).
    other = merge(base, {'model': {'name': 'metar', 'dropout': 0.1}})
    assert other['model'] == {'name': 'metar', 'dropout': 0.1}
    assert other['trainer'] == base['trainer']
    assert base == before  # the inputs stay as they were
    # So a model preset after a MoEMeta preset gives that model's defaults.
    config = resolve_config(presets=['nell-one/moemeta-1shot',
                                     'umls-one/metar'])
    assert config.model == RunConfig().model
    assert config.data.dataset == 'nell-one'
    assert config.learner.inner_lr == 5.0
    # ... and so does the model argument.
    config = resolve_config(presets=['nell-one/moemeta-1shot'],
                            model='metar')
    assert config.model == RunConfig().model


def test_unknown_preset_is_one_line_listing_the_presets(tmp_path, capsys,
                                                        cli_cache):
    with pytest.raises(ValueError) as e:
        load_preset('nell-one/metar-10shot')
    text = str(e.value)
    assert '\n' not in text and "'nell-one/metar-10shot'" in text
    for name in PRESETS:
        assert name in text
    with pytest.raises(ValueError):
        resolve_config(presets=['umls-one/metar', 'nope'])
    code, _, err = run_cli(['train', '--preset', 'nope', '--output',
                            str(tmp_path / 'run')], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("pyg-fewshot train: error: Unknown preset 'nope'")
    assert not (tmp_path / 'run').exists()


def test_presets_command_does_not_import_torch():
    code = ('import sys\n'
            'from pyg_fewshot.cli.main import main\n'
            'assert main(["presets"]) == 0\n'
            'assert "torch" not in sys.modules, "torch"\n'
            'assert "torch_geometric" not in sys.modules, "pyg"\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(PRESETS)
    for line, (name, description) in zip(lines, list_presets()):
        assert line.split()[0] == name
        assert line.endswith(description)
    # The console command too.
    out = subprocess.run([sys.executable, '-m', 'pyg_fewshot', 'presets'],
                         capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == lines


def test_presets_command_after_the_package_is_imported(capsys):
    import pyg_fewshot.pipeline  # noqa: F401
    code, out, _ = run_cli(['presets'], capsys)
    assert code == 0 and len(out.splitlines()) == len(PRESETS)


def test_train_with_a_preset(tmp_path, capsys, cli_cache):
    out = str(tmp_path / 'run')
    code, stdout, err = run_cli(
        ['train', '--preset', 'umls-one/metar', '--max-steps', '2',
         '--output', out, '--set', 'model.hidden_channels=[16]'] + FAST,
        capsys)
    assert code == 0, err
    res = read_results(out)
    assert res['model'] == 'metar' and res['dataset'] == 'umls-one'
    assert res['steps'] == 2
    assert RunConfig.load(os.path.join(out, 'config.yaml')) == \
        resolve_config(presets=['umls-one/metar'], overrides=[
            'trainer.max_steps=2', 'episodes.batch_size=4',
            'model.embedding_dim=8', 'trainer.eval_every=1',
            'model.hidden_channels=[16]'])
    assert 'test: MRR' in stdout


def test_nell_one_presets_read_the_dataset_through_the_data_path(
        tmp_path, capsys, cli_cache, monkeypatch):
    # A tiny stand-in named nell-one, found by name in $PYG_FEWSHOT_DATA
    # (after a folder without it).
    folder = tmp_path / 'datasets'
    write_dataset(folder / 'nell-one')
    (tmp_path / 'empty').mkdir()
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)  # no ./nell-one to find first
    monkeypatch.setenv('PYG_FEWSHOT_DATA', os.pathsep.join(
        [str(tmp_path / 'empty'), str(folder)]))
    for name in PRESETS:
        if name.startswith('nell-one/'):
            assert resolve_config(presets=[name]).data.dataset == 'nell-one'
    out = str(tmp_path / 'run')
    code, _, err = run_cli(
        ['train', '--preset', 'nell-one/moemeta-1shot', '--max-steps', '1',
         '--set', 'data.pretrain=false', '--output', out] + FAST, capsys)
    assert code == 0, err
    res = read_results(out)
    assert res['dataset'] == 'nell-one' and res['model'] == 'moemeta'
    assert res['config']['learner']['inner_lr'] == 5.0
    expected = load_dataset(str(folder / 'nell-one'))
    assert len(res['test']['per_relation']) == 1
    from pyg_fewshot.data.fingerprint import data_fingerprint
    assert res['data_fingerprint'] == data_fingerprint(expected[0])
    # Without it, the error says where to point.
    monkeypatch.delenv('PYG_FEWSHOT_DATA')
    code, _, err = run_cli(
        ['train', '--preset', 'nell-one/metar-1shot', '--max-steps', '1',
         '--set', 'data.pretrain=false', '--output',
         str(tmp_path / 'other')] + FAST, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and '$PYG_FEWSHOT_DATA' in err


def test_a_preset_extends_others(tmp_path, monkeypatch):
    from pyg_fewshot.pipeline import presets
    monkeypatch.setattr(presets, 'PRESET_DIR', str(tmp_path))
    (tmp_path / 'fam').mkdir()

    def write(name, text):
        (tmp_path / f'{name}.yaml').write_text(f'# {name}\n{text}')

    write('fam/base', 'trainer:\n  lr: 0.1\n  max_steps: 10\n'
          'model:\n  name: moemeta\n  num_experts: 4\n')
    write('fam/long', 'trainer:\n  max_steps: 99\n')
    write('fam/child', 'extends: [fam/base, fam/long]\n'
          'model:\n  top_k: 1\n')
    write('fam/grandchild', 'extends: fam/child\ntrainer:\n  lr: 0.5\n')
    # The bases in order, then the file's own keys, section by section.
    assert presets.load_preset('fam/child') == {
        'trainer': {'lr': 0.1, 'max_steps': 99},
        'model': {'name': 'moemeta', 'num_experts': 4, 'top_k': 1}}
    assert presets.load_preset('fam/grandchild')['trainer'] == {
        'lr': 0.5, 'max_steps': 99}
    # What is listed and described stays the files themselves.
    assert [n for n, _ in presets.list_presets()] == [
        'fam/base', 'fam/child', 'fam/grandchild', 'fam/long']

    write('fam/lost', 'extends: fam/nope\n')
    with pytest.raises(ValueError) as e:
        presets.load_preset('fam/lost')
    assert '\n' not in str(e.value)
    assert str(e.value).startswith(
        "preset 'fam/lost' extends an unknown preset 'fam/nope'; "
        'the presets are: fam/base, ')
    write('fam/a', 'extends: fam/b\n')
    write('fam/b', 'extends: fam/a\n')
    with pytest.raises(ValueError, match=r"^preset 'fam/a' extends itself: "
                       r'fam/a -> fam/b -> fam/a$'):
        presets.load_preset('fam/a')
    write('fam/bad', 'extends: {name: fam/base}\n')
    with pytest.raises(ValueError, match="'extends' must be a preset name "
                       'or a list of them'):
        presets.load_preset('fam/bad')


def test_shipped_presets_extend_their_family():
    # 5-shot, hybrid and In-Train presets are their 1-shot preset plus
    # what differs, so a change to the model is made once.
    for model in ('metar', 'moemeta'):
        one = resolve_config(presets=[f'nell-one/{model}-1shot'])
        hybrid = resolve_config(presets=[f'nell-one/{model}-hybrid-1shot'])
        five = resolve_config(presets=[f'nell-one/{model}-hybrid-5shot'])
        assert hybrid.model == one.model == five.model
        assert hybrid.learner == one.learner
        assert hybrid.trainer == one.trainer == five.trainer
    # MoEMeta's In-Train preset is MetaR's with MoEMeta's default model.
    from pyg_fewshot.models import model_config
    metar = resolve_config(presets=['nell-one/metar-intrain-1shot'])
    moemeta = resolve_config(presets=['nell-one/moemeta-intrain-1shot'])
    assert moemeta.model == model_config('moemeta')
    assert moemeta.data == metar.data and moemeta.trainer == metar.trainer
