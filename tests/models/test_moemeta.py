import os

import pytest
import torch

from conftest import REPO
from pyg_fewshot.data import EpisodeSampler
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner
from pyg_fewshot.models import (MoEMeta, MoEMetaConfig, TaskOutput,
                                build_model)
from pyg_fewshot.nn import (EntityEncoder, MLPRelationMeta, MoERouting,
                            NeighborEncoder, ProjectionAdapter,
                            SparseMoERelationMeta)

MOE = {'num_experts': 4, 'top_k': 2, 'hidden_channels': 8,
       'gate_hidden_channels': 8}


def small(data, **kw):
    torch.manual_seed(0)
    kw.setdefault('embedding_dim', 8)
    kw.setdefault('relation_meta_kwargs', dict(MOE))
    return build_model('moemeta', data, **kw)


def support_of(model, support):
    return support, model.embed(support[..., 0]), model.embed(support[..., 1])


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# TaskOutput ------------------------------------------------------------------
def test_task_output_aux_loss_sums_in_order_and_is_zero_when_empty():
    local = {'rel': torch.zeros(2, 3, dtype=torch.double)}
    big, neg, one = (torch.tensor(1e8), torch.tensor(-1e8),
                     torch.tensor(1.0))
    # float32: (1e8 - 1e8) + 1 = 1, but (-1e8 + 1) + 1e8 = 0: the sum is
    # taken in the dict's order.
    out = TaskOutput(local, {'a': big, 'b': neg, 'c': one})
    assert out.aux_loss.item() == 1.0
    out = TaskOutput(local, {'b': neg, 'c': one, 'a': big})
    assert out.aux_loss.item() == 0.0
    assert out.routing is None
    empty = TaskOutput(local, {}).aux_loss
    assert empty.shape == () and empty.item() == 0
    assert empty.dtype == torch.double  # on the local parameters' dtype
    single = torch.tensor(2.5, requires_grad=True)
    assert TaskOutput(local, {'x': single}).aux_loss is single


# Shapes, routing and auxiliary losses ----------------------------------------
def test_local_parameters_and_shapes(tiny_data):
    model = small(tiny_data)
    support = torch.randint(0, 40, (3, 2, 2))
    support, h, t = support_of(model, support)
    assert h.shape == (3, 2, 8)
    out = model.init_local(support, h, t)
    assert set(out.local) == {'rel', 'p_h', 'p_r', 'p_t'}
    assert all(v.shape == (3, 8) for v in out.local.values())
    assert model.score(h, t, out.local).shape == (3, 2)
    assert isinstance(out.routing, MoERouting)
    assert out.routing.experts.shape == (6, 2)  # B * K pairs, top 2
    assert out.routing.probs.shape == (6, 4)
    # The load-balance loss is reported (zero when disabled).
    assert set(out.aux_losses) == {'load_balance'}
    assert out.aux_loss.item() == 0


def test_load_balance_loss_is_the_routing_aux_loss(tiny_data):
    model = small(tiny_data, relation_meta_kwargs={**MOE,
                                                   'load_balance': 0.5})
    support, h, t = support_of(model, torch.randint(0, 40, (3, 2, 2)))
    out = model.init_local(support, h, t)
    assert out.aux_losses['load_balance'] is out.routing.aux_loss
    assert out.aux_loss.item() > 0
    assert torch.equal(out.aux_loss, out.routing.aux_loss)
    # The outer objective adds it.
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    loss, logs = learner.loss(ep)
    assert logs['aux_loss'] > 0
    assert logs['aux/load_balance'] == logs['aux_loss']
    assert loss.item() == pytest.approx(
        (logs['query_loss'] + logs['aux_loss']).item(), rel=1e-6)
    assert 0 < logs['routing/max_share'] <= 1


# Composition --------------------------------------------------------------
def test_from_config_builds_the_paper_composition(tiny_data):
    model = small(tiny_data)
    assert isinstance(model.config, MoEMetaConfig)
    assert isinstance(model.encoder, NeighborEncoder)
    assert isinstance(model.relation_meta, SparseMoERelationMeta)
    assert (model.relation_meta.num_experts, model.relation_meta.top_k,
            model.relation_meta.hidden_channels) == (4, 2, 8)
    assert isinstance(model.projection, ProjectionAdapter)
    assert model.projection.mode == 'transd'
    assert model.adapt_keys == ('rel', 'p_h', 'p_r', 'p_t')


