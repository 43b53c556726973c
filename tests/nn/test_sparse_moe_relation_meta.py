import pytest
import torch
import torch.nn.functional as F

from _moe_reference import dense_einsum, dense_reference
from pyg_fewshot.nn import MoERouting, SparseMoERelationMeta
from pyg_fewshot.nn.sparse_moe_relation_meta import (GroupedExperts,
                                                     TokenReorderer,
                                                     TopKRouter)
from pyg_fewshot.ops import grouped_mm_available, segment_matmul
from pyg_fewshot.ops.segment import _segment_matmul_op


def _params_and_grads(module, x):
    return [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize('dispatch', ['auto', 'grouped_mm', 'loop'])
@pytest.mark.parametrize('dims', [(200, 64, 100), (30, 9, 7)])
@pytest.mark.parametrize('options', [
    dict(),
    dict(renormalize=True, scale_by_k=True),
])
def test_sparse_matches_dense_reference(dispatch, dims, options):
    in_ch, hid, out_ch = dims
    torch.manual_seed(0)
    # 4 pairs x top-3 of 16 experts: at least 4 experts get no token,
    # which grouped_mm must handle (zero weight gradients).
    P, B = 4, 2
    moe = SparseMoERelationMeta(in_ch, out_ch, num_experts=16, top_k=3,
                                hidden_channels=hid, dispatch=dispatch,
                                **options)
    x = torch.randn(P, in_ch, requires_grad=True)
    batch = torch.tensor([0, 0, 1, 1])

    out, routing = moe(x, batch, num_tasks=B, return_routing=True)
    assert out.shape == (B, out_ch)
    assert (routing.counts == 0).any()  # some experts receive no tokens
    # Non-trivial upstream gradient, then the stride-0 one of .sum().
    g = torch.randn_like(out)
    (out * g).sum().backward()
    grads = [t.clone() for t in _params_and_grads(moe, x)]

    x.grad = None
    moe.zero_grad()
    ref = dense_reference(moe, x, batch, B)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (ref * g).sum().backward()
    ref_grads = _params_and_grads(moe, x)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    # Weight gradients of experts that were never chosen are exactly zero.
    unused = routing.counts == 0
    assert grads[1][unused].abs().max() == 0  # experts.weight1

    x.grad = None
    moe.zero_grad()
    moe(x, batch, B).sum().backward()  # stride-0 upstream gradient
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_float64_runs_the_loop_and_matches_both_dense_forms():
    torch.manual_seed(1)
    moe = SparseMoERelationMeta(12, 6, num_experts=8, top_k=2,
                                hidden_channels=5).double()
    x = torch.randn(10, 12, dtype=torch.float64)
    batch = torch.arange(10) // 5
    out = moe(x, batch, 2)  # float64: grouped_mm unavailable -> loop
    assert not grouped_mm_available(x, moe.experts.weight1)
    torch.testing.assert_close(dense_reference(moe, x, batch, 2), out)
    torch.testing.assert_close(
        dense_reference(moe, x, batch, 2, kernel=dense_einsum), out)


def test_chunked_dispatch_matches():
    torch.manual_seed(9)
    moe = SparseMoERelationMeta(16, 8, num_experts=8, top_k=3,
                                hidden_channels=8, chunk_size=None,
                                load_balance=0.1)
    x = torch.randn(50, 16, requires_grad=True)
    batch = torch.arange(50) // 5
    out, routing = moe(x, batch, 10, return_routing=True)
    g = torch.autograd.grad(out.square().sum(), (x, moe.experts.weight1))
    moe.chunk_size = 7
    out2, routing2 = moe(x, batch, 10, return_routing=True)
    g2 = torch.autograd.grad(out2.square().sum(), (x, moe.experts.weight1))
    torch.testing.assert_close(out2, out)
    # Counts add up over the chunks, so the loss sees the whole batch.
    assert torch.equal(routing2.counts, routing.counts)
    torch.testing.assert_close(routing2.aux_loss, routing.aux_loss)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b)


