import math

import pytest
import torch
from torch.func import functional_call, grad

from pyg_fewshot.nn import ProjectionAdapter
from pyg_fewshot.ops import translational_distance


B, K, D = 3, 4, 6


def transe_loss(h, t, r):
    # r: [B, d] broadcast over the K pairs of each task.
    if r.dim() == 2:
        r = r.unsqueeze(1)
    return (h + r - t).norm(dim=-1).mean()


def test_transd_form():
    torch.manual_seed(0)
    adapter = ProjectionAdapter(D, mode='transd')
    h, t, r = torch.randn(B, K, D), torch.randn(B, K, D), torch.randn(B, D)
    local = {k: torch.randn(B, D) for k in ('p_h', 'p_r', 'p_t')}
    h2, t2, r2 = adapter(h, t, r, local)
    assert h2.shape == h.shape and t2.shape == t.shape and r2.shape == r.shape
    for b in range(B):
        for k in range(K):
            exp_h = h[b, k] + (h[b, k] @ local['p_h'][b]) * local['p_r'][b]
            exp_t = t[b, k] + (t[b, k] @ local['p_t'][b]) * local['p_r'][b]
            torch.testing.assert_close(h2[b, k], exp_h)
            torch.testing.assert_close(t2[b, k], exp_t)
    assert torch.equal(r2, r)


def test_paper_form():
    torch.manual_seed(1)
    adapter = ProjectionAdapter(D, mode='paper')
    h, t, r = torch.randn(B, K, D), torch.randn(B, K, D), torch.randn(B, D)
    local = {k: torch.randn(B, D) for k in ('p_h', 'p_r', 'p_t')}
    h2, t2, r2 = adapter(h, t, r, local)
    assert h2.shape == h.shape and r2.shape == r.shape
    for b in range(B):
        R = r[b]
        torch.testing.assert_close(
            h2[b], h[b] + (local['p_h'][b] @ R) * R.expand(K, D))
        torch.testing.assert_close(
            t2[b], t[b] + (local['p_t'][b] @ R) * R.expand(K, D))
        torch.testing.assert_close(r2[b], R + (local['p_r'][b] @ R) * R)


def test_paper_form_reduces_to_rescaling_relation():
    r"""The evidence behind the default: under the TransE score, the paper's
    form only rescales R by one scalar per task, whatever the entities; the
    TransD form does not."""
    torch.manual_seed(2)
    h, t, r = torch.randn(B, K, D), torch.randn(B, K, D), torch.randn(B, D)
    local = {k: torch.randn(B, D) for k in ('p_h', 'p_r', 'p_t')}
    h2, t2, r2 = ProjectionAdapter(D, mode='paper')(h, t, r, local)
    scale = 1 + ((local['p_h'] + local['p_r'] - local['p_t']) * r).sum(-1)
    torch.testing.assert_close(h2 + r2.unsqueeze(1) - t2,
                               h - t + (scale.unsqueeze(-1) * r).unsqueeze(1))

    h2, t2, r2 = ProjectionAdapter(D, mode='transd')(h, t, r, local)
    diff = h2 + r2.unsqueeze(1) - t2 - (h - t)
    # Entity-dependent: the shift differs between pairs of the same task.
    assert not torch.allclose(diff[:, 0], diff[:, 1])


@pytest.mark.parametrize('mode', ['transd', 'paper'])
def test_shapes_broadcasting(mode):
    torch.manual_seed(3)
    adapter = ProjectionAdapter(D, mode=mode)
    local = adapter.init_local(B)
    # [B, d] operands, and the published code's [B, n, 1, d] layout.
    h2, t2, r2 = adapter(torch.randn(B, D), torch.randn(B, D),
                         torch.randn(B, D), local)
    assert h2.shape == (B, D) and r2.shape == (B, D)
    h, t = torch.randn(B, K, 1, D), torch.randn(B, K, 1, D)
    r = torch.randn(B, 1, 1, D)
    h2, t2, r2 = adapter(h, t, r, local)
    assert h2.shape == h.shape and t2.shape == t.shape and r2.shape == r.shape
    # local=None uses the shared initialisation for every task.
    h3, _, _ = adapter(h, t, r)
    torch.testing.assert_close(h3, h2)


def test_learned_init_local_is_differentiable():
    torch.manual_seed(4)
    adapter = ProjectionAdapter(D)
    local = adapter.init_local(B)
    assert set(local) == {'p_h', 'p_r', 'p_t'}
    assert local['p_h'].shape == (B, D)
    torch.testing.assert_close(local['p_h'][1], adapter.p_h)
    h, t, r = torch.randn(B, K, D), torch.randn(B, K, D), torch.randn(B, D)
    transe_loss(*adapter(h, t, r, local)).backward()
    for p in (adapter.p_h, adapter.p_r, adapter.p_t):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert adapter.p_h.abs().max() <= adapter.init_bound


