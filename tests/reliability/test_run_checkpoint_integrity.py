"""Item 3: a checkpoint is tied to its data and to its own bytes: other
data (even the same KG with renumbered entities) and flipped bytes are
refused with one line naming the checkpoint file."""
import gzip
import json
import os
import shutil
import struct
import zipfile

import pytest
import torch

import pyg_fewshot
from pyg_fewshot.cli.main import main
from pyg_fewshot.data import load_dataset
from pyg_fewshot.data.fingerprint import data_fingerprint
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.meta.checkpoint import CheckpointError, state_checksum
from pyg_fewshot.models import build_model

UMLS = os.path.join(os.path.dirname(pyg_fewshot.__file__), 'data', 'bundled',
                    'umls_one')
FAST = ['--max-steps', '4', '--eval-every', '2', '--batch-size', '16',
        '--dim', '8', '--quiet', '--debug']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    r"""A short UMLS-One run and its (module-wide) processed-data cache."""
    cache = str(tmp_path_factory.mktemp('cache'))
    out = tmp_path_factory.mktemp('run')
    os.environ['PYG_FEWSHOT_HOME'] = cache
    try:
        assert main(['train', '--model', 'metar', '--output', str(out)] +
                    FAST) == 0
    finally:
        del os.environ['PYG_FEWSHOT_HOME']
    return out, cache


@pytest.fixture(autouse=True)
def _cache(run, monkeypatch):
    monkeypatch.setenv('PYG_FEWSHOT_HOME', run[1])


def permuted_umls(folder):
    r"""UMLS-One with its entity ids permuted: the same KG, numbered
    differently."""
    shutil.copytree(UMLS, folder)
    path = os.path.join(folder, 'ent2ids.gz')
    with gzip.open(path, 'rt') as f:
        ent2id = json.load(f)
    perm = torch.randperm(len(ent2id), generator=torch.Generator(
    ).manual_seed(0)).tolist()
    with gzip.open(path, 'wt') as f:
        json.dump({k: perm[v] for k, v in ent2id.items()}, f)
    return str(folder)


def data_message(path, old, new):
    return (f"Checkpoint '{path}' was trained on other data: its data "
            f"fingerprint is {old[:12]}, the loaded dataset's is {new[:12]} "
            f"(other entity ids, edges, task triples or candidates); "
            f"evaluate it on the dataset it was trained on")


def test_run_evaluate_on_permuted_entity_ids_is_refused(run, tmp_path):
    out, cache = run
    folder = permuted_umls(tmp_path / 'umls-permuted')
    old = json.loads((out / 'results.json').read_text())['data_fingerprint']
    new = data_fingerprint(load_dataset(folder, root=cache)[0])
    assert old != new
    with pytest.raises(CheckpointError) as info:
        main(['evaluate', '--checkpoint', str(out), '--dataset', folder,
              '--debug'])
    assert str(info.value) == data_message(out / 'best.pt', old, new)


def test_run_experts_on_permuted_entity_ids_is_refused(run, tmp_path):
    out, cache = run
    folder = permuted_umls(tmp_path / 'umls-permuted')
    old = json.loads((out / 'results.json').read_text())['data_fingerprint']
    new = data_fingerprint(load_dataset(folder, root=cache)[0])
    with pytest.raises(CheckpointError) as info:
        main(['experts', '--checkpoint', str(out / 'best.pt'), '--dataset',
              folder, '--no-plot', '--debug'])
    assert str(info.value) == data_message(out / 'best.pt', old, new)
    assert not (out / 'experts.json').exists()


def test_run_evaluate_on_a_copy_of_the_same_data_is_accepted(run, tmp_path,
                                                             capsys):
    # The fingerprint is of the KG, not of where its files are.
    out, _ = run
    folder = tmp_path / 'umls-copy'
    shutil.copytree(UMLS, folder)
    capsys.readouterr()
    assert main(['evaluate', '--checkpoint', str(out), '--dataset',
                 str(folder), '--split', 'test', '--debug']) == 0
    res = json.loads((out / 'results.json').read_text())
    assert f"MRR {res['test']['mrr']:.4f}" in capsys.readouterr().out


def flip_bytes(path, count=64):
    r"""Inverts ``count`` bytes in the middle of the largest tensor stored
    in a :func:`torch.save` zip; the file still loads."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack('<HH', header[26:30])
        at = (info.header_offset + 30 + name_len + extra_len +
              info.file_size // 2)
        f.seek(at)
        data = f.read(count)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in data))


def test_run_flipped_bytes_in_best_pt_are_refused(run, tmp_path):
    out, _ = run
    copy = tmp_path / 'run'
    shutil.copytree(out, copy)
    best = str(copy / 'best.pt')
    stored = torch.load(best, weights_only=True)['checksum']
    flip_bytes(best)
    state = torch.load(best, weights_only=True)  # loads without complaint
    found = state_checksum(state)
    assert found != stored == state['checksum']
    with pytest.raises(CheckpointError) as info:
        main(['evaluate', '--checkpoint', str(copy), '--debug'])
    assert str(info.value) == (
        f"Checkpoint '{best}' is corrupt: its contents do not match the "
        f"checksum written with it ({stored[:19]}... stored, {found[:19]}... "
        f"found); restore it from a copy or retrain")


def test_run_flipped_bytes_in_last_pt_stop_a_resume(tiny_data, tmp_path):
    def trainer(steps):
        torch.manual_seed(0)
        model = build_model('metar', tiny_data, embedding_dim=8,
                            hidden_channels=(8, ))
        sampler = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0)
        return MetaTrainer(MetaLearner(model), sampler, str(tmp_path),
                           validate=lambda: 0.0, max_steps=steps,
                           eval_every=2, progress=False)

    trainer(2).fit()
    last = str(tmp_path / 'last.pt')
    flip_bytes(last)
    with pytest.raises(CheckpointError, match=(
            f"^Checkpoint '{last}' is corrupt: its contents do not match "
            f"the checksum written with it")):
        trainer(4).fit()
