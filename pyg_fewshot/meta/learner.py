r"""The bi-level (inner / outer loop) meta-learning engine."""
import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.sampler import Episode
from ..models.base import FewShotModel, Local
from ..ops import unique_ids
from .config import LearnerConfig


def margin_loss(pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    r"""Per-pair margin ranking loss :math:`\max(0, \gamma - s^+ + s^-)`."""
    return F.relu(margin - pos + neg)


def _first_order_grad(loss_fn, adapted: Local, rest: Local) -> Local:
    r"""``torch.func.grad(loss_fn)(adapted, rest)`` on detached copies: the
    same numbers (tested), from one plain :func:`torch.autograd.grad` call,
    which skips functorch's per-operation wrapping (about 30% of a
    first-order inner step on NELL-One). Second order keeps
    :func:`torch.func.grad`, which differentiates through the step."""
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_() for k, v in adapted.items()}
        loss = loss_fn(leaves, {k: v.detach() for k, v in rest.items()})
        grads = (torch.autograd.grad(loss, list(leaves.values()),
                                     allow_unused=True)
                 if loss.requires_grad else [None] * len(leaves))
    return {k: torch.zeros_like(v) if g is None else g
            for (k, v), g in zip(leaves.items(), grads)}


def _max_share(routing: Any) -> Tensor:
    # The busiest expert's share of this batch's assignments: 1 / M when
    # the load is even, 1 when every pair goes to the same experts.
    counts = routing.counts.float()
    return (counts.max() / counts.sum().clamp(min=1)).detach()


