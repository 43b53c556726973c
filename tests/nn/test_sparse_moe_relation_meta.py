import pytest
import torch
import torch.nn.functional as F

from pyg_fewshot.nn import MoERouting, SparseMoERelationMeta
from pyg_fewshot.ops import grouped_mm_available, segment_matmul
from pyg_fewshot.ops.segment import _segment_matmul_op


def dense_reference(moe: SparseMoERelationMeta, x, batch, num_tasks):
    r"""Every expert on every pair, then the top-N picked: the published
    code's computation, written independently of the module's kernels."""
    logits = moe.gate(x)
    probs = logits.softmax(dim=-1)
    weights, experts = probs.topk(moe.top_k, dim=-1)
    if moe.renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    if moe.scale_by_k:
        weights = weights / moe.top_k
    outs = []
    for j in range(moe.num_experts):
        h = moe.act(x @ moe.weight1[j] + moe.bias1[j])
        outs.append(h @ moe.weight2[j] + moe.bias2[j])
    all_out = torch.stack(outs, dim=1)  # [P, M, out]
    picked = all_out.gather(
        1,
        experts.unsqueeze(-1).expand(-1, -1, all_out.size(-1)))
    r = (picked * weights.unsqueeze(-1)).sum(1)
    meta = torch.zeros(num_tasks, r.size(-1), dtype=r.dtype)
    meta = meta.index_add(0, batch, r)
    count = torch.bincount(batch, minlength=num_tasks).clamp(min=1)
    return meta / count.unsqueeze(-1).to(r.dtype)


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
    assert grads[1 + 0][unused].abs().max() == 0  # weight1

    x.grad = None
    moe.zero_grad()
    moe(x, batch, B).sum().backward()  # stride-0 upstream gradient
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_dense_dispatch_option_and_float64():
    torch.manual_seed(1)
    moe = SparseMoERelationMeta(12, 6, num_experts=8, top_k=2,
                                hidden_channels=5).double()
    x = torch.randn(10, 12, dtype=torch.float64)
    batch = torch.arange(10) // 5
    out = moe(x, batch, 2)  # float64: grouped_mm unavailable -> loop
    assert not grouped_mm_available(x, moe.weight1)
    moe.dispatch = 'dense'
    torch.testing.assert_close(moe(x, batch, 2), out)
    torch.testing.assert_close(dense_reference(moe, x, batch, 2), out)


def test_chunked_dispatch_matches():
    torch.manual_seed(9)
    moe = SparseMoERelationMeta(16, 8, num_experts=8, top_k=3,
                                hidden_channels=8, chunk_size=None)
    x = torch.randn(50, 16, requires_grad=True)
    batch = torch.arange(50) // 5
    out, routing = moe(x, batch, 10, return_routing=True)
    g = torch.autograd.grad(out.square().sum(), (x, moe.weight1))
    moe.chunk_size = 7
    out2, routing2 = moe(x, batch, 10, return_routing=True)
    g2 = torch.autograd.grad(out2.square().sum(), (x, moe.weight1))
    torch.testing.assert_close(out2, out)
    assert torch.equal(routing2.counts, routing.counts)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b)


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
    assert moe.gate[0].weight.grad.abs().sum() > 0


def test_noisy_gating():
    torch.manual_seed(5)
    moe = SparseMoERelationMeta(8, 4, num_experts=6, top_k=2,
                                hidden_channels=4, noisy_gating=True)
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
    assert moe.noise.weight.grad is not None
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
    before = m1.weight1.detach().clone()
    m1.reset_parameters()
    assert not torch.equal(before, m1.weight1)


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
