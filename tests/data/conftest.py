r"""Fixtures of the data-layer tests: tiny hand-made folders in the standard
few-shot layout."""
import json
import os
import sys
from typing import Any, Callable, Dict

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if REPO not in sys.path:  # running the folder on its own
    sys.path.insert(0, REPO)

ENTITIES = [f'n{i}' for i in range(10)]

# Background: 'friend' appears first in path_graph, relation2ids (when
# written) puts 'near' first.
PATH_GRAPH = [
    ('n0', 'friend', 'n1'),
    ('n1', 'friend', 'n2'),
    ('n2', 'near', 'n3'),
    ('n3', 'near', 'n4'),
    ('n4', 'friend', 'n5'),
    ('n6', 'near', 'n7'),
]

TRAIN = {
    'likes': [['n0', 'likes', 'n1'], ['n2', 'likes', 'n3'],
              ['n4', 'likes', 'n5']],
    'knows': [['n1', 'knows', 'n2'], ['n3', 'knows', 'n4'],
              ['n5', 'knows', 'n6'], ['n7', 'knows', 'n8']],
}
DEV = {'hates': [['n6', 'hates', 'n7'], ['n8', 'hates', 'n9'],
                 ['n0', 'hates', 'n9']]}
TEST = {'fears': [['n9', 'fears', 'n0'], ['n8', 'fears', 'n1'],
                  ['n7', 'fears', 'n2']]}

CANDIDATES = {
    'likes': ['n1', 'n3', 'n5', 'n7', 'n9'],
    'knows': ['n2', 'n4', 'n6', 'n8', 'n0'],
    'hates': ['n7', 'n9', 'n1'],
    'fears': ['n0', 'n1', 'n2', 'n3'],
}

# 'n0likes' adds the extra true triple (n0, likes, n7); 'n3owns' names no
# task relation and is ignored.
E1REL_E2 = {
    'n0likes': ['n1', 'n7'],
    'n2likes': ['n3'],
    'n4likes': ['n5'],
    'n1knows': ['n2'],
    'n6hates': ['n7'],
    'n9fears': ['n0'],
    'n3owns': ['n4'],
}


def default_files() -> Dict[str, Any]:
    return {
        'train_tasks.json': TRAIN,
        'dev_tasks.json': DEV,
        'test_tasks.json': TEST,
        'path_graph': ''.join(f'{h}\t{r}\t{t}\n' for h, r, t in PATH_GRAPH),
        'rel2candidates.json': CANDIDATES,
        'e1rel_e2.json': E1REL_E2,
        'ent2ids': {e: i for i, e in enumerate(ENTITIES)},
    }


def write_folder(folder: str, files: Dict[str, Any]) -> str:
    os.makedirs(folder, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(folder, name)
        if content is None:
            if os.path.exists(path):
                os.remove(path)
            continue
        mode = 'wb' if isinstance(content, bytes) else 'w'
        with open(path, mode) as f:
            if isinstance(content, (bytes, str)):
                f.write(content)
            else:
                json.dump(content, f)
    return folder


@pytest.fixture
def make_folder(tmp_path) -> Callable[..., str]:
    r"""``make_folder({file: content or None}, name='raw')`` writes the tiny
    layout with overrides (:obj:`None` removes a file) and returns its path.
    JSON-able objects are dumped, strings and bytes written as-is."""
    def make(overrides: Dict[str, Any] = None, name: str = 'raw') -> str:
        files = default_files()
        files.update(overrides or {})
        return write_folder(str(tmp_path / name), files)

    return make


@pytest.fixture
def tiny_folder(make_folder) -> str:
    return make_folder()


class Layout:
    r"""The content of the tiny folder, for assertions."""
    ENTITIES = ENTITIES
    PATH_GRAPH = PATH_GRAPH
    TRAIN = TRAIN
    DEV = DEV
    TEST = TEST
    CANDIDATES = CANDIDATES
    E1REL_E2 = E1REL_E2

    @staticmethod
    def ids(names):
        return [ENTITIES.index(n) for n in names]


@pytest.fixture
def layout():
    return Layout


def shared_data_folder(name: str) -> str:
    r"""``$PYG_FEWSHOT_SHARED_DATA/<name>`` (default
    ``<repo>/../shared/data/<name>``); skips the test when absent."""
    base = os.environ.get('PYG_FEWSHOT_SHARED_DATA',
                          os.path.join(REPO, '..', 'shared', 'data'))
    folder = os.path.join(base, name)
    if not os.path.isdir(folder):
        pytest.skip(f"{name} not found at '{folder}': set "
                    f"PYG_FEWSHOT_SHARED_DATA to the folder holding {name}/")
    return folder


@pytest.fixture(scope='session')
def nell_one_folder() -> str:
    return shared_data_folder('nell-one')


@pytest.fixture(scope='session')
def umls_one_folder() -> str:
    return shared_data_folder('umls-one')


@pytest.fixture
def umls_one_counts():
    r"""Counts of UMLS-One (../shared/data/README.md), which the bundled copy
    must match."""
    return {
        'num_entities': 135,
        'num_background_relations': 5,
        'num_background_triples': 2996,
        'num_train_relations': 10,
        'num_train_triples': 2453,
        'num_dev_relations': 5,
        'num_dev_triples': 385,
        'num_test_relations': 5,
        'num_test_triples': 300,
    }
