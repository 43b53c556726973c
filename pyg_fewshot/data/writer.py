r"""Writer of the standard few-shot knowledge graph file layout.

:func:`write_fewshot_folder` is the inverse of
:func:`~pyg_fewshot.data.io.read_fewshot_folder`: it writes a
:class:`~torch_geometric.data.HeteroData` of the schema in
:mod:`pyg_fewshot.data.hetero` as ``ent2ids``, ``relation2ids``,
``path_graph``, ``{train,dev,test}_tasks.json``, ``rel2candidates.json``,
``e1rel_e2.json`` and, when the graph holds pretrained vectors,
``ent2vec.npy``. Reading the folder back gives the same entities, background
graph, task triples (in order), candidates and ``true_keys``.

The large files (``path_graph``, ``ent2ids``) are written in chunks, so that
only one chunk's strings are alive at once: a Wiki-One-size graph (4.8 M
entities, 5.9 M triples) is written without a Python object per triple.
"""
import contextlib
import gzip
import json
import os
import os.path as osp
import re
from typing import IO, Any, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from torch_geometric.data import HeteroData

from .._io import atomic_path
from .hetero import ENTITY, SPLITS
from .io import (
    EMBEDDING_FILES,
    GZIP_SUFFIX,
    OPTIONAL_FILES,
    REQUIRED_FILES,
    TASK_FILES,
)

#: Triples (``path_graph``) or entities (``ent2ids``) formatted per chunk.
WRITE_CHUNK = 1 << 18

# The reader splits ``path_graph`` on tabs and (universal) newlines.
_BAD_NAME_CHARS = ('\t', '\n', '\r')
_GENERATED_NAME = re.compile(r'e(0|[1-9][0-9]*)\Z')
# C-accelerated JSON string quoting, without escaping non-ASCII.
_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _check_names(names: List[Any], what: str, allow_empty: bool = True
                 ) -> None:
    if not all(isinstance(n, str) for n in names):
        bad = next(n for n in names if not isinstance(n, str))
        raise ValueError(f"Cannot write {what} {bad!r}: names must be str")
    # One joined string per chunk: a C-level scan instead of a Python
    # loop over millions of names.
    for start in range(0, len(names), WRITE_CHUNK):
        text = '\x00'.join(names[start:start + WRITE_CHUNK])
        if any(c in text for c in _BAD_NAME_CHARS):
            bad = next(n for n in names[start:start + WRITE_CHUNK]
                       if any(c in n for c in _BAD_NAME_CHARS))
            raise ValueError(
                f"Cannot write {what} {bad!r}: a tab or line break in a name "
                f"would break the tab-separated 'path_graph'")
    if not allow_empty and '' in names:
        raise ValueError(f"Cannot write an empty {what}: it cannot be read "
                         f"back from the 'head + relation' keys of "
                         f"'e1rel_e2.json'")


def _check_unique(names: List[str], what: str) -> set:
    seen = set(names)
    if len(seen) != len(names):
        dup, found = None, set()
        for n in names:
            if n in found:
                dup = n
                break
            found.add(n)
        raise ValueError(f"Cannot write duplicate {what} {dup!r}: names are "
                         f"JSON keys and must be unique")
    return seen


class _Entities:
    r"""Entity names by id: the stored ones, else ``'e<id>'``."""
    def __init__(self, data: HeteroData):
        store = data[ENTITY]
        self.num = int(store.num_nodes)
        names = store['names'] if 'names' in store else None
        # Keep a list as is: a copy of 4.8 M references is 38 MB.
        self.names: Optional[List[str]] = (
            None if names is None else
            names if isinstance(names, list) else list(names))
        self._set: Optional[set] = None
        if self.names is not None:
            if len(self.names) != self.num:
                raise ValueError(
                    f"data['{ENTITY}'].names holds {len(self.names)} names "
                    f"for {self.num} entities")
            _check_names(self.names, 'entity name', allow_empty=False)
            self._set = _check_unique(self.names, 'entity name')

    def __call__(self, ids: Iterable[int]) -> List[str]:
        if self.names is None:
            return [f'e{i}' for i in ids]
        names = self.names
        return [names[i] for i in ids]

    def between(self, start: int, stop: int) -> List[str]:
        if self.names is None:
            return [f'e{i}' for i in range(start, stop)]
        return self.names[start:stop]

    def contains(self, name: str) -> bool:
        if self._set is not None:
            return name in self._set
        m = _GENERATED_NAME.match(name)
        return m is not None and int(m.group(1)) < self.num


def _open(path: str, compress: bool) -> IO[str]:
    if compress:
        # zlib's default level: gzip.open's level 9 is slow on 100 MB files.
        return gzip.open(path, 'wt', encoding='utf-8', compresslevel=6)
    return open(path, 'w', encoding='utf-8', newline='\n')


