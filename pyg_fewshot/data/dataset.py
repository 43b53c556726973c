r"""The few-shot KG dataset: a :class:`~torch_geometric.data.InMemoryDataset`
whose one graph is the :class:`~torch_geometric.data.HeteroData` of
:mod:`pyg_fewshot.data.hetero`."""
import contextlib
import hashlib
import logging
import os
import os.path as osp
import re
import sys
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData, InMemoryDataset

from .._io import atomic_torch_save, atomic_write_json
from .hetero import ENTITY, summary
from .io import (
    REQUIRED_FILES,
    FewShotDataError,
    FewShotDataWarning,
    MissingRawFilesError,
    check_raw_folder,
    check_shots,
    raw_fingerprint,
    read_fewshot_folder,
    read_json,
    validate,
)

try:  # POSIX only; elsewhere concurrent processing is not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

logger = logging.getLogger(__name__)

#: Bumped whenever the processed format or the reader's output changes
#: (3: duplicate triples dropped, ``e1rel_e2.json`` keys resolved against
#: the task pairs).
PROCESSED_VERSION = 3

#: The lock file that serialises processing, inside the processed folder.
LOCK_NAME = '.processing.lock'

#: Names accepted by :func:`load_dataset` for the bundled UMLS-One copy.
BUNDLED_NAMES = ('umls-one', 'umls_one', 'umlsone', 'umls')


def bundled_dir(name: str = 'umls-one') -> str:
    r"""The folder of a bundled dataset inside the installed package."""
    if name.strip().lower() not in BUNDLED_NAMES:
        raise ValueError(f"No bundled dataset '{name}' (bundled: umls-one)")
    return osp.join(osp.dirname(osp.abspath(__file__)), 'bundled',
                    'umls_one')


def cache_home() -> str:
    r"""``$PYG_FEWSHOT_HOME`` if set, else ``~/.cache/pyg_fewshot``."""
    home = os.environ.get('PYG_FEWSHOT_HOME')
    return osp.expanduser(home) if home else osp.join(
        osp.expanduser('~'), '.cache', 'pyg_fewshot')


def default_root(name: str, raw_dir: str) -> str:
    r"""``<cache_home()>/<name>-<8 hex digits of the absolute raw path>``."""
    digest = hashlib.sha1(osp.abspath(raw_dir).encode()).hexdigest()[:8]
    safe = re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'dataset'
    return osp.join(cache_home(), f'{safe}-{digest}')


_NAMES_BLOB = 'names_utf8'


def save_hetero(data: HeteroData, path: str) -> None:
    r"""Saves ``data`` atomically in :class:`InMemoryDataset` format, with
    ``data['entity'].names`` packed as one UTF-8 byte tensor (unpickling a
    list of 68 K strings with ``weights_only=True`` takes ~1 s; this takes
    milliseconds)."""
    d = data.to_dict()
    names = d.get(ENTITY, {}).get('names')
    if (isinstance(names, list) and names
            and all(isinstance(n, str) and '\n' not in n for n in names)):
        d[ENTITY] = {k: v for k, v in d[ENTITY].items() if k != 'names'}
        d[ENTITY][_NAMES_BLOB] = torch.frombuffer(
            bytearray('\n'.join(names).encode('utf-8')), dtype=torch.uint8)
    atomic_torch_save((d, None, data.__class__), path)


def unpack_names(data: HeteroData) -> HeteroData:
    r"""Reverses the packing of :func:`save_hetero` in place."""
    store = data[ENTITY]
    if _NAMES_BLOB in store:
        blob = store[_NAMES_BLOB]
        del store[_NAMES_BLOB]
        text = bytes(blob.numpy()).decode('utf-8')
        store.names = text.split('\n')
    return data


