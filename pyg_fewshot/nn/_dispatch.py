r"""Low-level kernels shared by the layers of :mod:`pyg_fewshot.nn`.

* :func:`segment_matmul`: one matrix product per group of consecutive rows
  (the expert dispatch of :class:`~pyg_fewshot.nn.SparseMoERelationMeta`),
  through :func:`torch.nn.functional.grouped_mm` where its constraints hold
  and a loop over the weight slices otherwise.
* :func:`csr_gather`: the CSR rows of a batch of nodes as a flat edge list,
  with an optional per-node cap that is sampled in training and
  deterministic in evaluation
  (:class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`).
* :func:`relu_pair_messages`: the per-(relation, neighbour) messages
  :math:`\mathrm{ReLU}(\mathbf{a}_{r} + \mathbf{b}_{e})` and their attention
  logits, with a hand-written backward that makes fewer passes over the
  ``[P, d]`` messages than autograd's
  (:class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`).
* :func:`translational_distance`: the translational (TransE / TransD) score
  distance of heads against stacked tails, with a hand-written backward
  (the scores of :class:`~pyg_fewshot.models.MetaR` and
  :class:`~pyg_fewshot.models.MoEMeta`).
* :func:`csr_weighted_sum`: a weighted sum of gathered rows per segment of
  a sorted edge list, as one weighted ``embedding_bag`` each way (the
  neighbour aggregation of
  :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['segment_matmul', 'grouped_mm_available', 'csr_gather',
           'unique_pairs', 'graph_pairs', 'relu_pair_messages',
           'csr_weighted_sum', 'head_and_rows', 'translational_distance']

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


def csr_gather(
    rowptr: Tensor,
    index: Tensor,
    max_neighbors: Optional[int] = None,
    sample: bool = False,
    num_edges: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Flattens the CSR rows :obj:`index` into an edge list.

    Every node :obj:`index[b]` contributes
    :math:`\min(\deg, \mathrm{max\_neighbors})` entries. With
    :obj:`sample=False` these are the first entries of its CSR row
    (deterministic); with :obj:`sample=True` a row longer than the cap gets
    a uniformly random subset without replacement, drawn for all rows at
    once by sorting random keys within each row (no Python loop per node).

    Args:
        rowptr (torch.Tensor): CSR row pointer, shape :obj:`[N + 1]`.
        index (torch.Tensor): Nodes whose rows are gathered, shape
            :obj:`[B]`.
        max_neighbors (int, optional): Per-node cap. (default: :obj:`None`)
        sample (bool, optional): Sample the capped rows at random instead of
            keeping their first entries. (default: :obj:`False`)
        num_edges (int, optional): The number of gathered entries
            :math:`\sum_b \min(\deg_b, \mathrm{cap})`, if known. Without it
            the size is read back from the device, unavoidable because it
            depends on the data; sampling always reads back which rows
            exceed the cap and their total length.
            (default: :obj:`None`)
        generator (torch.Generator, optional): Random generator for the
            sampling. (default: :obj:`None`)

    Returns:
        :obj:`(pos, batch)`: positions into the CSR column arrays, shape
        :obj:`[E']`, and the position in :obj:`index` each entry belongs
        to, shape :obj:`[E']`, sorted ascending.
    """
    index = index.to(rowptr.device)
    start = rowptr.index_select(0, index)
    deg = rowptr.index_select(0, index + 1) - start
    keep = deg if max_neighbors is None else deg.clamp(max=max_neighbors)
    do_sample = sample and max_neighbors is not None

    if num_edges is None:
        num_edges = int(keep.sum())

    arange_b = torch.arange(index.numel(), device=index.device)
    batch = arange_b.repeat_interleave(keep, output_size=num_edges)
    keep_ptr = keep.cumsum(0) - keep
    # Entry i of node b's run sits at start[b] + (i - keep_ptr[b]).
    pos = torch.arange(num_edges, device=index.device).add_(
        (start - keep_ptr).index_select(0, batch))
    if not do_sample:
        return pos, batch

    # Only rows longer than the cap are sampled; the others keep all their
    # entries. Within the capped rows, sort (row, random key) pairs: the
    # first `cap` entries of each row after the sort are a uniform sample
    # without replacement. The random keys cover only the capped rows'
    # entries (on NELL-One about 2/3 of the full rows'), and the rows that
    # fit are never sorted.
    assert max_neighbors is not None
    cap = max_neighbors
    capped = (deg > cap).nonzero().view(-1)
    if capped.numel() == 0:
        return pos, batch
    cdeg = deg.index_select(0, capped)
    total = int(cdeg.sum())
    arange_c = torch.arange(capped.numel(), device=index.device)
    cbatch = arange_c.repeat_interleave(cdeg, output_size=total)
    cptr = cdeg.cumsum(0) - cdeg
    perm = torch.argsort(_row_random_keys(cbatch, capped.numel(), generator),
                         stable=True)
    slot = torch.arange(cap, device=index.device)
    # perm[cptr[c] + j] is the CSR offset (from the row start, since the
    # sort keeps rows in order) of the j-th pick: subtract the row start.
    first = (cptr.unsqueeze(1) + slot).view(-1)
    picked = perm.index_select(0, first) - cptr.repeat_interleave(cap)
    dest = (keep_ptr.index_select(0, capped).unsqueeze(1) + slot).view(-1)
    src = start.index_select(0, capped).repeat_interleave(cap) + picked
    return pos.index_copy_(0, dest, src), batch


