import csv
import json
import math
import os
import sys

import pytest

import pyg_fewshot
from pyg_fewshot.pipeline.trackers import (Tracker, final_metrics,
                                           tracker_resolver)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'reliability'))
from _cli import files_under, run_cli, write_dataset  # noqa: E402

#: Three steps, validations at steps 2 and 3.
FAST = ['--max-steps', '3', '--eval-every', '2', '--batch-size', '4',
        '--dim', '8', '--quiet']
SETTINGS = dict(max_steps=3, overrides={'trainer.eval_every': 2,
                                        'episodes.batch_size': 4,
                                        'model.embedding_dim': 8})


def read_results(out):
    with open(os.path.join(out, 'results.json')) as f:
        return json.load(f)


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def untimed(rows):
    """Rows without the training time of each validation."""
    return [{k: v for k, v in r.items() if k != 'train_seconds'}
            for r in rows]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def data(tmp_path, cli_cache):
    return write_dataset(tmp_path / 'data')


@pytest.fixture
def moe_run(data, tmp_path, capsys):
    r"""A MoEMeta run of ``pyg-fewshot train`` with the three trackers that
    write files."""
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'moemeta', '--dataset', data,
                            '--output', out, '--tracker', 'tensorboard',
                            '--tracker', 'csv', '--tracker', 'json'] + FAST,
                           capsys)
    assert code == 0, err
    return out