def _write_object(f: IO[str], items: Iterator[Tuple[str, Any]]) -> None:
    r"""Writes ``{key: value, ...}`` one item at a time, so that the whole
    file's text never exists at once."""
    f.write('{')
    for i, (key, value) in enumerate(items):
        f.write((', ' if i else '') + _quote(key) + ': ' +
                json.dumps(value, ensure_ascii=False))
    f.write('}\n')


def _true_triple_keys(data: HeteroData, ents: _Entities
                      ) -> Tuple[List[str], List[int], np.ndarray]:
    r"""The ``e1rel_e2.json`` keys (head name + relation name) of every known
    true task triple, decoded from ``true_keys`` (which hold the task
    triples and any extra true triples the graph was built with), with the
    row bounds of each key's tails in the returned tail ids.

    Raises :class:`ValueError` if the reader would split a key differently.
    """
    N = ents.num
    names = list(data.task_relation_names)
    keys = data.true_keys.cpu().numpy().astype(np.int64, copy=False)
    tail = keys % N
    rest = keys // N  # rel * N + head; keys are sorted, so groups are runs
    starts = np.flatnonzero(np.r_[True, rest[1:] != rest[:-1]]
                            ) if rest.size else np.empty(0, dtype=np.int64)
    bounds = np.r_[starts, rest.size].tolist()
    group = rest[starts]
    heads = ents((group % N).tolist())
    rels = (group // N).tolist()
    # The reader splits a key at the longest task relation name it ends
    # with whose prefix is an entity: a longer name ending with ours could
    # take the key.
    longer = {
        r: [n for n in names if len(n) > len(names[r]) and
            n.endswith(names[r])]
        for r in set(rels)
    }
    out = []
    for head, r in zip(heads, rels):
        key = head + names[r]
        for other in longer[r]:
            if key.endswith(other) and ents.contains(key[:-len(other)]):
                raise ValueError(
                    f"Cannot write the true triples of ({head}, {names[r]}) "
                    f"to 'e1rel_e2.json': their key '{key}' would be read "
                    f"back as ({key[:-len(other)]}, {other})")
        out.append(key)
    return out, bounds, tail


@contextlib.contextmanager
def _atomic_text(path: str, compress: bool) -> Iterator[IO[str]]:
    with atomic_path(path) as tmp:
        with _open(tmp, compress) as f:
            yield f


def write_fewshot_folder(
    data: HeteroData,
    folder: str,
    overwrite: bool = False,
    compress: bool = False,
    relation2ids: bool = True,
    embeddings: bool = True,
    chunk_size: int = WRITE_CHUNK,
) -> List[str]:
    r"""Writes a few-shot KG in the standard NELL-One / Wiki-One layout that
    :func:`~pyg_fewshot.data.io.read_fewshot_folder` reads back.

    Entity names are ``data['entity'].names`` when present, else
    ``'e<id>'``; relation names are ``data.relation_names`` and
    ``data.task_relation_names``. ``e1rel_e2.json`` holds every triple of
    ``data.true_keys`` (the task triples and the extra true triples), so the
    read-back ``true_keys`` are equal. Every file is written atomically; a
    crash part-way leaves earlier files complete and later ones absent.

    Args:
        data (HeteroData): The graph (schema of
            :mod:`pyg_fewshot.data.hetero`).
        folder (str): The output folder, created if needed.
        overwrite (bool): Write into a non-empty folder, replacing its
            layout files (files of the layout that this call does not write,
            *e.g.* a stale ``ent2vec.npy``, are removed). (default:
            :obj:`False`)
        compress (bool): Write every text file gzip-compressed (``*.gz``).
            (default: :obj:`False`)
        relation2ids (bool): Write ``relation2ids`` (without inverse
            relations), which keeps the background relation ids and the
            relations without edges; without it, the reader numbers
            relations in order of first appearance in ``path_graph``.
            (default: :obj:`True`)
        embeddings (bool): Write ``data['entity'].emb``, if present, as
            ``ent2vec.npy``. (default: :obj:`True`)
        chunk_size (int): Triples or entities formatted at a time; bounds
            the memory of the ``path_graph`` and ``ent2ids`` text.
            (default: :obj:`262144`)

    Returns:
        The paths of the files written.

    Raises:
        FileExistsError: If :obj:`folder` is not empty and
            :obj:`overwrite` is :obj:`False`.
        ValueError: If a name cannot be read back (a tab or line break in
            it, a duplicate, or an ``e1rel_e2.json`` key that the reader
            would split differently); checked before any file is written.
    """
    folder = osp.abspath(osp.expanduser(folder))
    if osp.isdir(folder) and os.listdir(folder) and not overwrite:
        raise FileExistsError(
            f"The folder '{folder}' is not empty; pass overwrite=True to "
            f"write the few-shot files into it anyway")
    chunk = max(1, int(chunk_size))

    # Validate every name before the first file is written.
    ents = _Entities(data)
    rel_names = list(data.relation_names)
    task_names = list(data.task_relation_names)
    _check_names(rel_names, 'relation name')
    _check_unique(rel_names, 'background relation name')
    _check_unique(task_names, 'task relation name')
    if '' in task_names:
        raise ValueError("Cannot write an empty task relation name: it "
                         "cannot be read back from 'e1rel_e2.json'")
    if relation2ids:
        rel_set = set(rel_names)
        inv = [n for n in rel_names if n.endswith('_inv') and n[:-4] in
               rel_set]
        if inv:
            raise ValueError(
                f"Background relations '{inv[0][:-4]}' and '{inv[0]}' "
                f"both exist; 'relation2ids' would read '{inv[0]}' as the "
                f"inverse of '{inv[0][:-4]}'. Pass relation2ids=False")
    true_keys, true_bounds, true_tails = _true_triple_keys(data, ents)
    emb = (data[ENTITY]['emb'] if embeddings and 'emb' in data[ENTITY] else
           None)

    os.makedirs(folder, exist_ok=True)
    written: List[str] = []

    @contextlib.contextmanager
    def text_file(name: str) -> Iterator[IO[str]]:
        path = osp.join(folder, name + (GZIP_SUFFIX if compress else ''))
        with _atomic_text(path, compress) as f:
            yield f
        written.append(path)

    # ent2ids: one '"name": id, ...' run per chunk.
    with text_file('ent2ids') as f:
        f.write('{')
        for start in range(0, ents.num, chunk):
            stop = min(start + chunk, ents.num)
            f.write((', ' if start else '') + ', '.join(
                map('{}: {}'.format, map(_quote, ents.between(start, stop)),
                    range(start, stop))))
        f.write('}\n')

    if relation2ids:
        with text_file('relation2ids') as f:
            _write_object(f, ((n, i) for i, n in enumerate(rel_names)))

    # path_graph in input order, a chunk of lines at a time.
    edge_index = data.bg_edge_index.cpu().numpy()
    edge_type = data.bg_edge_type.cpu().numpy()
    with text_file('path_graph') as f:
        for start in range(0, edge_type.shape[0], chunk):
            heads = edge_index[0, start:start + chunk].tolist()
            tails = edge_index[1, start:start + chunk].tolist()
            rels = [rel_names[r] for r in edge_type[start:start +
                                                    chunk].tolist()]
            if ents.names is None:
                # Formatting the ids directly skips two name lists.
                f.write(''.join(map('e{}\t{}\te{}\n'.format, heads, rels,
                                    tails)))
            else:
                f.write(''.join(map('{}\t{}\t{}\n'.format, ents(heads),
                                    rels, ents(tails))))

    ptr = data.task_ptr.tolist()
    trip = data.task_triples.cpu().numpy()

    def task_items(rels: List[int]) -> Iterator[Tuple[str, Any]]:
        for r in rels:
            name, pairs = task_names[r], trip[ptr[r]:ptr[r + 1]]
            yield name, [[h, name, t] for h, t in zip(
                ents(pairs[:, 0].tolist()), ents(pairs[:, 1].tolist()))]

    for split in SPLITS:
        with text_file(TASK_FILES[split]) as f:
            _write_object(f, task_items(data[f'{split}_rel'].tolist()))

    cptr = data.cand_ptr.tolist()
    cidx = data.cand_idx.cpu().numpy()
    with text_file('rel2candidates.json') as f:
        _write_object(f, ((task_names[r],
                           ents(cidx[cptr[r]:cptr[r + 1]].tolist()))
                          for r in range(len(task_names))))

    with text_file('e1rel_e2.json') as f:
        _write_object(f, ((key, ents(true_tails[true_bounds[i]:
                                                true_bounds[i + 1]].tolist()))
                          for i, key in enumerate(true_keys)))

    if emb is not None:
        path = osp.join(folder, 'ent2vec.npy')
        with atomic_path(path) as tmp:
            # A file object: np.save appends '.npy' to a bare path.
            with open(tmp, 'wb') as f:
                np.save(f, np.ascontiguousarray(
                    emb.detach().cpu().float().numpy()))
        written.append(path)

    # Remove the layout files this call did not write (the other
    # compression, a stale relation2ids or embedding file): the reader would
    # pick them up.
    keep = set(written)
    for name in REQUIRED_FILES + OPTIONAL_FILES + EMBEDDING_FILES:
        for candidate in (name, name + GZIP_SUFFIX):
            path = osp.join(folder, candidate)
            if path not in keep and osp.isfile(path):
                os.remove(path)
    return written
