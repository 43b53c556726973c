r"""Kernels under the layers of :mod:`pyg_fewshot.nn` and the engine, in
the manner of :mod:`pyg_lib.ops`: plain functions on tensors, each with
the fast path (a hand-written backward, a grouped product, a sort-free
pass) inside it and the plain expression where that path does not apply
(:func:`torch.compile`, autocast, other activations).

Ids (:mod:`~pyg_fewshot.ops.index`):

* :func:`unique_ids` / :func:`positions_in`: :func:`torch.unique` and
  look-ups of bounded integer ids without sorting.

Expert dispatch (:mod:`~pyg_fewshot.ops.segment`):

* :func:`segment_matmul`: one matrix product per group of consecutive rows,
  through :func:`torch.nn.functional.grouped_mm` where its constraints hold
  and a loop over the weight slices otherwise
  (:class:`~pyg_fewshot.nn.SparseMoERelationMeta`).
* :func:`grouped_mm_available`: whether that grouped product applies.

Neighbourhoods (:mod:`~pyg_fewshot.ops.csr`, :mod:`~pyg_fewshot.ops.messages`):

* :func:`csr_gather`: the CSR rows of a batch of nodes as a flat edge list,
  with a per-node cap that is sampled in training and deterministic in
  evaluation.
* :func:`graph_pairs` / :func:`unique_pairs`: the distinct (relation,
  neighbour) pairs of a graph (numbered once) or of an edge list.
* :func:`relu_pair_messages`: the messages
  :math:`\mathrm{ReLU}(\mathbf{a}_{r} + \mathbf{b}_{e})` and their
  attention logits, with a backward that makes fewer passes over the
  ``[P, d]`` messages than autograd's.
* :func:`csr_weighted_sum`: a weighted sum of gathered rows per segment of
  a sorted edge list, one weighted ``embedding_bag`` each way.
* :func:`head_and_rows`: a leading block and gathered rows of one table,
  with one gradient buffer.

Scores (:mod:`~pyg_fewshot.ops.distance`):

* :func:`translational_distance`: TransE / TransD distances of heads
  against stacked tails, with a hand-written backward.
* :func:`transd_project`: the TransD projection of entities with per-task
  vectors.
"""
from .index import positions_in, unique_ids
from .segment import grouped_mm_available, segment_matmul
from .csr import (csr_gather, csr_weighted_sum, graph_pairs, head_and_rows,
                  unique_pairs)
from .messages import relu_pair_messages
from .distance import transd_project, translational_distance

__all__ = [
    'unique_ids',
    'positions_in',
    'segment_matmul',
    'grouped_mm_available',
    'csr_gather',
    'graph_pairs',
    'unique_pairs',
    'relu_pair_messages',
    'csr_weighted_sum',
    'head_and_rows',
    'transd_project',
    'translational_distance',
]
