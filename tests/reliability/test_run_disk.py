"""Item 6: temporary files of a write that was killed are removed on the
next start in the folder, and a full disk is reported as such, naming the
file, while the previous checkpoint is kept."""
import collections
import errno
import json
import os

import pytest
import torch

import pyg_fewshot._io as io
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import MetaLearner, MetaTrainer, load_checkpoint
from pyg_fewshot.models import build_model

TORCH_FULL_DISK = ('[enforce fail at inline_container.cc:672] . unexpected '
                   'pos 704 vs 598')


def make_trainer(data, out, steps):
    torch.manual_seed(0)
    model = build_model('metar', data, embedding_dim=8,
                        hidden_channels=(8, ))
    sampler = EpisodeSampler(data, 2, batch_size=8, seed=0)
    return MetaTrainer(MetaLearner(model), sampler, str(out),
                       validate=lambda: 0.0, max_steps=steps, eval_every=2,
                       progress=False)


@pytest.fixture
def three_mib_free(monkeypatch):
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(io.shutil, 'disk_usage',
                        lambda path: usage(2**30, 2**30 - 3 * 2**20,
                                           3 * 2**20))


def test_run_start_removes_tmp_files_of_killed_writes(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, 2).fit()
    # What a kill inside atomic_path leaves behind, for each kind of file.
    stale = ['.last.pt.k2j_9x0a.tmp', '.best.pt.abcdefgh.tmp',
             '.results.json.0123_xyz.tmp']
    other = ['notes.tmp', '.hidden.tmp', 'keep.pt.abcdefgh.tmp']
    for name in stale + other:
        (tmp_path / name).write_bytes(b'partial')
    make_trainer(tiny_data, tmp_path, 4).fit()
    assert sorted(os.listdir(tmp_path)) == sorted(['best.pt', 'last.pt'] +
                                                  other)
    assert load_checkpoint(str(tmp_path / 'last.pt'))['step'] == 4


def test_run_torch_full_disk_error_names_the_file(tiny_data, tmp_path,
                                                   monkeypatch,
                                                   three_mib_free):
    make_trainer(tiny_data, tmp_path, 2).fit()
    last = tmp_path / 'last.pt'
    before = last.read_bytes()

    def full_disk_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as fh:
            fh.write(b'partial')
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(torch, 'save', full_disk_save)
    with pytest.raises(OSError) as info:
        make_trainer(tiny_data, tmp_path, 4).fit()
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"[Errno 28] No space left on device while writing '{last}' "
        f"(3.0 MiB free in '{tmp_path}'; any previous 'last.pt' is kept; "
        f"torch.save: {TORCH_FULL_DISK})")
    # The previous checkpoint is intact and no temporary file is left.
    assert last.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['best.pt', 'last.pt']


def test_run_full_disk_while_writing_json_names_the_file(tmp_path,
                                                         monkeypatch,
                                                         three_mib_free):
    path = tmp_path / 'results.json'
    path.write_text('{"old": 1}\n')

    def full_disk_dump(obj, f, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, 'dump', full_disk_dump)
    with pytest.raises(OSError) as info:
        io.atomic_write_json({'new': 2}, str(path))
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"[Errno 28] No space left on device while writing '{path}' "
        f"(3.0 MiB free in '{tmp_path}'; any previous 'results.json' is "
        f"kept)")
    assert path.read_text() == '{"old": 1}\n'
    assert os.listdir(tmp_path) == ['results.json']


def test_run_other_torch_errors_pass_through(tmp_path, monkeypatch):
    def broken_save(obj, f, *args, **kwargs):
        raise RuntimeError('cannot pickle this object')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(RuntimeError, match='^cannot pickle this object$'):
        io.atomic_torch_save({}, str(tmp_path / 'x.pt'))
    assert os.listdir(tmp_path) == []
