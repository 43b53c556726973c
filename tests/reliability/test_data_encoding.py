"""Item 11: bytes that are not UTF-8, in any text file of the layout, raise a
:class:`FewShotDataError` (a ``ValueError``) naming the file, line and
column, never a bare ``UnicodeDecodeError``."""
import gzip
import os

import pytest

from pyg_fewshot.data.io import (FewShotDataError, read_fewshot_folder,
                                 read_path_graph)
from pyg_fewshot.data.writer import write_fewshot_folder


@pytest.fixture
def raw(tiny_data, tmp_path):
    folder = str(tmp_path / 'raw')
    write_fewshot_folder(tiny_data, folder)
    return folder


def _spoil_line(path, lineno, before=b'\t', bad=b'\xff', opener=open):
    r"""Puts ``bad`` after the first ``before`` of line ``lineno``."""
    with opener(path, 'rb') as f:
        lines = f.read().split(b'\n')
    line = lines[lineno - 1]
    cut = line.index(before) + len(before)
    lines[lineno - 1] = line[:cut] + bad + line[cut:]
    with opener(path, 'wb') as f:
        f.write(b'\n'.join(lines))
    return len(line[:cut].decode('utf-8')) + 1


def _expect(folder, path, lineno, col, what="invalid start byte: b'\\xff'"):
    with pytest.raises(FewShotDataError) as info:
        read_fewshot_folder(folder)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (f"{path}, line {lineno}, column {col}: not "
                               f"UTF-8 text ({what}); save the file as UTF-8")


def test_path_graph_non_utf8_names_file_and_line(raw):
    path = os.path.join(raw, 'path_graph')
    col = _spoil_line(path, 57)
    _expect(raw, path, 57, col)


def test_path_graph_non_utf8_beyond_the_first_chunk(raw, tiny_data):
    # The codec fails inside a later read buffer; the line is still right.
    path = os.path.join(raw, 'path_graph')
    col = _spoil_line(path, 50, before=b'\t', bad=b'\xc3(')
    ent2id = {n: i for i, n in enumerate(f'e{i}' for i in range(40))}
    with pytest.raises(FewShotDataError) as info:
        read_path_graph(path, ent2id, chunk_chars=64)
    assert str(info.value) == (
        f"{path}, line 50, column {col}: not UTF-8 text (invalid "
        f"continuation byte: b'\\xc3'); save the file as UTF-8")


def test_gzip_path_graph_non_utf8(tiny_data, tmp_path):
    folder = str(tmp_path / 'gz')
    write_fewshot_folder(tiny_data, folder, compress=True)
    path = os.path.join(folder, 'path_graph.gz')
    col = _spoil_line(path, 3, opener=gzip.open)
    _expect(folder, path, 3, col)


def test_json_file_non_utf8_names_file_and_line(raw):
    path = os.path.join(raw, 'train_tasks.json')
    with open(path, 'rb') as f:
        text = f.read()
    # A Latin-1 'é' in an entity name on line 1 (the file is one line).
    with open(path, 'wb') as f:
        f.write(text.replace(b'"e3"', b'"e3\xe9"', 1))
    col = text.index(b'"e3"') + 4
    _expect(raw, path, 1, col, what="invalid continuation byte: b'\\xe9'")


def test_entity_vectors_non_utf8_names_file_and_line(raw):
    path = os.path.join(raw, 'ent2vec.txt')
    with open(path, 'wb') as f:
        f.write(b'0.1 0.2\n' * 7 + b'0.1 0.2\xa0\n' + b'0.1 0.2\n' * 32)
    _expect(raw, path, 8, 8, what="invalid start byte: b'\\xa0'")