def _row_random_keys(row: Tensor, num_rows: int,
                     generator: Optional[torch.Generator]) -> Tensor:
    r"""Sort keys ``(row, random)`` for a random order within each row.

    With up to 512 rows the row id and 22 random bits share one int32 key,
    which PyTorch's radix sort orders twice as fast as an int64 one; more
    rows take int64 keys with 30 random bits. Equal random values within a
    row (about :math:`n^2 / 2^{23}` pairs in a row of :math:`n` entries)
    keep their CSR order under the stable sort.
    """
    row_bits = max(1, (num_rows - 1).bit_length())
    if row_bits <= 9:
        bits = 31 - row_bits
        keys = torch.randint(0, 1 << bits, row.shape, dtype=torch.int32,
                             device=row.device, generator=generator)
        return keys.bitwise_or_(row.int() << bits)
    keys = torch.randint(0, 1 << 30, row.shape, device=row.device,
                         generator=generator)
    return keys.add_(row * (1 << 30))


def unique_pairs(rel: Tensor, ent: Tensor,
                 num_entities: int) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The distinct (relation, entity) pairs of an edge list.

    Returns :obj:`(pair_rel, pair_ent, pair_index)`: the relation and entity
    of each of the :math:`P` distinct pairs (sorted by relation, then
    entity), each shape :obj:`[P]`, and the pair of each edge, shape
    :obj:`[E]`. Reads :math:`P` back from the device (like
    :func:`torch.unique`).
    """
    key = rel.long() * num_entities + ent.long()
    uniq, pair_index = torch.unique(key, return_inverse=True)
    return uniq // num_entities, uniq % num_entities, pair_index


def graph_pairs(rel: Tensor, ent: Tensor,
                num_entities: int) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The distinct (relation, entity) pairs of a whole graph's CSR
    entries, numbered once so that a batch can deduplicate its edges by a
    bounded pair id (:func:`pyg_fewshot._index.unique_ids`) instead of
    sorting 64-bit keys every step.

    Pair ids follow the order of :func:`unique_pairs` (by relation, then
    entity), so deduplicating a subset of the entries through them gives
    exactly :func:`unique_pairs`' result on that subset.

    Returns:
        :obj:`(pair_rel, pair_ent, entry_pair)`: the relation and entity of
        each of the :math:`G` pairs, shape :obj:`[G]`, and the pair id of
        each entry, shape :obj:`[E]`; int32 where the values fit (half the
        memory of a Wiki-One-size graph's tables).
    """
    pair_rel, pair_ent, entry_pair = unique_pairs(rel, ent, num_entities)
    small = 2**31 - 1
    if pair_rel.numel() < small:
        entry_pair = entry_pair.int()
    if num_entities < small and (pair_rel.numel() == 0
                                 or int(pair_rel.max()) < small):
        pair_rel, pair_ent = pair_rel.int(), pair_ent.int()
    return pair_rel, pair_ent, entry_pair


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