# Global attributes every processed graph holds (schema of hetero.py).
_SCHEMA = ('relation_names', 'bg_edge_index', 'bg_edge_type', 'nbr_ptr',
           'nbr_ent', 'nbr_rel', 'train_rel', 'dev_rel', 'test_rel',
           'task_relation_names', 'task_ptr', 'task_triples', 'cand_ptr',
           'cand_idx', 'true_keys')


def load_hetero(path: str) -> HeteroData:
    r"""Loads a file written by :func:`save_hetero` with
    ``torch.load(weights_only=True)`` only.

    PyG's :meth:`InMemoryDataset.load` retries with ``weights_only=False``
    when the safe load fails, which runs whatever a crafted file pickles;
    here a file that fails the safe load raises, and the caller rebuilds it.
    """
    out = torch.load(path, map_location='cpu', weights_only=True)
    if not (isinstance(out, tuple) and len(out) == 3
            and isinstance(out[0], dict) and isinstance(out[2], type)
            and issubclass(out[2], HeteroData)):
        raise TypeError(f"'{path}' does not hold a saved HeteroData")
    data = unpack_names(out[2].from_dict(out[0]))
    missing = [key for key in _SCHEMA if key not in data]
    if missing or ENTITY not in data.node_types:
        raise TypeError(f"'{path}' misses {', '.join(missing) or ENTITY}")
    return data


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    r"""Holds an exclusive, blocking :func:`fcntl.flock` on
    ``folder/.processing.lock`` so that one process builds the processed
    files while the others wait.

    The file is removed on release, so a finished folder holds only its
    data; a waiter that then acquires the removed file notices (its inode
    is no longer the one at the path) and locks the current file instead.
    The lock dies with its process. Without :mod:`fcntl` (Windows), or where
    the file cannot be created (a read-only cache, which nobody can rebuild
    anyway) or locked, nothing is locked.
    """
    path = osp.join(folder, LOCK_NAME)
    fd = _acquire(path) if fcntl is not None else None
    try:
        yield
    finally:
        if fd is not None:
            # Unlink while still locked (see above), then unlock.
            with contextlib.suppress(OSError):
                os.remove(path)
            os.close(fd)


def _acquire(path: str) -> Optional[int]:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            logger.debug("Not locking '%s': %s", path, e)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # e.g. ENOLCK on some network file systems
            os.close(fd)
            logger.debug("Not locking '%s': %s", path, e)
            return None
        try:
            current = osp.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


def remove_orphans(folder: str, names: List[str]) -> List[str]:
    r"""Removes the temporary files (``.<name>.XXXXXXXX.tmp``) that an atomic
    write of one of ``names`` left in ``folder`` when its process was killed,
    and returns their names.

    Call it only under :func:`folder_lock`: only lock holders write these
    files, so none is live then. Temporary files of other names (*e.g.*
    TransE caches, written without this lock) are left alone.
    """
    pattern = re.compile(r'^\.(%s)\.[a-z0-9_]{8}\.tmp$' %
                         '|'.join(map(re.escape, names)))
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(folder)):
            if pattern.match(name):
                with contextlib.suppress(OSError):  # gone, or read-only
                    os.remove(osp.join(folder, name))
                    removed.append(name)
    return removed


