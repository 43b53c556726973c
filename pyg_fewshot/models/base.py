r"""The contract between few-shot models and the meta-learning engine."""
import contextlib
from typing import Any, ContextManager, Dict, Optional, Tuple

import torch
from torch import Tensor

Local = Dict[str, Tensor]


def expand_task(x: Tensor, like: Tensor) -> Tensor:
    r"""Reshapes per-task ``[B, d]`` to broadcast against ``like``
    (``[B, *, d]``)."""
    return x.view(x.size(0), *([1] * (like.dim() - 2)), x.size(-1))


class FewShotModel(torch.nn.Module):
    r"""Base class of the models trained by :class:`pyg_fewshot.meta.MetaLearner`.

    A model splits its state into *global* parameters (ordinary
    :class:`torch.nn.Parameter` attributes, learned in the outer loop) and
    *local*, per-task parameters (a dict of ``[B, ...]`` tensors created by
    :meth:`init_local` and adapted in the inner loop). Scores are
    translational: :math:`s(h, t) = -\lVert q(h) - t'(t) \rVert_2` where
    :meth:`project` gives the task-conditioned head side :math:`q` and tail
    side :math:`t'`.

    Subclasses implement :meth:`embed`, :meth:`init_local` and
    :meth:`project`, set :attr:`adapt_keys` (the local entries the inner loop
    updates) and :attr:`model_name`, and store their constructor arguments in
    :attr:`config` so that a checkpoint can rebuild them.
    """
    model_name: str = 'base'
    adapt_keys: Tuple[str, ...] = ('rel', )
    #: Inner-loop step size the CLI uses unless told otherwise.
    default_inner_lr: float = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.config: Dict[str, Any] = {}

    @property
    def num_entities(self) -> Optional[int]:
        r"""Size of the entity id space (``config['num_entities']``), or
        :obj:`None` if the model does not say; the engine uses it to
        deduplicate entity ids without sorting."""
        n = self.config.get('num_entities')
        return None if n is None else int(n)

    # Entity side -----------------------------------------------------------
    def embed(self, index: Tensor) -> Tensor:
        r"""Entity representations ``[*, d]`` of the entity ids ``index``
        (``[*]``)."""
        raise NotImplementedError

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        r"""Parameters that receive sparse gradients (optimised row-wise by
        :class:`~pyg_fewshot.meta.LazySparseAdam` in
        :class:`~pyg_fewshot.meta.MetaTrainer`)."""
        return ()

    # Task side -------------------------------------------------------------
    def init_local(self, sup_h: Tensor,
                   sup_t: Tensor) -> Tuple[Local, Tensor]:
        r"""Local parameters of each task from its support pairs.

        Args:
            sup_h (torch.Tensor): Support head representations ``[B, K, d]``.
            sup_t (torch.Tensor): Support tail representations ``[B, K, d]``.

        Returns:
            ``(local, aux_loss)``: a dict of ``[B, ...]`` tensors and a scalar
            auxiliary loss added to the outer objective (zero if none).
        """
        raise NotImplementedError

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        r"""Head side ``q`` (``[B, *, d]``) and tail side ``t'``
        (``[B, *', d]``) of ``h`` and ``t``; they are projected independently,
        so their middle dimensions may differ."""
        raise NotImplementedError

    def score(self, h: Tensor, t: Tensor, local: Local) -> Tensor:
        r"""Scores ``[B, *]`` of aligned (head, tail) pairs ``[B, *, d]``."""
        q, tt = self.project(h, t, local)
        return -(q - tt).norm(p=2, dim=-1)

    def score_tails(self, h: Tensor, tails: Tensor, local: Local) -> Tensor:
        r"""Scores ``[B, T, *]`` of every head ``[B, *, d]`` against ``T``
        aligned tails each, ``tails`` ``[B, T, *, d]`` (*e.g.* the positive
        and the negative tail of a margin loss): the same values as
        :meth:`score` on each ``tails[:, j]``, with the head side projected
        once. A model that overrides :meth:`score` must override this too."""
        q, tt = self.project(h, tails, local)
        return -(q.unsqueeze(1) - tt).norm(p=2, dim=-1)

    def score_candidates(self, h: Tensor, t: Tensor,
                         local: Local) -> Tensor:
        r"""Scores ``[B, Q, C]`` of every query head ``[B, Q, d]`` against every
        candidate tail ``[B, C, d]``."""
        q, tt = self.project(h, t, local)
        return -torch.cdist(q, tt)

    # Test time --------------------------------------------------------------
    def task_scope(self, support: Tensor,
                   support_neg: Tensor) -> ContextManager[None]:
        r"""Context in which one dev/test relation is embedded and ranked.

        The default does nothing. Models that tune global parameters at test
        time (*e.g.* :class:`~pyg_fewshot.models.FusionAdapter`'s
        adapter-only tuning) override it to tune on ``support`` (``[K, 2]``
        (head, tail) ids, with negative tails ``support_neg`` ``[K]``) on
        entry and restore the meta-trained state on exit, so that nothing
        carries over from one relation to the next.
        """
        return contextlib.nullcontext()

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in self.config.items()
                         if not isinstance(v, (list, dict)) or len(v) < 8)


def init_entity_embedding(emb: torch.nn.Embedding,
                          pretrained: Optional[Tensor]) -> None:
    r"""Copies ``pretrained`` vectors into ``emb`` (checking the shape), or
    Xavier-initialises it."""
    with torch.no_grad():
        if pretrained is None:
            torch.nn.init.xavier_uniform_(emb.weight)
        else:
            if tuple(pretrained.shape) != tuple(emb.weight.shape):
                raise ValueError(
                    f'Pretrained entity vectors have shape '
                    f'{tuple(pretrained.shape)}, expected '
                    f'{tuple(emb.weight.shape)}')
            emb.weight.copy_(pretrained)
