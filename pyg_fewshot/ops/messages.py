r"""Per-(relation, neighbour) messages of attentive neighbour aggregation,
with a hand-written backward."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['relu_pair_messages']

# Pair messages --------------------------------------------------------------
class _ReLUPairMessages(torch.autograd.Function):
    r"""``c = relu(a[rel] + b[ent])`` and ``logits_t = vecs_t @ c^T``.

    Every op here streams a ``[P, d]`` tensor through memory, so the count
    of passes is the cost. Forward: one :func:`torch.nn.functional.
    embedding_bag` (bags of two rows) writes the sums, ReLU runs in place,
    and the logits are one ``[k, d] x [d, P]`` product (much faster on CPU
    than ``[P, d] x [d, k]`` for ``k <= 2``). Backward: the logits'
    gradient is folded into the messages' in one ``addmm``, the ReLU mask
    is applied in place, and two ``index_add_`` calls scatter the result
    into the two tables. Autograd's own graph for the same function makes
    about twice the passes and allocations.
    """
    @staticmethod
    def forward(a: Tensor, b: Tensor, rel: Tensor, ent: Tensor,
                vecs_t: Tensor, own_grad: bool) -> Tuple[Tensor, Tensor]:
        P = rel.numel()
        table = torch.cat([a, b], dim=0)
        bags = torch.stack([rel.long(), ent.long() + a.size(0)], dim=1)
        offsets = torch.arange(0, 2 * P, 2, device=rel.device)
        c = F.embedding_bag(bags.view(-1), table, offsets, mode='sum')
        c = c.relu_()
        logits_t = vecs_t @ c.t()
        return c, logits_t

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        a, b, rel, ent, vecs_t, own_grad = inputs
        c, _ = output
        ctx.save_for_backward(c, rel, ent, vecs_t)
        ctx.num_a, ctx.num_b = a.size(0), b.size(0)
        ctx.own_grad = own_grad

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_c: Optional[Tensor],
                 grad_logits_t: Optional[Tensor]):
        c, rel, ent, vecs_t = ctx.saved_tensors
        if grad_c is None:
            grad_c = torch.zeros_like(c)
        # With own_grad the caller guarantees that the messages have one
        # consumer whose backward allocates their gradient afresh, so it can
        # be updated in place (saving a copy of [P, d]).
        own = (ctx.own_grad and grad_c.is_contiguous()
               and grad_c.dtype == c.dtype and grad_c.shape == c.shape)
        if grad_logits_t is not None and vecs_t.size(0) > 0:
            grad = (grad_c.addmm_(grad_logits_t.t(), vecs_t) if own else
                    torch.addmm(grad_c, grad_logits_t.t(), vecs_t))
        else:
            grad = (grad_c if own else
                    grad_c.clone(memory_format=torch.contiguous_format))
        # ReLU backward in place on our own buffer: grad[c <= 0] = 0.
        torch.ops.aten.threshold_backward.grad_input(grad, c, 0.0,
                                                     grad_input=grad)
        grad_vecs_t = None
        if ctx.needs_input_grad[4] and grad_logits_t is not None:
            grad_vecs_t = grad_logits_t @ c
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = grad.new_zeros(ctx.num_a, grad.size(1))
            grad_a.index_add_(0, rel, grad)
        if ctx.needs_input_grad[1]:
            grad_b = grad.new_zeros(ctx.num_b, grad.size(1))
            grad_b.index_add_(0, ent, grad)
        return grad_a, grad_b, None, None, grad_vecs_t, None


def relu_pair_messages(a: Tensor, b: Tensor, rel: Tensor, ent: Tensor,
                       vecs: Optional[Tensor],
                       own_grad: bool = False) -> Tuple[Tensor, Tensor]:
    r"""Per-pair messages :math:`\mathbf{c}_p = \mathrm{ReLU}(\mathbf{a}_{
    \mathrm{rel}_p} + \mathbf{b}_{\mathrm{ent}_p})` and their logits
    :math:`\mathbf{c}_p^{\top} \mathbf{v}_j`.

    The same function as ``c = (a[rel] + b[ent]).relu()`` and
    ``c @ vecs``, through a custom autograd function that makes about half
    the passes over the ``[P, d]`` messages (see :class:`_ReLUPairMessages`);
    its backward is first-order only.

    Args:
        a (torch.Tensor): First table (projected relations), :obj:`[R, d]`.
        b (torch.Tensor): Second table (projected entities), :obj:`[U, d]`.
        rel (torch.Tensor): Row of :obj:`a` of each pair, :obj:`[P]`.
        ent (torch.Tensor): Row of :obj:`b` of each pair, :obj:`[P]`.
        vecs (torch.Tensor, optional): Logit vectors as columns,
            :obj:`[d, k]` (:obj:`None`: no logits).
        own_grad (bool, optional): The messages have a single consumer
            whose backward returns a freshly allocated gradient (as
            :func:`csr_weighted_sum` does), so the backward may update that
            gradient in place instead of copying it. Leave it :obj:`False`
            when the messages are used elsewhere too.
            (default: :obj:`False`)

    Returns:
        :obj:`(c, logits_t)`: messages :obj:`[P, d]` and the logits
        transposed, :obj:`[k, P]` (one contiguous row per vector).
    """
    if vecs is None:
        vecs_t = a.new_zeros(0, a.size(1))
    else:
        vecs_t = vecs.t().contiguous()
    return _ReLUPairMessages.apply(a, b, rel, ent, vecs_t, own_grad)