def test_from_config_ablations_are_compositions(tiny_data):
    no_agg = small(tiny_data, aggregator=None)
    assert type(no_agg.encoder) is EntityEncoder
    assert not isinstance(no_agg.encoder, NeighborEncoder)
    idx = torch.arange(10)
    assert torch.equal(no_agg.embed(idx), no_agg.encoder.entity.weight[idx])

    mlp = small(tiny_data, relation_meta='mlp',
                relation_meta_kwargs={'hidden_channels': (8, )})
    assert isinstance(mlp.relation_meta, MLPRelationMeta)
    assert mlp.relation_meta.hidden_channels == (8, )
    support, h, t = support_of(mlp, torch.randint(0, 40, (2, 3, 2)))
    out = mlp.init_local(support, h, t)
    assert out.routing is None and out.aux_losses == {}

    no_proj = small(tiny_data, projection=None)
    assert no_proj.projection is None
    assert no_proj.adapt_keys == ('rel', )
    support, h, t = support_of(no_proj, torch.randint(0, 40, (2, 3, 2)))
    local = no_proj.init_local(support, h, t).local
    assert set(local) == {'rel'}
    # Without projection vectors a triple scores as TransE does.
    torch.testing.assert_close(
        no_proj.score(h, t, local),
        -(h + local['rel'].unsqueeze(1) - t).norm(dim=-1))

    paper = small(tiny_data, projection='paper',
                  projection_kwargs={'init': 'random'})
    assert (paper.projection.mode, paper.projection.init) == ('paper',
                                                              'random')
    with pytest.raises(ValueError, match="'relation_meta' must be one of"):
        small(tiny_data, relation_meta='dense')


def test_composition_by_hand_equals_from_config(tiny_data):
    built = small(tiny_data, aggregator=None)
    torch.manual_seed(0)
    composed = MoEMeta(EntityEncoder(40, 8),
                       SparseMoERelationMeta(16, 8, **MOE),
                       ProjectionAdapter(8))
    assert composed.config is None
    a, b = built.state_dict(), composed.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert MoEMeta(EntityEncoder(40, 8),
                   SparseMoERelationMeta(16, 8, **MOE)).adapt_keys == (
                       'rel', )


def test_built_twice_under_the_same_seed_is_identical(tiny_data):
    a, b = params(small(tiny_data)), params(small(tiny_data))
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    torch.manual_seed(1)
    c = params(build_model('moemeta', tiny_data, embedding_dim=8,
                           relation_meta_kwargs=dict(MOE)))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_model_refuses_an_unknown_name(tiny_data):
    with pytest.raises(ValueError, match="Unknown model 'transe'") as e:
        build_model('transe', tiny_data)
    assert '\n' not in str(e.value)
    for name in ('metar', 'moemeta', 'fusionadapter'):
        assert name in str(e.value)
    # Names are case-, dash- and underscore-insensitive.
    assert isinstance(build_model('MoE-Meta', tiny_data, embedding_dim=8,
                                  relation_meta_kwargs=dict(MOE)), MoEMeta)
    with pytest.raises(TypeError, match='bogus'):
        build_model('moemeta', tiny_data, bogus=1)


# Entity side -----------------------------------------------------------------
def test_isolated_entity_falls_back_to_its_embedding(tiny_data):
    model = small(tiny_data)
    deg = tiny_data.nbr_ptr[1:] - tiny_data.nbr_ptr[:-1]
    lonely = (deg == 0).nonzero().view(-1)
    if lonely.numel() == 0:
        pytest.skip('every entity has neighbours in this fixture')
    model.eval()
    out = model.embed(lonely)
    assert torch.allclose(out, model.encoder.entity.weight[lonely])


def test_embedding_gradient_is_sparse_and_touches_neighbourhood_only(
        tiny_data):
    model = small(tiny_data)
    assert model.sparse_parameters() == (model.encoder.entity.weight, )
    idx = torch.tensor([0, 1])
    model.embed(idx).sum().backward()
    grad = model.encoder.entity.weight.grad
    assert grad.is_sparse
    rows = set(grad.coalesce().indices()[0].tolist())
    ptr = tiny_data.nbr_ptr
    allowed = {0, 1} | set(tiny_data.nbr_ent[ptr[0]:ptr[2]].tolist())
    assert rows <= allowed


@pytest.mark.parametrize('options,inner_steps', [
    (dict(aggregator=None), None),
    (dict(relation_meta='mlp', relation_meta_kwargs={
        'hidden_channels': (8, )}), None),
    # The old local_adaptation=False: no projection and no inner loop.
    (dict(projection=None), 0),
    (dict(projection='paper'), None),
    (dict(projection_kwargs={'init': 'random'}), None),
    (dict(projection=None), None),
    (dict(aggregator_kwargs={'residual_scale': 0.0}), None),
])
def test_ablations_train_and_evaluate(tiny_data, options, inner_steps):
    model = small(tiny_data, **options)
    learner = MetaLearner(model, inner_steps=1 if inner_steps is None
                          else inner_steps)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    loss, _ = learner.loss(ep)
    assert torch.isfinite(loss)
    loss.backward()
    res = evaluate(model, tiny_data, 'test', 2, learner)
    assert 0 < res['mrr'] <= 1
    if options.get('projection', 'transd') is None:
        assert model.adapt_keys == ('rel', )
        assert model.projection is None


