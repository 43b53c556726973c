r"""Typed configurations of the meta-learning engine.

:class:`LearnerConfig` holds the inner loop and the outer objective
(:meth:`MetaLearner.from_config <pyg_fewshot.meta.MetaLearner.from_config>`),
:class:`TrainerConfig` the optimisation of the global parameters
(:meth:`MetaTrainer.from_config <pyg_fewshot.meta.MetaTrainer.from_config>`).
Values are checked where they are used, by the learner and the trainer.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union


@dataclass
class LearnerConfig:
    r"""Configuration of :class:`~pyg_fewshot.meta.MetaLearner`.

    Args:
        inner_steps (int): Inner-loop steps (``0``: no local adaptation).
            (default: :obj:`1`)
        inner_lr (float or Dict[str, float], optional): Inner step size
            :math:`\beta`, or one per local parameter (a ``'*'`` entry
            serves the others); :obj:`None` takes the model's
            ``default_inner_lr``. (default: :obj:`None`)
        margin (float): Margin :math:`\gamma` of the ranking loss.
            (default: :obj:`1.0`)
        first_order (bool): Treat inner gradients as constants (as MetaR);
            :obj:`False` differentiates through the inner steps.
            (default: :obj:`True`)
        published_quirks (bool): Reproduce the published MetaR/MoEMeta
            code's support-loss scaling and its leak into the outer
            objective. (default: :obj:`False`)
    """
    inner_steps: int = 1
    inner_lr: Union[None, float, Dict[str, float]] = None
    margin: float = 1.0
    first_order: bool = True
    published_quirks: bool = False


@dataclass
class TrainerConfig:
    r"""Configuration of :class:`~pyg_fewshot.meta.MetaTrainer`.

    Args:
        lr (float): Adam learning rate of the global parameters.
            (default: :obj:`1e-3`)
        entity_lr (float, optional): Learning rate of the sparse parameters
            (the entity table); :obj:`None` means :obj:`lr`, ``0`` freezes
            them. (default: :obj:`None`)
        max_steps (int): Maximum meta-training steps; not part of what a
            run must match to resume, so raising it extends a finished
            run. (default: :obj:`1000`)
        eval_every (int): Steps between validations (and checkpoints).
            (default: :obj:`200`)
        patience (int): Validations without improvement before stopping.
            (default: :obj:`30`)
        grad_clip (float, optional): Maximum gradient norm of the dense
            parameters; :obj:`None` does not clip. (default: :obj:`None`)
        amp (bool): bfloat16 autocast. (default: :obj:`False`)
        keep_eval_mode (bool): Reproduce the published code's training in
            evaluation mode (no dropout) after the first validation.
            (default: :obj:`False`)
        monitor (Tuple[str, ...]): Other splits ranked at every
            validation (``('test',)``), their MRR recorded in the history
            as ``'<split>_mrr'``: the test set's learning curve. Early
            stopping and the best checkpoint read the dev MRR alone, and
            training is the same with or without them. (default: :obj:`()`)
    """
    lr: float = 1e-3
    entity_lr: Optional[float] = None
    max_steps: int = 1000
    eval_every: int = 200
    patience: int = 30
    grad_clip: Optional[float] = None
    amp: bool = False
    keep_eval_mode: bool = False
    monitor: Tuple[str, ...] = ()
