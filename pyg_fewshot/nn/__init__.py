r"""PyG-style layers for few-shot relational learning.

* :class:`AttentiveNeighborAggregator`: one-hop neighbour enrichment
  (MoEMeta).
* :class:`SparseMoERelationMeta`: sparse mixture-of-experts relation meta
  (MoEMeta), with :class:`MoERouting`.
* :class:`ProjectionAdapter`: task-specific projection vectors (MoEMeta).
* :class:`ModalityAdapter`, :class:`ModalityFusion` and
  :func:`diversity_loss`: multimodal adapters (FusionAdapter).
"""
from .attentive_neighbor_aggregator import AttentiveNeighborAggregator
from .sparse_moe_relation_meta import MoERouting, SparseMoERelationMeta
from .projection_adapter import ProjectionAdapter
from .modality_adapter import ModalityAdapter, ModalityFusion, diversity_loss

__all__ = [
    'AttentiveNeighborAggregator',
    'SparseMoERelationMeta',
    'MoERouting',
    'ProjectionAdapter',
    'ModalityAdapter',
    'ModalityFusion',
    'diversity_loss',
]
