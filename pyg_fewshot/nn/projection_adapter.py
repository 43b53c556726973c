import math
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

from pyg_fewshot.ops import transd_project, translational_distance
from pyg_fewshot.ops.distance import _per_task

_MODES = ('transd', 'paper')
_INITS = ('learned', 'random')
_KEYS = ('p_h', 'p_r', 'p_t')


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=-1, keepdim=True)


class ProjectionAdapter(torch.nn.Module):
    r"""The task-specific projection adaptation from the `"MoEMeta:
    Mixture-of-Experts Meta Learning for Few-Shot Relational Learning"
    <https://arxiv.org/abs/2510.23013>`_ paper (NeurIPS 2025).

    Three local, per-task vectors :math:`\mathbf{p}_h, \mathbf{p}_r,
    \mathbf{p}_t \in \mathbb{R}^d` shift the head and tail embeddings in the
    context of the relation, TransD-style. Two forms are supported.
    :obj:`mode="transd"` (the published code, the default):

    .. math::
        \mathbf{h}' = \mathbf{h} + (\mathbf{h}^{\top}\mathbf{p}_h)\,
        \mathbf{p}_r, \qquad
        \mathbf{t}' = \mathbf{t} + (\mathbf{t}^{\top}\mathbf{p}_t)\,
        \mathbf{p}_r, \qquad \mathbf{R}' = \mathbf{R}

    :obj:`mode="paper"` (the paper's equations, modulated by the relation
    meta :math:`\mathbf{R}`):

    .. math::
        \mathbf{h}' = \mathbf{h} + (\mathbf{p}_h^{\top}\mathbf{R})\,
        \mathbf{R}, \qquad
        \mathbf{R}' = \mathbf{R} + (\mathbf{p}_r^{\top}\mathbf{R})\,
        \mathbf{R}, \qquad
        \mathbf{t}' = \mathbf{t} + (\mathbf{p}_t^{\top}\mathbf{R})\,
        \mathbf{R}

    Why :obj:`"transd"` is the default: in the paper's form every shift is
    a multiple of :math:`\mathbf{R}` that does not depend on the entity, so
    under the translational score
    :math:`\mathbf{h}' + \mathbf{R}' - \mathbf{t}' = \mathbf{h} - \mathbf{t}
    + \left(1 + (\mathbf{p}_h + \mathbf{p}_r - \mathbf{p}_t)^{\top}
    \mathbf{R}\right)\mathbf{R}`: the adaptation reduces to one scalar
    rescaling of :math:`\mathbf{R}` per task and cannot separate the several
    heads of a 1-N relation, nor the tails of an N-1 one. The TransD form
    shifts each entity by an amount that depends on the entity
    (:math:`\mathbf{h}^{\top}\mathbf{p}_h`), which is what the paper's
    motivation (different entity aspects under different relations, N-1
    and N-N relations) asks for. Pick :obj:`mode="paper"` to follow the
    paper's equations literally.

    The vectors are local parameters: :meth:`init_local` returns a
    per-task copy (differentiable with respect to the meta-learned
    initialisation held by this module) that an inner loop updates and
    passes back to :meth:`forward`, which also works under
    :func:`torch.func.functional_call` and :func:`torch.func.grad`. With
    :obj:`init="random"` the vectors are instead drawn afresh at every
    :meth:`init_local` call with the scale of the published code
    (:func:`torch.nn.init.xavier_uniform_` on a :obj:`[B, 1, 1, d]` tensor,
    *i.e.* :math:`\mathcal{U}(-a, a)`, :math:`a = \sqrt{6 / (d (B + 1))}`),
    and the module holds no parameters.

    Args:
        embedding_dim (int): Embedding size :math:`d`.
        mode (str, optional): :obj:`"transd"` or :obj:`"paper"`.
            (default: :obj:`"transd"`)
        init (str, optional): :obj:`"learned"` (meta-learned
            initialisation) or :obj:`"random"` (fresh random vectors per
            call, as the published code). (default: :obj:`"learned"`)
        init_bound (float, optional): The learned initialisation starts
            from :math:`\mathcal{U}(-a, a)` with this :math:`a`; small and
            non-zero, because in the TransD form zero vectors are a
            stationary point (every gradient vanishes).
            (default: :obj:`0.01`)

    Shapes:
        - **input:**
          heads :math:`(B, *, d)`, tails :math:`(B, *, d)`,
          relation meta :math:`(B, d)` (or broadcastable to the heads),
          optional local vectors :math:`(B, d)` or :math:`(d)` each
        - **output:** :math:`(\mathbf{h}', \mathbf{t}', \mathbf{R}')`
          with the shapes of :math:`(\mathbf{h}, \mathbf{t}, \mathbf{R})`
    """
    def __init__(
        self,
        embedding_dim: int,
        mode: str = 'transd',
        init: str = 'learned',
        init_bound: float = 0.01,
    ):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"Unknown mode '{mode}' (expected one of "
                             f"{_MODES})")
        if init not in _INITS:
            raise ValueError(f"Unknown init '{init}' (expected one of "
                             f"{_INITS})")
        self.embedding_dim = embedding_dim
        self.mode = mode
        self.init = init
        self.init_bound = init_bound
        self.p_h: Optional[Parameter]
        self.p_r: Optional[Parameter]
        self.p_t: Optional[Parameter]
        if init == 'learned':
            self.p_h = Parameter(torch.empty(embedding_dim))
            self.p_r = Parameter(torch.empty(embedding_dim))
            self.p_t = Parameter(torch.empty(embedding_dim))
        else:
            self.register_parameter('p_h', None)
            self.register_parameter('p_r', None)
            self.register_parameter('p_t', None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for p in (self.p_h, self.p_r, self.p_t):
            if p is not None:
                torch.nn.init.uniform_(p, -self.init_bound, self.init_bound)

    def init_local(
        self,
        batch_size: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, Tensor]:
        r"""Returns fresh local vectors for :obj:`batch_size` tasks.

        Args:
            batch_size (int): Number of tasks :obj:`B`.
            device (torch.device, optional): Device of random vectors
                (:obj:`init="random"` only). (default: :obj:`None`)
            dtype (torch.dtype, optional): Dtype of random vectors.
                (default: :obj:`None`)
            generator (torch.Generator, optional): Random generator
                (:obj:`init="random"` only). (default: :obj:`None`)

        Returns:
            :obj:`{'p_h': [B, d], 'p_r': [B, d], 'p_t': [B, d]}`; with the
            learned initialisation these are broadcast views of the
            parameters, so gradients flow back to them.
        """
        d = self.embedding_dim
        if self.init == 'learned':
            assert self.p_h is not None and self.p_r is not None
            assert self.p_t is not None
            return {
                'p_h': self.p_h.expand(batch_size, d),
                'p_r': self.p_r.expand(batch_size, d),
                'p_t': self.p_t.expand(batch_size, d),
            }
        bound = math.sqrt(6.0 / (d * (batch_size + 1)))
        # One draw for the three vectors (one generator call, not three).
        vecs = torch.empty(len(_KEYS), batch_size, d, device=device,
                           dtype=dtype).uniform_(-bound, bound,
                                                 generator=generator)
        return dict(zip(_KEYS, vecs.unbind(0)))

    def _vectors(
        self,
        local: Optional[Mapping[str, Tensor]],
        batch_size: int,
        like: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        if local is None:
            if self.init == 'random':
                local = self.init_local(batch_size, device=like.device,
                                        dtype=like.dtype)
            else:
                assert self.p_h is not None and self.p_r is not None
                assert self.p_t is not None
                return self.p_h, self.p_r, self.p_t
        return local['p_h'], local['p_r'], local['p_t']

    def forward(
        self,
        h: Tensor,
        t: Tensor,
        rel: Tensor,
        local: Optional[Mapping[str, Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Projects heads, tails and the relation meta.

        Args:
            h (torch.Tensor): Head embeddings :obj:`[B, *, d]`.
            t (torch.Tensor): Tail embeddings :obj:`[B, *, d]`.
            rel (torch.Tensor): Relation meta :obj:`[B, d]`, or any shape
                broadcastable against :obj:`h` such as :obj:`[B, 1, d]`.
            local (Mapping[str, torch.Tensor], optional): Per-task vectors
                :obj:`p_h`, :obj:`p_r`, :obj:`p_t` of shape :obj:`[B, d]`
                (or :obj:`[d]`), *e.g.* from :meth:`init_local` after an
                inner-loop update; :obj:`None` uses the shared
                initialisation (fresh random vectors with
                :obj:`init="random"`). (default: :obj:`None`)

        Returns:
            :obj:`(h', t', R')`; :obj:`R'` has the shape of :obj:`rel`.
        """
        p_h, p_r, p_t = self._vectors(local, h.size(0), h)
        if self.mode == 'transd':
            h_out = transd_project(h, p_h, p_r)
            t_out = transd_project(t, p_t, p_r)
            return h_out, t_out, rel

        R_h = rel
        if rel.dim() == 2 and h.dim() > 2:
            R_h = rel.reshape(rel.size(0), *([1] * (h.dim() - 2)),
                              rel.size(-1))
        R_t = rel
        if rel.dim() == 2 and t.dim() > 2:
            R_t = rel.reshape(rel.size(0), *([1] * (t.dim() - 2)),
                              rel.size(-1))
        h_out = h + _dot(_per_task(p_h, R_h), R_h) * R_h
        t_out = t + _dot(_per_task(p_t, R_t), R_t) * R_t
        rel_out = rel + _dot(_per_task(p_r, rel), rel) * rel
        return h_out, t_out, rel_out

    def distance(
        self,
        h: Tensor,
        tails: Tensor,
        rel: Tensor,
        local: Optional[Mapping[str, Tensor]] = None,
    ) -> Tensor:
        r"""Translational distances :math:`\lVert \mathbf{h}' +
        \mathbf{R}' - \mathbf{t}' \rVert_2` of every head against a stack
        of :obj:`J` tails each (*e.g.* the positive and the negative tail of
        a margin loss), the heads projected once.

        In :obj:`"transd"` mode this is
        :func:`pyg_fewshot.ops.translational_distance` (a hand-written
        backward that makes about a third of autograd's passes over the
        tails); in :obj:`"paper"` mode it is :meth:`forward` followed by the
        norm.

        Args:
            h (torch.Tensor): Heads :obj:`[B, *, d]`.
            tails (torch.Tensor): Tails :obj:`[B, J, *, d]`.
            rel (torch.Tensor): Relation meta :obj:`[B, d]`.
            local (Mapping[str, torch.Tensor], optional): Per-task vectors,
                as in :meth:`forward`. (default: :obj:`None`)

        :rtype: :class:`torch.Tensor` of shape :obj:`[B, J, *]`
        """
        if self.mode == 'transd':
            p_h, p_r, p_t = self._vectors(local, h.size(0), h)
            return translational_distance(h, tails, rel, p_h, p_r, p_t)
        h, tails, rel = self(h, tails, rel, local)
        q = h + rel.view(rel.size(0), *([1] * (h.dim() - 2)), rel.size(-1))
        return (q.unsqueeze(1) - tails).norm(p=2, dim=-1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embedding_dim}, '
                f'mode={self.mode}, init={self.init})')
