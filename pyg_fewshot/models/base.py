r"""The contract between few-shot models and the meta-learning engine."""
import contextlib
from typing import (Any, ContextManager, Dict, NamedTuple, Optional, Tuple)

import torch
from torch import Tensor

Local = Dict[str, Tensor]


def expand_task(x: Tensor, like: Tensor) -> Tensor:
    r"""Reshapes per-task ``[B, d]`` to broadcast against ``like``
    (``[B, *, d]``)."""
    return x.view(x.size(0), *([1] * (like.dim() - 2)), x.size(-1))


class TaskOutput(NamedTuple):
    r"""What a model makes of a batch of support sets
    (:meth:`FewShotModel.init_local`).

    Attributes:
        local (Dict[str, torch.Tensor]): Local, per-task parameters
            (``[B, ...]`` tensors); the inner loop adapts the entries named
            by :attr:`FewShotModel.adapt_keys`.
        aux_losses (Dict[str, torch.Tensor]): Named scalar losses added to
            the outer objective (*e.g.* ``'load_balance'``,
            ``'diversity'``); empty if none.
        routing (MoERouting, optional): The expert routing of the support
            pairs, for models with a mixture of experts.
    """
    local: Dict[str, Tensor]
    aux_losses: Dict[str, Tensor]
    routing: Optional[Any] = None

    @property
    def aux_loss(self) -> Tensor:
        r"""The sum of :attr:`aux_losses` (a zero scalar if none)."""
        total: Optional[Tensor] = None
        for value in self.aux_losses.values():
            total = value if total is None else total + value
        if total is None:
            return next(iter(self.local.values())).new_zeros(())
        return total


class FewShotModel(torch.nn.Module):
    r"""Base class of the models trained by :class:`pyg_fewshot.meta.MetaLearner`.

    A model splits its state into *global* parameters (ordinary
    :class:`torch.nn.Parameter` attributes, learned in the outer loop) and
    *local*, per-task parameters (a dict of ``[B, ...]`` tensors created by
    :meth:`init_local` and adapted in the inner loop). Scores are
    translational: :math:`s(h, t) = -\lVert q(h) - t'(t) \rVert_2` where
    :meth:`project` gives the task-conditioned head side :math:`q` and tail
    side :math:`t'`.

    The contract with the engine (:class:`~pyg_fewshot.meta.MetaLearner`,
    :func:`~pyg_fewshot.evaluation.evaluate`):

    * :meth:`embed` maps entity ids to representations;
    * :meth:`init_local` maps a batch of support sets (their ids and
      representations) to a :class:`TaskOutput`: the local parameters, the
      auxiliary losses and the expert routing;
    * :meth:`project` / :meth:`score_tails` / :meth:`score_candidates`
      score (head, tail) pairs under the local parameters;
    * :meth:`task_scope` is entered once per dev/test relation with the
      run's learner (test-time tuning);
    * :meth:`sparse_parameters` names the tables optimised row-wise;
    * :attr:`config` is the model's configuration dataclass (see
      :mod:`pyg_fewshot.models.config`), from which :meth:`from_config`
      rebuilds it for a graph.

    Subclasses implement :meth:`embed`, :meth:`init_local` and
    :meth:`project`, and set :attr:`adapt_keys` (the local entries the inner
    loop updates) and :attr:`model_name`.
    """
    model_name: str = 'base'
    adapt_keys: Tuple[str, ...] = ('rel', )
    #: Inner-loop step size of a learner whose configuration leaves it open.
    default_inner_lr: float = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.config: Any = None

    @property
    def num_entities(self) -> Optional[int]:
        r"""Size of the entity id space, or :obj:`None` if the model does not
        say; the engine uses it to deduplicate entity ids without
        sorting."""
        return None

    # Entity side -----------------------------------------------------------
    def embed(self, index: Tensor) -> Tensor:
        r"""Entity representations ``[*, d]`` of the entity ids ``index``
        (``[*]``)."""
        raise NotImplementedError

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        r"""Parameters that receive sparse gradients (optimised row-wise by
        :class:`~pyg_fewshot.optim.LazySparseAdam` in
        :class:`~pyg_fewshot.meta.MetaTrainer`)."""
        return ()

    # Task side -------------------------------------------------------------
    def init_local(self, support: Tensor, sup_h: Tensor,
                   sup_t: Tensor) -> TaskOutput:
        r"""Local parameters of each task from its support pairs.

        Args:
            support (torch.Tensor): Support (head, tail) ids ``[B, K, 2]``.
            sup_h (torch.Tensor): Their head representations ``[B, K, d]``
                (rows of :meth:`embed`).
            sup_t (torch.Tensor): Their tail representations ``[B, K, d]``.

        Returns:
            A :class:`TaskOutput`.
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
    def task_scope(self, support: Tensor, support_neg: Tensor,
                   learner: Any = None) -> ContextManager[None]:
        r"""Context in which one dev/test relation is embedded and ranked.

        The default does nothing. Models that tune global parameters at test
        time (*e.g.* :class:`~pyg_fewshot.models.FusionAdapter`'s
        adapter-only tuning) override it to tune on ``support`` (``[K, 2]``
        (head, tail) ids, with negative tails ``support_neg`` ``[K]``) with
        the run's ``learner`` (its inner loop and support loss, so training
        and evaluation tune alike) on entry and restore the meta-trained
        state on exit, so that nothing carries over from one relation to
        the next.
        """
        return contextlib.nullcontext()

    def extra_repr(self) -> str:
        return '' if self.config is None else repr(self.config)
