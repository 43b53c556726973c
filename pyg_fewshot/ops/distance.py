r"""Translational (TransE / TransD) distances with a hand-written
backward: the scores of the few-shot models."""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['transd_project', 'translational_distance']


def _per_task(p: Tensor, like: Tensor) -> Tensor:
    # [d] broadcasts as is; [B, d] gets singleton middle dims so that it
    # lines up with a [B, *, d] operand.
    if p.dim() == 1 or like.dim() <= 2:
        return p
    return p.reshape(p.size(0), *([1] * (like.dim() - 2)), p.size(-1))


def transd_project(x: Tensor, p_x: Tensor, p_r: Tensor) -> Tensor:
    r"""The TransD projection :math:`\mathbf{x}' = \mathbf{x} +
    (\mathbf{x}^{\top}\mathbf{p}_x)\,\mathbf{p}_r` of every row of
    :obj:`x` with the vectors of its task.

    Args:
        x (torch.Tensor): Entity embeddings :obj:`[B, *, d]` (or
            :obj:`[B, d]`).
        p_x (torch.Tensor): Per-task projection vector of the entity side
            (:math:`\mathbf{p}_h` or :math:`\mathbf{p}_t`), :obj:`[B, d]`,
            or :obj:`[d]` shared by all tasks.
        p_r (torch.Tensor): Per-task relation-side vector, :obj:`[B, d]` or
            :obj:`[d]`.

    :rtype: :class:`torch.Tensor` of the shape of :obj:`x`
    """
    p_x, p_r = _per_task(p_x, x), _per_task(p_r, x)
    return x + (x * p_x).sum(dim=-1, keepdim=True) * p_r


