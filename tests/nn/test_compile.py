r"""The layers' default paths compile as one graph (fullgraph=True): no
graph breaks, no host synchronisation. The AOT-autograd backend traces the
backward too, without paying for Inductor's C++ compilation; the speed of
the Inductor-compiled layers is measured by benchmarks/bench_compile.py."""
import pytest
import torch

from pyg_fewshot.nn import (
    AttentiveNeighborAggregator,
    ModalityFusion,
    ProjectionAdapter,
    SparseMoERelationMeta,
    diversity_loss,
)
from pyg_fewshot.ops import graph_pairs


BACKEND = 'aot_eager'


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _check(fn, inputs, grad_wrt):
    r"""Compiles `fn` as a single graph and compares values and gradients
    with eager mode."""
    explanation = torch._dynamo.explain(fn)(*inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(fn, fullgraph=True, backend=BACKEND)

    def run(f):
        for t in grad_wrt:
            t.grad = None
        out = f(*inputs)
        out = out if isinstance(out, torch.Tensor) else out[0]
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() \
            .backward()
        return out.detach(), [t.grad.clone() for t in grad_wrt]

    ref, ref_grads = run(fn)
    out, grads = run(compiled)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compile_sparse_moe():
    torch.manual_seed(0)
    moe = SparseMoERelationMeta(16, 8, num_experts=8, top_k=3,
                                hidden_channels=8, load_balance=0.01)
    x = torch.randn(24, 16, requires_grad=True)
    batch = torch.arange(24) // 4

    def fn(x, batch):
        out, routing = moe(x, batch, 6, return_routing=True)
        return out + routing.aux_loss

    _check(fn, (x, batch), [x, moe.experts.weight1, moe.experts.weight2, moe.experts.bias1])


def test_compile_neighbor_aggregator_edges():
    torch.manual_seed(1)
    agg = AttentiveNeighborAggregator(8, max_neighbors=None)
    x = torch.randn(10, 8, requires_grad=True)
    rel = torch.randn(4, 8, requires_grad=True)
    edge_index = torch.randint(0, 10, (2, 30))
    edge_type = torch.randint(0, 4, (30, ))

    def fn(x, rel, edge_index, edge_type):
        return agg.forward_edges(x, rel, x, edge_index[1], 10,
                                 rel_index=edge_type,
                                 ent_index=edge_index[0])

    _check(fn, (x, rel, edge_index, edge_type),
           [x, rel, agg.lin_ent.weight, agg.att])


def test_compile_neighbor_aggregator_csr_eval():
    torch.manual_seed(2)
    agg = AttentiveNeighborAggregator(8, max_neighbors=3).eval()
    x = torch.randn(10, 8, requires_grad=True)
    rel = torch.randn(4, 8, requires_grad=True)
    rowptr = torch.tensor([0, 2, 7, 7, 9, 10, 14, 15, 16, 18, 20])
    col_ent = torch.randint(0, 10, (20, ))
    col_rel = torch.randint(0, 4, (20, ))
    index = torch.tensor([1, 2, 5, 0])
    num_edges = int(rowptr.diff()[index].clamp(max=3).sum())

    def fn(x, rel, index):
        return agg(x, rel, index, rowptr, col_ent, col_rel,
                   num_edges=num_edges)

    _check(fn, (x, rel, index), [x, rel, agg.lin_rel.weight])


def test_compile_neighbor_aggregator_lookup_eval():
    # An entity look-up (as NeighborEncoder passes) and the pair numbering
    # compile too: the deduplication, which reads sizes back, is skipped.
    torch.manual_seed(5)
    agg = AttentiveNeighborAggregator(8, max_neighbors=3).eval()
    emb = torch.nn.Embedding(10, 8)
    rel = torch.randn(4, 8, requires_grad=True)
    rowptr = torch.tensor([0, 2, 7, 7, 9, 10, 14, 15, 16, 18, 20])
    col_ent = torch.randint(0, 10, (20, ))
    col_rel = torch.randint(0, 4, (20, ))
    pairs = graph_pairs(col_rel, col_ent, 10)
    index = torch.tensor([1, 2, 5, 0])
    num_edges = int(rowptr.diff()[index].clamp(max=3).sum())

    def fn(rel, index):
        return agg(emb, rel, index, rowptr, col_ent, col_rel,
                   num_edges=num_edges, pairs=pairs)

    _check(fn, (rel, index), [emb.weight, rel, agg.lin_rel.weight])
    ref = agg(emb.weight, rel, index, rowptr, col_ent, col_rel)
    torch.testing.assert_close(fn(rel, index), ref)


@pytest.mark.parametrize('mode', ['transd', 'paper'])
def test_compile_projection_adapter(mode):
    torch.manual_seed(3)
    adapter = ProjectionAdapter(8, mode=mode, init_bound=0.2)
    h = torch.randn(4, 3, 8, requires_grad=True)
    t = torch.randn(4, 3, 8)
    r = torch.randn(4, 8, requires_grad=True)

    def fn(h, t, r):
        h2, t2, r2 = adapter(h, t, r, adapter.init_local(4))
        return h2 + r2.unsqueeze(1) - t2

    _check(fn, (h, t, r), [h, r, adapter.p_h, adapter.p_r])


def test_compile_modality_fusion():
    torch.manual_seed(4)
    fusion = ModalityFusion({'text': 12, 'image': 6}, 8, dropout=0.0)
    x = torch.randn(10, 8, requires_grad=True)
    feats = {'text': torch.randn(10, 12), 'image': torch.randn(10, 6)}
    mask = torch.rand(10) > 0.3

    def fn(x, text, image, mask):
        out, per = fusion(x, {'text': text, 'image': image},
                          {'image': mask})
        div = diversity_loss(per, x, masks={'image': mask}, pairwise=True)
        return out + div

    _check(fn, (x, feats['text'], feats['image'], mask),
           [x, fusion.adapters['text'].lin1.weight])
