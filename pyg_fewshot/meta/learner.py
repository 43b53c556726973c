r"""The bi-level (inner / outer loop) meta-learning engine."""
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._index import unique_ids
from ..data.sampler import Episode
from ..models.base import FewShotModel, Local


def margin_loss(pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    r"""Per-pair margin ranking loss :math:`\max(0, \gamma - s^+ + s^-)`."""
    return F.relu(margin - pos + neg)


class MetaLearner:
    r"""Runs the inner loop (local, per-task adaptation on the support set) and
    the outer objective (query loss) of a :class:`FewShotModel`.

    Inner loop: starting from :meth:`FewShotModel.init_local`, each step
    updates the local entries named by ``model.adapt_keys``,

    .. math::
        \eta_b \leftarrow \eta_b - \beta \nabla_{\eta_b}
        \mathcal{L}_{\mathcal{S}_b}(\eta_b),

    with the gradient taken by :func:`torch.func.grad`. Because the local
    parameters of the ``B`` tasks are separate rows of one ``[B, ...]``
    tensor and the support losses are *summed* over tasks, one gradient call
    gives every task its own gradient, exactly as :func:`torch.func.vmap`
    over tasks would, at the cost of a single batched backward pass; the step
    size therefore does not depend on ``B``. First-order by default (the
    gradient is a constant, as in MetaR); ``first_order=False`` keeps the
    graph for exact second-order meta-gradients.

    ``published_quirks=True`` reproduces the published MetaR/MoEMeta code for
    comparison: the support loss is a *mean* over the meta-batch (so each
    task's step is :math:`\beta / B` in training but :math:`\beta` at
    evaluation) and the support loss is added to the outer objective.

    Args:
        model (FewShotModel): The model.
        inner_steps (int, optional): Inner-loop steps. (default: :obj:`1`)
        inner_lr (float or Dict[str, float], optional): Inner step size
            :math:`\beta`; the model's :attr:`default_inner_lr` if
            :obj:`None` (5.0 for MetaR, 0.05 for MoEMeta). A dict gives each
            local parameter its own step (*e.g.* ``{'rel': 5.0, 'p_h':
            0.05, ...}``); its ``'*'`` entry, if any, serves the keys it
            does not name. (default: :obj:`None`)
        margin (float, optional): Margin of the ranking loss.
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
        self.margin = margin
        self.first_order = first_order
        self.published_quirks = published_quirks

    # Inner loop -------------------------------------------------------------
    def support_loss(self, local: Local, sup_h: Tensor, sup_t: Tensor,
                     sup_neg: Tensor) -> Tensor:
        r"""Support loss, summed over tasks (or averaged with
        ``published_quirks``)."""
        pos = self.model.score(sup_h, sup_t, local)
        neg = self.model.score(sup_h, sup_neg, local)
        per_task = margin_loss(pos, neg, self.margin).mean(dim=-1)
        return per_task.mean() if self.published_quirks else per_task.sum()

    def adapt(self, local: Local, sup_h: Tensor, sup_t: Tensor,
              sup_neg: Tensor, steps: Optional[int] = None) -> Local:
        r"""Runs the inner loop and returns the adapted local parameters."""
        steps = self.inner_steps if steps is None else steps
        keys = [k for k in self.model.adapt_keys if k in local]
        if steps == 0 or not keys:
            return local
        if self.first_order:
            # The inner gradient is a constant: no graph to global params.
            sup_h, sup_t, sup_neg = (sup_h.detach(), sup_t.detach(),
                                     sup_neg.detach())

        def loss_fn(adapted: Local, rest: Local) -> Tensor:
            return self.support_loss({**rest, **adapted}, sup_h, sup_t,
                                     sup_neg)

        grad_fn = torch.func.grad(loss_fn)
        for _ in range(steps):
            adapted = {k: local[k] for k in keys}
            rest = {k: v for k, v in local.items() if k not in adapted}
            if self.first_order:
                grads = grad_fn({k: v.detach()
                                 for k, v in adapted.items()},
                                {k: v.detach()
                                 for k, v in rest.items()})
            else:
                grads = grad_fn(adapted, rest)
            local = {**local, **{k: adapted[k] - self._steps[k] * grads[k]
                                 for k in keys}}
        return local

    # Outer objective --------------------------------------------------------
    def embed_episode(self, ep: Episode) -> Tuple[Tensor, ...]:
        r"""Entity representations of an episode, computed once per distinct
        entity: ``(sup_h, sup_t, sup_neg, qry_h, qry_t, qry_neg)``."""
        parts = (ep.support[..., 0], ep.support[..., 1], ep.support_neg,
                 ep.query[..., 0], ep.query[..., 1], ep.query_neg)
        flat = torch.cat([p.reshape(-1) for p in parts])
        N = self.model.num_entities
        uniq, inv = (torch.unique(flat, return_inverse=True) if N is None
                     else unique_ids(flat, N))
        # index_select and split rather than [] and slices: their backward
        # passes are an index_add and one cat, where slicing would allocate
        # a zero tensor of the whole batch for every part.
        x = self.model.embed(uniq).index_select(0, inv)
        chunks = x.split([p.numel() for p in parts])
        return tuple(c.view(*p.shape, -1) for c, p in zip(chunks, parts))

    def loss(self, ep: Episode) -> Tuple[Tensor, Dict[str, Tensor]]:
        r"""Outer loss of a meta-batch and detached parts for logging."""
        sup_h, sup_t, sup_neg, qry_h, qry_t, qry_neg = self.embed_episode(ep)
        local, aux = self.model.init_local(sup_h, sup_t)
        sup_loss = None
        if self.published_quirks:
            sup_loss = self.support_loss(local, sup_h, sup_t, sup_neg)
        local = self.adapt(local, sup_h, sup_t, sup_neg)
        pos = self.model.score(qry_h, qry_t, local)
        neg = self.model.score(qry_h, qry_neg, local)
        qry_loss = margin_loss(pos, neg, self.margin).mean()
        total = qry_loss + aux
        if sup_loss is not None:
            total = total + sup_loss
        logs = {'query_loss': qry_loss.detach(), 'aux_loss': aux.detach()}
        return total, logs

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(model={self.model.model_name}, '
                f'inner_steps={self.inner_steps}, inner_lr={self.inner_lr}, '
                f'margin={self.margin}, first_order={self.first_order}, '
                f'published_quirks={self.published_quirks})')
