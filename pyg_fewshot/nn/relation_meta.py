from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.nn import MLP
from torch_geometric.utils import scatter

__all__ = ['MLPRelationMeta']


class MLPRelationMeta(torch.nn.Module):
    r"""The relation-meta learner from the `"Meta Relational Learning for
    Few-Shot Link Prediction in Knowledge Graphs"
    <https://arxiv.org/abs/1909.01515>`_ paper (EMNLP 2019): an MLP maps
    each support pair :math:`\mathbf{x}_i = [\mathbf{h}_i \,\Vert\,
    \mathbf{t}_i]` of a task to a relation vector, and the relation meta of
    the task is their mean over its :math:`K` support pairs:

    .. math::
        \mathbf{R} = \frac{1}{K} \sum_{i=1}^{K}
        \mathrm{MLP}(\mathbf{x}_i)

    The MLP is :class:`torch_geometric.nn.models.MLP` with leaky ReLU
    activations, dropout and no normalisation: unlike the published code,
    no layer depends on :math:`K` (no batch norm over the shot axis).
    It is the dense counterpart of
    :class:`~pyg_fewshot.nn.SparseMoERelationMeta`, with the same
    :meth:`forward_tasks` interface.

    Args:
        in_channels (int): Size of each pair feature :math:`[\mathbf{h}
            \Vert \mathbf{t}]` (twice the embedding size).
        out_channels (int): Size of the relation meta.
        hidden_channels (Sequence[int], optional): Hidden sizes of the MLP.
            (default: :obj:`(500, 200)`)
        dropout (float, optional): Dropout probability after each hidden
            layer. (default: :obj:`0.5`)

    Shapes:
        - **input:**
          pair features :math:`(P, F_{in})`,
          task index of each pair :math:`(P)` *(optional)*;
          or, in :meth:`forward_tasks`, :math:`(B, K, F_{in})`
        - **output:** relation meta :math:`(B, F_{out})`
    """
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: Sequence[int] = (500, 200),
        dropout: float = 0.5,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = tuple(hidden_channels)
        self.dropout = dropout
        # MLP initialises itself; no reset_parameters() call here, which
        # would draw the weights a second time and change what a seed gives.
        self.mlp = MLP([in_channels, *hidden_channels, out_channels],
                       act='leaky_relu', dropout=dropout, norm=None)

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.mlp.reset_parameters()

    def forward_tasks(self, x: Tensor) -> Tuple[Tensor, None]:
        r"""Computes the relation meta of :obj:`B` tasks of :obj:`K`
        support pairs each.

        Args:
            x (torch.Tensor): Pair features :obj:`[B, K, in_channels]`.

        Returns:
            :obj:`(rel, None)` with :obj:`rel` of shape
            :obj:`[B, out_channels]` (no routing information, as returned
            by :meth:`SparseMoERelationMeta.forward_tasks`).
        """
        B, K = x.size(0), x.size(1)
        # Every task has exactly K pairs, in order: the mean over them is a
        # view and a mean, not a scatter.
        return self.mlp(x.flatten(0, 1)).view(B, K, -1).mean(dim=1), None

    def forward(
        self,
        x: Tensor,
        batch: Optional[Tensor] = None,
        num_tasks: Optional[int] = None,
    ) -> Tensor:
        r"""Computes the relation meta of every task.

        Args:
            x (torch.Tensor): Support-pair features :math:`[\mathbf{h}
                \Vert \mathbf{t}]`, shape :obj:`[P, in_channels]`.
            batch (torch.Tensor, optional): Task index of each pair, shape
                :obj:`[P]`; :obj:`None` means a single task.
                (default: :obj:`None`)
            num_tasks (int, optional): Number of tasks :obj:`B`. Pass it
                with :obj:`batch`: inferring it costs a host
                synchronisation. (default: :obj:`None`)

        :rtype: :class:`torch.Tensor` of shape :obj:`[B, out_channels]`
        """
        r = self.mlp(x)
        if batch is None:
            return r.mean(dim=0, keepdim=True)
        if num_tasks is None:
            num_tasks = int(batch.max()) + 1 if batch.numel() > 0 else 0
        return scatter(r, batch, dim=0, dim_size=num_tasks, reduce='mean')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, hidden={list(self.hidden_channels)}, '
                f'dropout={self.dropout})')
