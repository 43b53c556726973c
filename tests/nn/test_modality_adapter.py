import math

import pytest
import torch

from pyg_fewshot.nn import ModalityAdapter, ModalityFusion, diversity_loss


def test_adapter_shapes_dropout_grad():
    torch.manual_seed(0)
    adapter = ModalityAdapter(32, 10)
    assert adapter.lin1.out_features == 50  # default bottleneck
    x = torch.randn(7, 32, requires_grad=True)
    adapter.eval()
    out = adapter(x)
    assert out.shape == (7, 10)
    torch.testing.assert_close(out, adapter(x))  # no dropout in eval
    adapter.train()
    assert not torch.allclose(adapter(x), out)  # dropout 0.5 in training
    adapter(x).sum().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in adapter.parameters())
    ref = adapter.lin2(torch.relu(adapter.lin1(x)))
    torch.testing.assert_close(adapter.eval()(x), ref)


def test_adapter_determinism_repr_reset():
    torch.manual_seed(1)
    a = ModalityAdapter(8, 4, hidden_channels=3, dropout=0.1)
    torch.manual_seed(1)
    b = ModalityAdapter(8, 4, hidden_channels=3, dropout=0.1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert repr(a) == 'ModalityAdapter(8, 4, hidden=3, dropout=0.1)'
    before = a.lin1.weight.detach().clone()
    a.reset_parameters()
    assert not torch.equal(before, a.lin1.weight)


def test_fusion_sum_and_masks():
    torch.manual_seed(2)
    fusion = ModalityFusion({'text': 12, 'image': 20}, 6, dropout=0.0).eval()
    N = 5
    x_s = torch.randn(N, 6, requires_grad=True)
    feats = {'text': torch.randn(N, 12), 'image': torch.randn(N, 20)}
    fused, per = fusion(x_s, feats)
    assert fused.shape == (N, 6) and set(per) == {'text', 'image'}
    exp = (x_s + fusion.adapters['text'](feats['text']) +
           fusion.adapters['image'](feats['image']))
    torch.testing.assert_close(fused, exp)

    # Missing image for entities 1 and 3, with NaN features there.
    mask = torch.tensor([True, False, True, False, True])
    feats['image'] = feats['image'].clone()
    feats['image'][~mask] = float('nan')
    fused, per = fusion(x_s, feats, {'image': mask})
    assert torch.equal(per['image'][~mask], torch.zeros(2, 6))
    torch.testing.assert_close(
        fused[~mask], x_s[~mask] + per['text'][~mask])
    fused.sum().backward()
    for p in fusion.parameters():
        assert torch.isfinite(p.grad).all()

    # A modality absent from the inputs is skipped.
    fused, per = fusion(x_s, {'text': feats['text']})
    assert set(per) == {'text'}
    torch.testing.assert_close(fused, x_s + per['text'])


def test_fusion_weighted():
    torch.manual_seed(3)
    fusion = ModalityFusion({'text': 4, 'image': 4}, 3, dropout=0.0,
                            fusion='weighted')
    assert torch.equal(fusion.weight, torch.ones(2))
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([2.0, -1.0]))
    x_s = torch.randn(4, 3)
    feats = {'text': torch.randn(4, 4), 'image': torch.randn(4, 4)}
    fused, per = fusion(x_s, feats)
    torch.testing.assert_close(fused,
                               x_s + 2.0 * per['text'] - per['image'])
    fused.sum().backward()
    assert fusion.weight.grad is not None
    assert repr(fusion) == ('ModalityFusion({text=4, image=4}, 3, '
                            'hidden=50, fusion=weighted)')
    with pytest.raises(ValueError):
        ModalityFusion({'text': 4}, 3, fusion='concat')


def test_diversity_loss_hand_computed():
    x_s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[1.0, 1.0], [0.0, -2.0], [2.0, 2.0]])
    image = torch.tensor([[3.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    s = 1 / math.sqrt(2)
    # cos(text, x_s) = [s, -1, 1]; cos(image, x_s) = [1, 0, -s]
    per = {'text': text, 'image': image}

    loss = diversity_loss(per, x_s)
    expected = (s + 0 + 1) / 3 + (1 + 0 + 0) / 3
    torch.testing.assert_close(loss, torch.tensor(expected))

    gamma = 0.5
    loss = diversity_loss(per, x_s, gamma=gamma)
    expected = ((s - 0.5) + 0 + 0.5) / 3 + 0.5 / 3
    torch.testing.assert_close(loss, torch.tensor(expected))

    # Image missing for entity 0: its mean runs over entities 1, 2 only.
    masks = {'image': torch.tensor([False, True, True])}
    loss = diversity_loss(per, x_s, masks=masks)
    expected = (s + 0 + 1) / 3 + (0 + 0) / 2
    torch.testing.assert_close(loss, torch.tensor(expected))

    # Pairwise: cos(text, image) = [s, 0, -s]; joint mask -> entities 1, 2.
    loss = diversity_loss(per, x_s, masks=masks, pairwise=True)
    expected = (s + 0 + 1) / 3 + 0.0 + (0 + 0) / 2
    torch.testing.assert_close(loss, torch.tensor(expected))
    loss = diversity_loss(per, x_s, pairwise=True)
    expected = (s + 1) / 3 + 1 / 3 + s / 3
    torch.testing.assert_close(loss, torch.tensor(expected))

    # A modality missing everywhere contributes zero, not NaN.
    loss = diversity_loss({'image': image}, x_s,
                          masks={'image': torch.zeros(3, dtype=torch.bool)})
    assert loss.item() == 0.0


def test_diversity_loss_gradient_pushes_apart():
    torch.manual_seed(4)
    fusion = ModalityFusion({'text': 8}, 4, dropout=0.0)
    x_s = torch.randn(16, 4)
    feats = {'text': torch.randn(16, 8)}
    opt = torch.optim.SGD(fusion.parameters(), lr=0.5)
    first = None
    for _ in range(20):
        _, per = fusion(x_s, feats)
        loss = diversity_loss(per, x_s)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
