import pytest
import torch

from pyg_fewshot.nn import AttentiveNeighborAggregator
from pyg_fewshot.ops import csr_gather, graph_pairs, unique_pairs


D = 8


def make_graph(num_ent=12, num_rel=3, num_triples=40, isolated=(11, ),
               seed=0):
    r"""A random background graph with inverse edges (relation r + R) in
    CSR form, sorted by head; entities in `isolated` have no edge."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([e for e in range(num_ent) if e not in isolated])
    h = allowed[torch.randint(0, len(allowed), (num_triples, ), generator=g)]
    t = allowed[torch.randint(0, len(allowed), (num_triples, ), generator=g)]
    r = torch.randint(0, num_rel, (num_triples, ), generator=g)
    src = torch.cat([h, t])
    dst = torch.cat([t, h])
    rel = torch.cat([r, r + num_rel])
    perm = torch.argsort(src * 10_000 + torch.arange(src.numel()))
    src, dst, rel = src[perm], dst[perm], rel[perm]
    rowptr = torch.zeros(num_ent + 1, dtype=torch.long)
    rowptr[1:] = torch.bincount(src, minlength=num_ent).cumsum(0)
    return rowptr, dst, rel, 2 * num_rel


def reference(agg, x_ent, x_rel, index, rowptr, col_ent, col_rel, cap=None):
    r"""Entity-by-entity loop over the published formula with the full
    W = [W_r | W_e]."""
    W = torch.cat([agg.lin_rel.weight, agg.lin_ent.weight], dim=1)
    out = []
    for e in index.tolist():
        lo, hi = int(rowptr[e]), int(rowptr[e + 1])
        if cap is not None:
            hi = min(hi, lo + cap)
        if hi == lo:
            out.append(x_ent[e])
            continue
        c = torch.cat([x_rel[col_rel[lo:hi]], x_ent[col_ent[lo:hi]]], 1)
        c = agg.act(c @ W.t() + agg.lin_ent.bias)
        if agg.attention == 'softmax':
            w = torch.softmax(c @ agg.att, dim=0)
        elif agg.attention == 'mean':
            w = torch.full((hi - lo, ), 1.0 / (hi - lo))
        else:
            w = torch.ones(hi - lo)
        if agg.beta is not None:
            w = w * torch.sigmoid(c @ agg.beta)
        m = (w.unsqueeze(-1) * c).sum(0)
        if agg.lin_out is not None:
            m = agg.lin_out(m)
        out.append(x_ent[e] + m)
    return torch.stack(out)


@pytest.mark.parametrize('attention', ['softmax', 'mean', 'sum'])
@pytest.mark.parametrize('gate', [True, False])
@pytest.mark.parametrize('hidden_dim', [None, 6])
def test_matches_reference(attention, gate, hidden_dim):
    torch.manual_seed(0)
    rowptr, col_ent, col_rel, R = make_graph()
    agg = AttentiveNeighborAggregator(D, hidden_dim, attention=attention,
                                      gate=gate, max_neighbors=None).eval()
    x_ent = torch.randn(12, D)
    x_rel = torch.randn(R, D)
    index = torch.tensor([0, 3, 11, 5, 3, 7])
    out = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    assert out.shape == (6, D)
    ref = reference(agg, x_ent, x_rel, index, rowptr, col_ent, col_rel)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_isolated_entity_keeps_its_embedding():
    torch.manual_seed(1)
    rowptr, col_ent, col_rel, R = make_graph(isolated=(4, 11))
    for hidden_dim in (None, 5):
        agg = AttentiveNeighborAggregator(D, hidden_dim, dropout=0.3)
        x_ent = torch.randn(12, D)
        out = agg(x_ent, torch.randn(R, D), torch.tensor([4, 11, 0]),
                  rowptr, col_ent, col_rel)
        assert torch.equal(out[0], x_ent[4])
        assert torch.equal(out[1], x_ent[11])
        assert not torch.equal(out[2], x_ent[0])


def test_permutation_invariance():
    torch.manual_seed(2)
    rowptr, col_ent, col_rel, R = make_graph(num_triples=60)
    agg = AttentiveNeighborAggregator(D, max_neighbors=None).eval()
    x_ent, x_rel = torch.randn(12, D), torch.randn(R, D)
    index = torch.arange(12)
    out = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)

    # Shuffle the neighbours inside every CSR row.
    row = torch.repeat_interleave(torch.arange(12), rowptr.diff())
    perm = torch.argsort(row * 10_000 + torch.randperm(row.numel()))
    assert not torch.equal(perm, torch.arange(row.numel()))
    out_perm = agg(x_ent, x_rel, index, rowptr, col_ent[perm], col_rel[perm])
    torch.testing.assert_close(out, out_perm, rtol=1e-5, atol=1e-6)

    # Edge-list layout: any global edge order gives the same result.
    e_perm = torch.randperm(row.numel())
    out_edges = agg.forward_edges(x_ent, x_rel, x_ent, row[e_perm],
                                  rel_index=col_rel[e_perm],
                                  ent_index=col_ent[e_perm])
    torch.testing.assert_close(out, out_edges, rtol=1e-5, atol=1e-6)


def test_edge_index_layout_matches_csr():
    torch.manual_seed(3)
    rowptr, col_ent, col_rel, R = make_graph()
    agg = AttentiveNeighborAggregator(D, max_neighbors=None).eval()
    x_ent, x_rel = torch.randn(12, D), torch.randn(R, D)
    row = torch.repeat_interleave(torch.arange(12), rowptr.diff())
    edge_index = torch.stack([col_ent, row])  # neighbour -> centre
    out = agg.forward_edges(x_ent, x_rel[col_rel], x_ent[edge_index[0]],
                            edge_index[1], num_nodes=12)
    ref = agg(x_ent, x_rel, torch.arange(12), rowptr, col_ent, col_rel)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_neighbor_cap_eval_is_first_entries():
    torch.manual_seed(4)
    rowptr, col_ent, col_rel, R = make_graph(num_triples=80)
    cap = 3
    assert rowptr.diff().max() > cap
    agg = AttentiveNeighborAggregator(D, max_neighbors=cap).eval()
    x_ent, x_rel = torch.randn(12, D), torch.randn(R, D)
    index = torch.tensor([0, 1, 2, 11])
    out = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    ref = reference(agg, x_ent, x_rel, index, rowptr, col_ent, col_rel,
                    cap=cap)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # Passing the edge count gives the same result without a read-back.
    num_edges = int(rowptr.diff()[index].clamp(max=cap).sum())
    out2 = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel,
               num_edges=num_edges)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(out, agg(x_ent, x_rel, index, rowptr,
                                        col_ent, col_rel))


def test_neighbor_cap_training_samples_subsets():
    rowptr = torch.tensor([0, 10, 12, 12])  # degrees 10, 2, 0
    index = torch.tensor([0, 1, 2, 0])
    cap = 4
    seen = torch.zeros(10)
    for seed in range(200):
        pos, batch = csr_gather(rowptr, index, cap, sample=True,
                                generator=torch.Generator().manual_seed(seed))
        assert batch.tolist() == [0] * 4 + [1] * 2 + [3] * 4
        for b in (0, 3):
            p = pos[batch == b]
            assert p.unique().numel() == cap  # without replacement
            assert ((p >= 0) & (p < 10)).all()
        assert sorted(pos[batch == 1].tolist()) == [10, 11]
        seen += torch.bincount(pos[batch == 0], minlength=12)[:10]
    # Uniform: each of the 10 neighbours is picked in ~40% of draws.
    assert (seen / 200 - 0.4).abs().max() < 0.15

    a = csr_gather(rowptr, index, cap, True,
                   generator=torch.Generator().manual_seed(1))
    b = csr_gather(rowptr, index, cap, True,
                   generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0])


def test_training_mode_sampling_is_seeded():
    rowptr, col_ent, col_rel, R = make_graph(num_triples=80)
    torch.manual_seed(5)
    agg = AttentiveNeighborAggregator(D, max_neighbors=2).train()
    x_ent, x_rel = torch.randn(12, D), torch.randn(R, D)
    index = torch.arange(12)
    torch.manual_seed(0)
    a = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    torch.manual_seed(0)
    b = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    torch.manual_seed(1)
    c = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_gradients_and_dedup():
    torch.manual_seed(6)
    rowptr, col_ent, col_rel, R = make_graph()
    agg = AttentiveNeighborAggregator(D, dropout=0.0).eval()
    x_ent = torch.randn(12, D, requires_grad=True)
    x_rel = torch.randn(R, D, requires_grad=True)
    index = torch.tensor([0, 0, 5, 0, 5, 9])  # repeats are enriched once
    out = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    torch.testing.assert_close(out[0], out[1])
    # Same result through the path without deduplication (num_edges given).
    num_edges = int(rowptr.diff()[index].clamp(max=50).sum())
    out2 = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel,
               num_edges=num_edges)
    torch.testing.assert_close(out, out2)
    (out * torch.randn_like(out)).sum().backward()
    assert x_ent.grad.abs().sum() > 0 and x_rel.grad.abs().sum() > 0
    for name, p in agg.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_return_attention():
    torch.manual_seed(7)
    rowptr, col_ent, col_rel, R = make_graph()
    agg = AttentiveNeighborAggregator(D, gate=False).eval()
    x_ent, x_rel = torch.randn(12, D), torch.randn(R, D)
    index = torch.tensor([0, 2, 11])
    out, (weight, batch, pos) = agg(x_ent, x_rel, index, rowptr, col_ent,
                                    col_rel, return_attention=True)
    sums = torch.zeros(3).index_add(0, batch, weight)
    torch.testing.assert_close(sums[:2], torch.ones(2))  # softmax per entity
    assert sums[2] == 0  # isolated
    assert pos.shape == weight.shape == batch.shape


def test_determinism_repr_reset():
    def build():
        torch.manual_seed(8)
        return AttentiveNeighborAggregator(D, dropout=0.1)

    a, b = build(), build()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    before = a.lin_ent.weight.detach().clone()
    a.reset_parameters()
    assert not torch.equal(before, a.lin_ent.weight)
    assert repr(a) == ('AttentiveNeighborAggregator(8, hidden_dim=8, '
                       'attention=softmax, gate=True, dropout=0.1, '
                       'max_neighbors=50, residual_scale=None)')
    with pytest.raises(ValueError):
        AttentiveNeighborAggregator(D, attention='max')


def test_large_tables_take_unique_path():
    # More entities/relations than gathered edges: the per-distinct-row
    # projection (torch.unique) and the per-edge relation path are used.
    torch.manual_seed(9)
    rowptr, col_ent, col_rel, R = make_graph()
    n_big = 500
    rowptr = torch.cat([rowptr, rowptr[-1].repeat(n_big - 12)])
    agg = AttentiveNeighborAggregator(D, max_neighbors=None).eval()
    x_ent, x_rel = torch.randn(n_big, D), torch.randn(300, D)
    index = torch.tensor([1, 2])
    out = agg(x_ent, x_rel, index, rowptr, col_ent, col_rel)
    ref = reference(agg, x_ent, x_rel, index, rowptr, col_ent, col_rel)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_residual_scale_zero_is_identity_at_init():
    torch.manual_seed(3)
    x = torch.randn(6, D)
    x_rel = torch.randn(4, D)
    src = torch.tensor([1, 2, 3, 0, 5])
    rel = torch.tensor([0, 1, 2, 3, 0])
    batch = torch.tensor([0, 0, 1, 2, 2])
    agg = AttentiveNeighborAggregator(D, residual_scale=0.0)
    assert agg.gamma.item() == 0.0
    out = agg.forward_edges(x[:3], x_rel, x, batch, rel_index=rel,
                            ent_index=src)
    assert torch.equal(out, x[:3])
    # The scale itself is learnable from the first step.
    out.pow(2).sum().backward()
    assert agg.gamma.grad is not None and float(agg.gamma.grad.abs()) > 0
    # With scale 1 the layer equals the unscaled (paper) layer.
    torch.manual_seed(4)
    ref = AttentiveNeighborAggregator(D)
    torch.manual_seed(4)
    one = AttentiveNeighborAggregator(D, residual_scale=1.0)
    args = (x[:3], x_rel, x, batch)
    kw = dict(rel_index=rel, ent_index=src)
    assert torch.allclose(ref.forward_edges(*args, **kw),
                          one.forward_edges(*args, **kw))


@pytest.mark.parametrize('attention', ['softmax', 'mean', 'sum'])
@pytest.mark.parametrize('gate', [True, False])
@pytest.mark.parametrize('hidden_dim', [None, 6])
def test_shared_pair_messages_match_per_edge(attention, gate, hidden_dim):
    # Edges to the same (relation, neighbour) from different centres share
    # one message (pair_index); with ptr the sum is a sparse-dense product.
    # Both must equal the per-edge computation, gradients included.
    torch.manual_seed(10)
    rowptr, col_ent, col_rel, R = make_graph(num_ent=8, num_rel=2,
                                             num_triples=60, isolated=(7, ))
    agg = AttentiveNeighborAggregator(D, hidden_dim, attention=attention,
                                      gate=gate, max_neighbors=None).eval()
    x_ent = torch.randn(8, D, requires_grad=True)
    x_rel = torch.randn(R, D, requires_grad=True)
    batch = torch.repeat_interleave(torch.arange(8), rowptr.diff())
    pair_rel, pair_ent, pair_index = unique_pairs(col_rel, col_ent, 8)
    assert pair_rel.numel() < col_rel.numel()  # the fixture shares pairs

    def run(**kw):
        agg.zero_grad()
        x_ent.grad = x_rel.grad = None
        if kw.pop('pairs'):
            kw.update(rel_index=pair_rel, ent_index=pair_ent,
                      pair_index=pair_index)
        else:
            kw.update(rel_index=col_rel, ent_index=col_ent)
        out = agg.forward_edges(x_ent, x_rel, x_ent, batch, 8, **kw)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        grads = [x_ent.grad, x_rel.grad] + [p.grad for p in agg.parameters()]
        return out.detach(), grads

    ref, ref_grads = run(pairs=False)
    for kw in (dict(pairs=True), dict(pairs=True, ptr=rowptr),
               dict(pairs=False, ptr=rowptr)):
        out, grads = run(**kw)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _small_edges(seed=5):
    torch.manual_seed(seed)
    x = torch.randn(6, D)
    x_rel = torch.randn(4, D)
    # Centres 0, 1 have neighbours; centre 2 has none.
    src = torch.tensor([1, 2, 3, 5, 0])
    rel = torch.tensor([0, 1, 2, 3, 0])
    batch = torch.tensor([0, 0, 0, 1, 1])
    return x, x_rel, src, rel, batch


def test_transe_init_message_is_translation_prediction():
    x, x_rel, src, rel, batch = _small_edges()
    agg = AttentiveNeighborAggregator(D, gate=False, act=None, mix='convex',
                                      init='transe', residual_scale=1.0)
    assert isinstance(agg.act, torch.nn.Identity)
    assert torch.equal(agg.lin_rel.weight, -torch.eye(D))
    assert torch.equal(agg.att, torch.zeros(D))
    out = agg.forward_edges(x[:3], x_rel, x, batch, rel_index=rel,
                            ent_index=src)
    pred = x[src] - x_rel[rel]
    torch.testing.assert_close(out[0], pred[:3].mean(0))
    torch.testing.assert_close(out[1], pred[3:].mean(0))
    # No neighbours: the entity keeps its embedding under the convex mix.
    assert torch.equal(out[2], x[2])
    # Learnable convex scale from 0: the identity at initialisation.
    zero = AttentiveNeighborAggregator(D, gate=False, act=None, mix='convex',
                                       init='transe', residual_scale=0.0)
    out = zero.forward_edges(x[:3], x_rel, x, batch, rel_index=rel,
                             ent_index=src)
    assert torch.equal(out, x[:3])
    out.pow(2).sum().backward()
    assert float(zero.gamma.grad.abs()) > 0
    # reset_parameters restores the TransE initialisation.
    with torch.no_grad():
        zero.lin_ent.weight.add_(1.0)
    zero.reset_parameters()
    assert torch.equal(zero.lin_ent.weight, torch.eye(D))


@pytest.mark.parametrize('gate', [True, False])
def test_convex_mix_matches_residual_form(gate):
    x, x_rel, src, rel, batch = _small_edges(6)
    torch.manual_seed(1)
    add = AttentiveNeighborAggregator(D, gate=gate, residual_scale=1.0)
    torch.manual_seed(1)
    convex = AttentiveNeighborAggregator(D, gate=gate, residual_scale=0.3,
                                         mix='convex')
    kw = dict(rel_index=rel, ent_index=src)
    m = add.forward_edges(x[:3], x_rel, x, batch, **kw) - x[:3]
    out = convex.forward_edges(x[:3], x_rel, x, batch, **kw)
    torch.testing.assert_close(out[:2], 0.7 * x[:2] + 0.3 * m[:2])
    assert torch.equal(out[2], x[2])
    # The CSR path (ptr given) agrees.
    ptr = torch.tensor([0, 3, 5, 5])
    torch.testing.assert_close(
        convex.forward_edges(x[:3], x_rel, x, batch, ptr=ptr, **kw), out)


def test_update_dropout_drops_whole_updates_in_training_only():
    rowptr, col_ent, col_rel, R = make_graph()
    torch.manual_seed(2)
    ref = AttentiveNeighborAggregator(D, max_neighbors=None,
                                      residual_scale=0.5)
    torch.manual_seed(2)
    sd = AttentiveNeighborAggregator(D, max_neighbors=None,
                                     residual_scale=0.5, update_dropout=0.5)
    x_ent = torch.randn(12, D)
    x_rel = torch.randn(R, D)
    index = torch.arange(11)  # entity 11 is isolated
    args = (x_ent, x_rel, index, rowptr, col_ent, col_rel)
    ref.eval()
    sd.eval()
    assert torch.equal(ref(*args), sd(*args))
    ref.train()
    sd.train()
    full = ref(*args) - x_ent[:11]
    torch.manual_seed(0)
    delta = sd(*args) - x_ent[:11]
    dropped = delta.abs().amax(dim=1) == 0
    kept = ~dropped
    assert dropped.any() and kept.any()
    torch.testing.assert_close(delta[kept], 2.0 * full[kept])
    assert 'update_dropout=0.5' in repr(sd)
    with pytest.raises(ValueError):
        AttentiveNeighborAggregator(D, update_dropout=1.0)


def test_new_options_validate():
    with pytest.raises(ValueError):
        AttentiveNeighborAggregator(D, mix='max')
    with pytest.raises(ValueError):
        AttentiveNeighborAggregator(D, init='xavier')
    with pytest.raises(ValueError):
        AttentiveNeighborAggregator(D, hidden_dim=6, init='transe')
    agg = AttentiveNeighborAggregator(D, mix='convex', init='transe')
    assert repr(agg).endswith('residual_scale=None, mix=convex, '
                              'init=transe)')


def _lookup_case(seed=11, **kwargs):
    rowptr, col_ent, col_rel, R = make_graph(num_triples=80)
    torch.manual_seed(seed)
    agg = AttentiveNeighborAggregator(D, **kwargs)
    emb = torch.nn.Embedding(12, D, sparse=True)
    x_rel = torch.randn(R, D, requires_grad=True)
    pairs = graph_pairs(col_rel, col_ent, 12)
    return agg, emb, x_rel, (rowptr, col_ent, col_rel), pairs


def _run(agg, x_ent, x_rel, index, graph, seed=0, **kwargs):
    r"""Output and gradients (entity table dense) of one forward."""
    agg.zero_grad()
    x_rel.grad = None
    torch.manual_seed(seed)
    out = agg(x_ent, x_rel, index, *graph, **kwargs)
    (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
    table = x_ent.weight if isinstance(x_ent, torch.nn.Module) else x_ent
    grads = [table.grad.to_dense(), x_rel.grad]
    grads += [p.grad for p in agg.parameters()]
    table.grad = None
    return out.detach(), grads


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('kwargs', [
    dict(max_neighbors=3),
    dict(max_neighbors=None, gate=False, attention='mean'),
    dict(max_neighbors=3, dropout=0.3, residual_scale=0.5),
    dict(max_neighbors=3, init='transe', act=None, gate=False, mix='convex',
         residual_scale=0.5, update_dropout=0.5),
])
def test_lookup_and_pairs_paths_match_table_path(training, kwargs):
    # A look-up (sparse Embedding) and the graph's pair numbering take the
    # path that looks up each row a batch needs once; in training both draw
    # the same neighbour sample (and dropout masks) as the table path.
    agg, emb, x_rel, graph, pairs = _lookup_case(**kwargs)
    agg.train(training)
    table = emb.weight.detach().clone().requires_grad_()
    index = torch.tensor([[5, 0, 3], [0, 11, 5]])
    ref, ref_grads = _run(agg, table, x_rel, index.view(-1), graph)
    ref = ref.view(2, 3, D)
    for x_ent, kw in ((emb, {}), (emb, dict(pairs=pairs)),
                      (table, dict(pairs=pairs))):
        out, grads = _run(agg, x_ent, x_rel, index, graph, **kw)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # The entity rows' gradient touches only the rows this batch needs.
    torch.manual_seed(0)
    agg(emb, x_rel, index, *graph, pairs=pairs).sum().backward()
    rows = emb.weight.grad.coalesce().indices().view(-1)
    pos, _ = csr_gather(graph[0], index.unique(), agg.max_neighbors)
    if not training:
        needed = torch.cat([index.view(-1), graph[1][pos]]).unique()
        assert torch.equal(rows, needed)


def test_lookup_path_sorted_ids_and_attention():
    agg, emb, x_rel, graph, pairs = _lookup_case(max_neighbors=3)
    agg.eval()
    index = torch.tensor([0, 2, 5, 11])  # sorted distinct: no gather
    out = agg(emb, x_rel, index, *graph, pairs=pairs)
    ref = agg(emb.weight, x_rel, index, *graph)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out_a, (weight, batch, pos) = agg(emb, x_rel, index, *graph,
                                      pairs=pairs, return_attention=True)
    ref_a, (ref_w, ref_b, ref_p) = agg(emb.weight, x_rel, index, *graph,
                                       return_attention=True)
    torch.testing.assert_close(out_a, ref_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight, ref_w, rtol=1e-5, atol=1e-6)
    assert torch.equal(batch, ref_b) and torch.equal(pos, ref_p)


def test_sample_neighbors_class_attribute():
    class First(AttentiveNeighborAggregator):
        sample_neighbors = False

    rowptr, col_ent, col_rel, R = make_graph(num_triples=80)
    x_ent, x_rel = torch.randn(12, D), torch.randn(R, D)
    index = torch.arange(12)
    torch.manual_seed(12)
    first = First(D, max_neighbors=2)
    torch.manual_seed(12)
    sampled = AttentiveNeighborAggregator(D, max_neighbors=2)
    args = (x_ent, x_rel, index, rowptr, col_ent, col_rel)
    ref = first.eval()(*args)
    first.train()
    sampled.train()
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.equal(first(*args), ref)
    torch.manual_seed(0)
    assert not torch.allclose(sampled(*args), ref)
