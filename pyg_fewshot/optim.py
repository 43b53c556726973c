r"""The row-wise Adam for parameters with sparse (row) gradients, shared by
TransE pretraining (:mod:`pyg_fewshot.data.pretrain`) and meta-training
(:class:`~pyg_fewshot.meta.MetaTrainer`)."""
import math
from itertools import chain
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import Tensor

from .ops import unique_ids

#: Moment buffers start with room for this many rows.
_MIN_CAPACITY = 1024
#: Where :math:`\epsilon` enters the denominator (``eps_mode``).
EPS_MODES = ('sparse_adam', 'adam')


def _coalesced_rows(grad: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Distinct rows of a row-sparse gradient and their summed values.

    :meth:`torch.Tensor.coalesce` sorts the row ids; an embedding lookup of
    distinct ids (what the models of this library do) already has distinct
    rows, which a sort-free :func:`~pyg_fewshot.ops.unique_ids` confirms
    faster, and the values are then used as they are (the update is
    row-wise, so the order of the rows does not matter).
    """
    index, values = grad._indices()[0], grad._values()
    if grad.is_coalesced() or index.numel() <= 1:
        return index, values
    # Strictly increasing ids (a lookup of sorted distinct ids) need no
    # further check.
    if bool((index[1:] > index[:-1]).all()):
        return index, values
    uniq, inverse = unique_ids(index, grad.size(0))
    if uniq.numel() == index.numel():
        return index, values
    # The update is non-linear: duplicate rows must be summed first.
    summed = values.new_zeros((uniq.numel(), *values.shape[1:]))
    return uniq, summed.index_add_(0, inverse, values)


def _fused_rows_supported(p: Tensor, values: Tensor) -> bool:
    return (hasattr(torch, '_fused_adam_')
            and p.device.type in ('cpu', 'cuda')
            and p.dtype == values.dtype
            and p.dtype in (torch.float32, torch.float64, torch.float16,
                            torch.bfloat16))


class LazySparseAdam(torch.optim.Optimizer):
    r""":class:`torch.optim.SparseAdam` with moment state allocated only for
    the rows that have received a gradient.

    :class:`torch.optim.SparseAdam` updates only the rows present in a sparse
    gradient (*e.g.* from :class:`torch.nn.Embedding` with ``sparse=True``)
    but allocates dense first and second moments for *every* row on its first
    step: for a Wiki-One entity table (:math:`4.8\,\mathrm{M} \times 50`,
    about 1 GB) that is 2 GB of state, most of it for rows a run never
    touches. Here each parameter keeps a row :math:`\to` slot map
    (``-1``: no state yet) and moment buffers holding one slot per row seen so
    far, grown by doubling (amortised :math:`O(1)` per new row, never beyond
    the number of rows). With the gradient :math:`\mathbf{g}_i` of the
    distinct rows :math:`i` of a step (duplicate rows summed), the update is
    :class:`~torch.optim.SparseAdam`'s,

    .. math::
        \mathbf{m}_i &\leftarrow \mathbf{m}_i + (1 - \beta_1)
        (\mathbf{g}_i - \mathbf{m}_i) \\
        \mathbf{v}_i &\leftarrow \mathbf{v}_i + (1 - \beta_2)
        (\mathbf{g}_i^2 - \mathbf{v}_i) \\
        \mathbf{w}_i &\leftarrow \mathbf{w}_i - \eta
        \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
        \frac{\mathbf{m}_i}{\sqrt{\mathbf{v}_i} + \epsilon},

    where :math:`t` is the parameter's step count (the number of steps in
    which it had a gradient), and rows without a gradient are left unchanged.
    A row without state behaves as one with zero moments, which is what
    :class:`~torch.optim.SparseAdam` stores for it.

    With ``eps_mode='adam'``, :math:`\epsilon` is added after the bias
    correction, as in :class:`torch.optim.Adam`,

    .. math::
        \mathbf{w}_i \leftarrow \mathbf{w}_i - \frac{\eta}{1 - \beta_1^t}
        \frac{\mathbf{m}_i}{\sqrt{\mathbf{v}_i / (1 - \beta_2^t)}
        + \epsilon},

    a different update (while :math:`\sqrt{\mathbf{v}_i}` is of the order of
    :math:`\epsilon`). It is what TransE pretraining
    (:func:`~pyg_fewshot.data.pretrain.pretrain_transe`) was written with,
    and this mode evaluates it with that code's sequence of operations on
    every device, unfused, so that the cached vectors, and every result made
    from them, stay the same to the bit.

    Speed: on CPU and CUDA the rows of the default mode are updated by
    PyTorch's fused Adam kernel (one pass over the gathered rows instead of
    about ten), which evaluates the same formula in another order, so the
    weights agree with :class:`~torch.optim.SparseAdam` to rounding (a few
    units in the last place), not bit for bit; other devices and dtypes use
    SparseAdam's own sequence of operations. A gradient whose rows are
    already distinct, as from an embedding lookup of distinct ids, is used
    without :meth:`~torch.Tensor.coalesce`'s sort.

    The state of a parameter is ``step`` (int), ``slot`` (``[N]`` int64),
    ``rows`` (slot :math:`\to` row, int64), ``exp_avg`` and ``exp_avg_sq``
    (``[capacity, *]``) and ``num_rows`` (slots in use). :meth:`state_dict`
    stores only ``step``, ``rows``, ``exp_avg`` and ``exp_avg_sq`` trimmed to
    the rows in use (tensors and ints, so it loads with
    ``torch.load(weights_only=True)``); :meth:`load_state_dict` rebuilds the
    rest and also accepts a :class:`~torch.optim.SparseAdam` state dict.

    Args:
        params (iterable): Parameters (or parameter groups) with sparse COO
            gradients of one sparse dimension (rows along dim 0).
        lr (float, optional): Learning rate :math:`\eta`.
            (default: :obj:`1e-3`)
        betas (Tuple[float, float], optional): :math:`(\beta_1, \beta_2)`.
            (default: :obj:`(0.9, 0.999)`)
        eps (float, optional): :math:`\epsilon`. (default: :obj:`1e-8`)
        maximize (bool, optional): Maximise the objective instead.
            (default: :obj:`False`)
        eps_mode (str, optional): ``'sparse_adam'`` (:math:`\epsilon` added
            to :math:`\sqrt{\mathbf{v}_i}`, as
            :class:`~torch.optim.SparseAdam`) or ``'adam'`` (added to the
            bias-corrected root, as :class:`~torch.optim.Adam`).
            (default: :obj:`'sparse_adam'`)

    Shapes:
        - **param:** ``[N, *]``
        - **grad:** sparse COO ``[N, *]`` with ``sparse_dim() == 1``
          (indices ``[1, nnz]``, values ``[nnz, *]``; duplicates allowed)
        - **state:** ``exp_avg`` / ``exp_avg_sq`` ``[S, *]`` for the
          :math:`S` rows that have had a gradient
    """
    def __init__(self, params: Iterable[Any],
                 lr: Union[float, Tensor] = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, maximize: bool = False,
                 eps_mode: str = 'sparse_adam') -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError('Tensor lr must be 1-element')
        if not 0.0 < lr:
            raise ValueError(f'Invalid learning rate: {lr}')
        if not 0.0 < eps:
            raise ValueError(f'Invalid epsilon value: {eps}')
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f'Invalid beta parameter at index 0: {betas[0]}')
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f'Invalid beta parameter at index 1: {betas[1]}')
        if eps_mode not in EPS_MODES:
            raise ValueError(f"Invalid 'eps_mode' '{eps_mode}' (expected "
                             f"one of {', '.join(EPS_MODES)})")
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize,
                        eps_mode=eps_mode)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group['params']:
                if p.is_sparse:
                    raise ValueError(f'{self.__class__.__name__} requires '
                                     f'dense parameter tensors')
                if p.is_complex():
                    raise ValueError(f'{self.__class__.__name__} does not '
                                     f'support complex parameters')
                if p.dim() == 0:
                    raise ValueError(f'{self.__class__.__name__} needs '
                                     f'parameters with a row dimension')

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        # State dicts saved before 'eps_mode' existed.
        for group in self.param_groups:
            group.setdefault('eps_mode', 'sparse_adam')

    # State ------------------------------------------------------------------
    @staticmethod
    def _new_state(p: Tensor) -> Dict[str, Any]:
        return {
            'step': 0,
            'slot': torch.full((p.size(0), ), -1, dtype=torch.long,
                               device=p.device),
            'rows': torch.empty(0, dtype=torch.long, device=p.device),
            'exp_avg': p.new_zeros((0, *p.shape[1:])),
            'exp_avg_sq': p.new_zeros((0, *p.shape[1:])),
            'num_rows': 0,
        }

    @staticmethod
    def _reserve(state: Dict[str, Any], p: Tensor, extra: int) -> None:
        r"""Makes room for ``extra`` more slots, doubling the capacity so
        that the copies cost amortised :math:`O(1)` per row."""
        n, cap = state['num_rows'], state['rows'].numel()
        if n + extra <= cap:
            return
        new_cap = min(p.size(0), max(n + extra, 2 * cap, _MIN_CAPACITY))
        for key in ('exp_avg', 'exp_avg_sq'):
            # Fresh slots must start at zero: that is SparseAdam's state of
            # a row it has not updated yet.
            buf = p.new_zeros((new_cap, *p.shape[1:]))
            buf[:n] = state[key][:n]
            state[key] = buf
        rows = torch.full((new_cap, ), -1, dtype=torch.long, device=p.device)
        rows[:n] = state['rows'][:n]
        state['rows'] = rows

    def _slots(self, state: Dict[str, Any], p: Tensor,
               index: Tensor) -> Tensor:
        r"""Slots of the distinct rows ``index``, giving new rows one."""
        slot = state['slot'].index_select(0, index)
        new = slot < 0
        # In the steady state no row is new: one read-back settles it.
        if not bool(new.any()):
            return slot
        new_rows = index[new]
        k = new_rows.numel()
        if k > 0:
            self._reserve(state, p, k)
            n = state['num_rows']
            fresh = torch.arange(n, n + k, device=p.device)
            state['slot'][new_rows] = fresh
            state['rows'][n:n + k] = new_rows
            state['num_rows'] = n + k
            slot[new] = fresh
        return slot

    def num_state_rows(self) -> int:
        r"""Rows that hold moment state, summed over parameters."""
        return sum(int(s.get('num_rows', 0)) for s in self.state.values())

    def state_bytes(self) -> int:
        r"""Bytes held by the optimiser state: moment buffers (at their
        current capacity) plus the row :math:`\leftrightarrow` slot maps."""
        total = 0
        for s in self.state.values():
            for key in ('slot', 'rows', 'exp_avg', 'exp_avg_sq'):
                if key in s:
                    t = s[key]
                    total += t.numel() * t.element_size()
        return total

    # Update -----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Any] = None) -> Optional[Tensor]:
        r"""Performs one optimisation step.

        Args:
            closure (callable, optional): Re-evaluates the model and returns
                the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group['betas']
            eps, maximize = group['eps'], group['maximize']
            eps_mode = group['eps_mode']
            lr = group['lr']
            lr = float(lr) if isinstance(lr, Tensor) else lr
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError(
                        f'{self.__class__.__name__} does not support dense '
                        f'gradients, please consider Adam instead')
                if grad.sparse_dim() != 1:
                    raise RuntimeError(
                        f'{self.__class__.__name__} needs row-sparse '
                        f'gradients (sparse_dim() == 1, as from '
                        f'nn.Embedding(sparse=True)); got sparse_dim() == '
                        f'{grad.sparse_dim()}')
                state = self.state[p]
                if len(state) == 0:
                    state.update(self._new_state(p))
                # Counted even for an empty gradient, as SparseAdam does.
                state['step'] += 1
                index, values = _coalesced_rows(grad)
                if values.numel() == 0:
                    continue
                slot = self._slots(state, p, index)
                if eps_mode == 'adam':
                    self._update_rows_adam(p, state, index, slot, values, lr,
                                           beta1, beta2, eps, maximize)
                else:
                    self._update_rows(p, state, index, slot, values, lr,
                                      beta1, beta2, eps, maximize)
        return loss

    @staticmethod
    def _update_rows(p: Tensor, state: Dict[str, Any], index: Tensor,
                     slot: Tensor, values: Tensor, lr: float, beta1: float,
                     beta2: float, eps: float, maximize: bool) -> None:
        r"""Adam on the distinct rows ``index`` (moments at ``slot``)."""
        exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
        step = state['step']
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        m = exp_avg.index_select(0, slot)
        v = exp_avg_sq.index_select(0, slot)
        if _fused_rows_supported(p, values):
            # One pass of PyTorch's fused Adam kernel over the gathered
            # rows. It divides by sqrt(v) / sqrt(bc2) + eps' where SparseAdam
            # multiplies the step by sqrt(bc2) and divides by sqrt(v) + eps:
            # the same update for eps' = eps / sqrt(bc2). The kernel runs on
            # a zero 'parameter', so it returns the update itself, which one
            # index_add_ applies (a gather and a copy-back of the rows
            # would move more memory).
            delta = torch.zeros_like(values)
            steps = torch.full((), float(step), dtype=torch.float32,
                               device=p.device)
            torch._fused_adam_([delta], [values.contiguous()], [m], [v], [],
                               [steps], amsgrad=False, lr=lr, beta1=beta1,
                               beta2=beta2, weight_decay=0.0,
                               eps=eps / math.sqrt(bias_correction2),
                               maximize=maximize)
        else:
            # SparseAdam's own operations, in its order
            # (torch.optim._functional.sparse_adam).
            if maximize:
                values = -values
            m = values.sub(m).mul_(1 - beta1).add_(m)
            v = values.pow(2).sub_(v).mul_(1 - beta2).add_(v)
            step_size = lr * math.sqrt(bias_correction2) / bias_correction1
            delta = m.div(v.sqrt().add_(eps)).mul_(-step_size)
        exp_avg.index_copy_(0, slot, m)
        exp_avg_sq.index_copy_(0, slot, v)
        p.index_add_(0, index, delta)

    @staticmethod
    def _update_rows_adam(p: Tensor, state: Dict[str, Any], index: Tensor,
                          slot: Tensor, values: Tensor, lr: float,
                          beta1: float, beta2: float, eps: float,
                          maximize: bool) -> None:
        r"""``eps_mode='adam'`` on the distinct rows ``index``."""
        step = state['step']
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        if maximize:
            values = -values
        # The operations and their order are those the cached TransE
        # vectors were made with (a fused kernel, or sqrt(v) / sqrt(bc2),
        # rounds differently): keep them.
        m = state['exp_avg'].index_select(0, slot).mul_(beta1).add_(
            values, alpha=1 - beta1)
        v = state['exp_avg_sq'].index_select(0, slot).mul_(beta2).addcmul_(
            values, values, value=1 - beta2)
        state['exp_avg'].index_copy_(0, slot, m)
        state['exp_avg_sq'].index_copy_(0, slot, v)
        denom = v.div_(bias_correction2).sqrt_().add_(eps)
        p.index_add_(0, index, m.div_(denom), alpha=-lr / bias_correction1)

    # Checkpoints ------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        r"""The optimiser state with each parameter's moments trimmed to its
        rows in use (``step``, ``rows``, ``exp_avg``, ``exp_avg_sq``)."""
        out = super().state_dict()
        packed = {}
        for key, s in out['state'].items():
            if 'num_rows' not in s:  # already packed
                packed[key] = dict(s)
                continue
            n = s['num_rows']
            # Clones: a view would save the whole (doubled) storage.
            packed[key] = {
                'step': s['step'],
                'rows': s['rows'][:n].clone(),
                'exp_avg': s['exp_avg'][:n].clone(),
                'exp_avg_sq': s['exp_avg_sq'][:n].clone(),
            }
        out['state'] = packed
        return out

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        r"""Loads a state from :meth:`state_dict`, or from
        :class:`torch.optim.SparseAdam` (dense moments: the rows with a
        non-zero second moment get slots, the others are equivalent to no
        state)."""
        # The base class casts every state tensor but 'step' to the
        # parameter's dtype; keep the int64 row ids out of its way.
        state_dict = dict(state_dict)
        state_dict['state'] = {k: dict(v)
                               for k, v in state_dict['state'].items()}
        rows = {k: v.pop('rows') for k, v in state_dict['state'].items()
                if 'rows' in v}
        super().load_state_dict(state_dict)
        saved_ids = chain.from_iterable(g['params']
                                        for g in state_dict['param_groups'])
        params = chain.from_iterable(g['params'] for g in self.param_groups)
        for saved_id, p in zip(saved_ids, params):
            if p not in self.state:
                continue
            s = self.state[p]
            m, v = s['exp_avg'], s['exp_avg_sq']
            if saved_id in rows:
                index = rows[saved_id].to(device=p.device, dtype=torch.long)
            elif tuple(m.shape) == tuple(p.shape):  # SparseAdam's dense state
                index = v.reshape(v.size(0), -1).ne(0).any(dim=1)
                index = index.nonzero().view(-1)
                m, v = m[index], v[index]
            else:
                raise ValueError("Optimizer state without 'rows' and with "
                                 'moments not shaped like the parameter')
            S = index.numel()
            if (tuple(m.shape) != (S, *p.shape[1:])
                    or tuple(v.shape) != tuple(m.shape)):
                raise ValueError(
                    f'Optimizer state of {S} rows has moments of shape '
                    f'{tuple(m.shape)}, expected {(S, *p.shape[1:])}')
            slot = torch.full((p.size(0), ), -1, dtype=torch.long,
                              device=p.device)
            if S > 0 and (int(index.min()) < 0
                          or int(index.max()) >= p.size(0)):
                raise ValueError('Optimizer state has row ids out of range')
            slot[index] = torch.arange(S, device=p.device)
            if int((slot >= 0).sum()) != S:
                raise ValueError('Optimizer state has duplicate row ids')
            self.state[p] = {
                'step': s['step'], 'slot': slot, 'rows': index.clone(),
                'exp_avg': m.contiguous(), 'exp_avg_sq': v.contiguous(),
                'num_rows': S
            }


__all__ = ['LazySparseAdam']