def test_forward_tasks_is_the_mean_over_each_tasks_pairs():
    torch.manual_seed(12)
    moe = SparseMoERelationMeta(16, 8, num_experts=8, top_k=3,
                                hidden_channels=8, load_balance=0.1)
    x = torch.randn(4, 5, 16, requires_grad=True)
    rel, routing = moe.forward_tasks(x)
    assert rel.shape == (4, 8)
    assert routing.experts.shape == (20, 3)
    batch = torch.arange(4).repeat_interleave(5)
    ref, ref_routing = moe(x.flatten(0, 1), batch, 4, return_routing=True)
    torch.testing.assert_close(rel, ref)
    for a, b in zip(routing, ref_routing):
        assert torch.equal(a, b)
    r, _ = moe.forward_pairs(x.flatten(0, 1))
    assert torch.equal(rel, r.view(4, 5, -1).mean(dim=1))
    g, = torch.autograd.grad(rel.sum() + routing.aux_loss, (x, ))
    assert torch.isfinite(g).all()


def test_routing_information():
    torch.manual_seed(2)
    moe = SparseMoERelationMeta(8, 4, num_experts=6, top_k=3,
                                hidden_channels=4)
    x = torch.randn(20, 8)
    out, routing = moe(x, return_routing=True)
    assert isinstance(routing, MoERouting)
    assert out.shape == (1, 4)  # batch=None: a single task
    assert routing.experts.shape == (20, 3)
    assert routing.experts.dtype == torch.long
    assert routing.weights.shape == (20, 3)
    assert routing.probs.shape == (20, 6)
    assert int(routing.counts.sum()) == 60
    assert torch.equal(routing.counts,
                       torch.bincount(routing.experts.flatten(), minlength=6))
    # Top-N experts are distinct per pair and sorted by gate value.
    assert (routing.experts.sort(-1).values.diff(dim=-1) > 0).all()
    assert (routing.weights.diff(dim=-1) <= 0).all()
    assert routing.aux_loss.dim() == 0 and float(routing.aux_loss) == 0.0
    probs, weights, experts = moe.route(x)
    assert torch.equal(probs, routing.probs)
    assert torch.equal(experts, routing.experts)


def test_renormalize_and_scale():
    torch.manual_seed(3)
    x = torch.randn(7, 8)
    kw = dict(num_experts=5, top_k=2, hidden_channels=4)
    torch.manual_seed(0)
    moe = SparseMoERelationMeta(8, 4, renormalize=True, scale_by_k=True,
                                **kw)
    _, routing = moe(x, return_routing=True)
    torch.testing.assert_close(routing.weights.sum(-1),
                               torch.full((7, ), 0.5))


def test_load_balancing_loss():
    torch.manual_seed(4)
    moe = SparseMoERelationMeta(8, 4, num_experts=4, top_k=2,
                                hidden_channels=4, load_balance=0.1)
    x = torch.randn(30, 8)
    _, routing = moe(x, return_routing=True)
    frac = torch.bincount(routing.experts.flatten(), minlength=4) / 60.0
    expected = 0.1 * 4 * (frac * routing.probs.mean(0)).sum()
    torch.testing.assert_close(routing.aux_loss, expected)
    routing.aux_loss.backward()
    assert moe.router.gate[0].weight.grad.abs().sum() > 0
    # Uniform routing gives exactly the weight.
    uniform = torch.full((10, 4), 0.25)
    counts = torch.full((4, ), 5)
    torch.testing.assert_close(
        moe.router.load_balancing_loss(uniform, counts), torch.tensor(0.1))


def test_noisy_gating():
    torch.manual_seed(5)
    moe = SparseMoERelationMeta(8, 4, num_experts=6, top_k=2,
                                hidden_channels=4, noisy_gating=True)
    assert moe.router.noise.weight.abs().max() == 0  # starts at zero
    x = torch.randn(40, 8)
    moe.train()
    torch.manual_seed(10)
    a = moe(x, return_routing=True)[1].probs
    torch.manual_seed(11)
    b = moe(x, return_routing=True)[1].probs
    assert not torch.allclose(a, b)
    torch.manual_seed(10)
    out, routing = moe(x, return_routing=True)
    torch.testing.assert_close(routing.probs, a)  # reproducible under seed
    out.sum().backward()
    assert moe.router.noise.weight.grad is not None
    moe.eval()
    torch.testing.assert_close(moe(x), moe(x))  # no noise in evaluation


