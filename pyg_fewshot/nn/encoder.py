from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
from torch import Tensor
from torch_geometric.resolver import resolver
from torch_geometric.utils import scatter

from pyg_fewshot.nn.attentive_neighbor_aggregator import (
    AttentiveNeighborAggregator,
)
from pyg_fewshot.ops import graph_pairs

_RELATION_INITS = ('pretrained', 'translation')


def _subclasses(cls: Type) -> List[Type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def aggregator_resolver(query: Union[str, torch.nn.Module], *args: Any,
                        **kwargs: Any) -> torch.nn.Module:
    r"""Builds a neighbour aggregator by name: :obj:`"attentive"` for
    :class:`AttentiveNeighborAggregator`, or the snake-case name of any
    (imported) subclass without its :obj:`Aggregator` suffix, e.g.
    :obj:`"fixed_message"` for a :obj:`FixedMessageAggregator`. A module is
    returned as it is."""
    classes = _subclasses(AttentiveNeighborAggregator)
    return resolver(classes, {'attentive': AttentiveNeighborAggregator},
                    query, None, 'Aggregator', *args, **kwargs)


def _untouched_rng():
    r"""Initialises the parts of a freshly built encoder without advancing
    the global random number generator.

    A model composes its parts first and then resets them all in one fixed
    order (:meth:`reset_parameters`), which must draw exactly the numbers it
    drew before the encoders existed; an encoder built on its own is still
    initialised (not left at :class:`torch.nn.Embedding`'s normal values).
    """
    return torch.random.fork_rng(devices=[])


class EntityEncoder(torch.nn.Module):
    r"""The entity table of a few-shot model: maps entity ids to their
    embeddings.

    Its initial values are the :obj:`pretrained` vectors if given (e.g.
    TransE vectors, :obj:`data['entity'].emb`), else Xavier-uniform ones.

    Args:
        num_entities (int): Number of entities :math:`N`.
        embedding_dim (int): Embedding size :math:`d`.
        pretrained (torch.Tensor, optional): Initial vectors, shape
            :obj:`[N, d]`. (default: :obj:`None`)
        sparse (bool, optional): Sparse gradients for the table (for
            :class:`~pyg_fewshot.optim.LazySparseAdam`; see
            :meth:`sparse_parameters`). (default: :obj:`True`)

    Shapes:
        - **input:** entity ids :math:`(*)`
        - **output:** embeddings :math:`(*, d)`
    """
    def __init__(self, num_entities: int, embedding_dim: int,
                 pretrained: Optional[Tensor] = None,
                 sparse: bool = True) -> None:
        super().__init__()
        self.num_entities = num_entities
        self.embedding_dim = embedding_dim
        self.entity = torch.nn.Embedding(num_entities, embedding_dim,
                                         sparse=sparse)
        # Kept out of the state dict: checkpoints carry the trained table.
        self._pretrained = pretrained
        # This class's reset only: a subclass's parts do not exist yet (it
        # initialises them itself).
        with _untouched_rng():
            EntityEncoder.reset_parameters(self)

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        with torch.no_grad():
            if self._pretrained is None:
                torch.nn.init.xavier_uniform_(self.entity.weight)
                return
            shape = tuple(self._pretrained.shape)
            if shape != tuple(self.entity.weight.shape):
                raise ValueError(
                    f'Pretrained entity vectors have shape {shape}, expected '
                    f'{tuple(self.entity.weight.shape)}')
            self.entity.weight.copy_(self._pretrained)

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        r"""The parameters with sparse gradients (the table when
        :obj:`sparse=True`), for an optimiser that updates only the rows a
        step touched."""
        return (self.entity.weight, ) if self.entity.sparse else ()

    def forward(self, index: Tensor) -> Tensor:
        return self.entity(index)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_entities}, '
                f'{self.embedding_dim}, sparse={self.entity.sparse})')