def _stamp(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _repr(obj: Any) -> str:
    return 'None' if obj is None else re.sub(r'(<.*?)\s.*(>)', r'\1\2',
                                            str(obj))


class FewShotKGDataset(InMemoryDataset):
    r"""A few-shot knowledge graph in the standard NELL-One / Wiki-One layout
    (see :mod:`pyg_fewshot.data.io`), processed once into a
    :class:`~torch_geometric.data.HeteroData` (schema in
    :mod:`pyg_fewshot.data.hetero`).

    Nothing is downloaded: place the raw files in :obj:`raw_dir` yourself;
    a missing file raises :class:`~pyg_fewshot.data.io.MissingRawFilesError`
    naming it and where it goes. :obj:`raw_dir` is only read, so it may be a
    read-only folder; processed files are written atomically under
    ``<root>/processed``. They are rebuilt when the raw files change (size or
    modification time) or with :obj:`force_reload`.

    Processes that load the same root at once take turns (a file lock on the
    processed folder): one builds, the others wait and load its build, even
    with :obj:`force_reload`. ``data.pt`` is loaded with
    ``torch.load(weights_only=True)`` only; a file that does not load that
    way (truncated, crafted, foreign) is rebuilt with a warning, never
    unpickled. Warnings of the reader (see
    :class:`~pyg_fewshot.data.io.FewShotDataWarning`) are repeated at every
    load of the processed files.

    ``dataset[0]`` returns the (transformed) graph; ``dataset.data`` the
    stored, untransformed one.

    Args:
        root (str): Root folder; processed files go to ``<root>/processed``.
        raw_dir (str, optional): Folder of the raw files. (default:
            ``<root>/raw``)
        name (str, optional): Display name. (default: the raw folder's name)
        transform (callable, optional): Applied to the graph at every access.
        pre_transform (callable, optional): Applied once before saving.
        force_reload (bool, optional): Re-process even if processed files
            exist. (default: :obj:`False`)
        min_triples (int, optional): Minimum number of triples per task
            relation, checked at every load (``K + 1`` for ``K``-shot).
            (default: :obj:`1`)
        load_embeddings (bool, optional): Whether ``ent2vec.*`` files fill
            ``data['entity'].emb``. (default: :obj:`True`)
        log (bool, optional): Print processing progress. (default:
            :obj:`True`)
    """
    def __init__(
        self,
        root: str,
        raw_dir: Optional[str] = None,
        name: Optional[str] = None,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        force_reload: bool = False,
        min_triples: int = 1,
        load_embeddings: bool = True,
        log: bool = True,
    ) -> None:
        root = osp.abspath(osp.expanduser(root))
        self._raw_dir = (osp.abspath(osp.expanduser(raw_dir))
                         if raw_dir is not None else osp.join(root, 'raw'))
        self.name = name or osp.basename(osp.normpath(self._raw_dir))
        if self.name == 'raw' and raw_dir is None:
            self.name = osp.basename(root)
        self.min_triples = int(min_triples)
        self.load_embeddings = bool(load_embeddings)
        self.report: Dict[str, Any] = {}
        self._loaded: Optional[Tuple[HeteroData, Dict[str, Any]]] = None
        # PyG's __init__ calls `_process`, which loads the graph.
        super().__init__(root, transform, pre_transform, log=log,
                         force_reload=force_reload)
        assert self._loaded is not None
        self.data, self.report = self._loaded
        self._loaded = None
        # Fully validated when processed; the shot count may differ now.
        check_shots(self._data, self.min_triples - 1)

    # PyG layout ------------------------------------------------------------

    @property
    def raw_dir(self) -> str:
        return self._raw_dir

    @property
    def raw_file_names(self) -> List[str]:
        return list(REQUIRED_FILES)

    @property
    def processed_file_names(self) -> List[str]:
        return ['data.pt', 'meta.json']

    @property
    def data(self) -> HeteroData:  # type: ignore[override]
        r"""The stored (untransformed) graph."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self._data_list = None

    # Processing ------------------------------------------------------------

    def _read_meta(self) -> Optional[Dict[str, Any]]:
        try:
            meta = read_json(self.processed_paths[1])
            return meta if isinstance(meta, dict) else None
        except (OSError, ValueError):
            return None

    def _settings(self) -> Dict[str, Any]:
        return {'load_embeddings': self.load_embeddings}

    def _stale_reason(self) -> Optional[str]:
        r"""Why the processed files cannot be used, or :obj:`None`."""
        if not all(osp.isfile(p) for p in self.processed_paths):
            return 'no processed files'
        meta = self._read_meta()
        if meta is None:
            return 'unreadable meta.json'
        if meta.get('version') != PROCESSED_VERSION:
            return 'processed by another version'
        if meta.get('settings') != self._settings():
            return 'processed with other settings'
        if not osp.isdir(self.raw_dir):
            warnings.warn(
                f"Raw folder '{self.raw_dir}' is gone; using the processed "
                f"files in '{self.processed_dir}'", stacklevel=3)
            return None
        if meta.get('raw_fingerprint') != raw_fingerprint(self.raw_dir):
            return 'raw files changed'
        return None

    def _process(self) -> None:
        # Replaces PyG's `_process` to (a) rebuild when the raw files change,
        # (b) let one process build while concurrent ones wait, and (c) load
        # with `weights_only=True` only: PyG's loader retries with
        # `weights_only=False`, so a crafted data.pt would run code.
        os.makedirs(self.processed_dir, exist_ok=True)
        # A force_reload that waited while another process rebuilt the files
        # takes that fresh build instead of building again.
        meta_before = _stamp(self.processed_paths[1])
        with folder_lock(self.processed_dir):
            removed = remove_orphans(self.processed_dir,
                                     self.processed_file_names)
            if removed:
                logger.info("Removed %d temporary file(s) of a killed run in "
                            "'%s'", len(removed), self.processed_dir)
            reason = self._stale_reason()
            if reason is None and self.force_reload and _stamp(
                    self.processed_paths[1]) == meta_before:
                reason = 'force_reload'
            if reason is None:
                reason = self._load_processed(fresh=False)
                if reason is None:
                    return
                # Levels: here, PyG's two __init__, ours, the caller.
                warnings.warn(f"{reason}; processing the dataset again",
                              stacklevel=5)
            check_raw_folder(self.raw_dir)
            if self.log and 'PYTEST_CURRENT_TEST' not in os.environ:
                print(f'Processing {self.name} ({reason})...',
                      file=sys.stderr)
            self.process()
            error = self._load_processed(fresh=True)
            if error is not None:
                raise RuntimeError(
                    f"{error}: a `pre_transform` may have stored objects "
                    f"other than tensors, numbers, strings, lists and dicts, "
                    f"which are not loaded (loading them could run code)")
            if self.log and 'PYTEST_CURRENT_TEST' not in os.environ:
                print('Done!', file=sys.stderr)

    def _load_processed(self, fresh: bool) -> Optional[str]:
        r"""Loads the processed files into ``self._loaded``; returns why they
        cannot be used, or :obj:`None`.

        A ``data.pt`` that fails the safe load, whatever the reason (a
        truncated file, a crafted pickle, another format), is stale: it is
        rebuilt, never unpickled otherwise.
        """
        path = self.processed_paths[0]
        try:
            data = load_hetero(path)
        except Exception as e:  # any failure means: rebuild
            msg = str(e).strip().splitlines()
            return (f"Unreadable processed file '{path}' "
                    f"({type(e).__name__}: {msg[0][:200] if msg else ''})")
        meta = self._read_meta() or {}
        if not fresh:
            if meta.get('pre_transform') != _repr(self.pre_transform):
                warnings.warn(
                    "The `pre_transform` argument differs from the one used "
                    "in the pre-processed version of this dataset. Pass "
                    "`force_reload=True` to process it again.", stacklevel=6)
            # The reader warned while processing; repeat it for this load.
            for message in meta.get('warnings') or []:
                warnings.warn(message, FewShotDataWarning, stacklevel=6)
        self._loaded = (data, meta)
        return None

    def process(self) -> None:
        fingerprint = raw_fingerprint(self.raw_dir)
        data, report = read_fewshot_folder(self.raw_dir,
                                           min_triples=self.min_triples,
                                           load_embeddings=self.load_embeddings)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        validate(data)
        # data.pt first, meta.json last: meta.json vouches for data.pt.
        save_hetero(data, self.processed_paths[0])
        meta = dict(report, version=PROCESSED_VERSION, name=self.name,
                    settings=self._settings(),
                    pre_transform=_repr(self.pre_transform),
                    raw_fingerprint=fingerprint)
        meta.update(summary(data))
        atomic_write_json(meta, self.processed_paths[1])

    # Convenience -----------------------------------------------------------

    def summary(self) -> Dict[str, int]:
        r"""Counts of entities, relations and triples
        (:func:`~pyg_fewshot.data.hetero.summary`)."""
        return summary(self._data)

    def pretrained_embeddings(self, dim: int = 100, **kwargs: Any
                              ) -> Tuple[Tensor, Tensor]:
        r"""TransE entity and relation vectors of the background graph,
        trained once with :func:`~pyg_fewshot.data.pretrain.pretrain_transe`
        and cached in the processed folder (the cache key holds every
        hyper-parameter); see
        :func:`~pyg_fewshot.data.pretrain.load_or_pretrain`."""
        from .pretrain import load_or_pretrain
        return load_or_pretrain(self._data, self.processed_dir, dim=dim,
                                **kwargs)

    def __repr__(self) -> str:
        data = self._data
        if data is None:
            return f'{self.__class__.__name__}({self.name})'
        s = summary(data)
        return (f"{self.__class__.__name__}({self.name}, "
                f"entities={s['num_entities']}, "
                f"background={s['num_background_triples']}, "
                f"tasks={s['num_train_relations']}/{s['num_dev_relations']}/"
                f"{s['num_test_relations']})")


#: Folders (separated by ``os.pathsep``) searched for a dataset given by
#: name, *e.g.* ``PYG_FEWSHOT_DATA=../shared/data`` for ``'nell-one'``.
DATA_PATH_ENV = 'PYG_FEWSHOT_DATA'


def _in_data_path(name: str) -> Optional[str]:
    for folder in os.environ.get(DATA_PATH_ENV, '').split(os.pathsep):
        path = osp.join(osp.expanduser(folder), name)
        if folder and osp.isdir(path):
            return osp.abspath(path)
    return None


def load_dataset(name_or_path: str = 'umls-one', root: Optional[str] = None,
                 **kwargs: Any) -> FewShotKGDataset:
    r"""Loads a few-shot KG.

    Args:
        name_or_path (str): ``'umls-one'`` (the default) for the copy bundled
            with the package, else a folder in the standard layout (read
            only), given by its path or by its name inside one of the
            folders of ``$PYG_FEWSHOT_DATA``.
        root (str, optional): Where processed files go
            (``<root>/processed``). (default: ``$PYG_FEWSHOT_HOME/<name>-<h>``
            or ``~/.cache/pyg_fewshot/<name>-<h>`` with ``<h>`` a short hash
            of the raw folder's absolute path)
        **kwargs: Passed to :class:`FewShotKGDataset`.
    """
    key = str(name_or_path).strip().lower()
    if key in BUNDLED_NAMES:
        raw, name = bundled_dir(), 'umls-one'
    else:
        raw = osp.abspath(osp.expanduser(str(name_or_path)))
        if not osp.isdir(raw):
            raw = _in_data_path(str(name_or_path)) or raw
        if not osp.isdir(raw):
            where = os.environ.get(DATA_PATH_ENV)
            raise MissingRawFilesError(
                f"'{name_or_path}' is neither a bundled dataset "
                f"({BUNDLED_NAMES[0]}) nor an existing folder in the "
                f"standard few-shot layout" + (
                    f" nor a folder of ${DATA_PATH_ENV} ({where})" if where
                    else f" (set ${DATA_PATH_ENV} to the folder that "
                    f"holds it to load it by name)"))
        name = osp.basename(osp.normpath(raw))
    kwargs.setdefault('name', name)
    if root is None:
        root = default_root(name, raw)
    return FewShotKGDataset(root, raw_dir=raw, **kwargs)


__all__ = [
    'FewShotKGDataset', 'load_dataset', 'bundled_dir', 'cache_home',
    'default_root', 'FewShotDataError'
]
