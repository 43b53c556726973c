r"""Reader of the standard few-shot knowledge graph file layout.

The layout was introduced with NELL-One and Wiki-One (Xiong et al., 2018) and
is read by the MetaR, GANA, HiRe, RelAdapter and MoEMeta code bases. A folder
holds:

=========================  ==================================================
file                       content
=========================  ==================================================
``train_tasks.json``       ``{relation: [[head, relation, tail], ...]}``
``dev_tasks.json``         same, dev task relations
``test_tasks.json``        same, test task relations
``path_graph``             background graph, ``head\trelation\ttail`` lines
``rel2candidates.json``    ``{relation: [candidate tail, ...]}``
``e1rel_e2.json``          ``{head + relation: [true tail, ...]}`` (keys are
                           the plain concatenation, no separator)
``ent2ids``                ``{entity: id}``, ids ``0 .. N-1``
``relation2ids``           optional ``{relation or relation_inv: id}``
``ent2vec.npy`` /          optional pretrained entity vectors, row ``i`` is
``ent2vec.txt`` /          entity id ``i``
``entity2vec.TransE``
=========================  ==================================================

Any file may also be gzip-compressed with a ``.gz`` suffix (the bundled
UMLS-One copy is). :func:`read_fewshot_folder` validates everything and builds
the :class:`~torch_geometric.data.HeteroData` through
:func:`~pyg_fewshot.data.hetero.build_fewshot_data`; every problem raises a
:class:`FewShotDataError` that names the file and the line or key.

Every JSON file is read with duplicate keys rejected (:func:`json.load`
would keep the last value silently), and every text file must be UTF-8 (an
error names the line and column of the first bad bytes). Repairable
problems are repaired with a :class:`FewShotDataWarning` that counts them:
duplicate task or background triples are dropped (the first occurrence is
kept, so the support set stays the first ``K`` distinct triples), and
``e1rel_e2.json`` keys that name no task (head, relation) pair are skipped.
"""
import gzip
import json
import logging
import os
import os.path as osp
import warnings
import zlib
from itertools import repeat
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .hetero import ENTITY, SPLITS, build_fewshot_data

logger = logging.getLogger(__name__)

TASK_FILES = {split: f'{split}_tasks.json' for split in SPLITS}
REQUIRED_FILES = ('train_tasks.json', 'dev_tasks.json', 'test_tasks.json',
                  'path_graph', 'rel2candidates.json', 'e1rel_e2.json',
                  'ent2ids')
OPTIONAL_FILES = ('relation2ids', )
EMBEDDING_FILES = ('ent2vec.npy', 'ent2vec.txt', 'entity2vec.TransE')
GZIP_SUFFIX = '.gz'

# Characters read from ``path_graph`` per chunk (about 100 K NELL lines).
PATH_GRAPH_CHUNK = 1 << 23


class FewShotDataError(ValueError):
    r"""Raised on malformed or inconsistent few-shot data; the message names
    the file and the line, key or relation at fault."""


class MissingRawFilesError(FewShotDataError, FileNotFoundError):
    r"""Raised when files of the standard layout are missing; the message
    names each missing file and where to put it."""


class FewShotDataWarning(UserWarning):
    r"""Issued when the reader repairs or ignores part of the input (dropped
    duplicate triples, skipped ``e1rel_e2.json`` keys) or when the data is
    usable but degenerate (an empty background graph); the message names the
    file and counts what was affected."""


# What a damaged ``.gz`` file raises while being read.
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def find_file(folder: str, name: str) -> Optional[str]:
    r"""The path of ``name`` (or ``name.gz``) in ``folder``, or :obj:`None`."""
    for candidate in (name, name + GZIP_SUFFIX):
        path = osp.join(folder, candidate)
        if osp.isfile(path):
            return path
    return None


def missing_files(folder: str) -> List[str]:
    r"""The required files of the standard layout absent from ``folder``."""
    return [name for name in REQUIRED_FILES if find_file(folder, name) is None]


def check_raw_folder(folder: str) -> None:
    r"""Raises :class:`MissingRawFilesError` naming each missing required file
    and where to put it."""
    folder = osp.abspath(folder)
    missing = (list(REQUIRED_FILES)
               if not osp.isdir(folder) else missing_files(folder))
    if not missing:
        return
    lines = [f"  - {name}: expected at '{osp.join(folder, name)}' "
             f"(or '{name}{GZIP_SUFFIX}')" for name in missing]
    head = (f"The raw folder '{folder}' does not exist."
            if not osp.isdir(folder) else
            f"The raw folder '{folder}' misses {len(missing)} file(s) of the "
            f"standard few-shot layout.")
    raise MissingRawFilesError(
        head + " This library downloads nothing: place the files of the "
        "dataset (the NELL-One / Wiki-One layout, see docs/datasets.md) "
        "there yourself:\n" + '\n'.join(lines))


def raw_fingerprint(folder: str) -> List[List[Any]]:
    r"""``[name, size, mtime_ns]`` of every layout file present in
    ``folder``; processed data is rebuilt when it changes."""
    out = []
    for name in REQUIRED_FILES + OPTIONAL_FILES + EMBEDDING_FILES:
        path = find_file(folder, name)
        if path is not None:
            st = os.stat(path)
            out.append([osp.basename(path), st.st_size, st.st_mtime_ns])
    return out


