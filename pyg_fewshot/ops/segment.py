r"""Grouped matrix products: the expert dispatch of a sparse mixture of
experts (:class:`~pyg_fewshot.nn.SparseMoERelationMeta`)."""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['segment_matmul', 'grouped_mm_available']

_DISPATCH_MODES = ('auto', 'grouped_mm', 'loop')

# grouped_mm needs 16-byte aligned row strides.
_ALIGN_BYTES = 16


def grouped_mm_available(x: Tensor, weight: Tensor) -> bool:
    r"""Whether :func:`torch.nn.functional.grouped_mm` can run
    :obj:`x @ weight[g]` for every group here and now.

    Only static properties are checked (no host synchronisation): the
    function exists, both operands are :obj:`float32`, :obj:`bfloat16` or
    :obj:`float16` on a CPU or CUDA device, and we are not inside a
    :func:`torch.compile` trace (grouped_mm has no fake-tensor kernel for
    CPU, so tracing it fails). Feature sizes that break its 16-byte stride
    rule are handled by :func:`segment_matmul` through zero padding.
    """
    if not hasattr(F, 'grouped_mm'):
        return False
    if torch.compiler.is_compiling():
        return False
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if weight.dtype != x.dtype:
        return False
    if x.device.type == 'cpu':
        return True
    # The CUDA kernel is bfloat16-only on the GPUs it supports.
    return x.device.type == 'cuda' and x.dtype == torch.bfloat16


def _pad_last(t: Tensor, multiple: int) -> Tensor:
    rem = t.size(-1) % multiple
    if rem == 0:
        return t
    return F.pad(t, (0, multiple - rem))


class _ContiguousGrad(torch.autograd.Function):
    r"""Identity whose backward makes the incoming gradient contiguous:
    grouped_mm's backward rejects the stride-0 gradients that, *e.g.*,
    :obj:`out.sum().backward()` produces."""
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()


def _segment_matmul_grouped(x: Tensor, weight: Tensor,
                            counts: Tensor) -> Tensor:
    out_features = weight.size(-1)
    multiple = _ALIGN_BYTES // x.element_size()
    # Zero-padding the contraction and output dims keeps the result exact
    # and lets grouped_mm serve any feature size.
    if x.size(-1) % multiple != 0:
        x = _pad_last(x, multiple)
        weight = F.pad(weight, (0, 0, 0, x.size(-1) - weight.size(1)))
    weight = _pad_last(weight, multiple)
    offsets = counts.cumsum(0).to(torch.int32)
    out = F.grouped_mm(x.contiguous(), weight, offs=offsets)
    out = _ContiguousGrad.apply(out)
    if out.size(-1) != out_features:
        out = out[:, :out_features]
    return out


def _segment_matmul_loop(x: Tensor, weight: Tensor, counts: Tensor) -> Tensor:
    # Group sizes are data-dependent: one host synchronisation, documented.
    sizes: List[int] = counts.tolist()
    outs = [
        xs @ w
        for xs, w in zip(x.split(sizes, dim=0), weight.unbind(0))
    ]
    return torch.cat(outs, dim=0)


def _check_mode(mode: str) -> None:
    if mode not in _DISPATCH_MODES:
        raise ValueError(f"Unknown dispatch mode '{mode}' "
                         f"(expected one of {_DISPATCH_MODES})")


def _segment_matmul_eager(x: Tensor, weight: Tensor, counts: Tensor,
                          mode: str) -> Tensor:
    if mode == 'grouped_mm' or (mode == 'auto'
                                and grouped_mm_available(x, weight)):
        return _segment_matmul_grouped(x, weight, counts)
    return _segment_matmul_loop(x, weight, counts)


# Under torch.compile the grouped product runs as an opaque custom operator:
# its output shape is static ([rows, out]), so neither the data-dependent
# group sizes nor grouped_mm (which cannot be traced on CPU) break the graph.
@torch.library.custom_op('pyg_fewshot::segment_matmul', mutates_args=())
def _segment_matmul_op(x: Tensor, weight: Tensor, counts: Tensor,
                       mode: str) -> Tensor:
    with torch.no_grad():
        return _segment_matmul_eager(x, weight, counts, mode).contiguous()


