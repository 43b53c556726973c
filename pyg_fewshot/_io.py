r"""Atomic file writes: a crash never leaves a half-written file behind."""
import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    r"""Yields a temporary path in the directory of ``path``; on success it is
    renamed onto ``path`` (atomic on POSIX), on failure it is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                               suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    r""":func:`torch.save` ``obj`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_json(obj: Any, path: str, **kwargs: Any) -> None:
    r"""Writes ``obj`` as JSON to ``path`` atomically."""
    kwargs.setdefault('indent', 2)
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, **kwargs)
            f.write('\n')