# Weighted segment sums ------------------------------------------------------
def _transpose(ptr: Tensor, col: Tensor, batch: Tensor, weight: Tensor,
               num_cols: int) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The edge list sorted by column instead of by segment:
    ``(tptr, t_batch, t_weight)``."""
    # int32 keys halve the radix sort's memory traffic (the column ids are
    # row indices of x, far below 2^31).
    key = col.int() if num_cols < 2**31 else col
    perm = torch.argsort(key, stable=True)
    counts = torch.bincount(col, minlength=num_cols)
    tptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return tptr, batch.index_select(0, perm), weight.index_select(0, perm)


class _SegmentWeightedSum(torch.autograd.Function):
    r"""``out[b] = sum_{e in segment b} weight[e] * x[col[e]]`` for edges
    sorted by segment (CSR pointer ``ptr``).

    Forward and backward are each one :func:`torch.nn.functional.embedding_bag`
    with per-sample weights (bags = segments forward, bags = columns of the
    transposed pattern backward), and the weights' gradient
    ``<grad_out[b], x[col[e]]>`` is embedding_bag's own per-sample-weight
    backward kernel. No ``[E, d]`` message tensor is ever allocated, and
    unlike :func:`torch.sparse.mm` on CPU there is no zero-filled and
    copied output buffer: the backward is 4-5x faster than the sparse CSR
    product pair it replaces.
    """
    @staticmethod
    def forward(weight: Tensor, x: Tensor, ptr: Tensor, col: Tensor,
                batch: Tensor) -> Tensor:
        return F.embedding_bag(col, x, ptr[:-1], mode='sum',
                               per_sample_weights=weight)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight, x, ptr, col, batch = inputs
        ctx.save_for_backward(weight, x, ptr, col, batch)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        weight, x, ptr, col, batch = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_weight = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_weight = _per_sample_weight_grad(grad_out, x, col, ptr,
                                                  batch)
        if ctx.needs_input_grad[1]:
            tptr, t_batch, t_weight = _transpose(ptr, col, batch, weight,
                                                 x.size(0))
            grad_x = F.embedding_bag(t_batch, grad_out, tptr[:-1],
                                     mode='sum', per_sample_weights=t_weight)
        return grad_weight, grad_x, None, None, None


def _per_sample_weight_grad(grad_out: Tensor, x: Tensor, col: Tensor,
                            ptr: Tensor, batch: Tensor) -> Tensor:
    r"""``<grad_out[batch[e]], x[col[e]]>`` for every edge ``e``."""
    op = getattr(torch.ops.aten, '_embedding_bag_per_sample_weights_backward',
                 None)
    if op is not None:
        # Signature (grad, weight, indices, offsets, offset2bag, mode='sum'
        # (0), padding_idx): the kernel behind embedding_bag's autograd.
        return op(grad_out, x, col, ptr[:-1], batch, 0, -1)
    return (grad_out.index_select(0, batch) *
            x.index_select(0, col)).sum(dim=-1)


def csr_weighted_sum(weight: Tensor, x: Tensor, col: Optional[Tensor],
                     batch: Tensor,
                     ptr: Optional[Tensor] = None,
                     num_segments: Optional[int] = None) -> Tensor:
    r"""Weighted sum of gathered rows per segment,
    :math:`\mathbf{o}_b = \sum_{e : \mathrm{batch}_e = b} w_e \,
    \mathbf{x}_{\mathrm{col}_e}`.

    With :obj:`ptr` (the segments are contiguous: :obj:`batch` is sorted and
    :obj:`ptr` is its CSR pointer, as from
    :func:`torch_geometric.index.index2ptr`), this is one
    :func:`torch.nn.functional.embedding_bag` with per-sample weights (bags
    = segments), and its backward is a second one over the transposed
    pattern plus embedding_bag's per-sample-weight kernel for the weights.
    No ``[E, d]`` message tensor is ever allocated, which makes it several
    times faster than gather, multiply and scatter on CPU, where those are
    bound by memory traffic. Otherwise (no :obj:`ptr`, inside
    :func:`torch.compile`) it is exactly that gather, multiply and scatter.

    Args:
        weight (torch.Tensor): Edge weights :math:`w_e`, shape :obj:`[E]`.
        x (torch.Tensor): Rows to gather, shape :obj:`[P, d]`.
        col (torch.Tensor, optional): Row of :obj:`x` for each edge, shape
            :obj:`[E]`; :obj:`None` means row :obj:`e` for edge :obj:`e`
            (then :obj:`P = E`).
        batch (torch.Tensor): Segment of each edge, shape :obj:`[E]`.
        ptr (torch.Tensor, optional): CSR pointer of :obj:`batch` (which
            must then be sorted), shape :obj:`[B + 1]`. (default:
            :obj:`None`)
        num_segments (int, optional): :math:`B`; defaults to
            :obj:`ptr.numel() - 1` or :obj:`batch.max() + 1`.
            (default: :obj:`None`)

    Returns:
        The segment sums, shape :obj:`[B, d]`.
    """
    if (ptr is not None and x.dim() == 2 and weight.dtype == x.dtype
            and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling()):
        if col is None:
            col = torch.arange(batch.numel(), device=batch.device)
        ptr, col, batch = ptr.long(), col.long(), batch.long()
        return _SegmentWeightedSum.apply(weight, x, ptr, col, batch)
    if num_segments is None:
        num_segments = (ptr.numel() - 1 if ptr is not None else
                        int(batch.max()) + 1 if batch.numel() > 0 else 0)
    rows = x if col is None else x.index_select(0, col)
    msg = rows * weight.unsqueeze(-1)
    out = msg.new_zeros((num_segments, *x.shape[1:]))
    return out.index_add_(0, batch, msg)


# Two views of one table ---------------------------------------------------
class _HeadAndRows(torch.autograd.Function):
    r"""``(table[:num_head], table[index])`` with one gradient buffer.

    Autograd would give each view its own zero-filled ``[R, d]`` gradient
    (``narrow``'s and ``index_select``'s backward) and then add the two;
    here the head's gradient is copied into a single buffer and the rows'
    are added into it: the same sums, a third of the memory traffic.
    """
    @staticmethod
    def forward(table: Tensor, num_head: int,
                index: Tensor) -> Tuple[Tensor, Tensor]:
        return table[:num_head], table.index_select(0, index)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        table, num_head, index = inputs
        ctx.save_for_backward(index)
        ctx.num_head, ctx.shape = num_head, table.shape

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_head: Optional[Tensor],
                 grad_rows: Optional[Tensor]):
        index, = ctx.saved_tensors
        ref = grad_head if grad_head is not None else grad_rows
        assert ref is not None
        grad = ref.new_empty(ctx.shape)
        h = ctx.num_head
        if grad_head is not None:
            grad[:h].copy_(grad_head)
        else:
            grad[:h].zero_()
        grad[h:].zero_()
        if grad_rows is not None:
            grad.index_add_(0, index, grad_rows)
        return grad, None, None


def head_and_rows(table: Tensor, num_head: int,
                  index: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The first :obj:`num_head` rows of :obj:`table` (a view) and the rows
    :obj:`index` (a gather), whose backward writes one gradient buffer
    instead of two that are then added.

    Args:
        table (torch.Tensor): Rows :obj:`[R, d]`.
        num_head (int): Length of the leading block.
        index (torch.Tensor): Rows to gather, :obj:`[n]`.

    Returns:
        :obj:`(table[:num_head], table[index])`.
    """
    if torch.compiler.is_compiling():
        return table.narrow(0, 0, num_head), table.index_select(0, index)
    return _HeadAndRows.apply(table, num_head, index)


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

    The same values as projecting and taking the norm of the difference
    (see :class:`~pyg_fewshot.nn.ProjectionAdapter`). With projection
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
        hh = h + (h * p_h.view(view)).sum(-1, keepdim=True) * p_r.view(view)
        tview = (B, 1) + (1, ) * len(mid) + (d, )
        tt = tails + (tails * p_t.view(tview)).sum(
            -1, keepdim=True) * p_r.view(tview)
        return ((hh + rel.view(view)).unsqueeze(1) - tt).norm(p=2, dim=-1)
    Q = 1
    for m in mid:
        Q *= m
    J = tails.size(1)
    dist, _, _ = _TranslationalDistance.apply(
        h.reshape(B, Q, d), tails.reshape(B, J, Q, d), rel, p_h, p_r, p_t)
    return dist.view(B, J, *mid)