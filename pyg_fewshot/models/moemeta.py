r"""MoEMeta: mixture-of-experts meta learning for few-shot relational
learning."""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..nn import (EntityEncoder, MLPRelationMeta, NeighborEncoder,
                  ProjectionAdapter, SparseMoERelationMeta)
from .base import FewShotModel, Local, TaskOutput, expand_task
from .config import MoEMetaConfig

class MoEMeta(FewShotModel):
    r"""MoEMeta from the `"MoEMeta: Mixture-of-Experts Meta Learning for
    Few-Shot Relational Learning" <https://arxiv.org/abs/2510.23013>`_ paper
    (NeurIPS 2025).

    Entities are enriched with their one-hop background neighbourhood by an
    :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`; a
    :class:`~pyg_fewshot.nn.SparseMoERelationMeta` maps each support pair
    :math:`[\mathbf{h}_i ; \mathbf{t}_i]` to a gate-weighted sum of its top
    :math:`N` of :math:`M` experts and averages over the :math:`K` pairs into
    the relation meta :math:`R`; a
    :class:`~pyg_fewshot.nn.ProjectionAdapter` shifts heads and tails by
    task-specific projection vectors; and a triple scores
    :math:`-\lVert \mathbf{h}' + R' - \mathbf{t}' \rVert_2`.

    Global parameters (entity and relation tables, aggregator, experts, gate,
    the projection vectors' initialisation) are learned in the outer loop.
    Local parameters, the relation meta ``'rel'`` and the projection vectors
    ``'p_h'``, ``'p_r'``, ``'p_t'``, are adapted per task in the inner loop of
    :class:`~pyg_fewshot.meta.MetaLearner`.

    The model is a composition of three parts, each an :mod:`pyg_fewshot.nn`
    module; the paper's ablations swap one: an
    :class:`~pyg_fewshot.nn.EntityEncoder` instead of the
    :class:`~pyg_fewshot.nn.NeighborEncoder` (no neighbour aggregation), an
    :class:`~pyg_fewshot.nn.MLPRelationMeta` instead of the mixture of
    experts (MetaR's relation meta), no projection (with a learner of
    ``inner_steps=0``, no local adaptation). :meth:`from_config` builds it
    from a :class:`~pyg_fewshot.models.config.MoEMetaConfig`.

    Args:
        encoder (EntityEncoder): Entity ids → representations
            (:class:`~pyg_fewshot.nn.NeighborEncoder` in the paper).
        relation_meta (torch.nn.Module): Support pairs → relation meta, with
            ``forward_tasks(pairs [B, K, 2d]) -> (R [B, d], routing)``
            (:class:`~pyg_fewshot.nn.SparseMoERelationMeta` in the paper).
        projection (ProjectionAdapter, optional): Task-specific projection
            vectors; :obj:`None`: the inner loop adapts the relation meta
            alone (as MetaR does). (default: :obj:`None`)
        config (MoEMetaConfig, optional): The configuration it was built
            from (kept for checkpoints). (default: :obj:`None`)

    Shapes:
        - **embed:** ``[*]`` entity ids → ``[*, d]``
        - **init_local:** ``[B, K, d]`` heads and tails → ``{'rel': [B, d],
          'p_h': [B, d], 'p_r': [B, d], 'p_t': [B, d]}``
        - **score:** ``[B, *, d]`` heads and tails → ``[B, *]``
    """
    model_name = 'moemeta'
    # With per-task inner losses the published beta = 5 moves the relation
    # meta by up to 10 units a step (the published code's mean over the
    # meta-batch made it 5 / B in training); 0.05 was best on UMLS-One
    # (docs/results.md, inner step size).
    default_inner_lr = 0.05

    def __init__(self, encoder: EntityEncoder,
                 relation_meta: torch.nn.Module,
                 projection: Optional[ProjectionAdapter] = None,
                 config: Optional[MoEMetaConfig] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.relation_meta = relation_meta
        self.projection = projection
        self.config = config
        self.adapt_keys = (('rel', 'p_h', 'p_r', 'p_t')
                           if projection is not None else ('rel', ))
        # One reset draws every initial value in a fixed order (encoder,
        # relation meta, projection), whichever way the parts were built.
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MoEMetaConfig,
                    data: HeteroData) -> 'MoEMeta':
        r"""Builds the model for a graph from
        :func:`~pyg_fewshot.data.build_fewshot_data`: its background CSR
        and, when ``config.pretrained``, its ``data['entity'].emb`` and
        ``data.relation_emb`` vectors."""
        emb = data['entity'].get('emb') if config.pretrained else None
        rel_emb = data.get('relation_emb') if config.pretrained else None
        N, d = data['entity'].num_nodes, config.embedding_dim
        encoder: EntityEncoder
        if config.aggregator is None:
            encoder = EntityEncoder(N, d, sparse=config.sparse,
                                    pretrained=emb)
        else:
            if data.get('nbr_ptr') is None:
                raise ValueError(
                    f"MoEMeta with aggregator '{config.aggregator}' needs the "
                    'background graph (nbr_ptr, nbr_ent, nbr_rel, see '
                    'pyg_fewshot.data.build_fewshot_data); set '
                    "aggregator=None for a model without aggregation")
            encoder = NeighborEncoder(
                N, len(data.relation_names), d,
                graph=(data.nbr_ptr, data.nbr_ent, data.nbr_rel),
                aggregator=config.aggregator,
                aggregator_kwargs=config.aggregator_kwargs,
                relation_init=config.relation_init, pretrained=emb,
                pretrained_relations=rel_emb, sparse=config.sparse)
        relation_meta: torch.nn.Module
        layer = {'moe': SparseMoERelationMeta,
                 'mlp': MLPRelationMeta}.get(config.relation_meta)
        if layer is None:
            raise ValueError(f"Unknown relation_meta "
                             f"'{config.relation_meta}': expected 'moe' or "
                             f"'mlp'")
        try:
            relation_meta = layer(2 * d, d, **config.relation_meta_kwargs)
        except TypeError as e:  # e.g. a null where a number is needed
            raise ValueError(f'relation_meta_kwargs '
                             f'{config.relation_meta_kwargs}: {e}') from e
        projection = None
        if config.projection is not None:
            projection = ProjectionAdapter(d, mode=config.projection,
                                           **config.projection_kwargs)
        return cls(encoder, relation_meta, projection, config)

    @property
    def num_entities(self) -> Optional[int]:
        return self.encoder.num_entities

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.relation_meta.reset_parameters()
        if self.projection is not None:
            self.projection.reset_parameters()

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        return self.encoder.sparse_parameters()

    def embed(self, index: Tensor) -> Tensor:
        return self.encoder(index)

    def init_local(self, support: Tensor, sup_h: Tensor,
                   sup_t: Tensor) -> TaskOutput:
        rel, routing = self.relation_meta.forward_tasks(
            torch.cat([sup_h, sup_t], dim=-1))
        local = {'rel': rel}
        if self.projection is not None:
            local.update(self.projection.init_local(
                rel.size(0), device=rel.device, dtype=rel.dtype))
        aux = {} if routing is None else {'load_balance': routing.aux_loss}
        return TaskOutput(local, aux, routing)

    def score_tails(self, h: Tensor, tails: Tensor, local: Local) -> Tensor:
        if self.projection is not None:
            return -self.projection.distance(h, tails, local['rel'], local)
        return super().score_tails(h, tails, local)

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        rel = local['rel']
        if self.projection is not None:
            # Heads and tails may differ in their middle dims (queries vs
            # candidates); the adapter broadcasts per-task vectors to each.
            h, t, rel = self.projection(h, t, rel, local)
        return h + expand_task(rel, h), t
