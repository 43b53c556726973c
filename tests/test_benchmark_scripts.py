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


def _benchmark_module(name):
    import importlib
    import sys
    sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _reproduce_configs():
    return _benchmark_module('reproduce_nell_one').CONFIGS


def _grid_commands():
    r"""The training arguments of every NELL-One grid entry (reproduction,
    aggregator screen, selection)."""
    out = {f'reproduce/{k}': v for k, v in _reproduce_configs().items()}
    screen = _benchmark_module('screen_aggregator_nell_one')
    for k, (_, extra) in screen.CANDIDATES.items():
        out[f'screen/{k}'] = screen.BASE + extra
    select = _benchmark_module('select_nell_one')
    for k, (_, extra) in select.CANDIDATES.items():
        out[f'select/{k}'] = ['--model', 'moemeta'] + extra
    return out


def _loss_of_command(argv, data):
    from pyg_fewshot.cli.main import build_parser, run_config
    from pyg_fewshot.data import EpisodeSampler
    from pyg_fewshot.meta import MetaLearner
    from pyg_fewshot.models import build_model

    _benchmark_module('_modules')  # fixed_message, first_neighbors
    args = build_parser().parse_args(
        ['train', *argv, '--dataset', 'unused', '--output', 'unused',
         '--dim', '8'])
    config = run_config(args)
    torch.manual_seed(0)
    model = build_model(config.model, data)
    learner = MetaLearner.from_config(model, config.learner)
    loss, _ = learner.loss(EpisodeSampler(data, 1, 2, 4, seed=0).sample())
    loss.backward()
    return loss


@pytest.mark.parametrize('name', sorted(_grid_commands()))
def test_grid_configs_are_valid_training_commands(name, tiny_data):
    # A misspelt flag or setting in a NELL-One configuration would
    # otherwise surface only minutes into a benchmark run.
    assert torch.isfinite(_loss_of_command(_grid_commands()[name],
                                           tiny_data))


def test_grid_run_folders_keep_their_names():
    # Finished runs are reused by folder name: a configuration must not be
    # renamed (nor a name given to another configuration).
    assert set(_reproduce_configs()) >= {
        'metar', 'moemeta', 'moemeta-dev', 'moemeta-noagg-noproj',
        'moemeta-transe', 'moemeta-transe-sd50', 'moemeta-transe-fixed',
        'moemeta-noagg-noproj-lb', 'moemeta-noagg-noproj-nlb',
        'metar-quirks', 'moemeta-noagg-noproj-quirks',
        'moemeta-transe-sd50-quirks', 'metar-bgtasks',
        'moemeta-transe-sd50-bgtasks'}


@pytest.mark.parametrize('items, expected', [
    (['aggregator_scale=0.0', 'projection=none'],
     ['model.aggregator_kwargs.residual_scale=0.0',
      'model.projection=null']),
    (['aggregate=False', 'aggregator_learn_message=False'],
     ['model.aggregator=null']),
    (['sample_neighbors=False'], ['model.aggregator=first_neighbors']),
    (['aggregator_act=None', 'aggregator_relations=translation'],
     ['model.aggregator_kwargs.act=null',
      'model.relation_init=translation']),
    (['expert_hidden=32', 'moe=False'],
     ['model.relation_meta_kwargs.hidden_channels=32',
      'model.relation_meta_kwargs.gate_hidden_channels=32',
      'model.relation_meta=mlp']),
    (['local_adaptation=False', 'projection_init=random'],
     ['model.projection=null', 'learner.inner_steps=0',
      'model.projection_kwargs.init=random']),
])
def test_moemeta_sets_translates_the_former_options(common, items,
                                                    expected):
    out = common.moemeta_sets(items)
    assert out[0::2] == ['--set'] * len(expected)
    assert out[1::2] == expected


