"""Items 4 and 7: the processed cache is loaded with ``weights_only=True``
only (a cache that fails to load is rebuilt, never unpickled), one process
builds it while concurrent ones wait, and temporary files of a killed build
are removed."""
import multiprocessing
import os
import re
import signal
import time

import pytest
import torch

from pyg_fewshot.data.dataset import FewShotKGDataset, load_hetero
from pyg_fewshot.data.writer import write_fewshot_folder

@pytest.fixture
def raw(tiny_data, tmp_path):
    folder = str(tmp_path / 'raw')
    write_fewshot_folder(tiny_data, folder)
    return folder


def assert_same(a, b):
    for key in ('bg_edge_index', 'task_triples', 'task_ptr', 'cand_idx',
                'true_keys', 'nbr_ptr', 'nbr_ent', 'nbr_rel'):
        assert torch.equal(a[key], b[key]), key
    assert a.task_relation_names == b.task_relation_names
    assert a['entity'].names == b['entity'].names


class Payload:
    r"""Unpickling this runs ``os.mkdir(marker)``: a stand-in for a shell
    command in a crafted cache file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker, )


def _rebuilt(root, raw, what):
    r"""Loads ``root``, expecting one warning that data.pt is unreadable
    (``what``: a regex of the error) and rebuilt."""
    path = os.path.join(root, 'processed', 'data.pt')
    with pytest.warns(UserWarning) as record:
        ds = FewShotKGDataset(root, raw_dir=raw)
    messages = [str(w.message) for w in record]
    pattern = (re.escape(f"Unreadable processed file '{path}' (") + what +
               r".*\); processing the dataset again")
    assert [m for m in messages if re.fullmatch(pattern, m, re.S)], messages
    return ds


def test_crafted_cache_is_rebuilt_not_unpickled(raw, tmp_path):
    root = str(tmp_path / 'root')
    first = FewShotKGDataset(root, raw_dir=raw).data
    path = os.path.join(root, 'processed', 'data.pt')
    marker = str(tmp_path / 'code-ran')
    torch.save((Payload(marker), None, None), path)
    # meta.json still vouches for the files: only the load can catch it.
    ds = _rebuilt(root, raw, 'UnpicklingError: ')
    assert not os.path.exists(marker)
    assert_same(ds.data, first)
    assert_same(load_hetero(path), first)  # data.pt was replaced

    # The file was a real threat: a plain unpickling runs the payload.
    torch.save((Payload(marker), None, None), str(tmp_path / 'evil.pt'))
    torch.load(str(tmp_path / 'evil.pt'), weights_only=False)
    assert os.path.isdir(marker)


def test_truncated_cache_is_rebuilt(raw, tmp_path):
    root = str(tmp_path / 'root')
    first = FewShotKGDataset(root, raw_dir=raw).data
    path = os.path.join(root, 'processed', 'data.pt')
    with open(path, 'rb') as f:
        head = f.read(os.path.getsize(path) // 2)
    with open(path, 'wb') as f:
        f.write(head)
    # The error depends on where the archive is cut.
    ds = _rebuilt(root, raw, r'\w+Error: ')
    assert_same(ds.data, first)
    assert sorted(os.listdir(os.path.join(root, 'processed'))) == [
        'data.pt', 'meta.json'
    ]


def test_cache_of_another_shape_is_rebuilt(raw, tmp_path):
    # Loads safely, but is no saved graph.
    root = str(tmp_path / 'root')
    first = FewShotKGDataset(root, raw_dir=raw).data
    path = os.path.join(root, 'processed', 'data.pt')
    torch.save({'x': torch.zeros(2)}, path)
    ds = _rebuilt(root, raw, re.escape(f"TypeError: '{path}' does not hold "
                                       f"a saved HeteroData"))
    assert_same(ds.data, first)


# The concurrency tests fork (torch is already imported, so a process
# starts in milliseconds); each child's lock is its own open file.
_fork = multiprocessing.get_context('fork')


def _worker(root, raw, barrier, log, force):
    def pre(data):  # logs every processing, which lasts a second
        with open(log, 'a') as f:
            f.write(f'{os.getpid()}\n')
        time.sleep(1.0)
        return data

    barrier.wait(timeout=60)  # all start processing together
    ds = FewShotKGDataset(root, raw_dir=raw, pre_transform=pre, log=False,
                          force_reload=force)
    assert ds.summary()['num_train_triples'] == 48


def _run_together(root, raw, tmp_path, force, count=3):
    log = str(tmp_path / 'log')
    open(log, 'w').close()
    barrier = _fork.Barrier(count)
    procs = [
        _fork.Process(target=_worker, args=(root, raw, barrier, log, force))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * count
    with open(log) as f:
        return f.read().split()


def test_concurrent_processing_builds_once(raw, tmp_path):
    root = str(tmp_path / 'root')
    builders = _run_together(root, raw, tmp_path, force=False)
    assert len(builders) == 1  # the others waited, then loaded its build
    # The lock file goes with its holder.
    assert sorted(os.listdir(os.path.join(root, 'processed'))) == [
        'data.pt', 'meta.json'
    ]


def test_concurrent_force_reload_builds_once(raw, tmp_path):
    root = str(tmp_path / 'root')
    FewShotKGDataset(root, raw_dir=raw)
    # Each asks for a rebuild; the build done while they waited counts.
    builders = _run_together(root, raw, tmp_path, force=True)
    assert len(builders) == 1


def _killed_build(root, raw):
    def save(obj, path):  # dies half-way through writing data.pt
        with open(path, 'wb') as f:
            f.write(b'partial')
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save  # in this child only
    FewShotKGDataset(root, raw_dir=raw, log=False)


def test_orphan_tmp_files_of_a_killed_build_are_removed(raw, tmp_path):
    root = str(tmp_path / 'root')
    processed = os.path.join(root, 'processed')
    proc = _fork.Process(target=_killed_build, args=(root, raw))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL
    # The killed holder left its lock file; its lock died with it.
    left = sorted(os.listdir(processed))
    assert len(left) == 2 and left[1] == '.processing.lock', left
    assert re.fullmatch(r'\.data\.pt\.\w{8}\.tmp', left[0]), left
    # A temporary file of another writer (a TransE cache written without
    # this lock) may be live: it stays.
    foreign = '.transe-0123.pt.abcd1234.tmp'
    open(os.path.join(processed, foreign), 'w').close()

    ds = FewShotKGDataset(root, raw_dir=raw)
    assert ds.summary()['num_train_triples'] == 48
    assert sorted(os.listdir(processed)) == [foreign, 'data.pt', 'meta.json']
