import math
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import scatter

from pyg_fewshot.ops import segment_matmul

__all__ = [
    'MoERouting',
    'TopKRouter',
    'TokenReorderer',
    'GroupedExperts',
    'SparseMoERelationMeta',
]

_DISPATCH = ('auto', 'grouped_mm', 'loop')


class MoERouting(NamedTuple):
    r"""Routing information returned by
    :class:`SparseMoERelationMeta` with :obj:`return_routing=True`: the
    chosen experts and their weights per pair (:obj:`[P, top_k]`), the full
    gate distribution (:obj:`[P, num_experts]`), the number of pairs routed
    to each expert (:obj:`[num_experts]`) and the weighted load-balancing
    loss (a scalar, zero when disabled)."""
    experts: Tensor
    weights: Tensor
    probs: Tensor
    counts: Tensor
    aux_loss: Tensor


# Field documentation (rendered by autodoc for the generated properties).
MoERouting.experts.__doc__ = (
    'Chosen experts of each pair, ``[P, top_k]`` (long), by decreasing '
    'gate value.')
MoERouting.weights.__doc__ = (
    'Weights multiplying the chosen experts\' outputs, ``[P, top_k]``, '
    'after the optional renormalisation and 1/N factor.')
MoERouting.probs.__doc__ = 'Full gate distribution, ``[P, num_experts]``.'
MoERouting.counts.__doc__ = (
    'Number of pairs routed to each expert, ``[num_experts]``.')
MoERouting.aux_loss.__doc__ = (
    'Weighted load-balancing loss (scalar; zero when ``load_balance=0``).')