def open_text(path: str):
    r"""Opens a text file, transparently decompressing ``*.gz``."""
    if path.endswith(GZIP_SUFFIX):
        return gzip.open(path, 'rt', encoding='utf-8')
    return open(path, encoding='utf-8')


def _open_binary(path: str):
    if path.endswith(GZIP_SUFFIX):
        return gzip.open(path, 'rb')
    return open(path, 'rb')


def decode_error(path: str, err: UnicodeDecodeError) -> FewShotDataError:
    r"""A :class:`FewShotDataError` naming the line and column of the first
    bytes of ``path`` that are not UTF-8.

    The codec error itself only knows an offset into one read buffer, so the
    file is scanned again, a line at a time (a UTF-8 sequence never holds a
    newline byte, so a line decodes on its own).
    """
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    raw.decode('utf-8')
                except UnicodeDecodeError as e:
                    col = len(raw[:e.start].decode('utf-8')) + 1
                    return FewShotDataError(
                        f"{path}, line {lineno}, column {col}: not UTF-8 "
                        f"text ({e.reason}: {raw[e.start:e.end]!r}); save "
                        f"the file as UTF-8")
    except (OSError, ) + _GZIP_ERRORS:
        pass
    return FewShotDataError(f"{path}: not UTF-8 text ({err.reason} at byte "
                            f"{err.start} of a read buffer)")


def _reject_duplicate_keys(path: str):
    r"""An ``object_pairs_hook`` raising :class:`FewShotDataError` on a
    duplicate key (:func:`json.load` silently keeps the last value)."""
    def hook(pairs):
        out = dict(pairs)  # C speed; a shorter dict means a repeated key
        if len(out) != len(pairs):
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    raise FewShotDataError(f"{path}: duplicate key '{key}'")
                seen.add(key)
        return out

    return hook


