"""Item 4 for the synthetic generator's cache: a tampered file is
regenerated, never unpickled."""
import os
import pickle

import pytest
import torch

from pyg_fewshot.data.synthetic import SyntheticFewShotDataset


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PYG_FEWSHOT_PWNED']}", ))


def test_tampered_synthetic_cache_is_regenerated(tmp_path, monkeypatch):
    kwargs = dict(num_entities=30, seed=0)
    first = SyntheticFewShotDataset(str(tmp_path), **kwargs)[0]
    path = SyntheticFewShotDataset(
        str(tmp_path), **kwargs).processed_paths[0]
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PYG_FEWSHOT_PWNED', str(marker))
    with open(path, 'wb') as f:
        pickle.dump(_Payload(), f)
    with pytest.warns(UserWarning, match='Unreadable processed file'):
        again = SyntheticFewShotDataset(str(tmp_path), **kwargs)[0]
    assert not marker.exists()
    assert torch.equal(again.task_triples, first.task_triples)
    assert torch.equal(again.bg_edge_index, first.bg_edge_index)