def test_zero_inner_steps_equals_no_adaptation(tiny_data):
    model = small(tiny_data)
    model.eval()
    ids = torch.randint(0, 40, (2, 3))
    support = torch.stack([ids, ids.roll(1, 0)], -1)
    h, t, n = (model.embed(ids), model.embed(ids.roll(1, 0)),
               model.embed(ids.roll(1, 1)))
    local = model.init_local(support, h, t).local
    adapted = MetaLearner(model, inner_steps=0).adapt(local, h, t, n)
    assert torch.equal(model.score(h, t, adapted), model.score(h, t, local))
    moved = MetaLearner(model, inner_steps=1).adapt(local, h, t, n)
    assert not torch.equal(model.score(h, t, moved), model.score(h, t, local))


def test_aggregator_requires_graph(tiny_data):
    del tiny_data.nbr_ptr, tiny_data.nbr_ent, tiny_data.nbr_rel
    # Without the aggregator no graph is needed ...
    small(tiny_data, aggregator=None)
    # ... with it, a clear error.
    with pytest.raises(ValueError, match='graph'):
        small(tiny_data)


def test_identity_aggregator_at_init_keeps_the_embedding(tiny_data):
    model = small(tiny_data, aggregator_kwargs={'residual_scale': 0.0})
    idx = torch.arange(10)
    assert torch.equal(model.embed(idx), model.encoder.entity.weight[idx])


def test_embed_matches_per_edge_aggregation(tiny_data):
    # embed() shares messages per (relation, neighbour) pair, projects only
    # the distinct neighbours and sums by a sparse product; the result and
    # the gradients must equal the plain per-edge aggregation.
    from pyg_fewshot.ops import csr_gather
    model = small(tiny_data).eval()
    enc = model.encoder
    ids = torch.tensor([[3, 0], [7, 3], [1, 12]])

    def grads():
        g = [enc.entity.weight.grad.to_dense()]
        return g + [p.grad for p in enc.aggregator.parameters()] + \
            [enc.relation.weight.grad]

    weights = torch.randn(3, 2, 8)
    model.zero_grad()
    out = model.embed(ids)
    (out * weights).sum().backward()
    got = grads()

    model.zero_grad()
    centers, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    pos, batch = csr_gather(enc.nbr_ptr, centers, 50)
    x = enc.entity.weight
    ref = enc.aggregator.forward_edges(
        x[centers], enc.relation.weight, x, batch,
        num_nodes=centers.numel(), rel_index=enc.nbr_rel[pos],
        ent_index=enc.nbr_ent[pos])[inverse].view(3, 2, 8)
    (ref * weights).sum().backward()
    enc.entity.weight.grad = enc.entity.weight.grad.to_sparse()
    want = grads()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_aggregator_options_are_passed_on(tiny_data):
    options = dict(attention='mean', gate=False, act=None, mix='convex',
                   init='transe', update_dropout=0.25, residual_scale=0.0)
    model = small(tiny_data, aggregator_kwargs=options)
    agg = model.encoder.aggregator
    assert (agg.attention, agg.use_gate, agg.mix, agg.init,
            agg.update_dropout) == ('mean', False, 'convex', 'transe', 0.25)
    assert isinstance(agg.act, torch.nn.Identity)
    assert model.config.aggregator_kwargs['mix'] == 'convex'
    # Identity at initialisation with the convex mix from 0 too.
    model.eval()
    ids = torch.arange(10)
    assert torch.allclose(model.embed(ids), model.encoder.entity.weight[ids])
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    model.train()
    loss, _ = learner.loss(ep)
    loss.backward()
    assert agg.gamma.grad is not None
    with pytest.raises(ValueError, match="Unknown mix 'blend'"):
        small(tiny_data, aggregator_kwargs={'mix': 'blend'})


def test_aggregator_relations_start_at_mean_translations(tiny_data):
    model = small(tiny_data, relation_init='translation')
    enc = model.encoder
    R = enc.relation.num_embeddings // 2
    x = enc.entity.weight.detach()
    (h, t), r = tiny_data.bg_edge_index, tiny_data.bg_edge_type
    for rel in range(R):
        mask = r == rel
        expected = (x[t[mask]] - x[h[mask]]).mean(0) if mask.any() else \
            torch.zeros(x.size(1))
        torch.testing.assert_close(enc.relation.weight[rel], expected)
        torch.testing.assert_close(enc.relation.weight[R + rel], -expected)
    with pytest.raises(ValueError, match='relation_init'):
        small(tiny_data, relation_init='random')


def test_aggregator_fixed_message_trains(tiny_data, monkeypatch):
    # An experiment-only aggregator (benchmarks/_modules.py), resolved by
    # name once imported.
    monkeypatch.syspath_prepend(os.path.join(REPO, 'benchmarks'))
    import _modules
    model = small(tiny_data, aggregator='fixed_message',
                  aggregator_kwargs=dict(init='transe', act=None, gate=False,
                                         mix='convex', residual_scale=0.1))
    agg = model.encoder.aggregator
    assert isinstance(agg, _modules.FixedMessageAggregator)
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    loss, _ = learner.loss(ep)
    loss.backward()
    assert agg.lin_ent.weight.grad is None
    assert agg.gamma.grad is not None
    assert model.encoder.relation.weight.grad is not None
