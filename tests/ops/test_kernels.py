r"""Kernels of pyg_fewshot/ops: csr_weighted_sum, unique_pairs,
graph_pairs, relu_pair_messages and the sampled path of csr_gather
(segment_matmul is covered through SparseMoERelationMeta)."""
import pytest
import torch
from torch_geometric.index import index2ptr

from pyg_fewshot.ops import unique_ids
from pyg_fewshot.ops import (
    csr_gather,
    csr_weighted_sum,
    graph_pairs,
    head_and_rows,
    relu_pair_messages,
    transd_project,
    translational_distance,
    unique_pairs,
)


def segments(num_segments=7, num_rows=11, num_edges=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, num_segments - 2, (num_edges, ), generator=g)
    batch = batch.sort().values  # the last two segments stay empty
    col = torch.randint(0, num_rows, (num_edges, ), generator=g)
    col[1] = col[0]  # a repeated row inside a segment, as with duplicates
    batch[1] = batch[0]
    return batch, col, index2ptr(batch, num_segments)


def scatter_reference(weight, x, col, batch, num_segments):
    out = x.new_zeros(num_segments, x.size(1))
    return out.index_add_(0, batch, x[col] * weight[:, None])


def test_csr_weighted_sum_matches_gather_multiply_scatter():
    batch, col, ptr = segments()
    weight = torch.rand(col.numel(), dtype=torch.double, requires_grad=True)
    x = torch.randn(11, 5, dtype=torch.double, requires_grad=True)
    out = csr_weighted_sum(weight, x, col, batch, ptr=ptr)
    ref = scatter_reference(weight, x, col, batch, 7)
    torch.testing.assert_close(out, ref)
    assert out[-2:].abs().sum() == 0  # empty segments
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (weight, x), grad)
    want = torch.autograd.grad(ref, (weight, x), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # Without ptr it is the gather / multiply / scatter itself.
    torch.testing.assert_close(
        csr_weighted_sum(weight, x, col, batch, num_segments=7), ref)


def test_csr_weighted_sum_gradcheck():
    batch, col, ptr = segments(num_edges=15, seed=1)
    weight = torch.rand(15, dtype=torch.double, requires_grad=True)
    x = torch.randn(11, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w, v: csr_weighted_sum(w, v, col, batch, ptr=ptr), (weight, x))


def test_csr_weighted_sum_identity_columns_and_no_edges():
    batch, _, ptr = segments()
    weight = torch.rand(batch.numel())
    x = torch.randn(batch.numel(), 4)  # one row per edge: col=None
    ref = scatter_reference(weight, x, torch.arange(batch.numel()), batch, 7)
    torch.testing.assert_close(csr_weighted_sum(weight, x, None, batch,
                                                ptr=ptr), ref)
    empty = torch.empty(0, dtype=torch.long)
    out = csr_weighted_sum(torch.empty(0), torch.randn(3, 4), empty, empty,
                           ptr=torch.zeros(6, dtype=torch.long))
    assert out.shape == (5, 4) and out.abs().sum() == 0


def test_unique_pairs():
    rel = torch.tensor([2, 0, 2, 1, 0, 2])
    ent = torch.tensor([5, 3, 5, 3, 3, 1])
    pair_rel, pair_ent, pair_index = unique_pairs(rel, ent, num_entities=6)
    assert list(zip(pair_rel.tolist(), pair_ent.tolist())) == \
        [(0, 3), (1, 3), (2, 1), (2, 5)]
    assert torch.equal(pair_rel[pair_index], rel)
    assert torch.equal(pair_ent[pair_index], ent)


@pytest.mark.parametrize('cap', [1, 3, 6])
def test_sampled_gather_mixes_capped_and_short_rows(cap):
    degrees = torch.tensor([9, 2, 0, 6, 3, 12])
    rowptr = torch.cat([torch.zeros(1, dtype=torch.long), degrees.cumsum(0)])
    index = torch.tensor([5, 1, 2, 0, 3, 4, 0])
    g = torch.Generator().manual_seed(0)
    pos, batch = csr_gather(rowptr, index, cap, sample=True, generator=g)
    keep = degrees[index].clamp(max=cap)
    assert torch.equal(batch, torch.arange(7).repeat_interleave(keep))
    for b, node in enumerate(index.tolist()):
        p = pos[batch == b]
        lo, hi = int(rowptr[node]), int(rowptr[node + 1])
        assert ((p >= lo) & (p < hi)).all()
        assert p.unique().numel() == p.numel()  # without replacement
        if hi - lo <= cap:  # short rows keep every entry, in order
            assert p.tolist() == list(range(lo, hi))


def test_graph_pairs_number_pairs_as_unique_pairs():
    rel = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    ent = torch.tensor([5, 3, 5, 3, 3, 1, 3])
    pair_rel, pair_ent, entry_pair = graph_pairs(rel, ent, num_entities=6)
    ref_rel, ref_ent, ref_index = unique_pairs(rel, ent, num_entities=6)
    assert torch.equal(pair_rel, ref_rel) and torch.equal(pair_ent, ref_ent)
    assert entry_pair.dtype == torch.int32
    assert torch.equal(entry_pair.long(), ref_index)
    # A subset of entries deduplicated through the pair ids gives what
    # unique_pairs gives on the subset.
    subset = torch.tensor([6, 0, 3, 2])
    upair, index = unique_ids(entry_pair[subset], pair_rel.numel())
    sub_rel, sub_ent, sub_index = unique_pairs(rel[subset], ent[subset], 6)
    assert torch.equal(pair_rel[upair], sub_rel)
    assert torch.equal(pair_ent[upair], sub_ent)
    assert torch.equal(index, sub_index)


def pair_message_inputs(dtype=torch.double, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 5, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(6, 5, generator=g, dtype=dtype, requires_grad=True)
    rel = torch.randint(0, 4, (9, ), generator=g)
    ent = torch.randint(0, 6, (9, ), generator=g)
    vecs = torch.randn(5, k, generator=g, dtype=dtype, requires_grad=True)
    return a, b, rel, ent, vecs


@pytest.mark.parametrize('k', [0, 1, 2])
def test_relu_pair_messages_matches_autograd(k):
    a, b, rel, ent, vecs = pair_message_inputs(k=k)
    c, logits = relu_pair_messages(a, b, rel, ent, vecs if k else None)
    ref = (a[rel] + b[ent]).relu()
    torch.testing.assert_close(c, ref)
    assert logits.shape == (k, 9)
    torch.testing.assert_close(logits, (ref @ vecs).t())
    gc, gl = torch.randn_like(c), torch.randn_like(logits)
    inputs = (a, b, vecs) if k else (a, b)
    got = torch.autograd.grad((c, logits), inputs, (gc, gl),
                              allow_unused=True)
    want = torch.autograd.grad((ref, (ref @ vecs).t()), inputs, (gc, gl),
                               allow_unused=True)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y)


def test_relu_pair_messages_gradcheck_and_messages_only():
    a, b, rel, ent, vecs = pair_message_inputs()
    assert torch.autograd.gradcheck(
        lambda a, b, v: relu_pair_messages(a, b, rel, ent, v), (a, b, vecs))
    # Only the messages used downstream: the logits get no gradient.
    c, _ = relu_pair_messages(a, b, rel, ent, vecs)
    grad_a, = torch.autograd.grad(c.sum(), (a, ))
    ref, = torch.autograd.grad((a[rel] + b[ent]).relu().sum(), (a, ))
    torch.testing.assert_close(grad_a, ref)


@pytest.mark.parametrize('num_rows', [3, 600])
def test_sampling_keys_int32_and_int64(num_rows):
    # Up to 512 capped rows share an int32 key with 22 random bits; more
    # rows take int64 keys. Either way every capped row gets `cap` distinct
    # entries of its own, the short rows all of theirs.
    cap = 4
    deg = torch.full((num_rows, ), 9)
    deg[::2] = 2
    rowptr = torch.cat([torch.zeros(1, dtype=torch.long), deg.cumsum(0)])
    index = torch.arange(num_rows)
    g = torch.Generator().manual_seed(0)
    pos, batch = csr_gather(rowptr, index, cap, sample=True, generator=g)
    for b in (0, 1, num_rows - 1):
        row = pos[batch == b]
        assert row.numel() == min(int(deg[b]), cap)
        assert row.unique().numel() == row.numel()
        assert bool(((row >= rowptr[b]) & (row < rowptr[b + 1])).all())


def test_relu_pair_messages_own_grad_is_the_same_gradient():
    # own_grad=True reuses the (fresh) gradient of the messages in place;
    # followed by the segment sum, whose backward allocates that gradient,
    # every gradient equals the copying path's.
    a, b, rel, ent, vecs = pair_message_inputs()
    batch = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    ptr = index2ptr(batch, 3)
    grads = []
    for own in (False, True):
        c, logits = relu_pair_messages(a, b, rel, ent, vecs, own_grad=own)
        w = torch.softmax(logits[0], dim=0)
        out = csr_weighted_sum(w, c, torch.arange(9), batch, ptr=ptr)
        grads.append(torch.autograd.grad((out * out).sum(), (a, b, vecs)))
    for x, y in zip(*grads):
        assert torch.equal(x, y)


@pytest.mark.parametrize('use', ['both', 'head', 'rows'])
def test_head_and_rows_matches_narrow_and_index_select(use):
    table = torch.randn(7, 3, dtype=torch.double, requires_grad=True)
    index = torch.tensor([6, 1, 4, 1])
    head, rows = head_and_rows(table, 3, index)
    torch.testing.assert_close(head, table[:3])
    torch.testing.assert_close(rows, table[index])
    gh, gr = torch.randn(3, 3, dtype=torch.double), torch.randn(
        4, 3, dtype=torch.double)
    outs = {'both': (head, rows), 'head': (head, ), 'rows': (rows, )}[use]
    grads = {'both': (gh, gr), 'head': (gh, ), 'rows': (gr, )}[use]
    got, = torch.autograd.grad(outs, (table, ), grads)
    ref_outs = {'both': (table[:3], table[index]), 'head': (table[:3], ),
                'rows': (table[index], )}[use]
    want, = torch.autograd.grad(ref_outs, (table, ), grads)
    torch.testing.assert_close(got, want)


def transd_reference(h, tails, rel, p_h=None, p_r=None, p_t=None):
    # The plain autograd expression the custom function replaces.
    if p_h is not None:
        h, tails = transd_project(h, p_h, p_r), transd_project(tails, p_t,
                                                               p_r)
    return ((h + rel.unsqueeze(1)).unsqueeze(1) - tails).norm(dim=-1)


@pytest.mark.parametrize('shape', [(3, 5), (3, 2, 5), (3, 2, 4, 5)])
@pytest.mark.parametrize('shared', [False, True])
def test_transd_project_per_task(shape, shared):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    p_x, p_r = torch.randn(2, 3, 5, generator=g)
    if shared:  # [d] vectors shared by every task
        p_x, p_r = p_x[0], p_r[0]
    out = transd_project(x, p_x, p_r)
    assert out.shape == x.shape
    flat = x.reshape(3, -1, 5)
    for b in range(3):
        px = p_x if shared else p_x[b]
        pr = p_r if shared else p_r[b]
        for i in range(flat.size(1)):
            row = flat[b, i]
            torch.testing.assert_close(out.reshape(3, -1, 5)[b, i],
                                       row + (row @ px) * pr)


@pytest.mark.parametrize('projected', [False, True])
def test_translational_distance_matches_projection(projected):
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.double,
                           requires_grad=True)

    h, tails, rel = rand(3, 2, 5), rand(3, 2, 2, 5), rand(3, 5)
    ps = (rand(3, 5), rand(3, 5), rand(3, 5)) if projected else ()
    out = translational_distance(h, tails, rel, *ps)
    torch.testing.assert_close(out, transd_reference(h, tails, rel, *ps))
    inputs = (h, tails, rel, *ps)
    assert torch.autograd.gradcheck(
        lambda *a: translational_distance(*a), inputs)
    # Second order: the backward is differentiable.
    assert torch.autograd.gradgradcheck(
        lambda *a: translational_distance(*a), inputs)


