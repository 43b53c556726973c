import numpy as np
import pytest
import torch

from pyg_fewshot.data.modalities import (ModalityError, attach_modalities,
                                         find_modality_files,
                                         mask_random_entities,
                                         modality_features, modality_names,
                                         remove_modality)

N = 40


def test_folder_with_both_naming_patterns_and_mask(tiny_data, tmp_path):
    img = np.random.RandomState(0).randn(N, 6).astype(np.float32)
    img[3] = 0.0  # an all-zero row is an entity without an image
    txt = np.random.RandomState(1).randn(N, 4)  # float64 is converted
    txt[5, 2] = np.nan  # a NaN row is missing too
    np.save(tmp_path / 'image_features.npy', img)
    np.save(tmp_path / 'x_text.npy', txt)
    mask = np.ones(N, dtype=bool)
    mask[7] = False
    np.save(tmp_path / 'text_mask.npy', mask)
    assert sorted(find_modality_files(str(tmp_path))) == ['image', 'text']

    attach_modalities(tiny_data, tmp_path)
    store = tiny_data['entity']
    assert modality_names(tiny_data) == ['image', 'text']
    assert store.x_image.dtype == torch.float32
    assert store.x_image.shape == (N, 6) and store.x_text.shape == (N, 4)
    assert store.mask_image.dtype == torch.bool
    assert store.mask_image.sum() == N - 1 and not store.mask_image[3]
    assert not store.mask_text[5] and not store.mask_text[7]
    assert store.mask_text.sum() == N - 2
    # Missing rows are zeroed: no NaN ever reaches a model.
    assert torch.isfinite(store.x_text).all()
    assert (store.x_text[5] == 0).all() and (store.x_text[7] == 0).all()
    assert torch.allclose(store.x_text[0], torch.from_numpy(txt[0]).float())


def test_wrong_row_count_names_file_and_shapes(tiny_data, tmp_path):
    np.save(tmp_path / 'image_features.npy', np.ones((N - 1, 6), np.float32))
    with pytest.raises(ModalityError) as e:
        attach_modalities(tiny_data, tmp_path)
    msg = str(e.value)
    assert 'image_features.npy' in msg and f'({N}, D)' in msg
    assert f'({N - 1}, 6)' in msg


def test_wrong_dimension_and_rank(tiny_data, tmp_path):
    np.save(tmp_path / 'x_text.npy', np.ones((N, 5), np.float32))
    with pytest.raises(ModalityError, match=r'expected feature dimension 4'):
        attach_modalities(tiny_data, tmp_path, dims={'text': 4})
    with pytest.raises(ModalityError, match=r'got shape \(40,\)'):
        attach_modalities(tiny_data, {'text': np.ones(N)})


def test_mask_shape_checked(tiny_data, tmp_path):
    np.save(tmp_path / 'x_text.npy', np.ones((N, 5), np.float32))
    np.save(tmp_path / 'mask_text.npy', np.ones(N + 2, bool))
    with pytest.raises(ModalityError, match='mask_text.npy'):
        attach_modalities(tiny_data, tmp_path)


def test_names_filter_and_missing_name(tiny_data, tmp_path):
    np.save(tmp_path / 'x_text.npy', np.ones((N, 5), np.float32))
    np.save(tmp_path / 'x_image.npy', np.ones((N, 3), np.float32))
    attach_modalities(tiny_data, tmp_path, names=['text'])
    assert modality_names(tiny_data) == ['text']
    with pytest.raises(ModalityError, match="'audio' not found"):
        attach_modalities(tiny_data, tmp_path, names=['audio'])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ModalityError, match='No modality matrices'):
        attach_modalities(tiny_data, empty)
    with pytest.raises(ModalityError, match='does not exist'):
        attach_modalities(tiny_data, tmp_path / 'missing')


def test_mapping_source_and_features(tiny_data):
    x = torch.randn(N, 3)
    mask = torch.ones(N, dtype=torch.bool)
    mask[:10] = False
    attach_modalities(tiny_data, {'text': x}, masks={'text': mask})
    feats, masks = modality_features(tiny_data)
    assert list(feats) == ['text']
    assert masks['text'].sum() == N - 10
    assert torch.equal(feats['text'][10:], x[10:])
    with pytest.raises(ModalityError, match="No modality 'image'"):
        modality_features(tiny_data, ['image'])
    remove_modality(tiny_data, 'text')
    assert modality_names(tiny_data) == []


def test_modality_without_mask_is_present_everywhere(tiny_data):
    tiny_data['entity'].x_text = torch.randn(N, 2)
    _, masks = modality_features(tiny_data)
    assert masks['text'].all()


def test_mask_random_entities(tiny_data):
    attach_modalities(tiny_data, {'text': torch.randn(N, 3)})
    mask_random_entities(tiny_data, 'text', 0.5, seed=1)
    m = tiny_data['entity'].mask_text
    assert int(m.sum()) == N // 2
    assert (tiny_data['entity'].x_text[~m] == 0).all()
    mask_random_entities(tiny_data, 'text', 1.0)
    assert not tiny_data['entity'].mask_text.any()
