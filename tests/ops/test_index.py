r"""pyg_fewshot/ops/index.py: sort-free deduplication of bounded ids."""
import pytest
import torch

import pyg_fewshot.ops.index as index_module
from pyg_fewshot.ops import positions_in, unique_ids


@pytest.mark.parametrize('shape,num_values', [((50, ), 30), ((7, 3), 1000),
                                              ((200, ), 10**6)])
def test_unique_ids_equals_torch_unique(shape, num_values):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, num_values, shape, generator=g)
    uniq, inverse = unique_ids(ids, num_values)
    ref, ref_inv = torch.unique(ids, return_inverse=True)
    assert torch.equal(uniq, ref) and torch.equal(inverse, ref_inv)
    assert inverse.shape == ids.shape and uniq.dtype == torch.long
    assert torch.equal(uniq[inverse], ids)


def test_unique_ids_mask_and_sort_paths_agree():
    ids = torch.tensor([5, 3, 5, 0, 9, 3], dtype=torch.int32)
    masked = unique_ids(ids, 10)  # a small id space: the running-sum path
    # A huge id space against 6 ids takes torch.unique's sort.
    assert 10**6 > index_module._MASK_ENTRIES_PER_ID * ids.numel() + 65536
    for a, b in zip(masked, unique_ids(ids, 10**6)):
        assert torch.equal(a, b)
    assert masked[0].tolist() == [0, 3, 5, 9]


def test_unique_ids_edge_cases():
    uniq, inverse = unique_ids(torch.empty(0, dtype=torch.long), 5)
    assert uniq.numel() == 0 and inverse.numel() == 0
    uniq, inverse = unique_ids(torch.tensor([4, 4, 4]), 5)
    assert uniq.tolist() == [4] and inverse.tolist() == [0, 0, 0]
    uniq, empty = unique_ids(torch.tensor([2, 0]), 3, return_inverse=False)
    assert uniq.tolist() == [0, 2] and empty.numel() == 0
    with pytest.raises((IndexError, RuntimeError)):
        unique_ids(torch.tensor([7]), 5)  # out of range


def test_positions_in():
    uniq = torch.tensor([8, 2, 5])
    pos, found = positions_in(uniq, torch.tensor([[5, 0], [8, 2]]), 10)
    assert pos.tolist() == [[2, -1], [0, 1]]
    assert found.tolist() == [[True, False], [True, True]]


def test_positions_in_binary_search_path():
    # A huge id space against few ids takes the binary search; same result
    # as the table, uniq in any order.
    uniq = torch.tensor([8, 2, 5])
    query = torch.tensor([[5, 0], [8, 2]])
    table = positions_in(uniq, query, 10)
    search = positions_in(uniq, query, 10**7)
    for a, b in zip(table, search):
        assert torch.equal(a, b)
    pos, found = positions_in(torch.empty(0, dtype=torch.long), query, 10**7)
    assert bool((pos == -1).all()) and not bool(found.any())
