import os

import pytest
import torch

from pyg_fewshot.data.hetero import build_fewshot_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_thread():
    # Test tensors are tiny: extra threads only add OpenMP contention (and
    # busy-waiting) when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_data_dir():
    r"""The benchmark copies (NELL-One, UMLS-One), from
    ``$PYG_FEWSHOT_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    path = os.environ.get('PYG_FEWSHOT_SHARED_DATA',
                          os.path.join(REPO, '..', 'shared', 'data'))
    return path if os.path.isdir(path) else None


@pytest.fixture
def shared_data():
    path = shared_data_dir()
    if path is None:
        pytest.skip('benchmark data not found: set PYG_FEWSHOT_SHARED_DATA '
                    'to the folder holding nell-one/ and umls-one/')
    return path


def make_tiny_data(num_entities: int = 40, seed: int = 0,
                   num_train: int = 4, triples_per_relation: int = 12):
    r"""A hand-built few-shot KG with planted translations
    ``tail = (head + offset_r) mod N``, every entity a candidate."""
    g = torch.Generator().manual_seed(seed)
    N = num_entities

    def rel_triples(offset: int, n: int) -> torch.Tensor:
        h = torch.randperm(N, generator=g)[:n]
        return torch.stack([h, (h + offset) % N], 1)

    bg = []
    for r in range(3):
        t = rel_triples(2 * r + 1, N // 2)
        bg.append(torch.stack([t[:, 0], torch.full((t.size(0), ), r),
                               t[:, 1]], 1))
    tasks = {
        'train': [(f'train{i}', rel_triples(3 + i, triples_per_relation))
                  for i in range(num_train)],
        'dev': [('dev0', rel_triples(11, triples_per_relation))],
        'test': [('test0', rel_triples(13, triples_per_relation)),
                 ('test1', rel_triples(17, triples_per_relation // 2))],
    }
    cands = {name: torch.arange(N) for s in tasks.values() for name, _ in s}
    return build_fewshot_data(N, torch.cat(bg), ['bg0', 'bg1', 'bg2'], tasks,
                              cands)


@pytest.fixture
def tiny_data():
    return make_tiny_data()


@pytest.fixture
def cli_cache(tmp_path, monkeypatch):
    r"""A fresh processed-data cache and no ``PYG_FEWSHOT_DEBUG``, so a CLI
    test sees exactly what a user's first run sees."""
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_FEWSHOT_DEBUG', raising=False)