def test_tensorboard_events_are_readable_by_tensorboard(moe_run):
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    res = read_results(moe_run)
    logdir = os.path.join(moe_run, 'tensorboard')
    assert any(os.path.basename(f).startswith('events.out.tfevents')
               for f in files_under(logdir))
    acc = EventAccumulator(logdir, size_guidance={'scalars': 0,
                                                  'tensors': 0})
    acc.Reload()
    scalars = acc.Tags()['scalars']

    def series(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    # One loss per step; MoEMeta also logs its routing.
    assert [s for s, _ in series('train/query_loss')] == [1, 2, 3]
    assert all(math.isfinite(v) for _, v in series('train/query_loss'))
    assert {'train/aux_loss', 'train/routing/max_share'} <= set(scalars)
    share = series('train/routing/max_share')
    assert [s for s, _ in share] == [1, 2, 3]
    assert all(0 < v <= 1 for _, v in share)
    # One dev MRR per validation: the history of results.json.
    assert series('dev/mrr') == [
        (h['step'], pytest.approx(h['score'], rel=1e-6))
        for h in res['history']]
    assert series('train/mean_query_loss') == [
        (h['step'], pytest.approx(h['train_loss'], rel=1e-6))
        for h in res['history']]
    # The final metrics, at the last step.
    assert series('final/test/mrr') == [
        (3, pytest.approx(res['test']['mrr'], rel=1e-6))]
    assert series('final/dev/mrr') == [
        (3, pytest.approx(res['dev']['mrr'], rel=1e-6))]
    # The configuration as text.
    tag, = [t for t in acc.Tags()['tensors'] if t.startswith('config')]
    text = acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()
    assert 'name: moemeta' in text
    assert f"dataset: {res['config']['data']['dataset']}" in text
    assert 'max_steps: 3' in text


def test_csv_files(moe_run):
    res = read_results(moe_run)
    train = read_csv(os.path.join(moe_run, 'train.csv'))
    assert [int(r['step']) for r in train] == [1, 2, 3]
    assert {'query_loss', 'aux_loss', 'routing/max_share'} <= set(train[0])
    assert all(0 < float(r['routing/max_share']) <= 1 for r in train)
    validation = read_csv(os.path.join(moe_run, 'validation.csv'))
    assert [(int(r['step']), float(r['score']), float(r['train_loss']))
            for r in validation] == [
        (h['step'], h['score'], h['train_loss']) for h in res['history']]
    # The mean query loss since the previous validation.
    losses = [float(r['query_loss']) for r in train]
    assert float(validation[0]['train_loss']) == pytest.approx(
        sum(losses[:2]) / 2)
    assert float(validation[1]['train_loss']) == pytest.approx(losses[2])
    final = {r['metric']: float(r['value'])
             for r in read_csv(os.path.join(moe_run, 'final.csv'))}
    assert final == final_metrics(res)
    assert final['test/mrr'] == res['test']['mrr']
    assert final['dev/hits@10'] == res['dev']['hits@10']


def test_json_events(moe_run):
    res = read_results(moe_run)
    events = read_jsonl(os.path.join(moe_run, 'metrics.jsonl'))
    assert [e['event'] for e in events] == [
        'config', 'step', 'step', 'validation', 'step', 'validation',
        'final']
    assert events[0]['config'] == res['config']
    steps = [e for e in events if e['event'] == 'step']
    assert [e['step'] for e in steps] == [1, 2, 3]
    assert all('query_loss' in e and 0 < e['routing/max_share'] <= 1
               for e in steps)
    validations = [{k: v for k, v in e.items() if k != 'event'}
                   for e in events if e['event'] == 'validation']
    assert validations == res['history']
    final = {k: v for k, v in events[-1].items() if k != 'event'}
    assert final == final_metrics(res)
    assert final['test/mrr'] == res['test']['mrr']


def test_pipeline_trackers_write_what_the_cli_writes(moe_run, data,
                                                     tmp_path):
    out = str(tmp_path / 'api')
    pyg_fewshot.pipeline(model='moemeta', dataset=data, output=out,
                         trackers=['csv', 'json', 'tensorboard'],
                         **SETTINGS)
    assert os.listdir(os.path.join(out, 'tensorboard'))
    # Same seed, same numbers: the step losses and validations agree (all
    # but the training time of each validation).
    for name in ('train.csv', 'validation.csv', 'final.csv'):
        assert untimed(read_csv(os.path.join(out, name))) == untimed(
            read_csv(os.path.join(moe_run, name))), name
    assert untimed(read_jsonl(os.path.join(out, 'metrics.jsonl'))) == \
        untimed(read_jsonl(os.path.join(moe_run, 'metrics.jsonl')))


def test_metar_logs_no_routing(data, tmp_path):
    out = str(tmp_path / 'metar')
    pyg_fewshot.pipeline(model='metar', dataset=data, output=out,
                         trackers=['csv'], **SETTINGS)
    train = read_csv(os.path.join(out, 'train.csv'))
    assert len(train) == 3
    assert 'query_loss' in train[0]
    assert not any(k.startswith('routing') for k in train[0])


def test_tracker_objects_are_told_in_order(data, tmp_path):
    class Recorder(Tracker):
        def __init__(self):
            self.calls = []

        def start(self, config):
            self.calls.append(('start', config['model']['name']))

        def on_step(self, step, logs):
            self.calls.append(('step', step))

        def on_validation(self, step, entry):
            self.calls.append(('validation', step, entry['score']))

        def finish(self, results):
            self.calls.append(('finish', results['test']['mrr']))

    recorder = Recorder()
    result = pyg_fewshot.pipeline(model='metar', dataset=data,
                                  trackers=[recorder], **SETTINGS)
    h = result.history
    assert recorder.calls == [
        ('start', 'metar'), ('step', 1), ('step', 2),
        ('validation', 2, h[0]['score']), ('step', 3),
        ('validation', 3, h[1]['score']), ('finish', result.test['mrr'])]


def test_unknown_tracker_is_refused(data, tmp_path, capsys):
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', str(tmp_path / 'run'), '--tracker',
                            'nope'] + FAST, capsys)
    assert code == 2
    assert "--tracker: invalid choice: 'nope'" in err
    assert not (tmp_path / 'run').exists()
    with pytest.raises(ValueError, match="Unknown tracker 'nope'"):
        tracker_resolver('nope', str(tmp_path))


@pytest.mark.parametrize('name', ['mlflow', 'wandb'])
def test_missing_package_says_what_to_install(name, data, tmp_path, capsys,
                                              monkeypatch):
    # As if the package were not installed (neither is, here).
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as e:
        tracker_resolver(name, str(tmp_path))
    assert str(e.value) == (f"the '{name}' tracker needs the '{name}' "
                            f'package: pip install {name}')
    out = str(tmp_path / 'run')
    code, _, err = run_cli(['train', '--model', 'metar', '--dataset', data,
                            '--output', out, '--tracker', name] + FAST,
                           capsys)
    assert code == 2
    assert err.splitlines() == [f'pyg-fewshot train: error: {e.value}']
    assert not os.path.exists(os.path.join(out, 'results.json'))
    with pytest.raises(ImportError, match=f'pip install {name}'):
        pyg_fewshot.pipeline(model='metar', dataset=data, trackers=[name],
                             **SETTINGS)


def test_folder_trackers_need_an_output(data):
    with pytest.raises(ValueError, match="'csv' tracker writes into the run "
                       'folder'):
        pyg_fewshot.pipeline(model='metar', dataset=data, trackers=['csv'],
                             **SETTINGS)