class TopKRouter(torch.nn.Module):
    r"""The token-choice top-:math:`N` gate of a sparse mixture of experts:
    a gating network scores the :math:`M` experts of every input row and
    each row keeps its :math:`N` best.

    .. math::
        \mathbf{s}_i = \mathrm{softmax}\left(\mathrm{Gate}(\mathbf{x}_i)
        \right) \in \mathbb{R}^{M}, \qquad
        \mathcal{T}_i = \mathrm{top}\text{-}N(\mathbf{s}_i), \qquad
        g_{ij} = c\, s_{ij} \;\; (j \in \mathcal{T}_i)

    with :math:`g_{ij}` renormalised over :math:`\mathcal{T}_i` when
    :obj:`renormalize=True`, and :math:`c = 1/N` with
    :obj:`scale_by_k=True` (:math:`c = 1` otherwise).

    With :obj:`noisy_gating=True` the gate logits get trainable Gaussian
    noise in training mode (`Shazeer et al., 2017
    <https://arxiv.org/abs/1701.06538>`_),
    :math:`\mathrm{Gate}(\mathbf{x}) + \epsilon \cdot
    \mathrm{softplus}(\mathbf{W}_{\mathrm{noise}} \mathbf{x})`,
    :math:`\epsilon \sim \mathcal{N}(0, 1)`. :meth:`load_balancing_loss`
    is the Switch-Transformer auxiliary loss (`Fedus et al., 2021
    <https://arxiv.org/abs/2101.03961>`_)

    .. math::
        \mathcal{L}_{\mathrm{aux}} = \lambda \cdot M \sum_{j=1}^{M}
        f_j \, \bar{s}_j,

    where :math:`f_j` is the fraction of the :math:`P \cdot N` assignments
    that go to expert :math:`j` and :math:`\bar{s}_j` the mean gate
    probability of expert :math:`j`; it equals :math:`\lambda` under
    uniform routing.

    Args:
        in_channels (int): Size of each input row.
        num_experts (int): Number of experts :math:`M`.
        top_k (int): Number of experts :math:`N` kept per row.
        hidden_channels (int, optional): Hidden size of the gating MLP
            (:obj:`Linear → ReLU → Linear`, as in the published MoEMeta
            code); :obj:`None` makes the gate a single linear map.
            (default: :obj:`64`)
        renormalize (bool, optional): Renormalise the top-:math:`N` gate
            values to sum to one. (default: :obj:`False`)
        scale_by_k (bool, optional): Multiply the weights by :math:`1/N`.
            (default: :obj:`False`)
        noisy_gating (bool, optional): Add trainable noise to the gate
            logits in training mode. (default: :obj:`False`)
        load_balance (float, optional): Weight :math:`\lambda` of the
            load-balancing loss; :obj:`0` disables it.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(P, F_{in})`
        - **output:** gate distribution :math:`(P, M)`, weights
          :math:`(P, N)` and experts :math:`(P, N)` (long), by decreasing
          gate value
    """
    def __init__(
        self,
        in_channels: int,
        num_experts: int,
        top_k: int,
        hidden_channels: Optional[int] = 64,
        renormalize: bool = False,
        scale_by_k: bool = False,
        noisy_gating: bool = False,
        load_balance: float = 0.0,
    ):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"'top_k' must be in [1, num_experts] "
                             f"(got {top_k} of {num_experts})")
        self.in_channels = in_channels
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden_channels = hidden_channels
        self.renormalize = renormalize
        self.scale_by_k = scale_by_k
        self.noisy_gating = noisy_gating
        self.load_balance = float(load_balance)

        self.gate: torch.nn.Module
        if hidden_channels is None:
            self.gate = torch.nn.Linear(in_channels, num_experts)
        else:
            self.gate = torch.nn.Sequential(
                torch.nn.Linear(in_channels, hidden_channels),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden_channels, num_experts),
            )
        self.noise: Optional[torch.nn.Linear] = None
        if noisy_gating:
            self.noise = torch.nn.Linear(in_channels, num_experts)
            # The Linears initialise themselves; only the noise map needs
            # its zeros (calling reset_parameters() here would draw the
            # gate twice and shift every later random number).
            self._zero_noise()

    def _zero_noise(self) -> None:
        if self.noise is not None:
            # Zero weights start every row at the same noise level,
            # softplus(0) ~ 0.69, as in Shazeer et al. (2017).
            torch.nn.init.zeros_(self.noise.weight)
            torch.nn.init.zeros_(self.noise.bias)

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for module in self.gate.modules():
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()
        self._zero_noise()

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Runs the gating network.

        Args:
            x (torch.Tensor): Input rows :obj:`[P, in_channels]`.

        Returns:
            :obj:`(probs, weights, experts)`: the gate distribution
            :obj:`[P, M]`, the combination weights :obj:`[P, N]` and the
            chosen experts :obj:`[P, N]`.
        """
        logits = self.gate(x)
        if self.noise is not None and self.training:
            std = F.softplus(self.noise(x))
            logits = logits + torch.randn_like(logits) * std
        probs = logits.softmax(dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if self.scale_by_k:
            weights = weights / self.top_k
        return probs, weights, experts

    def load_balancing_loss(self, probs: Tensor, counts: Tensor) -> Tensor:
        r"""The weighted load-balancing loss (a scalar; zero when
        :obj:`load_balance=0`).

        Args:
            probs (torch.Tensor): Gate distribution :obj:`[P, M]`.
            counts (torch.Tensor): Assignments per expert :obj:`[M]`.
        """
        if self.load_balance <= 0.0:
            return probs.new_zeros(())
        frac = counts.to(probs.dtype) / (probs.size(0) * self.top_k)
        return self.load_balance * self.num_experts * (
            frac * probs.mean(dim=0)).sum()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'num_experts={self.num_experts}, top_k={self.top_k})')


class TokenReorderer(torch.nn.Module):
    r"""Sorts the :math:`P \cdot N` (row, expert) assignments of a
    top-:math:`N` router by expert, so that every expert finds its rows
    consecutive.

    The sort is stable: rows stay in order within each expert, so the
    result does not depend on the sort algorithm.

    Args:
        num_experts (int): Number of experts :math:`M`.
        top_k (int): Number of experts :math:`N` per row.

    Shapes:
        - **input:** weights :math:`(P, N)`, experts :math:`(P, N)`
        - **output:** weights sorted by expert :math:`(P N)`, the row of
          each sorted assignment :math:`(P N)`, the number of assignments
          of each expert :math:`(M)`
    """
    def __init__(self, num_experts: int, top_k: int):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k

    def forward(self, weights: Tensor,
                experts: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        flat_expert = experts.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        token = torch.div(order, self.top_k, rounding_mode='floor')
        # index_add gives a static [M] shape (bincount's size depends on the
        # data, which would break a torch.compile graph).
        counts = torch.zeros(self.num_experts, dtype=torch.long,
                             device=experts.device)
        counts = counts.index_add(0, flat_expert,
                                  torch.ones_like(flat_expert))
        return weights.reshape(-1).index_select(0, order), token, counts

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_experts={self.num_experts}, '
                f'top_k={self.top_k})')


class GroupedExperts(torch.nn.Module):
    r""":math:`M` two-layer expert MLPs held as stacked weights and run
    together, each on its own rows only:

    .. math::
        f_j(\mathbf{x}) = \mathbf{W}^{(2)}_j\,
        \sigma\left(\mathbf{W}^{(1)}_j \mathbf{x} + \mathbf{b}^{(1)}_j\right)
        + \mathbf{b}^{(2)}_j

    :meth:`forward` takes the assignments sorted by expert
    (:class:`TokenReorderer`) and runs each layer as one grouped matrix
    product (:func:`pyg_fewshot.ops.segment_matmul`), so cost and memory
    grow with the number of assignments, not with :math:`M`. The
    combination weight :math:`g` of each assignment multiplies its hidden
    row, and the output bias :math:`\sum_j g_{ij} \mathbf{b}^{(2)}_j` of
    each row comes from :meth:`output_bias`.

    Args:
        num_experts (int): Number of experts :math:`M`.
        in_channels (int): Size of each input row.
        hidden_channels (int): Hidden size of each expert.
        out_channels (int): Size of each output row.
        act (str or Callable, optional): Activation :math:`\sigma`.
            (default: :obj:`"relu"`)
        act_kwargs (Dict[str, Any], optional): Arguments of :obj:`act`.
            (default: :obj:`None`)

    Shapes:
        - **input:** rows :math:`(P, F_{in})`, the row of each sorted
          assignment :math:`(T)`, its weight :math:`(T)`, assignments per
          expert :math:`(M)`
        - **output:** :math:`(T, F_{out})`, the weighted expert outputs of
          the sorted assignments, without the output bias
    """
    def __init__(
        self,
        num_experts: int,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        act: Union[str, Callable, None] = 'relu',
        act_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.num_experts = num_experts
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.act = activation_resolver(act, **(act_kwargs or {}))

        # Stacked [M, in, out] layout: the (G, K, N) weight layout that
        # grouped_mm expects, so no transpose is needed per call.
        M = num_experts
        self.weight1 = Parameter(torch.empty(M, in_channels, hidden_channels))
        self.bias1 = Parameter(torch.empty(M, hidden_channels))
        self.weight2 = Parameter(
            torch.empty(M, hidden_channels, out_channels))
        self.bias2 = Parameter(torch.empty(M, out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        # Same distribution as torch.nn.Linear, expert by expert.
        for w, b in ((self.weight1, self.bias1), (self.weight2, self.bias2)):
            bound = 1.0 / math.sqrt(w.size(1))
            torch.nn.init.uniform_(w, -bound, bound)
            torch.nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor, token: Tensor, weight: Tensor,
                counts: Tensor, dispatch: str = 'auto') -> Tensor:
        r"""Runs every expert on its assignments.

        Args:
            x (torch.Tensor): Input rows :obj:`[P, in_channels]`.
            token (torch.Tensor): Row of each assignment, sorted by expert,
                :obj:`[T]`.
            weight (torch.Tensor): Combination weight of each assignment,
                :obj:`[T]`.
            counts (torch.Tensor): Number of assignments of each expert,
                :obj:`[M]`.
            dispatch (str, optional): Mode of
                :func:`~pyg_fewshot.ops.segment_matmul`. (default:
                :obj:`"auto"`)
        """
        P, M = x.size(0), self.num_experts
        # Layer 1 with its bias folded into the product as an input column
        # of ones: no per-row bias gather, and no slow scatter of T rows
        # into [M, hidden] for the bias gradient. The zero columns align the
        # rows to 16 bytes, so grouped_mm needs no padded copy of the
        # [T, in] gathered input.
        align = max(1, 16 // x.element_size())
        pad = (-(self.in_channels + 1)) % align
        x_aug = torch.cat([x, x.new_ones(P, 1), x.new_zeros(P, pad)], dim=1)
        w1_aug = torch.cat([
            self.weight1,
            self.bias1.unsqueeze(1),
            self.weight1.new_zeros(M, pad, self.hidden_channels),
        ], dim=1)
        h = segment_matmul(x_aug.index_select(0, token), w1_aug, counts,
                           dispatch)
        h = self.act(h)
        # The combination weight commutes with layer 2, (g h) W = g (h W),
        # and costs fewer multiplications on the narrower hidden rows.
        h = h * weight.unsqueeze(-1)
        return segment_matmul(h, self.weight2, counts, dispatch)

    def output_bias(self, experts: Tensor, weights: Tensor) -> Tensor:
        r"""The weighted output biases :math:`\sum_{j \in \mathcal{T}_i}
        g_{ij} \mathbf{b}^{(2)}_j` of each row, :obj:`[P, out_channels]`.

        Args:
            experts (torch.Tensor): Chosen experts :obj:`[P, N]`.
            weights (torch.Tensor): Their combination weights :obj:`[P, N]`.
        """
        # A product with the sparse [P, M] routing matrix: its gradient is
        # a matmul rather than a scatter of P * N rows into [M, out].
        route = weights.new_zeros(experts.size(0), self.num_experts)
        return route.scatter(1, experts, weights) @ self.bias2

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_experts}, '
                f'{self.in_channels}, {self.hidden_channels}, '
                f'{self.out_channels})')


class SparseMoERelationMeta(torch.nn.Module):
    r"""The sparse mixture-of-experts relation-meta learner from the
    `"MoEMeta: Mixture-of-Experts Meta Learning for Few-Shot Relational
    Learning" <https://arxiv.org/abs/2510.23013>`_ paper (NeurIPS 2025).

    Each support pair :math:`\mathbf{x}_i = [\mathbf{h}_i \,\Vert\,
    \mathbf{t}_i]` of a task is scored by a gating network, only its
    top-:math:`N` of :math:`M` experts are run, and the relation meta of the
    task is the mean over its :math:`K` support pairs:

    .. math::
        \mathbf{s}_i &= \mathrm{softmax}\left(\mathrm{Gate}(\mathbf{x}_i)
        \right) \in \mathbb{R}^{M}

        \mathcal{T}_i &= \mathrm{top}\text{-}N(\mathbf{s}_i)

        \mathbf{r}_i &= c \sum_{j \in \mathcal{T}_i} g_{ij}\,
        f_j(\mathbf{x}_i), \qquad
        f_j(\mathbf{x}) = \mathbf{W}^{(2)}_j\,
        \sigma\left(\mathbf{W}^{(1)}_j \mathbf{x} + \mathbf{b}^{(1)}_j\right)
        + \mathbf{b}^{(2)}_j

        \mathbf{R} &= \frac{1}{K} \sum_{i=1}^{K} \mathbf{r}_i

    where :math:`g_{ij} = s_{ij}` (the raw softmax values, as in the
    published code) or :math:`g_{ij} = s_{ij} / \sum_{k \in \mathcal{T}_i}
    s_{ik}` (:obj:`renormalize=True`), and :math:`c = 1/N` with
    :obj:`scale_by_k=True` (the paper's equation) or :math:`c = 1` (the
    published code).

    The layer is three parts, as in `torchtitan
    <https://github.com/pytorch/torchtitan>`_'s mixture of experts: a
    :class:`TopKRouter` (:obj:`router`: the gate, its optional noise and
    the load-balancing loss), a :class:`TokenReorderer` (:obj:`reorderer`:
    the :math:`P \cdot N` (pair, expert) assignments sorted by expert) and
    :class:`GroupedExperts` (:obj:`experts`: each expert multiplies only its
    own rows, in one grouped matrix product per layer,
    :func:`torch.nn.functional.grouped_mm` or a loop over the expert weight
    slices where grouped_mm cannot run); the outputs are combined with a
    weighted scatter-sum. Cost and memory grow with :math:`N`, not
    :math:`M`. With :obj:`noisy_gating=True` the gate logits get trainable
    noise in training mode, and with :obj:`load_balance > 0` the
    Switch-Transformer auxiliary loss is returned in the routing
    information (see :class:`TopKRouter`).

    Args:
        in_channels (int): Size of each pair feature :math:`[\mathbf{h}
            \Vert \mathbf{t}]` (twice the embedding size).
        out_channels (int): Size of the relation meta.
        num_experts (int, optional): Number of experts :math:`M`.
            (default: :obj:`32`)
        top_k (int, optional): Number of experts :math:`N` run per pair.
            (default: :obj:`5`)
        hidden_channels (int, optional): Hidden size of each expert MLP.
            (default: :obj:`64`)
        renormalize (bool, optional): Renormalise the top-:math:`N` gate
            values to sum to one. (default: :obj:`False`)
        scale_by_k (bool, optional): Multiply the combination by
            :math:`1/N`. (default: :obj:`False`)
        noisy_gating (bool, optional): Add trainable noise to the gate
            logits in training mode. (default: :obj:`False`)
        load_balance (float, optional): Weight :math:`\lambda` of the
            load-balancing loss; :obj:`0` disables it.
            (default: :obj:`0.0`)
        gate_hidden_channels (int, optional): Hidden size of the gating MLP
            (:obj:`Linear → ReLU → Linear`, as in the published code);
            :obj:`None` makes the gate a single linear map.
            (default: :obj:`64`)
        act (str or Callable, optional): Activation inside the experts.
            (default: :obj:`"relu"`)
        dispatch (str, optional): How the experts are run: :obj:`"auto"`
            (grouped_mm where its constraints hold, else the loop),
            :obj:`"grouped_mm"` or :obj:`"loop"`
            (see :func:`~pyg_fewshot.ops.segment_matmul`).
            (default: :obj:`"auto"`)
        chunk_size (int, optional): Pairs dispatched at a time; bounds the
            :math:`P \cdot N`-row working set of very large batches
            (:obj:`None`: all at once). (default: :obj:`16384`)
        act_kwargs (Dict[str, Any], optional): Arguments of :obj:`act`.
            (default: :obj:`None`)

    Shapes:
        - **input:**
          pair features :math:`(P, F_{in})`,
          task index of each pair :math:`(P)` *(optional)*;
          or, in :meth:`forward_tasks`, :math:`(B, K, F_{in})`
        - **output:** relation meta :math:`(B, F_{out})` for :math:`B`
          tasks, and with :obj:`return_routing=True` a :class:`MoERouting`
          whose :obj:`experts` and :obj:`weights` are :math:`(P, N)`
    """
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_experts: int = 32,
        top_k: int = 5,
        hidden_channels: int = 64,
        renormalize: bool = False,
        scale_by_k: bool = False,
        noisy_gating: bool = False,
        load_balance: float = 0.0,
        gate_hidden_channels: Optional[int] = 64,
        act: Union[str, Callable, None] = 'relu',
        dispatch: str = 'auto',
        chunk_size: Optional[int] = 16384,
        act_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        if dispatch not in _DISPATCH:
            raise ValueError(f"Unknown dispatch '{dispatch}' (expected one "
                             f"of {_DISPATCH})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden_channels = hidden_channels
        self.dispatch = dispatch
        self.chunk_size = chunk_size

        # Random draws in the order of the single-module layer this one
        # replaces, so that a seed gives the same initial values: the gate's
        # Linears at their construction, the experts, then the gate again.
        # The experts are registered first to keep its parameter order too
        # (gradient-norm clipping sums the norms in that order).
        router = TopKRouter(in_channels, num_experts, top_k,
                            hidden_channels=gate_hidden_channels,
                            renormalize=renormalize, scale_by_k=scale_by_k,
                            noisy_gating=noisy_gating,
                            load_balance=load_balance)
        self.experts = GroupedExperts(num_experts, in_channels,
                                      hidden_channels, out_channels, act=act,
                                      act_kwargs=act_kwargs)
        self.router = router
        self.reorderer = TokenReorderer(num_experts, top_k)
        self.router.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.experts.reset_parameters()
        self.router.reset_parameters()

    def route(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Runs the gating network (:class:`TopKRouter`).

        Returns:
            :obj:`(probs, weights, experts)`: the gate distribution
            :obj:`[P, M]`, the combination weights :obj:`[P, N]` and the
            chosen experts :obj:`[P, N]`.
        """
        return self.router(x)

    def _dispatch(self, x: Tensor, experts: Tensor,
                  weights: Tensor) -> Tuple[Tensor, Tensor]:
        # grouped_mm is not autocast-aware: under mixed precision the
        # experts run in their parameters' dtype (a no-op otherwise).
        x = x.to(self.experts.weight1.dtype)
        weights = weights.to(x.dtype)
        weight, token, counts = self.reorderer(weights, experts)
        y = self.experts(x, token, weight, counts, self.dispatch)
        # index_add_ rather than a scatter-sum: its backward is one
        # index_select, where scatter's is a gather with a broadcast index.
        out = y.new_zeros(x.size(0), y.size(-1)).index_add_(0, token, y)
        return out + self.experts.output_bias(experts, weights), counts

    def forward_pairs(self, x: Tensor) -> Tuple[Tensor, MoERouting]:
        r"""Computes the per-pair relation vectors :math:`\mathbf{r}_i`.

        Args:
            x (torch.Tensor): Pair features :obj:`[P, in_channels]`.

        Returns:
            :obj:`(r, routing)` with :obj:`r` of shape
            :obj:`[P, out_channels]`.
        """
        probs, weights, experts = self.router(x)
        cs = self.chunk_size
        if cs is None or x.size(0) <= cs:
            out, counts = self._dispatch(x, experts, weights)
        else:
            # Chunks keep the gathered [rows, in] copies cache- and
            # allocator-friendly: 1.5x faster forward at 100K pairs on CPU.
            outs = []
            counts = torch.zeros(self.num_experts, dtype=torch.long,
                                 device=x.device)
            for xs, es, ws in zip(x.split(cs), experts.split(cs),
                                  weights.split(cs)):
                o, c = self._dispatch(xs, es, ws)
                outs.append(o)
                counts = counts + c
            out = torch.cat(outs, dim=0)
        routing = MoERouting(experts, weights, probs, counts,
                             self.router.load_balancing_loss(probs, counts))
        return out, routing

    def forward_tasks(self, x: Tensor) -> Tuple[Tensor, MoERouting]:
        r"""Computes the relation meta of :obj:`B` tasks of :obj:`K`
        support pairs each.

        Args:
            x (torch.Tensor): Pair features :obj:`[B, K, in_channels]`.

        Returns:
            :obj:`(rel, routing)` with :obj:`rel` of shape
            :obj:`[B, out_channels]` and the :class:`MoERouting` of the
            :obj:`B * K` pairs (task-major).
        """
        B, K = x.size(0), x.size(1)
        r, routing = self.forward_pairs(x.flatten(0, 1))
        # Every task has exactly K pairs, in order: the mean over them is a
        # view and a mean, not a scatter.
        return r.view(B, K, -1).mean(dim=1), routing

    def forward(
        self,
        x: Tensor,
        batch: Optional[Tensor] = None,
        num_tasks: Optional[int] = None,
        return_routing: bool = False,
    ) -> Any:
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
            return_routing (bool, optional): Also return a
                :class:`MoERouting`. (default: :obj:`False`)

        Returns:
            The relation meta :obj:`[B, out_channels]`, or
            :obj:`(meta, routing)` with :obj:`return_routing=True`.
        """
        r, routing = self.forward_pairs(x)
        if batch is None:
            out = r.mean(dim=0, keepdim=True)
        else:
            if num_tasks is None:
                num_tasks = int(batch.max()) + 1 if batch.numel() > 0 else 0
            out = scatter(r, batch, dim=0, dim_size=num_tasks, reduce='mean')
        if return_routing:
            return out, routing
        return out

    def __repr__(self) -> str:
        router = self.router
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, num_experts={self.num_experts}, '
                f'top_k={self.top_k}, hidden={self.hidden_channels}, '
                f'renormalize={router.renormalize}, '
                f'scale_by_k={router.scale_by_k}, '
                f'noisy_gating={router.noisy_gating}, '
                f'load_balance={router.load_balance}, '
                f'dispatch={self.dispatch})')
