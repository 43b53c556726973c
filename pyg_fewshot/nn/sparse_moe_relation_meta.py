import math
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import scatter

from pyg_fewshot.ops import segment_matmul


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

    The experts are run sparsely: the :math:`P \cdot N` (pair, expert)
    assignments are sorted by expert, each expert multiplies only its own
    rows in one grouped matrix product
    (:func:`torch.nn.functional.grouped_mm`, or a loop over the expert
    weight slices where grouped_mm cannot run), and the outputs are combined
    with a weighted scatter-sum. Cost and memory grow with :math:`N`, not
    :math:`M`.

    With :obj:`noisy_gating=True` the gate logits get trainable Gaussian
    noise in training mode (`Shazeer et al., 2017
    <https://arxiv.org/abs/1701.06538>`_),
    :math:`\mathrm{Gate}(\mathbf{x}) + \epsilon \cdot
    \mathrm{softplus}(\mathbf{W}_{\mathrm{noise}} \mathbf{x})`,
    :math:`\epsilon \sim \mathcal{N}(0, 1)`. With :obj:`load_balance > 0` the
    Switch-Transformer auxiliary loss (`Fedus et al., 2021
    <https://arxiv.org/abs/2101.03961>`_) is returned in the routing
    information:

    .. math::
        \mathcal{L}_{\mathrm{aux}} = \lambda \cdot M \sum_{j=1}^{M}
        f_j \, \bar{s}_j,

    where :math:`f_j` is the fraction of the :math:`P \cdot N` assignments
    that go to expert :math:`j` and :math:`\bar{s}_j` the mean gate
    probability of expert :math:`j`; it equals :math:`\lambda` under uniform
    routing.

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
            :obj:`"grouped_mm"`, :obj:`"loop"`, or :obj:`"dense"` (all
            :math:`M` experts on every pair, then the top-:math:`N` picked;
            the published code's method, kept only as a reference for tests
            and benchmarks). (default: :obj:`"auto"`)
        chunk_size (int, optional): Pairs dispatched at a time; bounds the
            :math:`P \cdot N`-row working set of very large batches
            (:obj:`None`: all at once). (default: :obj:`16384`)
        act_kwargs (Dict[str, Any], optional): Arguments of :obj:`act`.
            (default: :obj:`None`)

    Shapes:
        - **input:**
          pair features :math:`(P, F_{in})`,
          task index of each pair :math:`(P)` *(optional)*
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
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"'top_k' must be in [1, num_experts] "
                             f"(got {top_k} of {num_experts})")
        if dispatch not in ('auto', 'grouped_mm', 'loop', 'dense'):
            raise ValueError(f"Unknown dispatch '{dispatch}'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden_channels = hidden_channels
        self.renormalize = renormalize
        self.scale_by_k = scale_by_k
        self.noisy_gating = noisy_gating
        self.load_balance = float(load_balance)
        self.gate_hidden_channels = gate_hidden_channels
        self.dispatch = dispatch
        self.chunk_size = chunk_size
        self.act = activation_resolver(act, **(act_kwargs or {}))

        # Stacked [M, in, out] layout: the (G, K, N) weight layout that
        # grouped_mm expects, so no transpose is needed per call.
        M = num_experts
        self.weight1 = Parameter(torch.empty(M, in_channels, hidden_channels))
        self.bias1 = Parameter(torch.empty(M, hidden_channels))
        self.weight2 = Parameter(
            torch.empty(M, hidden_channels, out_channels))
        self.bias2 = Parameter(torch.empty(M, out_channels))

        if gate_hidden_channels is None:
            self.gate = torch.nn.Linear(in_channels, M)
        else:
            self.gate = torch.nn.Sequential(
                torch.nn.Linear(in_channels, gate_hidden_channels),
                torch.nn.ReLU(),
                torch.nn.Linear(gate_hidden_channels, M),
            )
        self.noise: Optional[torch.nn.Linear] = None
        if noisy_gating:
            self.noise = torch.nn.Linear(in_channels, M)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        # Same distribution as torch.nn.Linear, expert by expert.
        for w, b in ((self.weight1, self.bias1), (self.weight2, self.bias2)):
            bound = 1.0 / math.sqrt(w.size(1))
            torch.nn.init.uniform_(w, -bound, bound)
            torch.nn.init.uniform_(b, -bound, bound)
        for module in self.gate.modules():
            if isinstance(module, torch.nn.Linear):
                module.reset_parameters()
        if self.noise is not None:
            # Zero weights start every pair at the same noise level,
            # softplus(0) ~ 0.69, as in Shazeer et al. (2017).
            torch.nn.init.zeros_(self.noise.weight)
            torch.nn.init.zeros_(self.noise.bias)

    def route(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Runs the gating network.

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

    def _experts_sparse(self, x: Tensor, experts: Tensor,
                        weights: Tensor) -> Tuple[Tensor, Tensor]:
        P, k, M = x.size(0), self.top_k, self.num_experts
        # grouped_mm is not autocast-aware: under mixed precision the
        # experts run in their parameters' dtype (a no-op otherwise).
        x = x.to(self.weight1.dtype)
        weights = weights.to(x.dtype)
        flat_expert = experts.reshape(-1)
        # Stable sort keeps pairs in order within each expert: the result
        # does not depend on the sort algorithm.
        order = torch.argsort(flat_expert, stable=True)
        token = torch.div(order, k, rounding_mode='floor')
        # index_add gives a static [M] shape (bincount's size depends on the
        # data, which would break a torch.compile graph).
        counts = torch.zeros(M, dtype=torch.long, device=x.device)
        counts = counts.index_add(0, flat_expert,
                                  torch.ones_like(flat_expert))

        # Layer 1 with its bias folded into the product as an input column
        # of ones: no per-row bias gather, and no slow scatter of P * N rows
        # into [M, hidden] for the bias gradient. The zero columns align the
        # rows to 16 bytes, so grouped_mm needs no padded copy of the
        # [P * N, in] gathered input.
        align = max(1, 16 // x.element_size())
        pad = (-(self.in_channels + 1)) % align
        x_aug = torch.cat([x, x.new_ones(P, 1), x.new_zeros(P, pad)], dim=1)
        w1_aug = torch.cat([
            self.weight1,
            self.bias1.unsqueeze(1),
            self.weight1.new_zeros(M, pad, self.hidden_channels),
        ], dim=1)
        mode = self.dispatch
        h = segment_matmul(x_aug.index_select(0, token), w1_aug, counts,
                           mode)
        h = self.act(h)
        # The combination weight commutes with layer 2, (g h) W = g (h W),
        # and costs fewer multiplications on the narrower hidden rows.
        h = h * weights.reshape(-1).index_select(0, order).unsqueeze(-1)
        y = segment_matmul(h, self.weight2, counts, mode)
        # index_add_ rather than a scatter-sum: its backward is one
        # index_select, where scatter's is a gather with a broadcast index.
        out = y.new_zeros(P, y.size(-1)).index_add_(0, token, y)
        # Layer-2 bias: sum_j g_ij b_j is a product with the sparse [P, M]
        # routing matrix, whose gradient is a matmul rather than a scatter.
        route = x.new_zeros(P, M).scatter(1, experts, weights)
        return out + route @ self.bias2, counts

    def _experts_dense(self, x: Tensor, experts: Tensor,
                       weights: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.act(
            torch.einsum('pi,mih->pmh', x, self.weight1) + self.bias1)
        y = torch.einsum('pmh,mho->pmo', h, self.weight2) + self.bias2
        idx = experts.unsqueeze(-1).expand(-1, -1, y.size(-1))
        out = (y.gather(1, idx) * weights.unsqueeze(-1)).sum(dim=1)
        counts = torch.zeros(self.num_experts, dtype=torch.long,
                             device=x.device)
        counts = counts.index_add(0, experts.reshape(-1),
                                  torch.ones_like(experts.reshape(-1)))
        return out, counts

    def _aux_loss(self, probs: Tensor, counts: Tensor) -> Tensor:
        if self.load_balance <= 0.0:
            return probs.new_zeros(())
        frac = counts.to(probs.dtype) / (probs.size(0) * self.top_k)
        return self.load_balance * self.num_experts * (
            frac * probs.mean(dim=0)).sum()

    def forward_pairs(self, x: Tensor) -> Tuple[Tensor, MoERouting]:
        r"""Computes the per-pair relation vectors :math:`\mathbf{r}_i`.

        Args:
            x (torch.Tensor): Pair features :obj:`[P, in_channels]`.

        Returns:
            :obj:`(r, routing)` with :obj:`r` of shape
            :obj:`[P, out_channels]`.
        """
        probs, weights, experts = self.route(x)
        cs = self.chunk_size
        if self.dispatch == 'dense':
            out, counts = self._experts_dense(x, experts, weights)
        elif cs is None or x.size(0) <= cs:
            out, counts = self._experts_sparse(x, experts, weights)
        else:
            # Chunks keep the gathered [rows, in] copies cache- and
            # allocator-friendly: 1.5x faster forward at 100K pairs on CPU.
            outs = []
            counts = torch.zeros(self.num_experts, dtype=torch.long,
                                 device=x.device)
            for xs, es, ws in zip(x.split(cs), experts.split(cs),
                                  weights.split(cs)):
                o, c = self._experts_sparse(xs, es, ws)
                outs.append(o)
                counts = counts + c
            out = torch.cat(outs, dim=0)
        routing = MoERouting(experts, weights, probs, counts,
                             self._aux_loss(probs, counts))
        return out, routing

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
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, num_experts={self.num_experts}, '
                f'top_k={self.top_k}, hidden={self.hidden_channels}, '
                f'renormalize={self.renormalize}, '
                f'scale_by_k={self.scale_by_k}, '
                f'noisy_gating={self.noisy_gating}, '
                f'load_balance={self.load_balance}, '
                f'dispatch={self.dispatch})')