@_segment_matmul_op.register_fake
def _(x: Tensor, weight: Tensor, counts: Tensor, mode: str) -> Tensor:
    return x.new_empty(x.size(0), weight.size(-1))


@torch.library.custom_op('pyg_fewshot::segment_matmul_weight_grad',
                         mutates_args=())
def _segment_weight_grad_op(x: Tensor, grad: Tensor, counts: Tensor,
                            mode: str) -> Tensor:
    r"""Per-group :obj:`x_g^T grad_g`, stacked to :obj:`[G, K, N]`."""
    with torch.no_grad():
        if mode == 'grouped_mm' or (mode == 'auto' and grouped_mm_available(
                x, grad.unsqueeze(0))):
            multiple = _ALIGN_BYTES // x.element_size()
            k, n = x.size(1), grad.size(1)
            xp = _pad_last(x, multiple).contiguous()
            gp = _pad_last(grad, multiple).contiguous()
            offsets = counts.cumsum(0).to(torch.int32)
            out = F.grouped_mm(xp.t(), gp, offs=offsets)
            return out[:, :k, :n].contiguous()
        sizes: List[int] = counts.tolist()
        return torch.stack([
            xs.t() @ gs
            for xs, gs in zip(x.split(sizes), grad.split(sizes))
        ])


@_segment_weight_grad_op.register_fake
def _(x: Tensor, grad: Tensor, counts: Tensor, mode: str) -> Tensor:
    return x.new_empty(counts.size(0), x.size(1), grad.size(1))


def _segment_matmul_setup(ctx, inputs, output) -> None:
    x, weight, counts, mode = inputs
    ctx.save_for_backward(x, weight, counts)
    ctx.mode = mode


def _segment_matmul_backward(ctx, grad: Tensor):
    x, weight, counts = ctx.saved_tensors
    grad = grad.contiguous()
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = _segment_matmul_op(grad, weight.transpose(1, 2).contiguous(),
                                    counts, ctx.mode)
    if ctx.needs_input_grad[1]:
        grad_w = _segment_weight_grad_op(x, grad, counts, ctx.mode)
    return grad_x, grad_w, None, None


_segment_matmul_op.register_autograd(_segment_matmul_backward,
                                     setup_context=_segment_matmul_setup)


def segment_matmul(x: Tensor, weight: Tensor, counts: Tensor,
                   mode: str = 'auto') -> Tensor:
    r"""Grouped matrix product :math:`\mathbf{Y}_g = \mathbf{X}_g
    \mathbf{W}_g` over consecutive row groups.

    Args:
        x (torch.Tensor): Rows sorted by group, shape :obj:`[T, K]`.
        weight (torch.Tensor): One weight per group, shape :obj:`[G, K, N]`.
        counts (torch.Tensor): Number of rows of each group, shape
            :obj:`[G]`; must sum to :obj:`T`. Groups may be empty.
        mode (str, optional): :obj:`"grouped_mm"` (one
            :func:`torch.nn.functional.grouped_mm` call; float32 inputs
            whose feature sizes are not multiples of 4 are zero-padded),
            :obj:`"loop"` (one :obj:`@` per group over
            :obj:`weight.unbind(0)`; costs one host synchronisation to read
            the group sizes) or :obj:`"auto"` (grouped_mm where
            :func:`grouped_mm_available` says so, the loop otherwise).
            (default: :obj:`"auto"`)

    Under :func:`torch.compile` the product runs as the custom operator
    :obj:`pyg_fewshot::segment_matmul`, which the compiler treats as opaque,
    so it causes no graph break; its backward is first-order only. In eager
    mode both paths use PyTorch's own autograd, so higher-order gradients
    work there.

    :rtype: :class:`torch.Tensor` of shape :obj:`[T, N]`
    """
    _check_mode(mode)
    if torch.compiler.is_compiling():
        return _segment_matmul_op(x, weight, counts, mode)
    return _segment_matmul_eager(x, weight, counts, mode)
