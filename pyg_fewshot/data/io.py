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
"""
import gzip
import json
import logging
import os
import os.path as osp
from itertools import repeat
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


def _reject_duplicate_keys(path: str):
    def hook(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise FewShotDataError(f"{path}: duplicate key '{key}'")
            out[key] = value
        return out

    return hook


def read_json(path: str, check_duplicates: bool = False) -> Any:
    r"""Loads a JSON file; malformed JSON raises :class:`FewShotDataError`
    naming the file, line and column."""
    hook = _reject_duplicate_keys(path) if check_duplicates else None
    try:
        with open_text(path) as f:
            return json.load(f, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        raise FewShotDataError(f"{path}: malformed JSON at line {e.lineno}, "
                               f"column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise FewShotDataError(f"{path}: not UTF-8 text ({e})") from None
    except (gzip.BadGzipFile, EOFError) as e:
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
    same dict, duplicate keys included (the later value wins in the first
    key's position in both).
    """
    out: Dict[str, Any] = {}
    rest, first = '', True
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
                piece = json.loads(('' if first else '{') + text[:cut] + '}')
                if not isinstance(piece, dict):
                    return None
                out.update(piece)
                rest, first = text[cut + 1:], False
                del text, piece
        last = json.loads(('' if first else '{') + rest)
    except (ValueError, OSError, EOFError):
        return None  # malformed (or a cut inside a name): parse it whole
    if not isinstance(last, dict):
        return None
    out.update(last)
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
    obj = _expect_object(read_json(path, check_duplicates=True), path,
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


def read_e1rel_e2(path: str, ent2id: Dict[str, int],
                  relations: Sequence[str]) -> Tuple[np.ndarray, int]:
    r"""Reads ``e1rel_e2.json`` (keys ``head + relation``, no separator).

    A key is split by the longest task relation name it ends with whose
    remaining prefix is a known entity. Keys ending with no task relation
    are skipped (they are true triples of relations outside the tasks).

    Returns:
        ``[F, 3]`` int64 (task relation id, head, tail) rows, task relation
        ids being positions in ``relations``, and the number of skipped
        keys.
    """
    obj = _expect_object(read_json(path), path, '{head+relation: [tail]}')
    rel_id = {name: i for i, name in enumerate(relations)}
    lengths = sorted({len(n) for n in relations}, reverse=True)
    rel_col: List[int] = []
    head_col: List[int] = []
    tails: List[str] = []
    first_row: List[Tuple[int, str]] = []  # (first row, key) of each key
    skipped = 0
    for key, values in obj.items():
        rel = head = None
        suffix_hit = None
        for n in lengths:
            if n >= len(key):
                continue
            r = key[-n:]
            if r in rel_id:
                suffix_hit = suffix_hit or r
                h = ent2id.get(key[:-n])
                if h is not None:
                    rel, head = r, h
                    break
        if rel is None:
            if suffix_hit is not None:
                raise FewShotDataError(
                    f"{path}: key '{key}': it ends with task relation "
                    f"'{suffix_hit}' but its head '{key[:-len(suffix_hit)]}' "
                    f"is not in ent2ids")
            skipped += 1
            continue
        if not isinstance(values, list) or not all(
                isinstance(x, str) for x in values):
            raise FewShotDataError(f"{path}: key '{key}': expected a list of "
                                   f"tail entity names")
        first_row.append((len(tails), key))
        rel_col.extend(repeat(rel_id[rel], len(values)))
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
    return out, skipped


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
    except (ValueError, OSError, EOFError) as e:
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
        read and skipped.
    """
    folder = osp.abspath(folder)
    check_raw_folder(folder)

    def file(name: str) -> str:
        return find_file(folder, name)  # type: ignore[return-value]

    ent2id, names = read_ent2ids(file('ent2ids'))
    num_entities = len(names)

    tasks: Dict[str, List[Tuple[str, Tensor]]] = {}
    seen: Dict[str, str] = {}
    task_names: List[str] = []
    for split in SPLITS:
        path = file(TASK_FILES[split])
        rows = read_tasks(path, ent2id)
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
            task_names.append(rel)
        tasks[split] = [(rel, torch.from_numpy(t)) for rel, t in rows]

    rel2ids_path = find_file(folder, 'relation2ids')
    fixed = read_relation2ids(rel2ids_path) if rel2ids_path else None
    bg, relation_names = read_path_graph(file('path_graph'), ent2id, fixed)

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

    extra, skipped = read_e1rel_e2(file('e1rel_e2.json'), ent2id, task_names)
    # The name -> id map is the largest Python object at Wiki-One size
    # (4.8 M entries): drop it before the builder's peak.
    del ent2id
    if skipped:
        logger.warning(
            "%s: %d key(s) end with no task relation of this dataset and "
            "were ignored", file('e1rel_e2.json'), skipped)

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
        'embedding_file': osp.basename(emb_path) if emb_path else None,
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
                splits: Sequence[str] = SPLITS) -> None:
    r"""Raises :class:`FewShotDataError` naming every task relation of
    ``splits`` with fewer than ``shots + 1`` triples (``K`` support triples
    and at least one query)."""
    ptr = data.task_ptr
    bad = []
    for split in splits:
        for rel in data[f'{split}_rel'].tolist():
            n = int(ptr[rel + 1] - ptr[rel])
            if n < shots + 1:
                bad.append(f"'{_rel_name(data, rel)}' ({split}, {n} "
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