def test_translational_distance_fallback_broadcasts_heads():
    # Heads [B, 1, d] against tails [B, J, C, d]: the plain expression,
    # with [B, d] or shared [d] vectors.
    g = torch.Generator().manual_seed(2)
    h, tails, rel = (torch.randn(3, 1, 5, generator=g),
                     torch.randn(3, 2, 4, 5, generator=g),
                     torch.randn(3, 5, generator=g))
    ps = torch.randn(3, 3, 5, generator=g)
    out = translational_distance(h, tails, rel, *ps)
    assert out.shape == (3, 2, 4)
    torch.testing.assert_close(out, transd_reference(h, tails, rel, *ps))
    shared = translational_distance(h, tails, rel, *ps[:, 0])
    torch.testing.assert_close(
        shared, transd_reference(h, tails, rel,
                                 *ps[:, 0].unsqueeze(1).expand(3, 3, 5)))


def test_translational_distance_zero_gap_and_shapes():
    h = torch.ones(2, 3, 4, dtype=torch.double, requires_grad=True)
    tails = torch.stack([h.detach(), torch.zeros(2, 3, 4).double()], 1)
    tails.requires_grad_()
    rel = torch.zeros(2, 4, dtype=torch.double, requires_grad=True)
    out = translational_distance(h, tails, rel)
    assert out.shape == (2, 2, 3) and bool((out[:, 0] == 0).all())
    grad, = torch.autograd.grad(out[:, 0].sum(), (h, ))
    assert bool((grad == 0).all())  # like torch.norm's backward at 0
    # Heads broadcast against tails with other middle dims: plain path.
    wide = torch.randn(2, 2, 3, 4, dtype=torch.double)
    torch.testing.assert_close(
        translational_distance(h[:, :1], wide, rel),
        ((h[:, :1] + rel.view(2, 1, 4)).unsqueeze(1) - wide).norm(dim=-1))
