r"""MoEMeta: mixture-of-experts meta learning for few-shot relational
learning."""
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.index import index2ptr
from torch_geometric.nn import MLP
from torch_geometric.utils import scatter

from ..nn import (AttentiveNeighborAggregator, ProjectionAdapter,
                  SparseMoERelationMeta)
from ..ops import positions_in, unique_ids
from ..ops import (csr_gather, graph_pairs, head_and_rows,
                            translational_distance)
from .base import FewShotModel, Local, expand_task, init_entity_embedding


def _is_sorted_unique(index: Tensor, num_unique: int) -> bool:
    # A 1-D index with as many entries as distinct values, strictly
    # increasing, equals its own sorted unique values.
    return (index.dim() == 1 and index.numel() == num_unique
            and (num_unique < 2 or bool((index[1:] > index[:-1]).all())))


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

    The paper's ablations are flags: ``aggregate=False`` (no neighbour
    aggregation), ``moe=False`` (an MLP relation meta like MetaR's) and
    ``local_adaptation=False`` (no projection vectors and no inner loop).

    Args:
        num_entities (int): Number of entities.
        num_relations (int): Number of background relations ``R`` (the
            aggregator also embeds their ``R`` inverses).
        embedding_dim (int, optional): Embedding size :math:`d`.
            (default: :obj:`100`)
        num_experts (int, optional): Experts :math:`M`. (default: :obj:`32`)
        top_k (int, optional): Experts per pair :math:`N`.
            (default: :obj:`5`)
        expert_hidden (int, optional): Hidden size of experts and gate.
            (default: :obj:`64`)
        renormalize (bool, optional): Renormalise the top-:math:`N` gate
            weights. (default: :obj:`False`, as the published code)
        scale_by_k (bool, optional): The paper's :math:`1/N` factor.
            (default: :obj:`False`, as the published code)
        load_balance (float, optional): Weight of the load-balancing loss.
            (default: :obj:`0.0`)
        noisy_gating (bool, optional): Noisy top-k gating in training.
            (default: :obj:`False`)
        aggregate (bool, optional): Use neighbour aggregation.
            (default: :obj:`True`)
        max_neighbors (int, optional): Neighbour cap (sampled in training,
            the first ones at evaluation). (default: :obj:`50`)
        aggregator_scale (float, optional): Initial learnable scale of the
            aggregator's residual update (``0.0``: identity at
            initialisation); :obj:`None` fixes it to 1 as in the paper.
            (default: :obj:`None`)
        aggregator_attention (str, optional): The aggregator's attention,
            ``'softmax'`` (paper), ``'mean'`` or ``'sum'``.
            (default: :obj:`'softmax'`)
        aggregator_gate (bool, optional): The aggregator's per-neighbour
            gate. (default: :obj:`True`)
        aggregator_act (str, optional): The aggregator's activation;
            :obj:`None` for linear messages. (default: :obj:`'relu'`)
        aggregator_mix (str, optional): ``'add'`` (residual, paper) or
            ``'convex'`` (:math:`(1 - \gamma)\mathbf{e} + \gamma\,
            \mathrm{agg}`). (default: :obj:`'add'`)
        aggregator_init (str, optional): ``'default'`` or ``'transe'``
            (messages start at the TransE prediction
            :math:`\mathbf{e}_i - \mathbf{r}_i` of the centre).
            (default: :obj:`'default'`)
        aggregator_update_dropout (float, optional): Stochastic depth: the
            probability of dropping an entity's whole neighbourhood update
            in training. (default: :obj:`0.0`)
        aggregator_learn_message (bool, optional): If :obj:`False`, the
            aggregator's message weights keep their initial values.
            The seven ``aggregator_*`` options above are the
            ``attention``, ``gate``, ``act``, ``mix``, ``init``,
            ``update_dropout`` and ``learn_message`` arguments of
            :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`.
            (default: :obj:`True`)
        aggregator_relations (str, optional): Initial relation vectors of
            the aggregator: ``'pretrained'`` (``pretrained_relations``, else
            Xavier) or ``'translation'``: each relation's mean translation
            :math:`\frac{1}{|\mathcal{E}_r|}\sum_{(h, r, t)}
            (\mathbf{t} - \mathbf{h})` over its background edges, computed
            from the initial entity vectors (the least-squares TransE
            relation for those vectors, on the entities' scale; inverses
            negated, a relation without edges starts at zero).
            (default: :obj:`'pretrained'`)
        sample_neighbors (bool, optional): In training, aggregate over a
            random subset of ``max_neighbors`` neighbours of a hub entity;
            :obj:`False` uses the first ``max_neighbors`` (CSR order) in
            training as in evaluation, like the published code.
            (default: :obj:`True`)
        moe (bool, optional): Mixture of experts (else an MLP).
            (default: :obj:`True`)
        mlp_hidden (Sequence[int], optional): Hidden sizes of the MLP
            relation meta when ``moe=False``. (default: :obj:`(500, 200)`)
        local_adaptation (bool, optional): Use projection vectors adapted in
            the inner loop. (default: :obj:`True`)
        projection (str, optional): ``'transd'`` or ``'paper'``, see
            :class:`~pyg_fewshot.nn.ProjectionAdapter`, or ``'none'``: no
            projection vectors, the inner loop adapts the relation meta
            alone (as MetaR does).
            (default: :obj:`'transd'`)
        projection_init (str, optional): ``'learned'`` or ``'random'``
            (published code). (default: :obj:`'learned'`)
        dropout (float, optional): Dropout in the aggregator.
            (default: :obj:`0.0`)
        pretrained (torch.Tensor, optional): ``[N, d]`` entity vectors.
        pretrained_relations (torch.Tensor, optional): ``[R, d]`` background
            relation vectors (inverses start from their negation).
        graph (tuple, optional): ``(nbr_ptr, nbr_ent, nbr_rel)`` CSR of the
            background graph with inverse edges (see
            :func:`~pyg_fewshot.data.build_fewshot_data`); required when
            ``aggregate``.
        sparse (bool, optional): Sparse gradients for the entity table.
            (default: :obj:`True`)

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

    def __init__(self, num_entities: int, num_relations: int,
                 embedding_dim: int = 100, num_experts: int = 32,
                 top_k: int = 5, expert_hidden: int = 64,
                 renormalize: bool = False, scale_by_k: bool = False,
                 load_balance: float = 0.0, noisy_gating: bool = False,
                 aggregate: bool = True, max_neighbors: Optional[int] = 50,
                 aggregator_scale: Optional[float] = None,
                 aggregator_attention: str = 'softmax',
                 aggregator_gate: bool = True,
                 aggregator_act: Optional[str] = 'relu',
                 aggregator_mix: str = 'add',
                 aggregator_init: str = 'default',
                 aggregator_update_dropout: float = 0.0,
                 aggregator_learn_message: bool = True,
                 aggregator_relations: str = 'pretrained',
                 sample_neighbors: bool = True,
                 moe: bool = True, mlp_hidden: Sequence[int] = (500, 200),
                 local_adaptation: bool = True, projection: str = 'transd',
                 projection_init: str = 'learned', dropout: float = 0.0,
                 pretrained: Optional[Tensor] = None,
                 pretrained_relations: Optional[Tensor] = None,
                 graph: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
                 sparse: bool = True) -> None:
        super().__init__()
        self.config = dict(
            num_entities=num_entities, num_relations=num_relations,
            embedding_dim=embedding_dim, num_experts=num_experts,
            top_k=top_k, expert_hidden=expert_hidden,
            renormalize=renormalize, scale_by_k=scale_by_k,
            load_balance=load_balance, noisy_gating=noisy_gating,
            aggregate=aggregate, max_neighbors=max_neighbors,
            aggregator_scale=aggregator_scale,
            aggregator_attention=aggregator_attention,
            aggregator_gate=aggregator_gate, aggregator_act=aggregator_act,
            aggregator_mix=aggregator_mix, aggregator_init=aggregator_init,
            aggregator_update_dropout=aggregator_update_dropout,
            aggregator_learn_message=aggregator_learn_message,
            aggregator_relations=aggregator_relations,
            sample_neighbors=sample_neighbors, moe=moe,
            mlp_hidden=list(mlp_hidden), local_adaptation=local_adaptation,
            projection=projection, projection_init=projection_init,
            dropout=dropout, sparse=sparse)
        if aggregator_relations not in ('pretrained', 'translation'):
            raise ValueError(f"Unknown aggregator_relations "
                             f"'{aggregator_relations}' (expected "
                             f"'pretrained' or 'translation')")
        self.aggregator_relations = aggregator_relations
        d = embedding_dim
        self.entity = torch.nn.Embedding(num_entities, d, sparse=sparse)
        self.aggregator: Optional[AttentiveNeighborAggregator] = None
        if aggregate:
            if graph is None:
                raise ValueError("MoEMeta(aggregate=True) needs 'graph', the "
                                 '(nbr_ptr, nbr_ent, nbr_rel) CSR of the '
                                 'background graph')
            self.relation = torch.nn.Embedding(2 * num_relations, d)
            self.aggregator = AttentiveNeighborAggregator(
                d, dropout=dropout, max_neighbors=max_neighbors,
                residual_scale=aggregator_scale,
                attention=aggregator_attention, gate=aggregator_gate,
                act=aggregator_act, mix=aggregator_mix, init=aggregator_init,
                update_dropout=aggregator_update_dropout,
                learn_message=aggregator_learn_message)
            ptr, ent, rel = graph
            # Not persistent: the graph comes from the data, not checkpoints.
            self.register_buffer('nbr_ptr', ptr, persistent=False)
            self.register_buffer('nbr_ent', ent, persistent=False)
            self.register_buffer('nbr_rel', rel, persistent=False)
            # (relation, neighbour) pairs numbered once, so that a batch
            # finds its distinct pairs without sorting (see embed).
            pair_rel, pair_ent, nbr_pair = graph_pairs(rel, ent,
                                                       num_entities)
            self.register_buffer('pair_rel', pair_rel, persistent=False)
            self.register_buffer('pair_ent', pair_ent, persistent=False)
            self.register_buffer('nbr_pair', nbr_pair, persistent=False)
        self.sample_neighbors = sample_neighbors
        self.moe: Optional[SparseMoERelationMeta] = None
        self.mlp: Optional[MLP] = None
        if moe:
            self.moe = SparseMoERelationMeta(
                2 * d, d, num_experts=num_experts, top_k=top_k,
                hidden_channels=expert_hidden, renormalize=renormalize,
                scale_by_k=scale_by_k, noisy_gating=noisy_gating,
                load_balance=load_balance,
                gate_hidden_channels=expert_hidden)
        else:
            self.mlp = MLP([2 * d, *mlp_hidden, d], act='leaky_relu',
                           dropout=0.5, norm=None)
        self.projection: Optional[ProjectionAdapter] = None
        if local_adaptation and projection != 'none':
            self.projection = ProjectionAdapter(d, mode=projection,
                                                init=projection_init)
            self.adapt_keys = ('rel', 'p_h', 'p_r', 'p_t')
        elif local_adaptation:
            self.adapt_keys = ('rel', )
        else:
            self.adapt_keys = ()
        self._pretrained = pretrained
        self._pretrained_relations = pretrained_relations
        self.last_routing = None
        self.reset_parameters()

    @classmethod
    def from_data(cls, data: HeteroData, pretrained: bool = True,
                  **kwargs: Any) -> 'MoEMeta':
        r"""Builds the model for a graph from
        :func:`~pyg_fewshot.data.build_fewshot_data` (its background CSR and,
        when ``pretrained``, its ``data['entity'].emb`` and
        ``data.relation_emb`` vectors)."""
        emb = data['entity'].get('emb') if pretrained else None
        rel_emb = data.get('relation_emb') if pretrained else None
        if emb is not None:
            kwargs.setdefault('embedding_dim', emb.size(1))
        model = cls(data['entity'].num_nodes, len(data.relation_names),
                    pretrained=emb, pretrained_relations=rel_emb,
                    graph=(data.nbr_ptr, data.nbr_ent, data.nbr_rel),
                    **kwargs)
        model.config['pretrained'] = emb is not None
        return model

    def reset_parameters(self) -> None:
        init_entity_embedding(self.entity, self._pretrained)
        if self.aggregator is not None:
            self.aggregator.reset_parameters()
            with torch.no_grad():
                rel = self._pretrained_relations
                if self.aggregator_relations == 'translation':
                    rel = self._mean_translations()
                if rel is None:
                    torch.nn.init.xavier_uniform_(self.relation.weight)
                else:
                    self.relation.weight.copy_(torch.cat([rel, -rel]))
        for module in (self.moe, self.mlp, self.projection):
            if module is not None:
                module.reset_parameters()

    def _mean_translations(self) -> Tensor:
        # CSR entry (centre c, neighbour e, relation r < R) is the forward
        # background edge (c, r, e): its translation is e - c.
        R = self.relation.num_embeddings // 2
        deg = self.nbr_ptr[1:] - self.nbr_ptr[:-1]
        center = torch.arange(deg.numel(), device=deg.device)
        center = center.repeat_interleave(deg)
        fwd = self.nbr_rel < R
        x = self.entity.weight
        diff = (x.index_select(0, self.nbr_ent[fwd]) -
                x.index_select(0, center[fwd]))
        return scatter(diff, self.nbr_rel[fwd], dim=0, dim_size=R,
                       reduce='mean')

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        return (self.entity.weight, ) if self.entity.sparse else ()

    def embed(self, index: Tensor) -> Tensor:
        if self.aggregator is None:
            return self.entity(index)
        N = self.entity.num_embeddings
        centers, inverse = unique_ids(index, N)
        pos, batch = csr_gather(self.nbr_ptr, centers,
                                self.aggregator.max_neighbors,
                                sample=self.training and self.sample_neighbors)
        # One message per distinct (relation, neighbour) pair: hubs are
        # reached from many centres of a batch (NELL-One: ~1.7 edges/pair).
        # Pairs are numbered once per graph, so finding a batch's distinct
        # pairs needs no sort.
        upair, pair_index = unique_ids(self.nbr_pair.index_select(0, pos),
                                       self.pair_rel.numel())
        pair_rel = self.pair_rel.index_select(0, upair)
        pair_ent = self.pair_ent.index_select(0, upair)
        # The aggregator's entity projection runs on the distinct neighbours
        # only; centres that are nobody's neighbour in this batch are
        # appended after them, so that one lookup through the (sparse)
        # embedding covers every row a step touches, each once.
        nbr_ids, ent_index = unique_ids(pair_ent, N)
        num_nbr = nbr_ids.numel()
        at, found = positions_in(nbr_ids, centers, N)
        extra = ~found
        center_row = torch.where(found, at,
                                 num_nbr + extra.long().cumsum(0) - 1)
        table = self.entity(torch.cat([nbr_ids, centers[extra]]))
        C = centers.numel()
        x_nbr, x_center = head_and_rows(table, num_nbr, center_row)
        out = self.aggregator.forward_edges(
            x_center, self.relation.weight, x_nbr, batch, num_nodes=C,
            rel_index=pair_rel, ent_index=ent_index, pair_index=pair_index,
            ptr=index2ptr(batch, C))
        if _is_sorted_unique(index, C):
            # The engine passes sorted distinct ids (MetaLearner.embed_*):
            # then index == centers and the gather would be a copy.
            return out
        return out.index_select(0, inverse.view(-1)).view(*index.shape, -1)

    def init_local(self, sup_h: Tensor,
                   sup_t: Tensor) -> Tuple[Local, Tensor]:
        B, K = sup_h.size(0), sup_h.size(1)
        x = torch.cat([sup_h, sup_t], dim=-1).flatten(0, 1)
        if self.moe is not None:
            # Every task has exactly K pairs, in order: the mean over them
            # is a view and a mean, not a scatter.
            r, routing = self.moe.forward_pairs(x)
            rel = r.view(B, K, -1).mean(dim=1)
            self.last_routing = routing
            aux = routing.aux_loss
        else:
            rel = self.mlp(x).view(B, K, -1).mean(dim=1)
            aux = rel.new_zeros(())
        local = {'rel': rel}
        if self.projection is not None:
            local.update(self.projection.init_local(B, device=rel.device,
                                                    dtype=rel.dtype))
        return local, aux

    def score_tails(self, h: Tensor, tails: Tensor, local: Local) -> Tensor:
        # The TransD form is one translational distance with a hand-written
        # backward; the paper's form and no projection keep the generic
        # projection.
        proj = self.projection
        if proj is not None and proj.mode == 'transd':
            return -translational_distance(h, tails, local['rel'],
                                           local['p_h'], local['p_r'],
                                           local['p_t'])
        return super().score_tails(h, tails, local)

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        rel = local['rel']
        if self.projection is not None:
            # Heads and tails may differ in their middle dims (queries vs
            # candidates); the adapter broadcasts per-task vectors to each.
            h, t, rel = self.projection(h, t, rel, local)
        return h + expand_task(rel, h), t
