r"""CSR neighbourhoods: gathering capped (and, in training, sampled) rows
of a background graph, numbering its (relation, neighbour) pairs, and
weighted sums over sorted segments
(:class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['csr_gather', 'unique_pairs', 'graph_pairs', 'csr_weighted_sum', 'head_and_rows']

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
    bounded pair id (:func:`pyg_fewshot.ops.unique_ids`) instead of
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