def test_determinism_under_seed_and_reset():
    def build():
        torch.manual_seed(42)
        return SparseMoERelationMeta(16, 8, num_experts=8, top_k=3,
                                     hidden_channels=8)

    m1, m2 = build(), build()
    x = torch.randn(12, 16)
    batch = torch.arange(12) // 4
    torch.testing.assert_close(m1(x, batch, 3), m2(x, batch, 3))
    before = m1.experts.weight1.detach().clone()
    m1.reset_parameters()
    assert not torch.equal(before, m1.experts.weight1)


@pytest.mark.parametrize('gate_hidden', [64, None])
def test_initial_values_follow_the_documented_draw_order(gate_hidden):
    # Under a seed the layer draws: the gate's Linears at their
    # construction, the experts, the gate again; reset_parameters() draws
    # the experts, then the gate. Parameters list the experts first.
    kw = dict(hidden_channels=gate_hidden, noisy_gating=True)
    torch.manual_seed(7)
    moe = SparseMoERelationMeta(10, 6, num_experts=4, top_k=2,
                                hidden_channels=5,
                                gate_hidden_channels=gate_hidden,
                                noisy_gating=True)
    torch.manual_seed(7)
    router = TopKRouter(10, 4, 2, **kw)
    experts = GroupedExperts(4, 10, 5, 6)
    router.reset_parameters()
    expected = list(experts.parameters()) + list(router.parameters())
    names = [n for n, _ in moe.named_parameters()]
    assert names[:4] == ['experts.weight1', 'experts.bias1',
                         'experts.weight2', 'experts.bias2']
    assert names[-2:] == ['router.noise.weight', 'router.noise.bias']
    for p, q in zip(moe.parameters(), expected, strict=True):
        assert torch.equal(p, q)

    torch.manual_seed(8)
    moe.reset_parameters()
    torch.manual_seed(8)
    experts.reset_parameters()
    router.reset_parameters()
    for p, q in zip(moe.parameters(), expected, strict=True):
        assert torch.equal(p, q)


def test_num_tasks_inferred_and_empty_task():
    torch.manual_seed(6)
    moe = SparseMoERelationMeta(8, 4, num_experts=4, top_k=2,
                                hidden_channels=4)
    x = torch.randn(6, 8)
    batch = torch.tensor([0, 0, 2, 2, 2, 2])
    out = moe(x, batch)
    assert out.shape == (3, 4)
    assert torch.equal(out[1], torch.zeros(4))  # a task without pairs
    assert moe(x, batch, num_tasks=5).shape == (5, 4)


def test_repr_and_errors():
    moe = SparseMoERelationMeta(200, 100)
    assert repr(moe) == (
        'SparseMoERelationMeta(200, 100, num_experts=32, top_k=5, '
        'hidden=64, renormalize=False, scale_by_k=False, '
        'noisy_gating=False, load_balance=0.0, dispatch=auto)')
    with pytest.raises(ValueError):
        SparseMoERelationMeta(4, 4, num_experts=3, top_k=4)
    with pytest.raises(ValueError):
        SparseMoERelationMeta(4, 4, dispatch='magic')
    with pytest.raises(ValueError):  # the dense reference lives in tests
        SparseMoERelationMeta(4, 4, dispatch='dense')


def test_token_reorderer_sorts_stably_by_expert():
    experts = torch.tensor([[2, 0], [0, 3], [2, 1], [3, 0]])
    weights = torch.arange(8, dtype=torch.float).view(4, 2)
    scores, token, counts = TokenReorderer(5, 2)(weights, experts)
    assert counts.tolist() == [3, 1, 2, 2, 0]
    # Expert 0: pairs 0, 1, 3 in order; then 1: pair 2; 2: pairs 0, 2; ...
    assert token.tolist() == [0, 1, 3, 2, 0, 2, 1, 3]
    assert scores.tolist() == [1., 2., 7., 5., 0., 4., 3., 6.]