@pytest.mark.parametrize('variant', range(6))
def test_ablation_variants_are_valid_training_commands(common, variant,
                                                       tiny_data):
    ablations = _benchmark_module('ablations')
    _, model, flags = ablations.VARIANTS[variant]
    base = ['aggregator_scale=0.0', 'load_balance=0.1']
    if model == 'moemeta':
        own = {f.split('=')[0] for f in flags}
        if 'moe' in own:
            own.update(ablations._MOE_OPTIONS)
        flags = [kv for kv in base if kv.split('=')[0] not in own] + flags
    argv = ['--model', model] + common.moemeta_sets(flags)
    assert torch.isfinite(_loss_of_command(argv, tiny_data))


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


#: The keys of results.json that the benchmark tables read.
RESULTS_KEYS = ('model', 'dataset', 'shots', 'seed', 'steps', 'best_step',
                'train_seconds', 'stopped_early', 'dev', 'test',
                'test_random_baseline', 'test_degree_baseline', 'history',
                'config', 'config_hash',
                'threads', 'nproc', 'version', 'torch_version',
                'data_fingerprint')


def test_run_train_returns_results_and_reuses_a_finished_run(
        common, tiny_data, tmp_path, monkeypatch):
    import json

    from pyg_fewshot.data.writer import write_fewshot_folder
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    data = str(tmp_path / 'data')
    write_fewshot_folder(tiny_data, data)
    out = str(tmp_path / 'run')
    args = ['--model', 'metar', '--dataset', data, '--max-steps', '2',
            '--eval-every', '1', '--batch-size', '8', '--dim', '8',
            '--quiet', '--output', out, '--set', 'model.hidden_channels=[8]',
            '--set', 'learner.margin=2']
    res = common.run_train(args)
    assert isinstance(res, dict)
    for key in RESULTS_KEYS:
        assert key in res, key
    assert res['model'] == 'metar' and res['steps'] == 2
    assert res['config']['learner']['margin'] == 2.0
    assert res['config']['model']['hidden_channels'] == [8]
    with open(os.path.join(out, 'results.json')) as f:
        assert json.load(f) == json.loads(json.dumps(res))
    # A finished run folder is read back, not trained again.
    os.remove(os.path.join(out, 'best.pt'))
    assert common.run_train(args) == json.loads(json.dumps(res))
    assert not os.path.exists(os.path.join(out, 'best.pt'))
    # A longer budget extends it from its last checkpoint ...
    longer = list(args)
    longer[longer.index('--max-steps') + 1] = '4'
    res4 = common.run_train(longer)
    assert res4['steps'] == 4
    assert [h['step'] for h in res4['history']] == [1, 2, 3, 4]
    assert res4['history'][:2] == json.loads(json.dumps(res['history']))
    # ... and a shorter one reads the longer run back.
    assert common.run_train(args) == json.loads(json.dumps(res4))


@pytest.mark.parametrize('name,preset,shots,steps,every', [
    ('metar', 'nell-one/metar-1shot', 1, 10000, 1000),
    ('moemeta-transe-sd50', 'nell-one/moemeta-1shot', 1, 10000, 1000),
    ('metar-bgtasks', 'nell-one/metar-hybrid-1shot', 1, 10000, 1000),
    ('moemeta-transe-sd50-bgtasks', 'nell-one/moemeta-hybrid-1shot', 1,
     10000, 1000),
    ('metar-bgtasks', 'nell-one/metar-hybrid-5shot', 5, 10000, 1000),
    ('moemeta-transe-sd50-bgtasks', 'nell-one/moemeta-hybrid-5shot', 5,
     10000, 1000),
    ('metar-intrain', 'nell-one/metar-intrain-1shot', 1, 10000, 1000),
    ('metar-published-intrain',
     'nell-one/metar-intrain-1shot published-code', 1, 10000, 1000),
    ('moemeta-intrain', 'nell-one/moemeta-intrain-1shot', 1, 10000, 1000),
    ('metar', 'nell-one/metar-5shot', 5, 5000, 500),
    ('moemeta-transe-sd50', 'nell-one/moemeta-5shot', 5, 5000, 500)])