def read_json(path: str) -> Any:
    r"""Loads a JSON file; malformed JSON, a duplicate key in any object,
    bytes that are not UTF-8 or a damaged ``.gz`` raise
    :class:`FewShotDataError` naming the file and the line and column (or
    the key)."""
    try:
        with open_text(path) as f:
            return json.load(f, object_pairs_hook=_reject_duplicate_keys(path))
    except json.JSONDecodeError as e:
        raise FewShotDataError(f"{path}: malformed JSON at line {e.lineno}, "
                               f"column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise decode_error(path, e) from None
    except _GZIP_ERRORS as e:
        raise FewShotDataError(f"{path}: corrupt gzip file ({e})") from None


def _expect_object(obj: Any, path: str, what: str) -> Dict:
    if not isinstance(obj, dict):
        raise FewShotDataError(f"{path}: expected a JSON object {what}, got "
                               f"{type(obj).__name__}")
    return obj


# ---------------------------------------------------------------------------
# Individual files
# ---------------------------------------------------------------------------


_JSON_SPACE = ' \t\r\n'


def _last_entry_break(text: str) -> int:
    r"""The position of the last comma of ``text`` that follows a digit and
    precedes a ``"`` (whitespace aside), or ``-1``.

    In an ``{"name": id, ...}`` object that is the comma between two
    entries. It may also lie inside a name (``"a5, "``), but then the text
    before it ends inside an unterminated string and fails to parse, so a
    wrong cut is always detected.
    """
    cut = len(text)
    while True:
        cut = text.rfind(',', 0, cut)
        if cut < 0:
            return -1
        i, j = cut - 1, cut + 1
        while i >= 0 and text[i] in _JSON_SPACE:
            i -= 1
        while j < len(text) and text[j] in _JSON_SPACE:
            j += 1
        if (i >= 0 and '0' <= text[i] <= '9' and j < len(text)
                and text[j] == '"'):
            return cut


def _read_id_object_chunked(path: str, chunk_chars: int
                            ) -> Optional[Dict[str, Any]]:
    r"""Parses a large ``{"name": id, ...}`` file a chunk of entries at a
    time, or returns :obj:`None` where that fails (the caller then parses
    the whole file, which reports any error).

    :func:`json.load` holds the whole text and a second dict of every key
    (its key memo): at Wiki-One size (4.8 M entries, 100 MB) that is about
    150 MB more at the peak. Merging the chunks' dicts in order gives the
    same dict. A key repeated within a chunk or across chunks raises
    :class:`FewShotDataError`, as :func:`read_json` does (a wrong cut never
    completes an object, so a repeat found is real).
    """
    out: Dict[str, Any] = {}
    rest, first = '', True
    hook = _reject_duplicate_keys(path)

    def merge(piece: Any) -> bool:
        if not isinstance(piece, dict):
            return False
        if not out.keys().isdisjoint(piece):
            key = next(k for k in piece if k in out)
            raise FewShotDataError(f"{path}: duplicate key '{key}'")
        out.update(piece)
        return True

    try:
        with open_text(path) as f:
            while True:
                block = f.read(chunk_chars)
                if not block:
                    break
                text = rest + block
                cut = _last_entry_break(text)
                if cut < 0:
                    rest = text
                    continue
                if not merge(json.loads(('' if first else '{') + text[:cut] +
                                        '}', object_pairs_hook=hook)):
                    return None
                rest, first = text[cut + 1:], False
                del text
        if not merge(json.loads(('' if first else '{') + rest,
                                object_pairs_hook=hook)):
            return None
    except FewShotDataError:
        raise
    except (ValueError, OSError) + _GZIP_ERRORS:
        return None  # malformed (or a cut inside a name): parse it whole
    return out


def read_ent2ids(path: str, chunk_chars: int = PATH_GRAPH_CHUNK
                 ) -> Tuple[Dict[str, int], List[str]]:
    r"""Reads ``ent2ids``: returns the ``{entity: id}`` map and the entity
    names by id. Ids must be the integers ``0 .. N-1``, each used once.

    Args:
        path (str): The file (plain or ``.gz``).
        chunk_chars (int): Characters parsed at a time.
    """
    ent2id = _read_id_object_chunked(path, chunk_chars)
    if ent2id is None:
        ent2id = _expect_object(read_json(path), path, '{entity: id}')
    if not ent2id:
        raise FewShotDataError(f"{path}: no entities")
    keys = list(ent2id)
    if not all(type(v) is int for v in ent2id.values()):
        bad = next(k for k, v in ent2id.items() if type(v) is not int)
        raise FewShotDataError(f"{path}: key '{bad}': id {ent2id[bad]!r} is "
                               f"not an integer")
    ids = np.fromiter(ent2id.values(), dtype=np.int64, count=len(keys))
    n = len(keys)
    out = np.flatnonzero((ids < 0) | (ids >= n))
    if out.size:
        k = keys[int(out[0])]
        raise FewShotDataError(f"{path}: key '{k}': id {ent2id[k]} is out of "
                               f"range (ids must be 0 .. {n - 1})")
    counts = np.bincount(ids, minlength=n)
    if (counts != 1).any():
        dup = int(np.flatnonzero(counts > 1)[0])
        owners = [k for k, v in zip(keys, ids) if v == dup][:3]
        raise FewShotDataError(f"{path}: id {dup} is used by several "
                               f"entities ({', '.join(owners)})")
    if (ids == np.arange(n)).all():
        names = keys
    else:
        names = [keys[i] for i in np.argsort(ids, kind='stable')]
    return ent2id, names


def read_relation2ids(path: str) -> List[str]:
    r"""Reads ``relation2ids``: the background relation names ordered by id,
    without the inverse relations (``<name>_inv`` whose ``<name>`` is
    listed)."""
    obj = _expect_object(read_json(path), path, '{relation: id}')
    for key, value in obj.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise FewShotDataError(f"{path}: key '{key}': id {value!r} is "
                                   f"not an integer")
    names = [k for k in obj if not (k.endswith('_inv') and k[:-4] in obj)]
    order = sorted(range(len(names)), key=lambda i: obj[names[i]])
    return [names[i] for i in order]


def read_tasks(path: str, ent2id: Dict[str, int]
               ) -> List[Tuple[str, np.ndarray]]:
    r"""Reads one ``*_tasks.json``: a list of (relation, ``[n, 2]`` int64
    (head, tail) ids) in file order."""
    obj = _expect_object(read_json(path), path,
                         '{relation: [[head, relation, tail], ...]}')
    out = []
    for rel, triples in obj.items():
        if not isinstance(triples, list):
            raise FewShotDataError(
                f"{path}: key '{rel}': expected a list of [head, relation, "
                f"tail] triples, got {type(triples).__name__}")
        ids = np.empty((len(triples), 2), dtype=np.int64)
        for i, trip in enumerate(triples):
            if not (isinstance(trip, list) and len(trip) == 3
                    and all(isinstance(x, str) for x in trip)):
                raise FewShotDataError(
                    f"{path}: key '{rel}', triple #{i}: expected [head, "
                    f"relation, tail] strings, got {trip!r}")
            head, r, tail = trip
            if r != rel:
                raise FewShotDataError(
                    f"{path}: key '{rel}', triple #{i} {trip}: its relation "
                    f"'{r}' differs from the key")
            for j, ent, role in ((0, head, 'head'), (1, tail, 'tail')):
                idx = ent2id.get(ent)
                if idx is None:
                    raise FewShotDataError(
                        f"{path}: key '{rel}', triple #{i} {trip}: {role} "
                        f"entity '{ent}' is not in ent2ids")
                ids[i, j] = idx
        out.append((rel, ids))
    return out


def _map_tokens(tokens: Sequence[str], table: Dict[str, int]) -> np.ndarray:
    return np.fromiter(map(table.get, tokens, repeat(-1)), dtype=np.int64,
                       count=len(tokens))


def read_path_graph(
    path: str,
    ent2id: Dict[str, int],
    relation_names: Optional[Sequence[str]] = None,
    chunk_chars: int = PATH_GRAPH_CHUNK,
) -> Tuple[np.ndarray, List[str]]:
    r"""Streams ``path_graph`` (``head\trelation\ttail`` lines) in chunks.

    Args:
        path (str): The file (plain or ``.gz``).
        ent2id (Dict[str, int]): Entity ids.
        relation_names (Sequence[str], optional): Fixed relation ids (from
            ``relation2ids``); a relation outside it is an error. If
            :obj:`None`, ids follow the order of first appearance.
        chunk_chars (int): Characters parsed at a time; only one chunk's
            strings are alive at once.

    Returns:
        The ``[E, 3]`` int64 (head, relation, tail) ids in file order and the
        relation names by id. Blank lines are skipped.
    """
    fixed = relation_names is not None
    rel2id: Dict[str, int] = ({n: i for i, n in enumerate(relation_names)}
                              if fixed else {})
    parts: List[np.ndarray] = []
    first_line = 1  # line number of the chunk's first line
    rest = ''
    try:
        with open_text(path) as f:
            while True:
                block = f.read(chunk_chars)
                if block:
                    text = rest + block
                    cut = text.rfind('\n')
                    if cut < 0:
                        rest = text
                        continue
                    text, rest = text[:cut + 1], text[cut + 1:]
                else:
                    text, rest = rest, ''
                    if not text:
                        break
                num_lines = text.count('\n') + (not text.endswith('\n'))
                parts.append(
                    _parse_path_chunk(path, text, first_line, ent2id, rel2id,
                                      fixed))
                first_line += num_lines
    except UnicodeDecodeError as e:
        raise decode_error(path, e) from None
    except _GZIP_ERRORS as e:
        raise FewShotDataError(f"{path}: corrupt gzip file ({e})") from None
    triples = (np.concatenate(parts) if parts else np.empty(
        (0, 3), dtype=np.int64))
    names = sorted(rel2id, key=rel2id.__getitem__)
    inv = [n for n in names if n.endswith('_inv') and n[:-4] in rel2id]
    if inv:
        logger.warning(
            "%s holds inverse relations (%s, ...) besides their forward ones; "
            "the builder adds inverses itself, so they are doubled", path,
            inv[0])
    return triples, names


def _parse_path_chunk(path: str, text: str, first_line: int,
                      ent2id: Dict[str, int], rel2id: Dict[str, int],
                      fixed: bool) -> np.ndarray:
    body = text[:-1] if text.endswith('\n') else text
    num_lines = body.count('\n') + 1
    tokens = body.replace('\n', '\t').split('\t')
    line_of = None  # token-row -> line number offset, when lines are skipped
    if len(tokens) != 3 * num_lines:
        tokens, rows = [], []
        for i, line in enumerate(body.split('\n')):
            if not line.strip():
                continue
            fields = line.split('\t')
            if len(fields) != 3:
                raise FewShotDataError(
                    f"{path}, line {first_line + i}: expected 3 tab-separated "
                    f"fields (head, relation, tail), got {len(fields)}: "
                    f"{line[:200]!r}")
            tokens.extend(fields)
            rows.append(i)
        line_of = np.asarray(rows, dtype=np.int64)
        if not rows:
            return np.empty((0, 3), dtype=np.int64)

    def line(row: int) -> int:
        return first_line + (row if line_of is None else int(line_of[row]))

    heads, rels, tails = tokens[0::3], tokens[1::3], tokens[2::3]
    if not fixed:
        for name in dict.fromkeys(rels):
            if name not in rel2id:
                rel2id[name] = len(rel2id)
    out = np.empty((len(heads), 3), dtype=np.int64)
    for col, toks, table, what in ((0, heads, ent2id, 'head entity'),
                                   (1, rels, rel2id, 'relation'),
                                   (2, tails, ent2id, 'tail entity')):
        ids = _map_tokens(toks, table)
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            row = int(bad[0])
            where = 'relation2ids' if col == 1 else 'ent2ids'
            raise FewShotDataError(
                f"{path}, line {line(row)}: {what} '{toks[row]}' is not in "
                f"{where} ({bad.size} such line(s) in this chunk)")
        out[:, col] = ids
    return out


def read_candidates(path: str, ent2id: Dict[str, int],
                    relations: Sequence[str]) -> Tuple[Dict[str, np.ndarray],
                                                       int]:
    r"""Reads ``rel2candidates.json`` for the task ``relations``.

    Returns the candidate ids of each relation (duplicates dropped, first
    occurrence kept) and the number of duplicates dropped.
    """
    obj = _expect_object(read_json(path), path, '{relation: [entity, ...]}')
    out: Dict[str, np.ndarray] = {}
    num_dup = 0
    for rel in relations:
        names = obj.get(rel)
        if names is None:
            raise FewShotDataError(
                f"{path}: no key for task relation '{rel}' (every task "
                f"relation needs a candidate set)")
        if not isinstance(names, list) or not all(
                isinstance(x, str) for x in names):
            raise FewShotDataError(f"{path}: key '{rel}': expected a list of "
                                   f"entity names")
        if not names:
            raise FewShotDataError(
                f"{path}: key '{rel}': empty candidate set")
        ids = _map_tokens(names, ent2id)
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            raise FewShotDataError(
                f"{path}: key '{rel}': candidate '{names[int(bad[0])]}' is "
                f"not in ent2ids")
        _, first = np.unique(ids, return_index=True)
        if first.size != ids.size:
            num_dup += ids.size - first.size
            ids = ids[np.sort(first)]
        out[rel] = ids
    return out, num_dup


def _key_parses(key: str, ent2id: Dict[str, int], rel_id: Dict[str, int],
                lengths: Sequence[int]) -> List[Tuple[int, int]]:
    r"""Every (relation id, head id) with ``head + relation == key``, longest
    relation first."""
    out = []
    for n in lengths:
        if n < len(key):
            rel = rel_id.get(key[-n:])
            if rel is not None:
                head = ent2id.get(key[:-n])
                if head is not None:
                    out.append((rel, head))
    return out


def read_e1rel_e2(
    path: str,
    ent2id: Dict[str, int],
    relations: Sequence[str],
    task_pairs: Optional[Set[int]] = None,
    background: Optional[Tuple[np.ndarray, Sequence[str]]] = None,
    notes: Optional[List[str]] = None,
) -> Tuple[np.ndarray, int]:
    r"""Reads ``e1rel_e2.json`` (keys ``head + relation``, no separator).

    A key may split several ways into a known entity and a task relation
    (``'receptorcauses'`` is ``'receptor' + 'causes'``, and would be
    ``'receptorca' + 'uses'`` if both were known), so keys are resolved
    against the pairs the protocol looks up: the published code filters a
    query ``(h, r, ?)`` with ``e1rel_e2[h + r]``.

    1. A split whose (head, relation) is a pair of the task triples is taken;
       if several are, each gets the key's tails (exactly what the string
       lookup of the published code does).
    2. Else, a key that is a (head, relation) pair of the background graph
       is skipped.
    3. Else, the split with the longest task relation is taken (a true
       triple of a pair no task queries).
    4. A key with no split at all (its relation is no task relation of this
       dataset, *e.g.* a relation removed from the tasks, or its head is no
       entity) is skipped: it cannot filter any query.

    Args:
        path (str): The file (plain or ``.gz``).
        ent2id (Dict[str, int]): Entity ids.
        relations (Sequence[str]): The task relation names.
        task_pairs (Set[int], optional): ``relation * N + head`` of every
            task triple, relation ids being positions in ``relations``
            (:obj:`None`: step 1 is skipped).
        background (Tuple[np.ndarray, Sequence[str]], optional): The
            ``[E, 3]`` background triples and relation names, for step 2.
        notes (List[str], optional): Collects the warning on skipped keys.

    Returns:
        ``[F, 3]`` int64 (task relation id, head, tail) rows, task relation
        ids being positions in ``relations``, and the number of skipped
        keys (a :class:`FewShotDataWarning` counts them). A tail of a taken
        key missing from ``ent2ids`` raises :class:`FewShotDataError`.
    """
    obj = _expect_object(read_json(path), path, '{head+relation: [tail]}')
    N = len(ent2id)
    rel_id = {name: i for i, name in enumerate(relations)}
    lengths = sorted({len(n) for n in relations}, reverse=True)
    in_background = _background_pair_test(background, ent2id, N)
    rel_col: List[int] = []
    head_col: List[int] = []
    tails: List[str] = []
    first_row: List[Tuple[int, str]] = []  # (first row, key) of each split
    skipped, example = 0, None
    for key, values in obj.items():
        found = _key_parses(key, ent2id, rel_id, lengths)
        queried = ([(r, h) for r, h in found if r * N + h in task_pairs]
                   if task_pairs is not None else [])
        if queried:
            found = queried  # step 1
        elif found and in_background(key):
            found = []  # step 2
        else:
            found = found[:1]  # step 3 (or 4 when empty)
        if not found:
            skipped += 1
            example = example or key
            continue
        if not isinstance(values, list) or not all(
                isinstance(x, str) for x in values):
            raise FewShotDataError(f"{path}: key '{key}': expected a list of "
                                   f"tail entity names")
        for rel, head in found:
            first_row.append((len(tails), key))
            rel_col.extend(repeat(rel, len(values)))
            head_col.extend(repeat(head, len(values)))
            tails.extend(values)
    tail_ids = _map_tokens(tails, ent2id)
    bad = np.flatnonzero(tail_ids < 0)
    if bad.size:
        row = int(bad[0])
        starts = [r for r, _ in first_row]
        key = first_row[int(np.searchsorted(starts, row, side='right')) - 1][1]
        raise FewShotDataError(
            f"{path}: key '{key}': tail '{tails[row]}' is not in ent2ids")
    out = np.stack([
        np.asarray(rel_col, dtype=np.int64),
        np.asarray(head_col, dtype=np.int64), tail_ids
    ], axis=1) if tails else np.empty((0, 3), dtype=np.int64)
    if skipped:
        _warn(notes, f"{path}: ignored {skipped} key(s) that name no "
              f"(head, task relation) pair of this dataset (first: "
              f"'{example}'); they cannot filter any query")
    return out, skipped


def _background_pair_test(background: Optional[Tuple[np.ndarray,
                                                     Sequence[str]]],
                          ent2id: Dict[str, int], N: int):
    r"""A test whether a key is ``head + relation`` of a background triple;
    the pair table is built on first use (few keys ever need it)."""
    if background is None:
        return lambda key: False
    triples, names = background
    rel_id = {name: i for i, name in enumerate(names)}
    lengths = sorted({len(n) for n in names}, reverse=True)
    table: List[np.ndarray] = []

    def test(key: str) -> bool:
        if not table:
            table.append(np.unique(triples[:, 1] * N + triples[:, 0]))
        pairs = np.asarray([r * N + h for r, h in _key_parses(
            key, ent2id, rel_id, lengths)], dtype=np.int64)
        return bool(np.isin(pairs, table[0]).any())

    return test


def find_embedding_file(folder: str) -> Optional[str]:
    r"""The first of ``ent2vec.npy``, ``ent2vec.txt``, ``entity2vec.TransE``
    (plain or ``.gz``) present in ``folder``."""
    for name in EMBEDDING_FILES:
        path = find_file(folder, name)
        if path is not None:
            return path
    return None


def read_entity_vectors(path: str, num_entities: int) -> Tensor:
    r"""Reads pretrained entity vectors (``.npy`` or whitespace text, one row
    per entity id) as a ``[N, d]`` float tensor."""
    try:
        if path.endswith('.npy') or path.endswith('.npy.gz'):
            if path.endswith(GZIP_SUFFIX):
                with gzip.open(path, 'rb') as f:
                    arr = np.load(f, allow_pickle=False)
            else:
                arr = np.load(path, allow_pickle=False)
        else:
            with open_text(path) as f:
                arr = np.loadtxt(f, dtype=np.float32, ndmin=2)
    except UnicodeDecodeError as e:
        raise decode_error(path, e) from None
    except (ValueError, OSError) + _GZIP_ERRORS as e:
        raise FewShotDataError(f"{path}: cannot read entity vectors: "
                               f"{e}") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise FewShotDataError(f"{path}: expected a 2-D numeric matrix, got "
                               f"shape {arr.shape} of {arr.dtype}")
    if arr.shape[0] != num_entities:
        raise FewShotDataError(
            f"{path}: {arr.shape[0]} rows, but ent2ids has {num_entities} "
            f"entities (row i must be the vector of entity id i)")
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
        raise FewShotDataError(f"{path}: row {row} holds a non-finite value")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


# ---------------------------------------------------------------------------
# Repairs
# ---------------------------------------------------------------------------


def _warn(notes: Optional[List[str]], message: str) -> None:
    r"""Issues a :class:`FewShotDataWarning` and records its message (the
    dataset repeats recorded warnings when it loads its processed copy)."""
    if notes is not None:
        notes.append(message)
    warnings.warn(message, FewShotDataWarning, stacklevel=3)


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    r"""The positions of the first occurrence of each value of ``keys``, in
    input order."""
    _, first = np.unique(keys, return_index=True)  # stable: first wins
    return np.sort(first)


def _first_repeat(keys: np.ndarray, kept: np.ndarray) -> Tuple[int, int]:
    r"""The position of the first dropped repeat and of the value it
    repeats."""
    dropped = np.ones(keys.shape[0], dtype=bool)
    dropped[kept] = False
    dup = int(np.flatnonzero(dropped)[0])
    return dup, int(np.flatnonzero(keys == keys[dup])[0])


def drop_duplicate_task_triples(
    path: str,
    rows: List[Tuple[str, np.ndarray]],
    names: Sequence[str],
    notes: Optional[List[str]] = None,
) -> Tuple[List[Tuple[str, np.ndarray]], int]:
    r"""Drops repeated (head, tail) pairs of each task relation of one
    ``*_tasks.json``, keeping the first occurrence in file order: the support
    set is the first ``K`` triples, so a repeat would otherwise reappear as a
    query of its own support triple. Warns with the count.

    Returns the rows and the number of triples dropped.
    """
    N = max(len(names), 1)
    out, dropped, example = [], 0, None
    for rel, ids in rows:
        keys = ids[:, 0] * N + ids[:, 1]
        kept = _first_occurrences(keys)
        if kept.size != keys.size:
            if example is None:
                dup, orig = _first_repeat(keys, kept)
                h, t = names[int(ids[dup, 0])], names[int(ids[dup, 1])]
                example = (f"key '{rel}', triple #{dup} [{h}, {rel}, {t}] "
                           f"repeats #{orig}")
            dropped += keys.size - kept.size
            ids = ids[kept]
        out.append((rel, ids))
    if dropped:
        _warn(notes, f"{path}: dropped {dropped} duplicate task triple(s) "
              f"(first: {example}); the first occurrence of each is kept, "
              f"so support sets are the first K distinct triples")
    return out, dropped


def _line_numbers(path: str, line: str, limit: int = 2) -> List[int]:
    r"""The numbers of the first ``limit`` lines of ``path`` equal to
    ``line`` (used only to locate a reported problem)."""
    out: List[int] = []
    with open_text(path) as f:
        for i, text in enumerate(f, 1):
            if text.rstrip('\n') == line:
                out.append(i)
                if len(out) == limit:
                    break
    return out


def drop_duplicate_background_triples(
    path: str,
    triples: np.ndarray,
    relation_names: Sequence[str],
    names: Sequence[str],
    notes: Optional[List[str]] = None,
) -> Tuple[np.ndarray, int]:
    r"""Drops repeated ``path_graph`` triples, keeping the first occurrence
    (neighbour lists keep the file order); warns with the count and the
    lines of the first repeat.

    Returns the triples and the number dropped.
    """
    if triples.shape[0] == 0:
        return triples, 0
    N, R = max(len(names), 1), max(len(relation_names), 1)
    # Fits int64 while N^2 * R < 2^63 (at Wiki-One's N = 4.8 M: R < 400 K).
    keys = (triples[:, 0] * R + triples[:, 1]) * N + triples[:, 2]
    kept = _first_occurrences(keys)
    dropped = keys.size - kept.size
    if not dropped:
        return triples, 0
    dup, _ = _first_repeat(keys, kept)
    h, r, t = (names[int(triples[dup, 0])],
               relation_names[int(triples[dup, 1])],
               names[int(triples[dup, 2])])
    lines = _line_numbers(path, f'{h}\t{r}\t{t}')
    where = (f"line {lines[1]} repeats line {lines[0]}"
             if len(lines) == 2 else 'a repeated line')
    _warn(notes, f"{path}: dropped {dropped} duplicate background triple(s) "
          f"(first: {where}, ({h}, {r}, {t})); the first occurrence of each "
          f"is kept")
    return triples[kept], dropped


# ---------------------------------------------------------------------------
# The whole folder
# ---------------------------------------------------------------------------


def read_fewshot_folder(
    folder: str,
    min_triples: int = 1,
    load_embeddings: bool = True,
) -> Tuple[HeteroData, Dict[str, Any]]:
    r"""Reads and validates a folder in the standard few-shot layout.

    Args:
        folder (str): The folder (it is only read).
        min_triples (int): Minimum number of triples of every task relation
            (``K + 1`` for ``K``-shot episodes). (default: :obj:`1`)
        load_embeddings (bool): Whether to read ``ent2vec.*`` into
            ``data['entity'].emb`` when present. (default: :obj:`True`)

    Returns:
        The :class:`~torch_geometric.data.HeteroData` (schema of
        :mod:`pyg_fewshot.data.hetero`) and a report ``dict`` of what was
        read and skipped; its ``'warnings'`` lists the messages of the
        :class:`FewShotDataWarning` issued (dropped duplicate triples,
        ignored ``e1rel_e2.json`` keys, an empty background graph).
    """
    folder = osp.abspath(folder)
    check_raw_folder(folder)

    def file(name: str) -> str:
        return find_file(folder, name)  # type: ignore[return-value]

    ent2id, names = read_ent2ids(file('ent2ids'))
    num_entities = len(names)

    notes: List[str] = []  # the warnings issued, for the report
    tasks: Dict[str, List[Tuple[str, Tensor]]] = {}
    seen: Dict[str, str] = {}
    task_names: List[str] = []
    task_pairs: List[np.ndarray] = []  # rel * N + head of every task triple
    num_dup_tasks = 0
    for split in SPLITS:
        path = file(TASK_FILES[split])
        rows, dropped = drop_duplicate_task_triples(
            path, read_tasks(path, ent2id), names, notes)
        num_dup_tasks += dropped
        for rel, trip in rows:
            if rel in seen:
                raise FewShotDataError(
                    f"Task relation '{rel}' is in both {seen[rel]} and "
                    f"{osp.basename(path)}: a relation belongs to one split")
            seen[rel] = osp.basename(path)
            if trip.shape[0] < min_triples:
                raise FewShotDataError(
                    f"{path}: task relation '{rel}' has {trip.shape[0]} "
                    f"triple(s), fewer than the {min_triples} required")
            task_pairs.append(len(task_names) * num_entities + trip[:, 0])
            task_names.append(rel)
        tasks[split] = [(rel, torch.from_numpy(t)) for rel, t in rows]

    rel2ids_path = find_file(folder, 'relation2ids')
    fixed = read_relation2ids(rel2ids_path) if rel2ids_path else None
    bg_path = file('path_graph')
    bg, relation_names = read_path_graph(bg_path, ent2id, fixed)
    bg, num_dup_bg = drop_duplicate_background_triples(
        bg_path, bg, relation_names, names, notes)
    if bg.shape[0] == 0:
        _warn(notes, f"{bg_path}: the background graph is empty (no "
              f"triples): models that aggregate background neighbours "
              f"(e.g. MoEMeta) see none, and TransE pretraining has nothing "
              f"to learn from")

    cand_path = file('rel2candidates.json')
    cands, num_dup = read_candidates(cand_path, ent2id, task_names)
    for split in SPLITS:
        task_file = TASK_FILES[split]
        for rel, trip in tasks[split]:
            tails = trip[:, 1].numpy()
            ok = np.isin(tails, cands[rel])
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                h, t = int(trip[i, 0]), int(trip[i, 1])
                raise FewShotDataError(
                    f"{cand_path}: the true tail '{names[t]}' of the task "
                    f"triple #{i} ({names[h]}, {rel}, {names[t]}) in "
                    f"{task_file} is not among the candidates of relation "
                    f"'{rel}'")

    pairs = (set(np.concatenate(task_pairs).tolist())
             if task_pairs else set())
    extra, skipped = read_e1rel_e2(file('e1rel_e2.json'), ent2id,
                                   task_names, task_pairs=pairs,
                                   background=(bg, relation_names),
                                   notes=notes)
    # The name -> id map is the largest Python object at Wiki-One size
    # (4.8 M entries): drop it before the builder's peak.
    del ent2id, pairs

    emb = None
    emb_path = find_embedding_file(folder) if load_embeddings else None
    if emb_path is not None:
        emb = read_entity_vectors(emb_path, num_entities)

    data = build_fewshot_data(
        num_entities,
        torch.from_numpy(bg),
        relation_names,
        tasks,
        {rel: torch.from_numpy(c)
         for rel, c in cands.items()},
        extra_true_triples=torch.from_numpy(extra),
        entity_names=names,
        entity_emb=emb,
    )
    unused = relation_names_without_edges(data)
    report = {
        'folder': folder,
        'num_entities': num_entities,
        'relation_ids_from': 'relation2ids' if fixed is not None else
        'path_graph (first appearance)',
        'num_background_relations_without_edges': len(unused),
        'num_e1rel_e2_triples': int(extra.shape[0]),
        'num_e1rel_e2_keys_ignored': skipped,
        'num_duplicate_candidates_dropped': num_dup,
        'num_duplicate_task_triples_dropped': num_dup_tasks,
        'num_duplicate_background_triples_dropped': num_dup_bg,
        'embedding_file': osp.basename(emb_path) if emb_path else None,
        'warnings': notes,
    }
    return data, report


def relation_names_without_edges(data: HeteroData) -> List[str]:
    r"""Background relations with no edge (possible when ``relation2ids``
    lists relations that ``path_graph`` never uses)."""
    counts = torch.bincount(data.bg_edge_type,
                            minlength=len(data.relation_names))
    return [
        data.relation_names[i] for i in torch.nonzero(counts == 0).view(-1)
    ]


# ---------------------------------------------------------------------------
# Validation of a built HeteroData
# ---------------------------------------------------------------------------


def _rel_name(data: HeteroData, rel: int) -> str:
    return str(data.task_relation_names[rel])


def _ent_name(data: HeteroData, ent: int) -> str:
    names = getattr(data[ENTITY], 'names', None)
    return str(names[ent]) if names is not None else str(ent)


def check_shots(data: HeteroData, shots: int,
                splits: Sequence[str] = SPLITS,
                relations: Optional[Tensor] = None) -> None:
    r"""Raises :class:`FewShotDataError` naming every task relation of
    ``splits`` (or the task relation ids ``relations``) with fewer than
    ``shots + 1`` triples (``K`` support triples and at least one
    query)."""
    ptr = data.task_ptr
    bad = []
    if relations is not None:
        groups = [('', relations.tolist())]
    else:
        groups = [(f'{split}, ', data[f'{split}_rel'].tolist())
                  for split in splits]
    for where, rels in groups:
        for rel in rels:
            n = int(ptr[rel + 1] - ptr[rel])
            if n < shots + 1:
                bad.append(f"'{_rel_name(data, rel)}' ({where}{n} "
                           f"triple(s))")
    if bad:
        raise FewShotDataError(
            f"{len(bad)} task relation(s) have fewer than {shots + 1} "
            f"triples, too few for {shots}-shot episodes (K support + 1 "
            f"query): {', '.join(bad[:10])}" +
            (' ...' if len(bad) > 10 else ''))


def validate(data: HeteroData, shots: Optional[int] = None) -> HeteroData:
    r"""Checks a few-shot :class:`~torch_geometric.data.HeteroData` and
    returns it; raises :class:`FewShotDataError` naming the relation (and
    triple) at fault.

    Checks: ids in range; every task relation in exactly one split; every
    candidate set non-empty; every true tail among its relation's
    candidates; with ``shots``, :func:`check_shots`.
    """
    N = int(data[ENTITY].num_nodes)
    R = len(data.relation_names)
    names = list(data.task_relation_names)
    T = len(names)

    where: Dict[str, str] = {}
    for split in SPLITS:
        for rel in data[f'{split}_rel'].tolist():
            name = names[rel]
            if name in where:
                raise FewShotDataError(
                    f"Task relation '{name}' is in both the {where[name]} "
                    f"and the {split} split")
            where[name] = split
    if len(where) != T:
        raise FewShotDataError(f"{T - len(where)} task relation(s) belong to "
                               f"no split")

    bg, bt = data.bg_edge_index, data.bg_edge_type
    if bg.numel() and (int(bg.min()) < 0 or int(bg.max()) >= N):
        raise FewShotDataError(f"A background edge has an entity id outside "
                               f"[0, {N})")
    if bt.numel() and (int(bt.min()) < 0 or int(bt.max()) >= R):
        raise FewShotDataError(f"A background edge has a relation id outside "
                               f"[0, {R})")
    trip = data.task_triples
    if trip.numel() and (int(trip.min()) < 0 or int(trip.max()) >= N):
        raise FewShotDataError(f"A task triple has an entity id outside "
                               f"[0, {N})")
    cand_ptr, cand_idx = data.cand_ptr, data.cand_idx
    if cand_idx.numel() and (int(cand_idx.min()) < 0
                             or int(cand_idx.max()) >= N):
        raise FewShotDataError(f"A candidate id is outside [0, {N})")

    sizes = cand_ptr[1:] - cand_ptr[:-1]
    empty = torch.nonzero(sizes == 0).view(-1)
    if empty.numel():
        raise FewShotDataError(
            f"Task relation '{names[int(empty[0])]}' has an empty candidate "
            f"set")

    # Every true tail must be a candidate: membership of (rel, tail) keys.
    cand_rel = torch.repeat_interleave(torch.arange(T), sizes)
    cand_keys = torch.sort(cand_rel * N + cand_idx).values
    tsizes = data.task_ptr[1:] - data.task_ptr[:-1]
    task_rel = torch.repeat_interleave(torch.arange(T), tsizes)
    q = task_rel * N + trip[:, 1]
    if q.numel():
        pos = torch.searchsorted(cand_keys, q).clamp_(max=cand_keys.numel() -
                                                      1)
        ok = cand_keys[pos] == q
        if not bool(ok.all()):
            i = int(torch.nonzero(~ok)[0])
            rel = int(task_rel[i])
            h, t = int(trip[i, 0]), int(trip[i, 1])
            raise FewShotDataError(
                f"The true tail of task triple ({_ent_name(data, h)}, "
                f"{names[rel]}, {_ent_name(data, t)}) is not among the "
                f"candidates of relation '{names[rel]}'")

    if shots is not None:
        check_shots(data, shots)
    return data