def test_random_init_reproduces_published_scale():
    adapter = ProjectionAdapter(100, init='random')
    assert len(list(adapter.parameters())) == 0
    torch.manual_seed(5)
    a = adapter.init_local(1024)
    b = adapter.init_local(1024)
    bound = math.sqrt(6.0 / (100 * 1025))
    assert a['p_h'].shape == (1024, 100)
    assert a['p_h'].abs().max() <= bound
    assert a['p_h'].abs().max() > 0.9 * bound
    assert not torch.equal(a['p_h'], b['p_h'])
    g1 = adapter.init_local(4, generator=torch.Generator().manual_seed(0))
    g2 = adapter.init_local(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(g1['p_t'], g2['p_t'])


@pytest.mark.parametrize('mode', ['transd', 'paper'])
def test_torch_func_grad_inner_step(mode):
    torch.manual_seed(6)
    adapter = ProjectionAdapter(D, mode=mode, init_bound=0.3)
    h, t, r = torch.randn(B, K, D), torch.randn(B, K, D), torch.randn(B, D)
    local = {k: v.detach().clone() for k, v in adapter.init_local(B).items()}

    def support_loss(local):
        return transe_loss(*adapter(h, t, r, local))

    grads = grad(support_loss)(local)
    assert set(grads) == set(local)
    # Matches autograd.
    ref_local = {k: v.clone().requires_grad_() for k, v in local.items()}
    ref = torch.autograd.grad(support_loss(ref_local),
                              list(ref_local.values()))
    for (k, g), g_ref in zip(grads.items(), ref):
        torch.testing.assert_close(g, g_ref)
    # One inner step lowers the support loss.
    new_local = {k: local[k] - 0.1 * grads[k] for k in local}
    assert support_loss(new_local) < support_loss(local)


def test_functional_call_with_batched_parameters():
    torch.manual_seed(7)
    adapter = ProjectionAdapter(D)
    h, t, r = torch.randn(B, K, D), torch.randn(B, K, D), torch.randn(B, D)
    params = {k: torch.randn(B, D) for k in ('p_h', 'p_r', 'p_t')}
    out = functional_call(adapter, params, (h, t, r))
    ref = adapter(h, t, r, params)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)

    # Gradient through functional_call w.r.t. the meta-initialisation.
    def loss_fn(p):
        return transe_loss(*functional_call(adapter, p, (h, t, r)))

    g = grad(loss_fn)(dict(adapter.named_parameters()))
    assert g['p_r'].shape == (D, )


@pytest.mark.parametrize('mode', ['transd', 'paper'])
@pytest.mark.parametrize('shapes', [
    ((B, 3, D), (B, 2, 3, D)),  # queries against aligned tails
    ((B, D), (B, 2, D)),
    ((B, 1, D), (B, 2, 5, D)),  # one head against a stack of candidates
])
def test_distance_is_the_norm_of_the_projected_difference(mode, shapes):
    torch.manual_seed(10)
    adapter = ProjectionAdapter(D, mode=mode, init_bound=0.3)
    h, tails = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    rel = torch.randn(B, D)
    local = {k: torch.randn(B, D) for k in ('p_h', 'p_r', 'p_t')}
    dist = adapter.distance(h, tails, rel, local)
    assert dist.shape == tails.shape[:-1]
    for j in range(tails.size(1)):
        h2, t2, r2 = adapter(h, tails[:, j], rel, local)
        r2 = r2.view(B, *([1] * (h.dim() - 2)), D)
        torch.testing.assert_close(dist[:, j], (h2 + r2 - t2).norm(dim=-1))
    if mode == 'transd':  # the hand-written kernel itself
        assert torch.equal(dist, translational_distance(
            h, tails, rel, local['p_h'], local['p_r'], local['p_t']))
    # local=None: the shared initialisation.
    shared = {k: getattr(adapter, k).expand(B, D) for k in local}
    torch.testing.assert_close(adapter.distance(h, tails, rel),
                               adapter.distance(h, tails, rel, shared))


@pytest.mark.parametrize('mode', ['transd', 'paper'])
def test_distance_inner_step_gradients(mode):
    # The inner loop differentiates the distance w.r.t. the local vectors
    # and the outer loop differentiates through that gradient.
    torch.manual_seed(11)
    adapter = ProjectionAdapter(D, mode=mode, init_bound=0.3).double()
    h = torch.randn(B, 3, D, dtype=torch.double)
    tails = torch.randn(B, 2, 3, D, dtype=torch.double)
    rel = torch.randn(B, D, dtype=torch.double, requires_grad=True)
    local = {k: torch.randn(B, D, dtype=torch.double, requires_grad=True)
             for k in ('p_h', 'p_r', 'p_t')}

    def margin(dist):
        return torch.relu(1.0 + dist[:, 0] - dist[:, 1]).mean()

    def loss(rel, p_h, p_r, p_t):
        local = dict(p_h=p_h, p_r=p_r, p_t=p_t)
        return margin(adapter.distance(h, tails, rel, local))

    inputs = (rel, *local.values())
    assert torch.autograd.gradcheck(loss, inputs)
    assert torch.autograd.gradgradcheck(loss, inputs)


def test_repr_reset_errors():
    torch.manual_seed(8)
    adapter = ProjectionAdapter(D)
    assert repr(adapter) == 'ProjectionAdapter(6, mode=transd, init=learned)'
    before = adapter.p_h.detach().clone()
    adapter.reset_parameters()
    assert not torch.equal(before, adapter.p_h)
    torch.manual_seed(9)
    a = ProjectionAdapter(D)
    torch.manual_seed(9)
    b = ProjectionAdapter(D)
    assert torch.equal(a.p_t, b.p_t)
    with pytest.raises(ValueError):
        ProjectionAdapter(D, mode='transe')
    with pytest.raises(ValueError):
        ProjectionAdapter(D, init='zeros')