class MetaLearner:
    r"""Runs the inner loop (local, per-task adaptation on the support set) and
    the outer objective (query loss) of a :class:`FewShotModel`.

    Inner loop: starting from :meth:`FewShotModel.init_local`, each step
    updates the local entries named by ``model.adapt_keys``,

    .. math::
        \eta_b \leftarrow \eta_b - \beta \nabla_{\eta_b}
        \mathcal{L}_{\mathcal{S}_b}(\eta_b),

    Because the local parameters of the ``B`` tasks are separate rows of one
    ``[B, ...]`` tensor and the support losses are *summed* over tasks, one
    gradient call gives every task its own gradient, exactly as
    :func:`torch.func.vmap` over tasks would, at the cost of a single batched
    backward pass; the step size therefore does not depend on ``B``.
    First-order by default (the gradient is a constant, as in MetaR; taken
    by one :func:`torch.autograd.grad` call on detached copies, which is
    faster than :func:`torch.func.grad` and gives the same numbers);
    ``first_order=False`` differentiates through the step with
    :func:`torch.func.grad`, for exact second-order meta-gradients.

    ``published_quirks=True`` reproduces the published MetaR/MoEMeta code for
    comparison: the support loss is a *mean* over the meta-batch (so each
    task's step is :math:`\beta / B` in training but :math:`\beta` at
    evaluation) and the support loss is added to the outer objective.

    Args:
        model (FewShotModel): The model.
        inner_steps (int, optional): Inner-loop steps. (default: :obj:`1`)
        inner_lr (float or Dict[str, float], optional): Inner step size
            :math:`\beta \geq 0`; the model's :attr:`default_inner_lr` if
            :obj:`None` (5.0 for MetaR, 0.05 for MoEMeta). A dict gives each
            local parameter its own step (*e.g.* ``{'rel': 5.0, 'p_h':
            0.05, ...}``); its ``'*'`` entry, if any, serves the keys it
            does not name. (default: :obj:`None`)
        margin (float, optional): Margin of the ranking loss, at least 0.
            (default: :obj:`1.0`)
        first_order (bool, optional): Treat inner gradients as constants.
            (default: :obj:`True`)
        published_quirks (bool, optional): Reproduce the published code's
            loss scaling and gradient leak. (default: :obj:`False`)
    """
    def __init__(self, model: FewShotModel, inner_steps: int = 1,
                 inner_lr: Union[float, Mapping[str, float], None] = None,
                 margin: float = 1.0,
                 first_order: bool = True,
                 published_quirks: bool = False) -> None:
        if inner_steps < 0:
            raise ValueError(f"'inner_steps' must be >= 0 (got {inner_steps})")
        # A negative margin rewards ranking negatives above positives (NaN
        # fails the comparison too).
        if not 0 <= margin < math.inf:
            raise ValueError(f"'margin' must be a non-negative number (got "
                             f"{margin})")
        self.model = model
        self.inner_steps = inner_steps
        self.inner_lr = (model.default_inner_lr
                         if inner_lr is None else inner_lr)
        keys = list(model.adapt_keys)
        if isinstance(self.inner_lr, Mapping):
            unknown = set(self.inner_lr) - set(keys) - {'*'}
            missing = [k for k in keys
                       if k not in self.inner_lr and '*' not in self.inner_lr]
            if unknown or missing:
                raise ValueError(
                    f"inner_lr {dict(self.inner_lr)}: "
                    + (f"unknown local parameter(s) {sorted(unknown)}; "
                       if unknown else '')
                    + (f"no step for {missing}; " if missing else '')
                    + f"the model adapts {keys} (use '*' for the rest)")
            self._steps = {k: float(self.inner_lr.get(k, self.inner_lr.get(
                '*', 0.0))) for k in keys}
        else:
            self._steps = {k: float(self.inner_lr) for k in keys}
        # A negative step ascends the support loss.
        if not all(0 <= step < math.inf for step in self._steps.values()):
            raise ValueError(f"'inner_lr' must be a non-negative number or "
                             f"a dict of them (got {self.inner_lr})")
        self.margin = margin
        self.first_order = first_order
        self.published_quirks = published_quirks

    # Inner loop -------------------------------------------------------------
    def margins(self, local: Local, h: Tensor, tails: Tensor) -> Tensor:
        r"""Margin losses ``[B, *]`` of heads ``[B, *, d]`` against their
        (positive, negative) tails ``tails`` ``[B, 2, *, d]``, scored with
        :meth:`FewShotModel.score_tails` (one projection of the heads
        serves both)."""
        s = self.model.score_tails(h, tails, local)
        return margin_loss(s[:, 0], s[:, 1], self.margin)

    def _support_loss(self, local: Local, sup_h: Tensor,
                      sup_tails: Tensor) -> Tensor:
        per_task = self.margins(local, sup_h, sup_tails).mean(dim=-1)
        return per_task.mean() if self.published_quirks else per_task.sum()

    def support_loss(self, local: Local, sup_h: Tensor, sup_t: Tensor,
                     sup_neg: Tensor) -> Tensor:
        r"""Support loss, summed over tasks (or averaged with
        ``published_quirks``)."""
        return self._support_loss(local, sup_h,
                                  torch.stack([sup_t, sup_neg], dim=1))

    def adapt(self, local: Local, sup_h: Tensor, sup_t: Tensor,
              sup_neg: Tensor, steps: Optional[int] = None) -> Local:
        r"""Runs the inner loop and returns the adapted local parameters."""
        return self.adapt_stacked(local, sup_h,
                                  torch.stack([sup_t, sup_neg], dim=1), steps)

    def adapt_stacked(self, local: Local, sup_h: Tensor, sup_tails: Tensor,
                      steps: Optional[int] = None) -> Local:
        r""":meth:`adapt` with the support tails stacked as
        ``[B, 2, K, d]`` (positive, negative), as :meth:`embed_stacked`
        returns them."""
        steps = self.inner_steps if steps is None else steps
        keys = [k for k in self.model.adapt_keys if k in local]
        if steps == 0 or not keys:
            return local
        if self.first_order:
            # The inner gradient is a constant: no graph to global params.
            sup_h, sup_tails = sup_h.detach(), sup_tails.detach()

        def loss_fn(adapted: Local, rest: Local) -> Tensor:
            return self._support_loss({**rest, **adapted}, sup_h, sup_tails)

        grad_fn = torch.func.grad(loss_fn)
        for _ in range(steps):
            adapted = {k: local[k] for k in keys}
            rest = {k: v for k, v in local.items() if k not in adapted}
            if self.first_order:
                grads = _first_order_grad(loss_fn, adapted, rest)
            else:
                grads = grad_fn(adapted, rest)
            local = {**local, **{k: adapted[k] - self._steps[k] * grads[k]
                                 for k in keys}}
        return local

    # Outer objective --------------------------------------------------------
    def embed_stacked(self,
                      ep: Episode) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Entity representations of an episode as ``(sup_h,
        sup_tails, qry_h, qry_tails)``: heads ``[B, K, d]`` / ``[B, Q, d]``
        and tails ``[B, 2, K, d]`` / ``[B, 2, Q, d]`` (positive, negative),
        each distinct entity embedded once. The tails come out of one
        lookup already stacked, so the margin losses
        (:meth:`margins`) need no copy."""
        parts = (ep.support[..., 0],
                 torch.stack([ep.support[..., 1], ep.support_neg], dim=1),
                 ep.query[..., 0],
                 torch.stack([ep.query[..., 1], ep.query_neg], dim=1))
        flat = torch.cat([p.reshape(-1) for p in parts])
        N = self.model.num_entities
        uniq, inv = (torch.unique(flat, return_inverse=True) if N is None
                     else unique_ids(flat, N))
        # index_select and split rather than [] and slices: their backward
        # passes are an index_add and one cat, where slicing would allocate
        # a zero tensor of the whole batch for every part.
        x = self.model.embed(uniq).index_select(0, inv)
        chunks = x.split([p.numel() for p in parts])
        sup_h, sup_tails, qry_h, qry_tails = (
            c.view(*p.shape, -1) for c, p in zip(chunks, parts))
        return sup_h, sup_tails, qry_h, qry_tails

    def embed_episode(self, ep: Episode) -> Tuple[Tensor, ...]:
        r"""Entity representations of an episode, computed once per distinct
        entity: ``(sup_h, sup_t, sup_neg, qry_h, qry_t, qry_neg)``."""
        sup_h, sup_tails, qry_h, qry_tails = self.embed_stacked(ep)
        return (sup_h, sup_tails[:, 0], sup_tails[:, 1], qry_h,
                qry_tails[:, 0], qry_tails[:, 1])

    def loss(self, ep: Episode) -> Tuple[Tensor, Dict[str, Tensor]]:
        r"""Outer loss of a meta-batch and detached parts for logging."""
        sup_h, sup_tails, qry_h, qry_tails = self.embed_stacked(ep)
        out = self.model.init_local(ep.support, sup_h, sup_tails[:, 0])
        local, aux = out.local, out.aux_loss
        sup_loss = None
        if self.published_quirks:
            sup_loss = self._support_loss(local, sup_h, sup_tails)
        local = self.adapt_stacked(local, sup_h, sup_tails)
        qry_loss = self.margins(local, qry_h, qry_tails).mean()
        total = qry_loss + aux
        if sup_loss is not None:
            total = total + sup_loss
        logs = {'query_loss': qry_loss.detach(), 'aux_loss': aux.detach()}
        logs.update({f'aux/{k}': v.detach()
                     for k, v in out.aux_losses.items()})
        if out.routing is not None:
            logs['routing/max_share'] = _max_share(out.routing)
        return total, logs

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(model={self.model.model_name}, '
                f'inner_steps={self.inner_steps}, inner_lr={self.inner_lr}, '
                f'margin={self.margin}, first_order={self.first_order}, '
                f'published_quirks={self.published_quirks})')

    @classmethod
    def from_config(cls, model: FewShotModel,
                    config: LearnerConfig) -> 'MetaLearner':
        r"""The learner of ``model`` with the settings ``config`` (see
        :class:`~pyg_fewshot.meta.LearnerConfig`)."""
        return cls(model, inner_steps=config.inner_steps,
                   inner_lr=config.inner_lr, margin=config.margin,
                   first_order=config.first_order,
                   published_quirks=config.published_quirks)
