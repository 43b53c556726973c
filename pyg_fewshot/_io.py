r"""Atomic file writes (a crash never leaves a half-written file behind),
their clean-up after a kill, and the lock that gives a run folder a single
writer."""
import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Any, Dict, Iterator, List

import torch

try:  # POSIX only; elsewhere run folders are not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

LOCK_NAME = '.lock'

# The names atomic_path gives its temporary files: '.' + target name + '.' +
# the 8 characters of tempfile's random name sequence + '.tmp'.
_TMP_NAME = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')

# What torch.save reports when its writer cannot write (the errno is lost on
# the way through PyTorchStreamWriter / std::ostream).
_TORCH_WRITE_FAILURES = ('inline_container', 'PytorchStreamWriter',
                         'iostream error', 'file write failed')


def _no_space(path: str, cause: str = '') -> OSError:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f'{shutil.disk_usage(folder).free / 2**20:.1f} MiB free'
    except OSError:
        free = 'free space unknown'
    detail = f'; {cause}' if cause else ''
    return OSError(errno.ENOSPC,
                   f"No space left on device while writing '{path}' ({free} "
                   f"in '{folder}'; any previous '{os.path.basename(path)}' "
                   f"is kept{detail})")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    r"""Yields a temporary path in the directory of ``path``; on success it is
    renamed onto ``path`` (atomic on POSIX), on failure it is removed.

    A process killed while writing leaves its temporary file
    (``.<name>.XXXXXXXX.tmp``) behind; :func:`remove_stale_tmp` removes it.
    A full disk is reported as :class:`OSError` with ``errno.ENOSPC`` naming
    ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                                   suffix='.tmp', dir=folder)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _no_space(path) from e
        raise
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and (
                path not in str(e)):
            # The bare '[Errno 28] No space left on device' names no file.
            raise _no_space(path) from e
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    r""":func:`torch.save` ``obj`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            # A full disk surfaces as e.g. '[enforce fail at
            # inline_container.cc:672] . unexpected pos 704 vs 598'.
            if any(s in str(e) for s in _TORCH_WRITE_FAILURES):
                raise _no_space(path, f'torch.save: {e}') from e
            raise


def atomic_write_json(obj: Any, path: str, **kwargs: Any) -> None:
    r"""Writes ``obj`` as JSON to ``path`` atomically."""
    kwargs.setdefault('indent', 2)
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, **kwargs)
            f.write('\n')


def remove_stale_tmp(folder: str) -> List[str]:
    r"""Removes the temporary files that :func:`atomic_path` left in
    ``folder`` when its process was killed mid-write, and returns their
    names. Call it only while no other process writes there (*e.g.* under
    :func:`run_lock`): a live writer's file looks the same."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(folder)):
            if _TMP_NAME.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
                    removed.append(name)
    return removed


class FolderLockedError(BlockingIOError):
    r"""Another process holds the lock of a run folder (``errno`` is
    ``EWOULDBLOCK``, ``filename`` the lock file)."""


# Locks this process holds: real path of the lock file -> [depth, fd].
_held: Dict[str, List[int]] = {}


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().split()[0])
        return f'process {pid}'
    return 'another process'


def _acquire(path: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            folder = os.path.dirname(path)
            # str(): "[Errno 11] The run folder ... holds its lock: 'PATH'".
            raise FolderLockedError(
                errno.EWOULDBLOCK,
                f"The run folder '{folder}' is in use by {holder} (wait for "
                f"it to finish, or choose another folder with --output DIR); "
                f"{holder} holds its lock", path) from None
        # The holder unlinks the file before unlocking, so we may have
        # locked a file that is gone: then try again on the current one.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder: str) -> Iterator[str]:
    r"""Holds an exclusive, non-blocking lock on the run folder ``folder``
    (``fcntl.flock`` on ``folder/.lock``, which holds the owner's process
    id) and yields the lock file's path.

    A second process raises :class:`FolderLockedError` at once. The lock is
    re-entrant within a process, dies with its process (so a killed run never
    leaves a stale lock), and its file is removed on release. Without
    :mod:`fcntl` (Windows) nothing is locked.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    key = os.path.realpath(path)
    if fcntl is None:  # pragma: no cover
        yield path
        return
    if key in _held:
        _held[key][0] += 1
    else:
        _held[key] = [1, _acquire(path)]
    try:
        yield path
    finally:
        entry = _held[key]
        entry[0] -= 1
        if entry[0] == 0:
            del _held[key]
            # Unlink while still locked (see _acquire), then unlock.
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            os.close(entry[1])
