import pytest
import torch

from pyg_fewshot.models import (MetaR, MetaRConfig, TaskOutput, build_model,
                                model_config)
from pyg_fewshot.nn import EntityEncoder, MLPRelationMeta


def small(data, **kw):
    kw.setdefault('embedding_dim', 8)
    kw.setdefault('hidden_channels', (8, ))
    return build_model('metar', data, **kw)


def test_shapes_and_no_shot_dependent_parameters(tiny_data):
    model = small(tiny_data, hidden_channels=(16, ))
    n_params = sum(p.numel() for p in model.parameters())
    for K in (1, 3, 5):
        support = torch.randint(0, 40, (4, K, 2))
        h, t = model.embed(support[..., 0]), model.embed(support[..., 1])
        out = model.init_local(support, h, t)
        assert isinstance(out, TaskOutput)
        assert set(out.local) == {'rel'}
        assert out.local['rel'].shape == (4, 8)
        assert out.aux_losses == {} and out.routing is None
        assert out.aux_loss.item() == 0
        assert model.score(h, t, out.local).shape == (4, K)
        cand = model.embed(torch.arange(40)).expand(4, 40, 8)
        assert model.score_candidates(h, cand, out.local).shape == (4, K, 40)
    # The same parameters serve every K (no batch norm over the shot axis).
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_init_local_is_the_mean_of_the_relation_meta_over_the_shots(
        tiny_data):
    model = small(tiny_data).eval()
    support = torch.randint(0, 40, (3, 4, 2))
    h, t = model.embed(support[..., 0]), model.embed(support[..., 1])
    rel = model.init_local(support, h, t).local['rel']
    want = model.relation_meta.mlp(torch.cat([h, t], -1)).mean(dim=1)
    torch.testing.assert_close(rel, want)


def test_score_is_negative_translation_distance(tiny_data):
    model = small(tiny_data)
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
    model = build_model('metar', tiny_data, embedding_dim=6,
                        hidden_channels=(8, ))
    assert model.encoder.entity.weight.shape == (40, 6)
    assert torch.equal(model.encoder.entity.weight.data, emb)
    assert isinstance(model.config, MetaRConfig) and model.config.pretrained
    # The vectors are copied, not shared.
    assert model.encoder.entity.weight.data_ptr() != emb.data_ptr()
    cold = build_model('metar', tiny_data, pretrained=False,
                       embedding_dim=6, hidden_channels=(8, ))
    assert not torch.equal(cold.encoder.entity.weight.data, emb)
    # The configured size must be that of the vectors.
    with pytest.raises(ValueError, match=r'\(40, 6\)'):
        build_model('metar', tiny_data, embedding_dim=8,
                    hidden_channels=(8, ))


def test_config_is_kept_and_rebuilds_the_model(tiny_data):
    model = small(tiny_data, dropout=0.25)
    assert model.config == MetaRConfig(embedding_dim=8, hidden_channels=(8, ),
                                       dropout=0.25)
    assert model.relation_meta.dropout == 0.25
    assert model.relation_meta.hidden_channels == (8, )
    torch.manual_seed(3)
    a = build_model(model.config, tiny_data)
    torch.manual_seed(3)
    b = MetaR.from_config(model_config('metar', embedding_dim=8,
                                       hidden_channels=(8, ), dropout=0.25),
                          tiny_data)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(),
                                  b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    with pytest.raises(TypeError, match='model name'):
        build_model(model.config, tiny_data, dropout=0.0)


def test_deterministic_under_seed(tiny_data):
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = small(tiny_data)
        states.append({k: v.detach().clone()
                       for k, v in model.named_parameters()})
    assert list(states[0]) == list(states[1])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    torch.manual_seed(1)
    other = small(tiny_data)
    assert not torch.equal(other.encoder.entity.weight, states[0][
        'encoder.entity.weight'])


def test_composition_equals_from_config(tiny_data):
    # The model resets its parts once, in a fixed order: composing the parts
    # by hand under a seed gives the model from_config builds.
    torch.manual_seed(0)
    built = small(tiny_data, dropout=0.0)
    torch.manual_seed(0)
    composed = MetaR(EntityEncoder(40, 8),
                     MLPRelationMeta(16, 8, hidden_channels=(8, ),
                                     dropout=0.0))
    assert composed.config is None
    for (ka, va), (kb, vb) in zip(built.state_dict().items(),
                                  composed.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    support = torch.randint(0, 40, (2, 3, 2))
    outs = []
    for model in (built, composed):
        h, t = model.embed(support[..., 0]), model.embed(support[..., 1])
        outs.append(model.init_local(support, h, t).local['rel'])
    assert torch.equal(*outs)
    assert composed.sparse_parameters() == (composed.encoder.entity.weight, )
    dense = MetaR(EntityEncoder(40, 8, sparse=False),
                  MLPRelationMeta(16, 8, hidden_channels=(8, )))
    assert dense.sparse_parameters() == ()
    assert composed.num_entities == 40