class NeighborEncoder(EntityEncoder):
    r"""An entity table whose embeddings are enriched by their one-hop
    background neighbourhood, as in the `"MoEMeta: Mixture-of-Experts Meta
    Learning for Few-Shot Relational Learning"
    <https://arxiv.org/abs/2510.23013>`_ paper.

    The entity :math:`e` is encoded as :math:`\mathbf{e}' =
    \mathrm{Agg}(\mathbf{e}, \{(\mathbf{r}_i, \mathbf{e}_i)\}_{i \in
    \mathcal{N}(e)})` by a neighbour aggregator
    (:class:`AttentiveNeighborAggregator` by default) over the background
    graph, given in CSR form with inverse edges (relation :math:`r + R`
    for the inverse of :math:`r`), as built by
    :func:`~pyg_fewshot.data.build_fewshot_data`. The graph and the
    numbering of its (relation, neighbour) pairs
    (:func:`~pyg_fewshot.ops.graph_pairs`) are buffers that are not
    saved with the model. Only the entity rows a batch needs are looked up,
    each once, so a sparse gradient touches only those rows.

    Args:
        num_entities (int): Number of entities :math:`N`.
        num_relations (int): Number of background relations :math:`R`
            (their :math:`R` inverses are embedded too).
        embedding_dim (int): Embedding size :math:`d`.
        graph (Tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
            :obj:`(nbr_ptr, nbr_ent, nbr_rel)`, the CSR row pointer
            :obj:`[N + 1]` and the neighbour entity and relation of each
            entry :obj:`[E]`.
        aggregator (str or torch.nn.Module, optional): The aggregator:
            :obj:`"attentive"`, the snake-case name of a subclass of
            :class:`AttentiveNeighborAggregator` without its
            :obj:`Aggregator` suffix, or a module with the same
            :meth:`~AttentiveNeighborAggregator.forward`.
            (default: :obj:`"attentive"`)
        aggregator_kwargs (Dict[str, Any], optional): Arguments of the
            aggregator when given by name (besides :obj:`embedding_dim`).
            (default: :obj:`None`)
        relation_init (str, optional): Initial relation vectors:
            :obj:`"pretrained"` (:obj:`pretrained_relations`, inverses
            negated, else Xavier uniform) or :obj:`"translation"` (each
            relation's mean translation :math:`\frac{1}{|\mathcal{E}_r|}
            \sum_{(h, r, t)} (\mathbf{t} - \mathbf{h})` over its background
            edges, from the initial entity vectors: the least-squares TransE
            relation for them; inverses negated, a relation without edges
            starts at zero). (default: :obj:`"pretrained"`)
        pretrained (torch.Tensor, optional): Initial entity vectors
            :obj:`[N, d]`. (default: :obj:`None`)
        pretrained_relations (torch.Tensor, optional): Initial vectors of
            the :math:`R` background relations :obj:`[R, d]`.
            (default: :obj:`None`)
        sparse (bool, optional): Sparse gradients for the entity table.
            (default: :obj:`True`)

    Shapes:
        - **input:** entity ids :math:`(*)`
        - **output:** enriched embeddings :math:`(*, d)`
    """
    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        embedding_dim: int,
        graph: Tuple[Tensor, Tensor, Tensor],
        aggregator: Union[str, torch.nn.Module] = 'attentive',
        aggregator_kwargs: Optional[Dict[str, Any]] = None,
        relation_init: str = 'pretrained',
        pretrained: Optional[Tensor] = None,
        pretrained_relations: Optional[Tensor] = None,
        sparse: bool = True,
    ) -> None:
        if relation_init not in _RELATION_INITS:
            raise ValueError(f"Unknown relation_init '{relation_init}' "
                             f"(expected one of {_RELATION_INITS})")
        super().__init__(num_entities, embedding_dim, pretrained=pretrained,
                         sparse=sparse)
        self.num_relations = num_relations
        self.relation_init = relation_init
        self.relation = torch.nn.Embedding(2 * num_relations, embedding_dim)
        self.aggregator = aggregator_resolver(
            aggregator, embedding_dim=embedding_dim,
            **(aggregator_kwargs or {}))
        ptr, ent, rel = graph
        # Not persistent: the graph comes from the data, not checkpoints.
        self.register_buffer('nbr_ptr', ptr, persistent=False)
        self.register_buffer('nbr_ent', ent, persistent=False)
        self.register_buffer('nbr_rel', rel, persistent=False)
        pair_rel, pair_ent, nbr_pair = graph_pairs(rel, ent, num_entities)
        self.register_buffer('pair_rel', pair_rel, persistent=False)
        self.register_buffer('pair_ent', pair_ent, persistent=False)
        self.register_buffer('nbr_pair', nbr_pair, persistent=False)
        self._pretrained_relations = pretrained_relations
        # The entity table is initialised and the aggregator has reset
        # itself: only the relation vectors are left.
        with _untouched_rng():
            self._reset_relations()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        super().reset_parameters()
        self.aggregator.reset_parameters()
        self._reset_relations()

    def _reset_relations(self) -> None:
        with torch.no_grad():
            rel = self._pretrained_relations
            if self.relation_init == 'translation':
                rel = self._mean_translations()
            if rel is None:
                torch.nn.init.xavier_uniform_(self.relation.weight)
            else:
                self.relation.weight.copy_(torch.cat([rel, -rel]))

    def _mean_translations(self) -> Tensor:
        # CSR entry (centre c, neighbour e, relation r < R) is the forward
        # background edge (c, r, e): its translation is e - c.
        R = self.num_relations
        deg = self.nbr_ptr[1:] - self.nbr_ptr[:-1]
        center = torch.arange(deg.numel(), device=deg.device)
        center = center.repeat_interleave(deg)
        fwd = self.nbr_rel < R
        x = self.entity.weight
        diff = (x.index_select(0, self.nbr_ent[fwd]) -
                x.index_select(0, center[fwd]))
        return scatter(diff, self.nbr_rel[fwd], dim=0, dim_size=R,
                       reduce='mean')

    def forward(self, index: Tensor) -> Tensor:
        return self.aggregator(self.entity, self.relation.weight, index,
                               self.nbr_ptr, self.nbr_ent, self.nbr_rel,
                               pairs=(self.pair_rel, self.pair_ent,
                                      self.nbr_pair))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_entities}, '
                f'{self.num_relations}, {self.embedding_dim}, '
                f'aggregator={self.aggregator}, '
                f'relation_init={self.relation_init}, '
                f'sparse={self.entity.sparse})')
