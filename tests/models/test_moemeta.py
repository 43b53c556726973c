import pytest
import torch

from pyg_fewshot.data import EpisodeSampler
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner
from pyg_fewshot.models import MoEMeta, build_model


def small(data, **kw):
    torch.manual_seed(0)
    kw.setdefault('embedding_dim', 8)
    return build_model('moemeta', data, num_experts=4, top_k=2,
                       expert_hidden=8, **kw)


def test_local_parameters_and_shapes(tiny_data):
    model = small(tiny_data)
    ids = torch.randint(0, 40, (3, 2))
    h, t = model.embed(ids), model.embed(ids.flip(0))
    assert h.shape == (3, 2, 8)
    local, aux = model.init_local(h, t)
    assert set(local) == {'rel', 'p_h', 'p_r', 'p_t'}
    assert all(v.shape == (3, 8) for v in local.values())
    assert model.score(h, t, local).shape == (3, 2)
    assert model.last_routing.experts.shape == (6, 2)


def test_isolated_entity_falls_back_to_its_embedding(tiny_data):
    model = small(tiny_data)
    deg = tiny_data.nbr_ptr[1:] - tiny_data.nbr_ptr[:-1]
    lonely = (deg == 0).nonzero().view(-1)
    if lonely.numel() == 0:
        pytest.skip('every entity has neighbours in this fixture')
    model.eval()
    out = model.embed(lonely)
    assert torch.allclose(out, model.entity.weight[lonely])


def test_embedding_gradient_is_sparse_and_touches_neighbourhood_only(
        tiny_data):
    model = small(tiny_data)
    idx = torch.tensor([0, 1])
    model.embed(idx).sum().backward()
    grad = model.entity.weight.grad
    assert grad.is_sparse
    rows = set(grad.coalesce().indices()[0].tolist())
    ptr = tiny_data.nbr_ptr
    allowed = {0, 1} | set(tiny_data.nbr_ent[ptr[0]:ptr[2]].tolist())
    assert rows <= allowed


@pytest.mark.parametrize('flags', [
    dict(aggregate=False), dict(moe=False, mlp_hidden=(8, )),
    dict(local_adaptation=False), dict(projection='paper'),
    dict(projection_init='random'), dict(projection='none'),
    dict(aggregator_scale=0.0),
])
def test_ablation_flags_train_and_evaluate(tiny_data, flags):
    model = small(tiny_data, **flags)
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    loss, _ = learner.loss(ep)
    loss.backward()
    res = evaluate(model, tiny_data, 'test', 2, learner)
    assert 0 < res['mrr'] <= 1
    if flags.get('local_adaptation') is False:
        assert model.adapt_keys == ()
        assert model.projection is None
    if flags.get('projection') == 'none':
        assert model.adapt_keys == ('rel', )
        assert model.projection is None


def test_zero_inner_steps_equals_no_adaptation(tiny_data):
    model = small(tiny_data)
    model.eval()
    ids = torch.randint(0, 40, (2, 3))
    h, t, n = (model.embed(ids), model.embed(ids.roll(1, 0)),
               model.embed(ids.roll(1, 1)))
    local, _ = model.init_local(h, t)
    adapted = MetaLearner(model, inner_steps=0).adapt(local, h, t, n)
    assert torch.equal(model.score(h, t, adapted), model.score(h, t, local))


def test_aggregate_requires_graph():
    with pytest.raises(ValueError, match='needs .graph.'):
        MoEMeta(10, 2)


def test_identity_aggregator_at_init_keeps_the_embedding(tiny_data):
    model = small(tiny_data, aggregator_scale=0.0)
    idx = torch.arange(10)
    assert torch.equal(model.embed(idx), model.entity.weight[idx])


def test_embed_matches_per_edge_aggregation(tiny_data):
    # embed() shares messages per (relation, neighbour) pair, projects only
    # the distinct neighbours and sums by a sparse product; the result and
    # the gradients must equal the plain per-edge aggregation.
    from pyg_fewshot.ops import csr_gather
    model = small(tiny_data).eval()
    ids = torch.tensor([[3, 0], [7, 3], [1, 12]])

    def grads():
        g = [model.entity.weight.grad.to_dense()]
        return g + [p.grad for p in model.aggregator.parameters()] + \
            [model.relation.weight.grad]

    weights = torch.randn(3, 2, 8)
    model.zero_grad()
    out = model.embed(ids)
    (out * weights).sum().backward()
    got = grads()

    model.zero_grad()
    centers, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    pos, batch = csr_gather(model.nbr_ptr, centers, 50)
    x = model.entity.weight
    ref = model.aggregator.forward_edges(
        x[centers], model.relation.weight, x, batch,
        num_nodes=centers.numel(), rel_index=model.nbr_rel[pos],
        ent_index=model.nbr_ent[pos])[inverse].view(3, 2, 8)
    (ref * weights).sum().backward()
    model.entity.weight.grad = model.entity.weight.grad.to_sparse()
    want = grads()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_aggregator_options_are_passed_on(tiny_data):
    model = small(tiny_data, aggregator_attention='mean',
                  aggregator_gate=False, aggregator_act=None,
                  aggregator_mix='convex', aggregator_init='transe',
                  aggregator_update_dropout=0.25, aggregator_scale=0.0)
    agg = model.aggregator
    assert (agg.attention, agg.use_gate, agg.mix, agg.init,
            agg.update_dropout) == ('mean', False, 'convex', 'transe', 0.25)
    assert isinstance(agg.act, torch.nn.Identity)
    assert model.config['aggregator_mix'] == 'convex'
    # Identity at initialisation with the convex mix from 0 too.
    model.eval()
    ids = torch.arange(10)
    assert torch.allclose(model.embed(ids), model.entity.weight[ids])
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    model.train()
    loss, _ = learner.loss(ep)
    loss.backward()
    assert agg.gamma.grad is not None


def test_aggregator_relations_start_at_mean_translations(tiny_data):
    model = small(tiny_data, aggregator_relations='translation')
    R = model.relation.num_embeddings // 2
    x = model.entity.weight.detach()
    (h, t), r = tiny_data.bg_edge_index, tiny_data.bg_edge_type
    for rel in range(R):
        mask = r == rel
        expected = (x[t[mask]] - x[h[mask]]).mean(0) if mask.any() else \
            torch.zeros(x.size(1))
        torch.testing.assert_close(model.relation.weight[rel], expected)
        torch.testing.assert_close(model.relation.weight[R + rel], -expected)
    with pytest.raises(ValueError):
        small(tiny_data, aggregator_relations='random')


def test_aggregator_fixed_message_trains(tiny_data):
    model = small(tiny_data, aggregator_init='transe', aggregator_act=None,
                  aggregator_gate=False, aggregator_mix='convex',
                  aggregator_scale=0.1, aggregator_learn_message=False)
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    loss, _ = learner.loss(ep)
    loss.backward()
    assert model.aggregator.lin_ent.weight.grad is None
    assert model.aggregator.gamma.grad is not None
    assert model.relation.weight.grad is not None