def test_nell_one_presets_are_the_reproduction_configurations(
        name, preset, shots, steps, every):
    # A preset (or presets laid over each other, space-separated here) must
    # rerun exactly one run of the table it names.
    import reproduce_nell_one
    from pyg_fewshot.cli.main import build_parser, run_config
    grid = build_parser().parse_args(
        ['train'] + list(reproduce_nell_one.CONFIGS[name]) +
        ['--dataset', 'nell-one', '--pretrain', '--shots', str(shots),
         '--seed', '0', '--max-steps', str(steps), '--eval-every',
         str(every), '--batch-size', '1024'])
    named = build_parser().parse_args(
        ['train'] + [a for p in preset.split() for a in ('--preset', p)])
    assert run_config(grid) == run_config(named)


def test_benchmark_set_tables_reuse_runs_and_skip_published_code(
        tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # restored afterwards
    import benchmark_set
    runs, table = tmp_path / 'runs', tmp_path / 'table.md'
    argv = ['--datasets', 'umls-one', 'synth-small', '--configs', 'metar',
            '--seeds', '0', '--max-steps', '4', '--eval-every', '2',
            '--batch-size', '8', '--runs-dir', str(runs), '--output',
            str(table)]
    threads = torch.get_num_threads()
    try:
        benchmark_set.main(argv)
        first = table.read_text()
        results = [runs / d / 'metar' / 's0' / 'results.json'
                   for d in ('umls-one', 'synth-small')]
        stamps = [os.stat(p).st_mtime_ns for p in results]
        assert (runs / 'data' / 'synth-small' / 'synthetic.json').is_file()
        capsys.readouterr()
        benchmark_set.main(argv)  # every run is read back, not trained
        second = table.read_text()
    finally:
        torch.set_num_threads(threads)
    assert [os.stat(p).st_mtime_ns for p in results] == stamps
    assert capsys.readouterr().err.count('(reused)') == 2

    def tables(text):  # the notes and footer hold the date and load
        return text[:text.index('\n- ')]
    assert tables(first) == tables(second)
    rows = [line.split(' | ') for line in first.splitlines()
            if line.startswith('| ')]
    assert rows[0] == ['| dataset', 'chance', 'degree', 'metar',
                       'published-metar', 'published-moemeta |']
    test_rows = {r[0][2:]: r for r in rows[1:3]}
    assert set(test_rows) == {'umls-one', 'synth-small'}
    for row in test_rows.values():
        chance, degree, mrr = float(row[1]), float(row[2]), float(row[3])
        assert 0 < chance < 1 and 0 < degree < 1 and 0 < mrr <= 1
        assert row[4:] == ['skipped', 'skipped |']
    # UMLS-One's common entities are common tails: the degree baseline is
    # far above chance there (docs/results.md).
    assert float(test_rows['umls-one'][2]) > 2 * float(
        test_rows['umls-one'][1])
    assert 'published-metar: skipped on every dataset: no checkout' in first
    assert 'published-moemeta: skipped on every dataset' in first


def test_benchmark_set_reuses_the_runs_of_an_equal_tuned_configuration(
        tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    import benchmark_set
    from pyg_fewshot.pipeline import resolve_config
    # A search whose base configuration won: MetaR's default, with the
    # model's default inner step written out.
    best = tmp_path / 'tuned' / 'umls-one' / 'metar' / 'best_config.yaml'
    best.parent.mkdir(parents=True)
    resolve_config(model='metar', overrides=['learner.inner_lr=5.0']).save(
        str(best))
    runs = tmp_path / 'runs'
    threads = torch.get_num_threads()
    try:
        benchmark_set.main([
            '--datasets', 'umls-one', '--configs', 'metar', '--tuned',
            str(tmp_path / 'tuned'), '--seeds', '0', '--max-steps', '2',
            '--eval-every', '2', '--batch-size', '8', '--runs-dir',
            str(runs)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    assert 'umls-one metar-tuned s0: the configuration of metar' in out.err
    assert not (runs / 'umls-one' / 'metar-tuned').exists()
    row = next(line for line in out.out.splitlines()
               if line.startswith('| umls-one |'))
    cells = row.split(' | ')
    assert cells[4] == cells[3]  # metar-tuned == metar (after chance, degree)


def test_benchmark_set_gives_the_published_codes_the_library_vectors(
        tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    import json

    import benchmark_set
    import numpy as np

    from pyg_fewshot.data import DataConfig, load_data
    from pyg_fewshot.data.dataset import bundled_dir
    runs = str(tmp_path / 'runs')
    plain = benchmark_set.plain_folder('umls-one', bundled_dir(), runs)
    entry = {'arg': 'umls-one'}
    folder = benchmark_set.pretrained_folder('umls-one', entry, plain, runs)
    vectors = np.load(os.path.join(folder, 'ent2vec.npy'))
    with open(os.path.join(folder, 'ent2ids')) as f:
        ent2ids = json.load(f)
    _, data = load_data(DataConfig(dataset='umls-one', pretrain=True),
                        progress=False)
    emb = data['entity'].emb.numpy()
    assert vectors.shape == (len(ent2ids), emb.shape[1])
    for i, name in enumerate(data['entity'].names):
        assert np.array_equal(vectors[ent2ids[name]], emb[i])
    for name in benchmark_set.PUBLISHED_FILES:
        assert os.path.isfile(os.path.join(folder, name))
    # Made once, then reused.
    assert benchmark_set.pretrained_folder('umls-one', entry, plain,
                                           runs) == folder


def test_learning_curves_against_steps_and_training_minutes(
        common, tiny_data, tmp_path, monkeypatch, capsys):
    import json

    from pyg_fewshot.data.writer import write_fewshot_folder
    curves = _benchmark_module('learning_curves')
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    data = str(tmp_path / 'data')
    write_fewshot_folder(tiny_data, data)
    out = str(tmp_path / 'run')
    common.run_train(['--model', 'metar', '--dataset', data, '--max-steps',
                      '4', '--eval-every', '2', '--batch-size', '8', '--dim',
                      '8', '--quiet', '--output', out])
    for x in ('steps', 'minutes'):
        png = tmp_path / f'{x}.png'
        monkeypatch.setattr('sys.argv', ['learning_curves.py', out, '--x', x,
                                         '--output', str(png)])
        curves.main()
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert '4 steps (finished), best dev MRR' in capsys.readouterr().err
    monkeypatch.setattr('sys.argv', ['learning_curves.py', out, '--reach',
                                     '0.01', '--output',
                                     str(tmp_path / 'dev.png')])
    curves.main()
    assert 'no test MRR recorded' in capsys.readouterr().err
    # A run that monitors the test set: its curve, and when it reaches a level.
    tested = str(tmp_path / 'tested')
    common.run_train(['--model', 'metar', '--dataset', data, '--max-steps',
                      '4', '--eval-every', '2', '--batch-size', '8', '--dim',
                      '8', '--quiet', '--output', tested,
                      '--set', 'trainer.monitor=[test]'])
    with open(os.path.join(tested, 'results.json')) as f:
        hist = json.load(f)['history']
    first = hist[0]['test_mrr']
    for level, expected in ((first, f"first at step {hist[0]['step']}, "),
                            (1.01, 'never reached 1.01')):
        monkeypatch.setattr('sys.argv', ['learning_curves.py', tested,
                                         '--reach', str(level), '--output',
                                         str(tmp_path / 'test.png')])
        curves.main()
        assert expected in capsys.readouterr().err
    # A run written before the history recorded training time.
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    for h in res['history']:
        del h['train_seconds']
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(res, f)
    monkeypatch.setattr('sys.argv', ['learning_curves.py', out, '--x',
                                     'minutes', '--output',
                                     str(tmp_path / 'old.png')])
    with pytest.raises(SystemExit, match='records no training time'):
        curves.main()


def test_recorded_runs_are_reused_and_drawn_without_checkpoints(
        common, tiny_data, tmp_path, monkeypatch, capsys):
    import json

    from pyg_fewshot.data.writer import write_fewshot_folder
    record = _benchmark_module('record_runs')
    curves = _benchmark_module('learning_curves')
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    data = str(tmp_path / 'data')
    write_fewshot_folder(tiny_data, data)
    run = tmp_path / 'runs' / 'grid' / 'metar_1shot_s0'
    args = ['--model', 'metar', '--dataset', data, '--max-steps', '2',
            '--eval-every', '1', '--batch-size', '8', '--dim', '8',
            '--quiet']
    res = common.run_train(args + ['--output', str(run)])
    # An interrupted run (no results.json) is refused; nothing is copied.
    (tmp_path / 'runs' / 'grid' / 'unfinished').mkdir()
    into = tmp_path / 'records'
    monkeypatch.setattr('sys.argv', [
        'record_runs.py', str(run), str(run.parent / 'unfinished'),
        '--into', str(into)])
    with pytest.raises(SystemExit, match='unfinished: no results.json'):
        record.main()
    assert not into.exists()
    monkeypatch.setattr('sys.argv', ['record_runs.py', str(run), '--into',
                                     str(into)])
    record.main()
    kept = into / 'grid' / 'metar_1shot_s0'
    assert sorted(os.listdir(kept)) == ['config.yaml', 'results.json']
    # The record stands for the run: reused as a finished run, drawn as one.
    again = common.run_train(args + ['--output', str(kept)])
    assert again == json.loads(json.dumps(res))
    assert sorted(os.listdir(kept)) == ['config.yaml', 'results.json']
    monkeypatch.setattr('sys.argv', ['learning_curves.py', str(kept),
                                     '--output', str(tmp_path / 'c.png')])
    curves.main()
    assert '2 steps (finished)' in capsys.readouterr().err


def test_transductive_reference_holds_out_half_of_each_query_set(
        tiny_data, tmp_path, monkeypatch, capsys):
    from pyg_fewshot.data import load_dataset
    from pyg_fewshot.data.hetero import split_relations, task_triples
    from pyg_fewshot.data.writer import write_fewshot_folder
    ref = _benchmark_module('transductive_reference')
    train, held = ref.triples(tiny_data, 0, shots=1)
    R = len(tiny_data.relation_names)
    for split in ('dev', 'test'):
        rels = split_relations(tiny_data, split).tolist()
        assert [rel for rel, _ in held[split]] == rels
        for rel, query in held[split]:
            trip = task_triples(tiny_data, rel)
            assert query.size(0) == (trip.size(0) - 1) // 2
            seen = train[train[:, 1] == R + rel][:, [0, 2]]
            # The support is trained on; no held-out query is.
            assert (seen == trip[0]).all(1).any()
            assert not (seen.unsqueeze(1) == query.unsqueeze(0)).all(
                -1).any()
            assert seen.size(0) + query.size(0) == trip.size(0)
    # The planted offsets (tail = head + k mod N) are rotations of a
    # circle: RotatE learns them from the triples it sees.
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    write_fewshot_folder(tiny_data, str(tmp_path / 'data'))
    monkeypatch.setattr('sys.argv', [
        'transductive_reference.py', '--dataset', str(tmp_path / 'data'),
        '--models', 'rotate', '--seeds', '0', '--epochs', '300',
        '--eval-every', '60', '--dim', '16'])
    ref.main()
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines()
               if line.startswith('| rotate |'))
    chance = float(out.split('chance ')[1].split(',')[0])
    assert chance < 0.2 and float(row.split(' | ')[1]) > 0.9
    assert load_dataset(str(tmp_path / 'data'))[0]['entity'].num_nodes == 40
