r"""MetaR: meta relational learning for few-shot link prediction."""
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import MLP

from .base import FewShotModel, Local, expand_task, init_entity_embedding


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

    Args:
        num_entities (int): Number of entities.
        embedding_dim (int, optional): Embedding size :math:`d`.
            (default: :obj:`100`)
        hidden_channels (Sequence[int], optional): Hidden sizes of the
            relation-meta MLP. (default: :obj:`(500, 200)`)
        dropout (float, optional): Dropout of the relation-meta MLP.
            (default: :obj:`0.5`)
        pretrained (torch.Tensor, optional): ``[N, d]`` entity vectors to
            start from (fine-tuned). (default: :obj:`None`)
        sparse (bool, optional): Sparse gradients for the entity table, so a
            step only updates the rows it touches. (default: :obj:`True`)

    Shapes:
        - **init_local:** ``[B, K, d]`` heads and tails →
          ``{'rel': [B, d]}``
        - **score:** ``[B, *, d]`` heads and tails → ``[B, *]``
    """
    model_name = 'metar'
    adapt_keys = ('rel', )

    def __init__(self, num_entities: int, embedding_dim: int = 100,
                 hidden_channels: Sequence[int] = (500, 200),
                 dropout: float = 0.5, pretrained: Optional[Tensor] = None,
                 sparse: bool = True) -> None:
        super().__init__()
        self.config = dict(num_entities=num_entities,
                           embedding_dim=embedding_dim,
                           hidden_channels=list(hidden_channels),
                           dropout=dropout, sparse=sparse)
        self.entity = torch.nn.Embedding(num_entities, embedding_dim,
                                         sparse=sparse)
        self.relation_meta = MLP(
            [2 * embedding_dim, *hidden_channels, embedding_dim],
            act='leaky_relu', dropout=dropout, norm=None)
        self._pretrained = pretrained
        self.reset_parameters()

    @classmethod
    def from_data(cls, data: HeteroData, pretrained: bool = True,
                  **kwargs: Any) -> 'MetaR':
        r"""Builds the model for a graph from
        :func:`~pyg_fewshot.data.build_fewshot_data`, starting from its
        pretrained entity vectors (``data['entity'].emb``) when
        ``pretrained`` and present."""
        emb = data['entity'].get('emb') if pretrained else None
        if emb is not None:
            kwargs.setdefault('embedding_dim', emb.size(1))
        model = cls(data['entity'].num_nodes, pretrained=emb, **kwargs)
        model.config['pretrained'] = emb is not None
        return model

    def reset_parameters(self) -> None:
        init_entity_embedding(self.entity, self._pretrained)
        self.relation_meta.reset_parameters()

    def embed(self, index: Tensor) -> Tensor:
        return self.entity(index)

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        return (self.entity.weight, ) if self.entity.sparse else ()

    def init_local(self, sup_h: Tensor,
                   sup_t: Tensor) -> Tuple[Local, Tensor]:
        x = torch.cat([sup_h, sup_t], dim=-1)
        rel = self.relation_meta(x.flatten(0, 1)).view(
            x.size(0), x.size(1), -1).mean(dim=1)
        return {'rel': rel}, rel.new_zeros(())

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        return h + expand_task(local['rel'], h), t

