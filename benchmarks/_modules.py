r"""Experiment-only variants of the library's layers (not part of the
library). Importing this module makes them resolvable by name, e.g.
:obj:`NeighborEncoder(..., aggregator='fixed_message')`."""
from pyg_fewshot.nn.attentive_neighbor_aggregator import (
    AttentiveNeighborAggregator,
)


class FixedMessageAggregator(AttentiveNeighborAggregator):
    r"""An :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator` whose message
    map :math:`\mathbf{W}`, :math:`\mathbf{b}` keeps its initial value (no
    gradient).

    With :obj:`init="transe"` the messages then stay the TransE predictions
    :math:`\mathbf{e}_i - \mathbf{r}_i` of the current vectors, and only the
    attention, the gate and the scale :math:`\gamma` are learnt (the NELL-One
    aggregator screens, benchmarks/screen_aggregator_nell_one.py).

    Args:
        *args, **kwargs: Those of
            :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`.
    """
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for lin in (self.lin_rel, self.lin_ent):
            lin.requires_grad_(False)


class FirstNeighborsAggregator(AttentiveNeighborAggregator):
    r"""An :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator` that keeps the
    first :obj:`max_neighbors` neighbours of an entity (in CSR order) in
    training too, as the published MoEMeta code does, instead of a random
    subset.

    Args:
        *args, **kwargs: Those of
            :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`.
    """
    sample_neighbors = False
