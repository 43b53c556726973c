import math
from typing import Any, Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from torch_geometric.index import index2ptr
from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import scatter, softmax

from pyg_fewshot.ops import (
    csr_gather,
    csr_weighted_sum,
    head_and_rows,
    positions_in,
    relu_pair_messages,
    unique_ids,
    unique_pairs,
)

_ATTENTIONS = ('softmax', 'mean', 'sum')
_MIXES = ('add', 'convex')
_INITS = ('default', 'transe')


def _lookup(x: Union[Tensor, Callable[[Tensor], Tensor]],
            index: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x.index_select(0, index)
    return x(index)


def _is_sorted_unique(index: Tensor, num_unique: int) -> bool:
    # A 1-D index with as many entries as distinct values, strictly
    # increasing, equals its own sorted unique values.
    return (index.dim() == 1 and index.numel() == num_unique
            and (num_unique < 2 or bool((index[1:] > index[:-1]).all())))


class AttentiveNeighborAggregator(torch.nn.Module):
    r"""The attentive neighbour aggregator from the `"MoEMeta:
    Mixture-of-Experts Meta Learning for Few-Shot Relational Learning"
    <https://arxiv.org/abs/2510.23013>`_ paper (NeurIPS 2025).

    An entity :math:`e` with one-hop background neighbours
    :math:`\{(r_i, e_i)\}_{i \in \mathcal{N}(e)}` (inverse relations
    included) is enriched as

    .. math::
        \mathbf{c}'_i &= \sigma\left(\mathbf{W}\,[\mathbf{r}_i \,\Vert\,
        \mathbf{e}_i] + \mathbf{b}\right)

        \alpha_i &= \frac{\exp(\mathbf{a}^{\top}\mathbf{c}'_i)}
        {\sum_{k \in \mathcal{N}(e)} \exp(\mathbf{a}^{\top}\mathbf{c}'_k)},
        \qquad g_i = \mathrm{sigmoid}(\boldsymbol{\beta}^{\top}
        \mathbf{c}'_i)

        \mathbf{e}' &= \mathbf{e} + \gamma \, \mathbf{W}_{\mathrm{out}}
        \sum_{i \in \mathcal{N}(e)} \alpha_i \, g_i \, \mathbf{c}'_i

    By default (:obj:`attention="softmax"`, :obj:`gate=True`) both the
    attention over the neighbour set and the per-neighbour gate of the paper
    are used. :obj:`attention="mean"` sets
    :math:`\alpha_i = 1/|\mathcal{N}(e)|`, :obj:`attention="sum"` sets
    :math:`\alpha_i = 1`, and :obj:`gate=False` sets :math:`g_i = 1`.
    :math:`\mathbf{W}_{\mathrm{out}}` is the identity when
    :obj:`hidden_dim == embedding_dim` (the default) and a bias-free linear
    map otherwise, so an entity without neighbours keeps exactly its
    own embedding, :math:`\mathbf{e}' = \mathbf{e}`. The residual scale
    :math:`\gamma` is the constant 1 (as in the paper) unless
    :obj:`residual_scale` is given: then it is a learnable scalar starting
    at that value, and :obj:`residual_scale=0.0` makes the layer the
    identity at initialisation ("ReZero", `Bachlechner et al., 2020
    <https://arxiv.org/abs/2003.04887>`_), which leaves pretrained
    embeddings untouched until training has learnt a useful update.

    Two options leave the default (the paper's layer) unchanged:
    :obj:`mix="convex"` replaces the residual by the convex combination
    :math:`\mathbf{e}' = (1 - \gamma)\,\mathbf{e} + \gamma\,
    \mathbf{W}_{\mathrm{out}} \sum_i \alpha_i g_i \mathbf{c}'_i` (with
    :obj:`residual_scale=0.0` it starts at the identity; an entity without
    neighbours still keeps its embedding), and
    :obj:`init="transe"` starts the message at the TransE prediction of the
    centre: :math:`\mathbf{W}_e = \mathbf{I}`, :math:`\mathbf{W}_r =
    -\mathbf{I}`, :math:`\mathbf{b} = \mathbf{0}` and zero attention and
    gate vectors, so that with a linear activation (:obj:`act=None`) and no
    gate each message is :math:`\mathbf{e}_i - \mathbf{r}_i`, what
    :math:`\mathbf{h} + \mathbf{r} = \mathbf{t}` predicts for the centre
    from the edge :math:`(\mathbf{e}, r_i, \mathbf{e}_i)` (inverse edges
    carry :math:`-\mathbf{r}`), and the aggregate is their mean. Together
    (:obj:`init="transe", act=None, gate=False, mix="convex"`) the layer
    moves an entity a learnable fraction :math:`\gamma` of the way towards
    the centre its neighbourhood predicts, and training can then depart from
    that.

    :obj:`update_dropout` is stochastic depth (`Huang et al., 2016
    <https://arxiv.org/abs/1603.09382>`_) on the neighbourhood update: in
    training mode the whole update :math:`\mathbf{e}' - \mathbf{e}` of each
    enriched entity is dropped with that probability (and the kept updates
    scaled by :math:`1 / (1 - p)`), so the rest of the model cannot come to
    rely on it; evaluation uses every update.

    The work is done per edge over a flat edge list, with
    :func:`torch_geometric.utils.softmax` and
    :func:`torch_geometric.utils.scatter` over the edges of each entity, so
    no entity is padded to the maximum degree. Because :math:`\mathbf{W}
    [\mathbf{r} \Vert \mathbf{e}] = \mathbf{W}_r \mathbf{r} + \mathbf{W}_e
    \mathbf{e}`, the two halves are projected once per distinct relation
    and entity and only then gathered per edge (see :meth:`forward`).

    A neighbour cap (:obj:`max_neighbors`, 50 as in the published code)
    keeps the first :obj:`max_neighbors` entries of an entity's CSR row in
    evaluation mode and a uniformly random subset of that size in training
    mode (a subclass that sets the class attribute
    :obj:`sample_neighbors = False` keeps the first entries in training
    too, as the published code does).

    Args:
        embedding_dim (int): Size :math:`d` of entity and relation
            embeddings.
        hidden_dim (int, optional): Size of :math:`\mathbf{c}'_i`;
            :obj:`None` means :obj:`embedding_dim`. (default: :obj:`None`)
        attention (str, optional): :obj:`"softmax"`, :obj:`"mean"` or
            :obj:`"sum"`. (default: :obj:`"softmax"`)
        gate (bool, optional): Use the per-neighbour gate :math:`g_i`.
            (default: :obj:`True`)
        act (str or Callable, optional): Activation :math:`\sigma` (ReLU in
            the paper); :obj:`None` for none (linear messages).
            (default: :obj:`"relu"`)
        dropout (float, optional): Dropout on :math:`\mathbf{c}'_i` in
            training mode. (default: :obj:`0.0`)
        max_neighbors (int, optional): Neighbour cap per entity in
            :meth:`forward`; :obj:`None` uses every neighbour.
            (default: :obj:`50`)
        act_kwargs (Dict[str, Any], optional): Arguments of :obj:`act`.
            (default: :obj:`None`)
        residual_scale (float, optional): Initial value of a learnable
            scale :math:`\gamma` of the update; :obj:`None` fixes
            :math:`\gamma = 1`. (default: :obj:`None`)
        mix (str, optional): :obj:`"add"` (the residual
            :math:`\mathbf{e} + \gamma \cdot`, as in the paper) or
            :obj:`"convex"` (:math:`(1 - \gamma)\,\mathbf{e} + \gamma
            \cdot`). (default: :obj:`"add"`)
        init (str, optional): :obj:`"default"` (uniform, fan-in
            :math:`2d`) or :obj:`"transe"` (messages start at
            :math:`\mathbf{e}_i - \mathbf{r}_i`; needs
            :obj:`hidden_dim == embedding_dim`). (default: :obj:`"default"`)
        update_dropout (float, optional): Probability of dropping an
            entity's whole update in training mode. (default: :obj:`0.0`)

    Shapes:
        - **input:**
          entity table :math:`(|\mathcal{V}|, d)` (or a look-up
          :math:`(n) \to (n, d)`),
          relation table :math:`(|\mathcal{R}|, d)`,
          entities to enrich :math:`(B)`,
          CSR row pointer :math:`(|\mathcal{V}| + 1)`,
          CSR neighbour entities and relations :math:`(|\mathcal{E}|)`
        - **output:** enriched entities :math:`(B, d)`
    """
    # Read by forward: whether training draws a random subset of a capped
    # neighbourhood (else its first CSR entries, as in evaluation).
    sample_neighbors: bool = True

    def __init__(
        self,
        embedding_dim: int,
        hidden_dim: Optional[int] = None,
        attention: str = 'softmax',
        gate: bool = True,
        act: Union[str, Callable, None] = 'relu',
        dropout: float = 0.0,
        max_neighbors: Optional[int] = 50,
        act_kwargs: Optional[dict] = None,
        residual_scale: Optional[float] = None,
        mix: str = 'add',
        init: str = 'default',
        update_dropout: float = 0.0,
    ):
        super().__init__()
        if attention not in _ATTENTIONS:
            raise ValueError(f"Unknown attention '{attention}' "
                             f"(expected one of {_ATTENTIONS})")
        if mix not in _MIXES:
            raise ValueError(f"Unknown mix '{mix}' (expected one of "
                             f"{_MIXES})")
        if init not in _INITS:
            raise ValueError(f"Unknown init '{init}' (expected one of "
                             f"{_INITS})")
        if init == 'transe' and hidden_dim not in (None, embedding_dim):
            raise ValueError("init='transe' needs hidden_dim == "
                             "embedding_dim")
        if not 0.0 <= update_dropout < 1.0:
            raise ValueError("'update_dropout' must be in [0, 1)")
        if max_neighbors is not None and max_neighbors < 1:
            raise ValueError("'max_neighbors' must be positive or None")
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim or embedding_dim
        self.attention = attention
        self.use_gate = gate
        self.dropout = dropout
        self.max_neighbors = max_neighbors
        self.residual_scale = residual_scale
        self.mix = mix
        self.init = init
        self.update_dropout = update_dropout
        self.act = activation_resolver(act, **(act_kwargs or {}))
        if self.act is None:
            self.act = torch.nn.Identity()

        d, hd = embedding_dim, self.hidden_dim
        # W = [W_r | W_e] split in two so that each half can be applied to a
        # table of distinct relations / entities before the per-edge gather.
        self.lin_rel = torch.nn.Linear(d, hd, bias=False)
        self.lin_ent = torch.nn.Linear(d, hd, bias=True)
        self.att: Optional[Parameter] = None
        if attention == 'softmax':
            self.att = Parameter(torch.empty(hd))
        self.beta: Optional[Parameter] = None
        if gate:
            self.beta = Parameter(torch.empty(hd))
        # No bias: an empty neighbourhood must map to an exact zero update.
        self.lin_out: Optional[torch.nn.Linear] = None
        if hd != d:
            self.lin_out = torch.nn.Linear(hd, d, bias=False)
        self.gamma: Optional[Parameter] = None
        if residual_scale is not None:
            self.gamma = Parameter(torch.empty(()))

        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        # Initialise W as one Linear(2d, hidden) would be: fan-in 2d.
        bound = 1.0 / math.sqrt(2 * self.embedding_dim)
        for lin in (self.lin_rel, self.lin_ent):
            torch.nn.init.uniform_(lin.weight, -bound, bound)
        torch.nn.init.uniform_(self.lin_ent.bias, -bound, bound)
        vec_bound = 1.0 / math.sqrt(self.hidden_dim)
        for vec in (self.att, self.beta):
            if vec is not None:
                torch.nn.init.uniform_(vec, -vec_bound, vec_bound)
        if self.lin_out is not None:
            self.lin_out.reset_parameters()
        if self.gamma is not None:
            torch.nn.init.constant_(self.gamma, self.residual_scale)
        if self.init == 'transe':
            with torch.no_grad():
                eye = torch.eye(self.embedding_dim)
                self.lin_ent.weight.copy_(eye)
                self.lin_rel.weight.copy_(-eye)
                self.lin_ent.bias.zero_()
                for vec in (self.att, self.beta):
                    if vec is not None:
                        vec.zero_()

    def forward_edges(
        self,
        x_center: Tensor,
        x_nbr_rel: Tensor,
        x_nbr_ent: Tensor,
        batch: Tensor,
        num_nodes: Optional[int] = None,
        rel_index: Optional[Tensor] = None,
        ent_index: Optional[Tensor] = None,
        return_attention: bool = False,
        pair_index: Optional[Tensor] = None,
        ptr: Optional[Tensor] = None,
    ) -> Any:
        r"""Aggregates over an explicit edge list; free of host
        synchronisation and of graph breaks under :func:`torch.compile`.

        For a PyG :obj:`edge_index` (neighbour → centre) with relation types
        :obj:`edge_type`, call
        :obj:`forward_edges(x, rel_emb, x, edge_index[1], x.size(0),
        rel_index=edge_type, ent_index=edge_index[0])`.

        :math:`\mathbf{c}'_i`, the attention logit and the gate depend only
        on the neighbour's (relation, entity) pair, not on the centre. When
        many edges of a batch share pairs (hubs reached from several
        centres), pass the :math:`P` distinct pairs as the rows described by
        :obj:`x_nbr_rel` / :obj:`rel_index` and :obj:`x_nbr_ent` /
        :obj:`ent_index`, and :obj:`pair_index` mapping each edge to its
        pair: the per-pair work is then done :math:`P` instead of :math:`E`
        times (with dropout, the mask is drawn per pair). With :obj:`ptr`
        (edges sorted by :obj:`batch`) the weighted sum over each
        neighbourhood is one sparse-dense product on CPU
        (:func:`~pyg_fewshot.ops.csr_weighted_sum`) that never
        materialises the :obj:`[E, hidden]` messages.

        Args:
            x_center (torch.Tensor): Embeddings of the entities to enrich,
                shape :obj:`[B, d]`.
            x_nbr_rel (torch.Tensor): Relation embedding of each edge (or
                pair), :obj:`[E, d]`; or a relation table if
                :obj:`rel_index` is given.
            x_nbr_ent (torch.Tensor): Neighbour-entity embedding of each
                edge (or pair), :obj:`[E, d]`; or an entity table if
                :obj:`ent_index` is given.
            batch (torch.Tensor): Which of the :obj:`B` entities each edge
                belongs to, shape :obj:`[E]` (any order unless :obj:`ptr`
                is given).
            num_nodes (int, optional): :obj:`B`; defaults to
                :obj:`x_center.size(0)`. (default: :obj:`None`)
            rel_index (torch.Tensor, optional): Row of :obj:`x_nbr_rel` for
                each edge (or pair), :obj:`[E]` (:obj:`[P]`): the table is
                projected first and the result gathered. (default:
                :obj:`None`)
            ent_index (torch.Tensor, optional): Row of :obj:`x_nbr_ent` for
                each edge (or pair). (default: :obj:`None`)
            return_attention (bool, optional): Also return the per-edge
                weights :math:`\alpha_i g_i`, shape :obj:`[E]`.
                (default: :obj:`False`)
            pair_index (torch.Tensor, optional): The (relation, neighbour)
                pair of each edge, shape :obj:`[E]`, values in
                :obj:`[0, P)`; :obj:`None` means every edge is its own pair.
                (default: :obj:`None`)
            ptr (torch.Tensor, optional): CSR pointer of :obj:`batch`,
                shape :obj:`[B + 1]`; :obj:`batch` must then be sorted.
                (default: :obj:`None`)

        Returns:
            The enriched embeddings :obj:`[B, d]`, or :obj:`(out, weight)`
            with :obj:`return_attention=True`.
        """
        B = x_center.size(0) if num_nodes is None else num_nodes
        h_rel = self.lin_rel(x_nbr_rel)
        h_ent = self.lin_ent(x_nbr_ent)
        vecs = [v for v in (self.att, self.beta) if v is not None]
        vec_mat = torch.stack(vecs, dim=1) if len(vecs) > 0 else None
        logits: Optional[Tensor] = None  # [k, P]: one row per vector
        if self._fused_messages(rel_index, ent_index):
            assert rel_index is not None and ent_index is not None
            # The messages' only consumer is csr_weighted_sum below, whose
            # backward allocates their gradient: it may be reused in place.
            c, logits = relu_pair_messages(h_rel, h_ent, rel_index,
                                           ent_index, vec_mat, own_grad=True)
        else:
            if rel_index is not None:
                h_rel = h_rel.index_select(0, rel_index)
            if ent_index is not None:
                h_ent = h_ent.index_select(0, ent_index)
            c = self.act(h_rel + h_ent)
            c = F.dropout(c, p=self.dropout, training=self.training)
            if vec_mat is not None:
                # Logits and gates per pair in one product, whose backward
                # is a product too (two matrix-vector products would each
                # build a [P, hidden] outer product).
                logits = (c @ vec_mat).t()
        # Autograd does not keep the summands: free them before the
        # per-edge attention buffers are allocated.
        del h_rel, h_ent
        num_edges = batch.numel()
        rows = [] if logits is None else list(logits.unbind(0))
        if pair_index is not None:
            # One 1-D gather per vector: its backward is a 1-D index_add.
            rows = [r.index_select(0, pair_index) for r in rows]

        weight: Optional[Tensor] = None
        if self.att is not None:
            weight = softmax(rows[0], batch, num_nodes=B)
        elif self.attention == 'mean':
            ones = c.new_ones(num_edges)
            deg = scatter(ones, batch, dim=0, dim_size=B, reduce='sum')
            weight = (1.0 / deg.clamp(min=1.0)).index_select(0, batch)
        if self.beta is not None:
            g = torch.sigmoid(rows[-1])
            weight = g if weight is None else weight * g

        if weight is None:
            weight = c.new_ones(num_edges)
        agg = csr_weighted_sum(weight, c, pair_index, batch, ptr=ptr,
                               num_segments=B)
        if self.lin_out is not None:
            agg = self.lin_out(agg)
        if self.mix == 'convex':
            # An entity without neighbours keeps its embedding here too.
            if ptr is not None:
                has_nbr = ptr[1:] > ptr[:-1]
            else:
                has_nbr = scatter(c.new_ones(num_edges), batch, dim=0,
                                  dim_size=B, reduce='sum') > 0
            agg = agg - x_center * has_nbr.unsqueeze(-1).to(agg.dtype)
        if self.gamma is not None:
            agg = self.gamma * agg
        p = self.update_dropout
        if self.training and p > 0.0:
            # Stochastic depth per enriched entity: drop its whole update.
            keep = torch.rand(agg.size(0), 1, device=agg.device) >= p
            agg = agg * keep.to(agg.dtype) / (1.0 - p)
        out = x_center + agg
        if return_attention:
            return out, weight
        return out

    def _fused_messages(self, rel_index: Optional[Tensor],
                        ent_index: Optional[Tensor]) -> bool:
        # The hand-written ReLU messages (relu_pair_messages) serve the
        # default layer in eager mode; other activations, active dropout,
        # autocast (whose dtype changes the backward cannot follow) and
        # torch.compile (which fuses the plain expression itself) take the
        # autograd path.
        device_type = self.lin_ent.weight.device.type
        return (rel_index is not None and ent_index is not None
                and isinstance(self.act, torch.nn.ReLU)
                and (self.dropout == 0.0 or not self.training)
                and not torch.is_autocast_enabled(device_type)
                and not torch.compiler.is_compiling())

    def forward(
        self,
        x_ent: Union[Tensor, Callable[[Tensor], Tensor]],
        x_rel: Tensor,
        index: Tensor,
        rowptr: Tensor,
        col_ent: Tensor,
        col_rel: Tensor,
        num_edges: Optional[int] = None,
        return_attention: bool = False,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
    ) -> Any:
        r"""Enriches the entities :obj:`index` from a CSR background graph.

        The CSR rows of the distinct entities of :obj:`index` are gathered
        as one flat edge list (:func:`~pyg_fewshot.ops.csr_gather`); the
        aggregation itself is :meth:`forward_edges`. Edges from different
        centres to the same (relation, neighbour) pair share one message,
        and the two halves of :math:`\mathbf{W}` are applied per distinct
        row rather than per edge.

        :obj:`x_ent` is either the entity table or a look-up from ids to
        rows, such as a (sparse) :class:`torch.nn.Embedding`. A look-up is
        called once, on the distinct neighbours of the batch followed by
        the centres that are nobody's neighbour, so that a sparse gradient
        touches each row a batch needs exactly once; with :obj:`pairs`
        (the numbering of :func:`~pyg_fewshot.ops.graph_pairs`, computed
        once per graph) a batch finds its distinct pairs without sorting.
        This is the path of :class:`~pyg_fewshot.nn.NeighborEncoder`.

        With a table and no :obj:`pairs`, projections are computed per
        distinct row whenever that is cheaper than per edge: the whole
        relation table when it has no more rows than the gathered edges
        (the usual case), the whole entity table likewise, and otherwise
        the distinct neighbour entities found with :func:`torch.unique`.
        Host synchronisation there: the number of gathered edges depends on
        the data and is read back once, unless :obj:`num_edges` is given
        and no neighbours are sampled (evaluation mode, or
        :obj:`max_neighbors=None`); deduplication is only done when that
        read-back happens anyway. Under :func:`torch.compile` every path
        runs per edge, without deduplication.

        Args:
            x_ent (torch.Tensor or Callable): Entity embeddings indexable by
                entity id, shape :obj:`[N, d]`, or a callable mapping ids
                :obj:`[n]` to their rows :obj:`[n, d]`.
            x_rel (torch.Tensor): Relation embeddings (inverse relations
                as their own ids), shape :obj:`[R, d]`.
            index (torch.Tensor): Entities to enrich, shape :obj:`[B]`
                (any shape when :obj:`x_ent` is a look-up or :obj:`pairs`
                is given).
            rowptr (torch.Tensor): CSR row pointer over the background
                graph, shape :obj:`[N + 1]`.
            col_ent (torch.Tensor): Neighbour entity of each CSR entry,
                shape :obj:`[E]`.
            col_rel (torch.Tensor): Relation of each CSR entry, shape
                :obj:`[E]`.
            num_edges (int, optional): Number of gathered edges after the
                cap, :math:`\sum_b \min(\deg(\mathrm{index}_b),
                \mathrm{max\_neighbors})`, if known. (default: :obj:`None`)
            return_attention (bool, optional): Also return :obj:`(weight,
                batch, edge_pos)`: per-edge weights, the position in
                :obj:`index` and the CSR position of each used edge
                (repeated entries of :obj:`index` are then enriched one by
                one). (default: :obj:`False`)
            pairs (Tuple[torch.Tensor, torch.Tensor, torch.Tensor], optional):
                :obj:`(pair_rel, pair_ent, entry_pair)` of
                :func:`~pyg_fewshot.ops.graph_pairs` for :obj:`col_rel`
                and :obj:`col_ent`. (default: :obj:`None`)

        Returns:
            The enriched embeddings :obj:`[*index.shape, d]` (or a tuple,
            see :obj:`return_attention`).
        """
        if torch.compiler.is_compiling():
            # Deduplication reads sizes back from the device: a graph break.
            return self._forward_per_edge(x_ent, x_rel, index, rowptr,
                                          col_ent, col_rel, num_edges,
                                          return_attention)
        if pairs is not None or not isinstance(x_ent, Tensor):
            return self._forward_lookup(x_ent, x_rel, index, rowptr, col_ent,
                                        col_rel, num_edges, return_attention,
                                        pairs)
        return self._forward_table(x_ent, x_rel, index, rowptr, col_ent,
                                   col_rel, num_edges, return_attention)

    def _sample(self) -> bool:
        return (self.training and self.sample_neighbors
                and self.max_neighbors is not None)

    def _forward_lookup(
        self,
        x_ent: Union[Tensor, Callable[[Tensor], Tensor]],
        x_rel: Tensor,
        index: Tensor,
        rowptr: Tensor,
        col_ent: Tensor,
        col_rel: Tensor,
        num_edges: Optional[int],
        return_attention: bool,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]],
    ) -> Any:
        N = rowptr.numel() - 1
        if return_attention:
            centers, inverse = index.reshape(-1), None
        else:
            centers, inverse = unique_ids(index, N)
        C = centers.numel()
        pos, batch = csr_gather(
            rowptr, centers, self.max_neighbors, sample=self._sample(),
            num_edges=num_edges if C == index.numel() else None)
        # One message per distinct (relation, neighbour) pair: hubs are
        # reached from many centres of a batch (NELL-One: ~1.7 edges/pair).
        if pairs is not None:
            # Pairs numbered once per graph: their distinct ids in a batch
            # need no sort.
            pair_rel, pair_ent, entry_pair = pairs
            upair, pair_index = unique_ids(entry_pair.index_select(0, pos),
                                           pair_rel.numel())
            rel_index = pair_rel.index_select(0, upair)
            ent = pair_ent.index_select(0, upair)
        else:
            rel_index, ent, pair_index = unique_pairs(
                col_rel.index_select(0, pos), col_ent.index_select(0, pos), N)
        # The entity projection runs on the distinct neighbours only; the
        # centres that are nobody's neighbour in this batch are appended
        # after them, so that one look-up (through a sparse embedding, one
        # gradient row each) covers every row the batch touches.
        nbr_ids, ent_index = unique_ids(ent, N)
        num_nbr = nbr_ids.numel()
        at, found = positions_in(nbr_ids, centers, N)
        extra = ~found
        center_row = torch.where(found, at,
                                 num_nbr + extra.long().cumsum(0) - 1)
        rows = _lookup(x_ent, torch.cat([nbr_ids, centers[extra]]))
        x_nbr, x_center = head_and_rows(rows, num_nbr, center_row)
        res = self.forward_edges(x_center, x_rel, x_nbr, batch, num_nodes=C,
                                 rel_index=rel_index, ent_index=ent_index,
                                 return_attention=return_attention,
                                 pair_index=pair_index,
                                 ptr=index2ptr(batch, C))
        if return_attention:
            out, weight = res
            return out.view(*index.shape, -1), (weight, batch, pos)
        if _is_sorted_unique(index, C):
            # Callers often pass sorted distinct ids (MetaLearner.embed_*):
            # then index equals centers and the gather would be a copy.
            return res
        assert inverse is not None
        return res.index_select(0, inverse.view(-1)).view(*index.shape, -1)

    def _forward_per_edge(
        self,
        x_ent: Union[Tensor, Callable[[Tensor], Tensor]],
        x_rel: Tensor,
        index: Tensor,
        rowptr: Tensor,
        col_ent: Tensor,
        col_rel: Tensor,
        num_edges: Optional[int],
        return_attention: bool,
    ) -> Any:
        if isinstance(x_ent, Tensor):
            return self._forward_table(x_ent, x_rel, index, rowptr, col_ent,
                                       col_rel, num_edges, return_attention)
        flat = index.reshape(-1)
        pos, batch = csr_gather(rowptr, flat, self.max_neighbors,
                                sample=self._sample(), num_edges=num_edges)
        res = self.forward_edges(x_ent(flat), x_rel,
                                 x_ent(col_ent.index_select(0, pos)), batch,
                                 num_nodes=flat.size(0),
                                 rel_index=col_rel.index_select(0, pos),
                                 return_attention=return_attention)
        if return_attention:
            out, weight = res
            return out.view(*index.shape, -1), (weight, batch, pos)
        return res.view(*index.shape, -1)

    def _forward_table(
        self,
        x_ent: Tensor,
        x_rel: Tensor,
        index: Tensor,
        rowptr: Tensor,
        col_ent: Tensor,
        col_rel: Tensor,
        num_edges: Optional[int],
        return_attention: bool,
    ) -> Any:
        sample = self._sample()
        may_sync = (num_edges is None or sample) and \
            not torch.compiler.is_compiling()

        inverse: Optional[Tensor] = None
        centers = index
        if may_sync and not return_attention and index.numel() > 1:
            centers, inverse = torch.unique(index, return_inverse=True)

        pos, batch = csr_gather(rowptr, centers, self.max_neighbors, sample,
                                num_edges=None if inverse is not None else
                                num_edges)
        nbr_ent = col_ent.index_select(0, pos)
        nbr_rel = col_rel.index_select(0, pos)
        pair_index: Optional[Tensor] = None
        if may_sync:
            # Edges from different centres to the same (relation,
            # neighbour) share their message: compute it once per pair.
            nbr_rel, nbr_ent, pair_index = unique_pairs(
                nbr_rel, nbr_ent, x_ent.size(0))
        num_rows = nbr_ent.size(0)

        # index_select rather than [] throughout: its backward is an
        # index_add, much faster on CPU than the accumulating index_put.
        if x_rel.size(0) <= num_rows:
            rel_table, rel_index = x_rel, nbr_rel
        else:
            rel_table, rel_index = x_rel.index_select(0, nbr_rel), None

        if x_ent.size(0) <= num_rows:
            ent_table, ent_index = x_ent, nbr_ent
        elif may_sync:
            uniq, ent_index = torch.unique(nbr_ent, return_inverse=True)
            ent_table = x_ent.index_select(0, uniq)
        else:
            ent_table, ent_index = x_ent.index_select(0, nbr_ent), None

        ptr: Optional[Tensor] = None
        if not torch.compiler.is_compiling():
            ptr = index2ptr(batch, centers.size(0))
        x_center = x_ent.index_select(0, centers)
        res = self.forward_edges(x_center, rel_table, ent_table, batch,
                                 num_nodes=centers.size(0),
                                 rel_index=rel_index, ent_index=ent_index,
                                 return_attention=return_attention,
                                 pair_index=pair_index, ptr=ptr)
        if return_attention:
            out, weight = res
            return out, (weight, batch, pos)
        out = res
        if inverse is not None:
            out = out.index_select(0, inverse)
        return out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embedding_dim}, '
                f'hidden_dim={self.hidden_dim}, '
                f'attention={self.attention}, gate={self.use_gate}, '
                f'dropout={self.dropout}, '
                f'max_neighbors={self.max_neighbors}, '
                f'residual_scale={self.residual_scale}{self._extra_repr()})')

    def _extra_repr(self) -> str:
        # The options added after the paper's layer, shown when not default.
        out = ''
        if self.mix != 'add':
            out += f', mix={self.mix}'
        if self.init != 'default':
            out += f', init={self.init}'
        if self.update_dropout > 0.0:
            out += f', update_dropout={self.update_dropout}'
        return out
