r"""PyG-style layers for few-shot relational learning.

Entity side:

* :class:`EntityEncoder`: the entity table (ids → vectors; MetaR).
* :class:`NeighborEncoder`: the entity table enriched with the one-hop
  background neighbourhood by an aggregator (MoEMeta), resolved by name
  with :func:`aggregator_resolver`.
* :class:`AttentiveNeighborAggregator`: attentive one-hop neighbour
  enrichment (MoEMeta).

Task side:

* :class:`SparseMoERelationMeta`: sparse mixture-of-experts relation meta
  (MoEMeta), composed of :class:`TopKRouter`, :class:`TokenReorderer` and
  :class:`GroupedExperts`, reporting a :class:`MoERouting`.
* :class:`MLPRelationMeta`: MetaR's relation-meta MLP.
* :class:`ProjectionAdapter`: task-specific projection vectors and the
  TransD / paper scoring distance (MoEMeta).

Modalities:

* :class:`ModalityAdapter`, :class:`ModalityFusion` and
  :func:`diversity_loss`: multimodal adapters (FusionAdapter).
"""
from .attentive_neighbor_aggregator import AttentiveNeighborAggregator
from .encoder import EntityEncoder, NeighborEncoder, aggregator_resolver
from .sparse_moe_relation_meta import (GroupedExperts, MoERouting,
                                       SparseMoERelationMeta, TokenReorderer,
                                       TopKRouter)
from .relation_meta import MLPRelationMeta
from .projection_adapter import ProjectionAdapter
from .modality_adapter import ModalityAdapter, ModalityFusion, diversity_loss

__all__ = [
    'EntityEncoder',
    'NeighborEncoder',
    'aggregator_resolver',
    'AttentiveNeighborAggregator',
    'SparseMoERelationMeta',
    'TopKRouter',
    'TokenReorderer',
    'GroupedExperts',
    'MoERouting',
    'MLPRelationMeta',
    'ProjectionAdapter',
    'ModalityAdapter',
    'ModalityFusion',
    'diversity_loss',
]
