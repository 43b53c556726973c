import pytest
import torch

from pyg_fewshot.nn.attentive_neighbor_aggregator import (
    AttentiveNeighborAggregator,
)
from pyg_fewshot.nn.encoder import EntityEncoder, NeighborEncoder
from pyg_fewshot.ops import csr_gather

N, R, D = 12, 3, 8


def make_graph(num_triples=50, seed=0):
    r"""A background CSR with inverse edges (relation r + R); entity 11 has
    no edge and entity 0 is a hub."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(0, N - 1, (num_triples, ), generator=g)
    h[:12] = 0
    t = torch.randint(0, N - 1, (num_triples, ), generator=g)
    r = torch.randint(0, R, (num_triples, ), generator=g)
    src, dst = torch.cat([h, t]), torch.cat([t, h])
    rel = torch.cat([r, r + R])
    perm = torch.argsort(src * 10_000 + torch.arange(src.numel()))
    ptr = torch.zeros(N + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(src, minlength=N).cumsum(0)
    return ptr, dst[perm], rel[perm]


NELL = dict(residual_scale=0.0, init='transe', act=None, gate=False,
            mix='convex', update_dropout=0.5)


def test_entity_encoder():
    torch.manual_seed(0)
    enc = EntityEncoder(N, D)
    assert enc.sparse_parameters() == (enc.entity.weight, )
    assert EntityEncoder(N, D, sparse=False).sparse_parameters() == ()
    index = torch.tensor([[3, 1], [3, 0]])
    assert torch.equal(enc(index), enc.entity.weight[index])
    bound = (6 / (N + D))**0.5  # Xavier uniform
    assert enc.entity.weight.abs().max() <= bound
    pre = torch.randn(N, D)
    enc = EntityEncoder(N, D, pretrained=pre)
    assert torch.equal(enc.entity.weight, pre)
    with torch.no_grad():
        enc.entity.weight.zero_()
    enc.reset_parameters()
    assert torch.equal(enc.entity.weight, pre)
    assert 'pretrained' not in ''.join(enc.state_dict())
    with pytest.raises(ValueError, match=r'shape \(12, 4\), expected '
                       r'\(12, 8\)'):
        EntityEncoder(N, D, pretrained=torch.randn(N, 4))
    assert repr(enc) == 'EntityEncoder(12, 8, sparse=True)'


def test_construction_draws_as_the_parts_and_reset_draws_in_order():
    # Built, the encoder has drawn what its torch.nn parts draw (an
    # initialisation that does not advance the generator); reset_parameters
    # then draws entity, aggregator, relation vectors in this order, so a
    # model composing it with other parts before one reset draws what it
    # drew before the encoder existed.
    graph = make_graph()
    for kwargs in ({}, dict(aggregator_kwargs=dict(NELL, max_neighbors=4),
                            relation_init='translation')):
        torch.manual_seed(1)
        enc = NeighborEncoder(N, R, D, graph, **kwargs)
        after_build = torch.get_rng_state()
        enc.reset_parameters()
        after_reset = torch.get_rng_state()
        extra = torch.rand(3)

        torch.manual_seed(1)
        entity = torch.nn.Embedding(N, D)
        relation = torch.nn.Embedding(2 * R, D)
        agg = AttentiveNeighborAggregator(
            D, **kwargs.get('aggregator_kwargs', {}))
        assert torch.equal(torch.get_rng_state(), after_build)
        torch.nn.init.xavier_uniform_(entity.weight)
        agg.reset_parameters()
        if kwargs.get('relation_init') != 'translation':
            torch.nn.init.xavier_uniform_(relation.weight)
        assert torch.equal(torch.get_rng_state(), after_reset)
        assert torch.equal(enc.entity.weight, entity.weight)
        assert torch.equal(enc.aggregator.lin_ent.weight, agg.lin_ent.weight)
        if kwargs.get('relation_init') != 'translation':
            assert torch.equal(enc.relation.weight, relation.weight)
        assert torch.equal(torch.rand(3), extra)


def test_relation_init():
    ptr, ent, rel = make_graph()
    pre = torch.randn(N, D)
    rel_pre = torch.randn(R, D)
    enc = NeighborEncoder(N, R, D, (ptr, ent, rel), pretrained=pre,
                          pretrained_relations=rel_pre)
    assert torch.equal(enc.relation.weight, torch.cat([rel_pre, -rel_pre]))

    enc = NeighborEncoder(N, R, D, (ptr, ent, rel), pretrained=pre,
                          pretrained_relations=rel_pre,
                          relation_init='translation')
    center = torch.arange(N).repeat_interleave(ptr.diff())
    for r in range(R):
        fwd = rel == r
        mean = (pre[ent[fwd]] - pre[center[fwd]]).mean(0)
        torch.testing.assert_close(enc.relation.weight[r], mean)
        torch.testing.assert_close(enc.relation.weight[R + r], -mean)
    with pytest.raises(ValueError, match='relation_init'):
        NeighborEncoder(N, R, D, (ptr, ent, rel), relation_init='random')


class MyOwnAggregator(AttentiveNeighborAggregator):
    pass


def test_aggregator_resolution_and_buffers():
    graph = make_graph()
    for name in ('attentive', 'AttentiveNeighborAggregator',
                 'attentive_neighbor'):
        enc = NeighborEncoder(N, R, D, graph, aggregator=name,
                              aggregator_kwargs=dict(max_neighbors=7))
        assert type(enc.aggregator) is AttentiveNeighborAggregator
        assert enc.aggregator.max_neighbors == 7
    enc = NeighborEncoder(N, R, D, graph, aggregator='my_own')
    assert type(enc.aggregator) is MyOwnAggregator
    agg = AttentiveNeighborAggregator(D, hidden_dim=5)
    assert NeighborEncoder(N, R, D, graph, aggregator=agg).aggregator is agg
    with pytest.raises(ValueError, match='Could not resolve'):
        NeighborEncoder(N, R, D, graph, aggregator='max')
    # The graph comes from the data: not saved with the parameters.
    assert set(enc.state_dict()) == {
        'entity.weight', 'relation.weight', 'aggregator.lin_rel.weight',
        'aggregator.lin_ent.weight', 'aggregator.lin_ent.bias',
        'aggregator.att', 'aggregator.beta'
    }
    assert enc.nbr_pair.numel() == graph[1].numel()
    assert enc.sparse_parameters() == (enc.entity.weight, )
    assert repr(enc).startswith('NeighborEncoder(12, 3, 8, aggregator='
                                'MyOwnAggregator(8, ')


def _forward_backward(module, fn, seed=0):
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = fn()
    (out * torch.arange(out.numel()).view_as(out).cos()).sum().backward()
    grads = {k: p.grad.to_dense() for k, p in module.named_parameters()
             if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('kwargs', [
    dict(max_neighbors=4),
    dict(max_neighbors=4, dropout=0.2, residual_scale=0.5),
    dict(NELL, max_neighbors=4),
])
def test_forward_matches_plain_aggregator_paths(training, kwargs):
    # The encoder's fast path (look-up of the rows a batch needs, pairs
    # numbered once per graph) against the aggregator on the full table, and
    # (in evaluation) against forward_edges on the explicit edge list.
    ptr, ent, rel = make_graph()
    torch.manual_seed(2)
    enc = NeighborEncoder(N, R, D, (ptr, ent, rel), aggregator_kwargs=kwargs,
                          relation_init='translation')
    with torch.no_grad():  # move the update off zero (residual_scale=0.0)
        for p in enc.aggregator.parameters():
            p.add_(0.1 * torch.arange(p.numel()).view_as(p).sin())
    enc.train(training)
    agg = enc.aggregator
    for index in (torch.tensor([[0, 5, 11], [5, 2, 0]]), torch.arange(N),
                  torch.tensor([0, 2, 3, 11])):
        out, grads = _forward_backward(enc, lambda: enc(index))
        ref, ref_grads = _forward_backward(
            enc, lambda: agg(enc.entity.weight, enc.relation.weight,
                             index.view(-1), ptr, ent, rel).view(
                                 *index.shape, D))
        assert out.shape == (*index.shape, D)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        assert set(grads) == set(ref_grads)
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4,
                                       atol=1e-5)
        if training:
            continue
        centers = index.view(-1).unique()
        pos, batch = csr_gather(ptr, centers, agg.max_neighbors)
        x, r = enc.entity.weight, enc.relation.weight
        edges = agg.forward_edges(x[centers], r[rel[pos]], x[ent[pos]], batch,
                                  num_nodes=centers.numel())
        at = torch.searchsorted(centers, index)
        torch.testing.assert_close(out, edges[at], rtol=1e-5, atol=1e-6)
    # An entity without neighbours keeps its row.
    assert torch.equal(enc(torch.tensor([11])), enc.entity.weight[[11]])


def test_sorted_distinct_ids_and_sparse_rows():
    ptr, ent, rel = make_graph()
    enc = NeighborEncoder(N, R, D, (ptr, ent, rel),
                          aggregator_kwargs=dict(max_neighbors=3)).eval()
    index = torch.tensor([1, 4, 6])
    out = enc(index)
    torch.testing.assert_close(out, enc(index.flip(0)).flip(0))
    out.sum().backward()
    # One sparse gradient row per entity the batch needed.
    grad = enc.entity.weight.grad
    assert grad.is_sparse
    pos, _ = csr_gather(ptr, index, 3)
    needed = torch.cat([index, ent[pos]]).unique()
    assert torch.equal(grad._indices().view(-1).sort().values, needed)