# Translational distances ----------------------------------------------------
def _translational_forward(h: Tensor, tails: Tensor, rel: Tensor,
                           p_h: Tensor, p_r: Tensor,
                           p_t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""``(dist, diff, coef)`` for ``[B, Q, d]`` heads and ``[B, J, Q, d]``
    tails: ``diff = h + R - T + coef * p_r`` with
    ``coef = h.p_h - T.p_t``."""
    B, J, Q, d = tails.shape
    diff = (h + rel.unsqueeze(1)).unsqueeze(1) - tails
    a = torch.bmm(h, p_h.unsqueeze(-1)).view(B, 1, Q)
    b = torch.bmm(tails.reshape(B, J * Q, d), p_t.unsqueeze(-1)).view(B, J, Q)
    coef = a - b
    shift = (coef.unsqueeze(-1), p_r.view(B, 1, 1, d))
    # In place where no graph is being built (forward, first-order
    # backward); out of place when the backward is differentiated.
    diff = (torch.addcmul(diff, *shift) if torch.is_grad_enabled() else
            diff.addcmul_(*shift))
    return torch.linalg.vector_norm(diff, dim=-1), diff, coef


class _TranslationalDistance(torch.autograd.Function):
    r"""``||h + R + (h.p_h) p_r - T - (T.p_t) p_r||`` for every tail ``T``.

    The margin losses evaluate this for a few ``[B, Q, d]`` heads against
    ``[B, J, Q, d]`` tails; autograd's graph for the projected form makes
    about twenty passes over those tensors, this forward four and this
    backward seven (the dot products are batched matrix products). The
    backward is written in differentiable operations: when a higher-order
    gradient is asked for, it recomputes the forward from the inputs so
    that the second derivatives flow (:func:`torch.func.grad` over it
    works too).
    """
    @staticmethod
    def forward(h: Tensor, tails: Tensor, rel: Tensor, p_h: Tensor,
                p_r: Tensor, p_t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return _translational_forward(h, tails, rel, p_h, p_r, p_t)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        h, tails, rel, p_h, p_r, p_t = inputs
        dist, diff, coef = output
        ctx.mark_non_differentiable(diff, coef)
        ctx.save_for_backward(h, tails, rel, p_h, p_r, p_t, dist, diff,
                              coef)

    @staticmethod
    def backward(ctx, grad_dist: Tensor, _grad_diff: Optional[Tensor],
                 _grad_coef: Optional[Tensor]):
        h, tails, rel, p_h, p_r, p_t, dist, diff, coef = ctx.saved_tensors
        if torch.is_grad_enabled():
            # Double backward: diff and coef must depend on the inputs.
            dist, diff, coef = _translational_forward(h, tails, rel, p_h,
                                                      p_r, p_t)
        B, J, Q, d = tails.shape
        # d||x|| / dx = x / ||x||, and 0 at x = 0 (as torch.norm's backward).
        scale = torch.where(dist > 0, grad_dist / dist.clamp_min(1e-30),
                            torch.zeros_like(dist))
        need = ctx.needs_input_grad
        g = diff * scale.unsqueeze(-1)
        # Only the gradients asked for: the inner loop wants those of the
        # task parameters, not of the [B, J, Q, d] tails.
        grad_base = g.sum(dim=1) if need[0] or need[2] else None
        grad_rel = grad_base.sum(dim=1) if need[2] else None
        g_flat = g.reshape(B, J * Q, d)
        e = torch.bmm(g_flat, p_r.unsqueeze(-1)).view(B, J, Q)
        grad_h = grad_tails = grad_p_h = grad_p_r = grad_p_t = None
        if need[1]:
            grad_tails = torch.addcmul(g, e.unsqueeze(-1),
                                       p_t.view(B, 1, 1, d)).neg()
        grad_a = e.sum(dim=1)
        if need[0]:
            grad_h = torch.addcmul(grad_base, grad_a.unsqueeze(-1),
                                   p_h.unsqueeze(1))
        if need[3]:
            grad_p_h = _weighted_row_sum(grad_a, h)
        if need[4]:
            grad_p_r = _weighted_row_sum(coef.reshape(B, J * Q), g_flat)
        if need[5]:
            grad_p_t = _weighted_row_sum(
                e.view(B, J * Q), tails.reshape(B, J * Q, d)).neg()
        return grad_h, grad_tails, grad_rel, grad_p_h, grad_p_r, grad_p_t


def _weighted_row_sum(w: Tensor, x: Tensor) -> Tensor:
    r"""``sum_n w[b, n] * x[b, n]``: ``[B, n]`` and ``[B, n, d]`` to
    ``[B, d]``. A ``[1, n] x [n, d]`` product per task is slow for a handful
    of rows (batched GEMM overhead), a broadcast multiply and sum is not."""
    if w.size(1) <= 16:
        return (w.unsqueeze(-1) * x).sum(dim=1)
    return torch.bmm(w.unsqueeze(1), x).squeeze(1)


def translational_distance(h: Tensor, tails: Tensor, rel: Tensor,
                           p_h: Optional[Tensor] = None,
                           p_r: Optional[Tensor] = None,
                           p_t: Optional[Tensor] = None) -> Tensor:
    r"""Distances :math:`\lVert \mathbf{h}' + \mathbf{R} - \mathbf{t}'
    \rVert_2` of heads against stacked tails, with the TransD projection
    :math:`\mathbf{x}' = \mathbf{x} + (\mathbf{x}^{\top}\mathbf{p}_x)\,
    \mathbf{p}_r` (heads with :math:`\mathbf{p}_h`, tails with
    :math:`\mathbf{p}_t`) when the vectors are given and
    :math:`\mathbf{x}' = \mathbf{x}` (TransE) otherwise.

    The same values as projecting with :func:`transd_project` and taking
    the norm of the difference (see
    :meth:`pyg_fewshot.nn.ProjectionAdapter.distance`). With projection
    vectors this runs as a custom autograd function that makes about a
    third of autograd's passes over the tails (docs/benchmarks.md); the
    TransE form, and any form inside
    :func:`torch.compile`, under autocast, or with heads that broadcast
    against tails of other middle dimensions, is the plain expression.

    Args:
        h (torch.Tensor): Heads :obj:`[B, *, d]`.
        tails (torch.Tensor): Tails :obj:`[B, J, *, d]`, :obj:`J` for each
            head (*e.g.* a positive and a negative).
        rel (torch.Tensor): Per-task translation :obj:`[B, d]`.
        p_h, p_r, p_t (torch.Tensor, optional): Per-task projection vectors
            :obj:`[B, d]` (or :obj:`[d]`). (default: :obj:`None`)

    Returns:
        :obj:`[B, J, *]` distances.
    """
    B, d = tails.size(0), tails.size(-1)
    mid = h.shape[1:-1]
    view = (B, ) + (1, ) * len(mid) + (d, )
    if p_h is None:
        q = h + rel.view(view)
        return (q.unsqueeze(1) - tails).norm(p=2, dim=-1)
    assert p_r is not None and p_t is not None
    p_h, p_r, p_t = (p.expand(B, d) for p in (p_h, p_r, p_t))
    if (tuple(tails.shape[2:-1]) != tuple(mid)
            or torch.compiler.is_compiling()
            or torch.is_autocast_enabled(h.device.type)):
        hh = transd_project(h, p_h, p_r)
        tt = transd_project(tails, p_t, p_r)
        return ((hh + rel.view(view)).unsqueeze(1) - tt).norm(p=2, dim=-1)
    Q = 1
    for m in mid:
        Q *= m
    J = tails.size(1)
    dist, _, _ = _TranslationalDistance.apply(
        h.reshape(B, Q, d), tails.reshape(B, J, Q, d), rel, p_h, p_r, p_t)
    return dist.view(B, J, *mid)