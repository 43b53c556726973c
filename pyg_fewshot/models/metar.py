r"""MetaR: meta relational learning for few-shot link prediction."""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..nn import EntityEncoder, MLPRelationMeta
from .base import FewShotModel, Local, TaskOutput, expand_task
from .config import MetaRConfig


class MetaR(FewShotModel):
    r"""MetaR from the `"Meta Relational Learning for Few-Shot Link Prediction
    in Knowledge Graphs" <https://arxiv.org/abs/1909.01515>`_ paper (EMNLP
    2019).

    A relation-meta learner maps each support pair to a relation vector and
    averages over the :math:`K` pairs,

    .. math::
        R = \frac{1}{K} \sum_{i=1}^K \mathrm{MLP}([\mathbf{h}_i ;
        \mathbf{t}_i]),

    tasks are scored with TransE, :math:`s(h, t) = -\lVert \mathbf{h} + R -
    \mathbf{t} \rVert_2`, and the inner loop takes gradient-meta steps
    :math:`R' = R - \beta \nabla_R \mathcal{L}_{\mathcal{S}}`
    (run by :class:`pyg_fewshot.meta.MetaLearner`). Unlike the published
    code, no layer depends on :math:`K` (no batch norm over the shot axis).

    Build it with :meth:`from_config` (from a :class:`MetaRConfig` and a
    graph), or compose it from its parts.

    Args:
        encoder (EntityEncoder): The entity table (ids → vectors).
        relation_meta (torch.nn.Module): The relation-meta learner, with
            ``forward_tasks(pairs [B, K, 2d]) -> (R [B, d], routing)``
            (:class:`~pyg_fewshot.nn.MLPRelationMeta` in the paper).
        config (MetaRConfig, optional): The configuration it was built from
            (kept for checkpoints). (default: :obj:`None`)

    Shapes:
        - **init_local:** ``[B, K, d]`` heads and tails →
          ``{'rel': [B, d]}``
        - **score:** ``[B, *, d]`` heads and tails → ``[B, *]``
    """
    model_name = 'metar'
    adapt_keys = ('rel', )

    def __init__(self, encoder: EntityEncoder, relation_meta: torch.nn.Module,
                 config: Optional[MetaRConfig] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.relation_meta = relation_meta
        self.config = config
        # The parts are built without their final initialisation; one reset
        # here draws every initial value in a fixed order (so a seed gives
        # the same model whichever way it was assembled).
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MetaRConfig, data: HeteroData) -> 'MetaR':
        r"""Builds the model for a graph from
        :func:`~pyg_fewshot.data.build_fewshot_data`, starting from its
        pretrained entity vectors (``data['entity'].emb``) when
        ``config.pretrained`` and present."""
        emb = data['entity'].get('emb') if config.pretrained else None
        d = config.embedding_dim
        encoder = EntityEncoder(data['entity'].num_nodes, d,
                                sparse=config.sparse, pretrained=emb)
        relation_meta = MLPRelationMeta(2 * d, d,
                                        hidden_channels=config.hidden_channels,
                                        dropout=config.dropout)
        return cls(encoder, relation_meta, config)

    @property
    def num_entities(self) -> Optional[int]:
        return self.encoder.num_entities

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.relation_meta.reset_parameters()

    def embed(self, index: Tensor) -> Tensor:
        return self.encoder(index)

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        return self.encoder.sparse_parameters()

    def init_local(self, support: Tensor, sup_h: Tensor,
                   sup_t: Tensor) -> TaskOutput:
        rel, routing = self.relation_meta.forward_tasks(
            torch.cat([sup_h, sup_t], dim=-1))
        return TaskOutput({'rel': rel}, {}, routing)

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        return h + expand_task(local['rel'], h), t
