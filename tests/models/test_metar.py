import torch

from pyg_fewshot.meta import MetaLearner
from pyg_fewshot.models import MetaR, build_model


def test_shapes_and_no_shot_dependent_parameters(tiny_data):
    model = MetaR.from_data(tiny_data, embedding_dim=8, hidden_channels=(16, ))
    n_params = sum(p.numel() for p in model.parameters())
    for K in (1, 3, 5):
        h = model.embed(torch.randint(0, 40, (4, K)))
        t = model.embed(torch.randint(0, 40, (4, K)))
        local, aux = model.init_local(h, t)
        assert local['rel'].shape == (4, 8) and aux.item() == 0
        assert model.score(h, t, local).shape == (4, K)
        cand = model.embed(torch.arange(40)).expand(4, 40, 8)
        assert model.score_candidates(h, cand, local).shape == (4, K, 40)
    # The same parameters serve every K (no batch norm over the shot axis).
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_score_is_negative_translation_distance(tiny_data):
    model = MetaR.from_data(tiny_data, embedding_dim=8, hidden_channels=(8, ))
    h, t = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    rel = torch.randn(2, 8)
    expected = -(h + rel[:, None] - t).norm(dim=-1)
    assert torch.allclose(model.score(h, t, {'rel': rel}), expected)
    scores = model.score_candidates(h, t, {'rel': rel})
    assert torch.allclose(scores.diagonal(dim1=1, dim2=2), expected,
                          atol=1e-5)


def test_pretrained_vectors_are_used(tiny_data):
    emb = torch.randn(40, 6)
    tiny_data['entity'].emb = emb
    model = build_model('metar', tiny_data, hidden_channels=(8, ))
    assert model.entity.weight.shape == (40, 6)
    assert torch.equal(model.entity.weight.data, emb)
    assert model.config['pretrained']
    cold = build_model('metar', tiny_data, pretrained=False,
                       embedding_dim=6, hidden_channels=(8, ))
    assert not torch.equal(cold.entity.weight.data, emb)


def test_deterministic_under_seed(tiny_data):
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MetaR.from_data(tiny_data, embedding_dim=8,
                                hidden_channels=(8, ))
        outs.append(model.entity.weight.detach().clone())
    assert torch.equal(*outs)