@pytest.mark.parametrize('dispatch', ['grouped_mm', 'loop'])
def test_grouped_experts_run_each_expert_on_its_rows(dispatch):
    torch.manual_seed(13)
    ex = GroupedExperts(3, 7, 5, 4, act='tanh')
    x = torch.randn(4, 7)
    experts = torch.tensor([[1, 0], [1, 2], [0, 2], [2, 1]])
    weights = torch.rand(4, 2)
    scores, token, counts = TokenReorderer(3, 2)(weights, experts)
    y = ex(x, token, scores, counts, dispatch)
    assert y.shape == (8, 4)
    expert_of_row = torch.arange(3).repeat_interleave(counts)
    for row in range(8):
        j, p = int(expert_of_row[row]), int(token[row])
        h = torch.tanh(x[p] @ ex.weight1[j] + ex.bias1[j])
        torch.testing.assert_close(y[row], scores[row] * h @ ex.weight2[j])
    bias = ex.output_bias(experts, weights)
    torch.testing.assert_close(
        bias, (weights.unsqueeze(-1) * ex.bias2[experts]).sum(1))


def test_top_k_router_standalone():
    torch.manual_seed(14)
    router = TopKRouter(6, 5, 2, hidden_channels=None, renormalize=True,
                        noisy_gating=True)
    assert isinstance(router.gate, torch.nn.Linear)
    assert router.noise.weight.abs().max() == 0
    probs, weights, experts = router.eval()(torch.randn(9, 6))
    torch.testing.assert_close(probs.sum(-1), torch.ones(9))
    torch.testing.assert_close(weights.sum(-1), torch.ones(9))
    assert torch.equal(probs.topk(2, dim=-1).indices, experts)
    assert float(router.load_balancing_loss(probs, torch.zeros(5))) == 0.0
    with pytest.raises(ValueError):
        TopKRouter(6, 5, 6)


@pytest.mark.parametrize('mode', ['grouped_mm', 'loop'])
@pytest.mark.parametrize('kn', [(8, 12), (5, 7)])
def test_segment_matmul(mode, kn):
    K, N = kn
    torch.manual_seed(7)
    counts = torch.tensor([3, 0, 5, 0, 2])
    x = torch.randn(10, K, requires_grad=True)
    w = torch.randn(5, K, N, requires_grad=True)
    out = segment_matmul(x, w, counts, mode)
    ref = torch.cat([a @ b for a, b in zip(x.split(counts.tolist()),
                                           w.unbind(0))])
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    gx, gw = torch.autograd.grad((out * g).sum(), (x, w))
    rx, rw = torch.autograd.grad((ref * g).sum(), (x, w))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    assert gw[1].abs().max() == 0 and gw[3].abs().max() == 0

    # The custom operator used under torch.compile: same values and
    # gradients, and it passes PyTorch's operator checks.
    out_op = _segment_matmul_op(x, w, counts, mode)
    torch.testing.assert_close(out_op, ref)
    ox, ow = torch.autograd.grad((out_op * g).sum(), (x, w))
    torch.testing.assert_close(ox, rx)
    torch.testing.assert_close(ow, rw)
    torch.library.opcheck(_segment_matmul_op, (x, w, counts, mode),
                          test_utils=('test_schema', 'test_faketensor',
                                      'test_autograd_registration'))


def test_segment_matmul_bad_mode():
    with pytest.raises(ValueError):
        segment_matmul(torch.randn(2, 4), torch.randn(1, 4, 4),
                       torch.tensor([2]), 'nope')


def test_grouped_mm_available():
    x = torch.randn(4, 8)
    assert grouped_mm_available(x, torch.randn(2, 8, 4)) == hasattr(
        F, 'grouped_mm')
    assert not grouped_mm_available(x.double(), torch.randn(2, 8, 4).double())
