r"""The meta-training loop: optimisation, periodic validation, early
stopping, atomic checkpoints and resumption."""
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from tqdm.auto import tqdm

from ..data.sampler import EpisodeSampler
from .checkpoint import load_checkpoint, save_checkpoint
from .learner import MetaLearner

LAST = 'last.pt'
BEST = 'best.pt'


class MetaTrainer:
    r"""Meta-trains a :class:`~pyg_fewshot.models.FewShotModel` with a
    :class:`MetaLearner` on episodes from an
    :class:`~pyg_fewshot.data.EpisodeSampler`.

    Dense global parameters use :class:`torch.optim.Adam`; parameters with
    sparse gradients (the entity table, see
    :meth:`~pyg_fewshot.models.FewShotModel.sparse_parameters`) use
    :class:`torch.optim.SparseAdam`, so a step touches only the rows of the
    entities in its meta-batch. Every ``eval_every`` steps ``validate`` is
    called (higher is better, *e.g.* dev MRR); the best state is written to
    ``output_dir/best.pt`` and the full training state to
    ``output_dir/last.pt``, both atomically. Training stops after
    ``patience`` validations without improvement or at ``max_steps``, and
    resumes from ``last.pt`` when one exists.

    Args:
        learner (MetaLearner): Inner loop and outer objective.
        sampler (EpisodeSampler): Training episodes.
        output_dir (str): Folder for checkpoints.
        validate (callable, optional): Returns the validation score.
        lr (float, optional): Learning rate. (default: :obj:`1e-3`)
        weight_decay (float, optional): Weight decay of the dense parameters.
            (default: :obj:`0.0`)
        max_steps (int, optional): Maximum meta-training steps.
            (default: :obj:`10000`)
        eval_every (int, optional): Steps between validations.
            (default: :obj:`1000`)
        patience (int, optional): Validations without improvement before
            stopping. (default: :obj:`30`)
        grad_clip (float, optional): Max gradient norm of the dense
            parameters (:obj:`None` for no clipping). (default: :obj:`None`)
        lr_schedule (str, optional): ``'constant'`` or ``'cosine'``
            (decay to 0 at ``max_steps`` after ``warmup_steps``).
            (default: :obj:`'constant'`)
        warmup_steps (int, optional): Linear warm-up steps.
            (default: :obj:`0`)
        amp (bool, optional): Mixed precision (bfloat16 autocast).
            (default: :obj:`False`)
        metadata (dict, optional): Plain values stored in every checkpoint
            (model name and config, dataset, shots ...).
        progress (bool, optional): Show a tqdm bar. (default: :obj:`True`)
    """
    def __init__(self, learner: MetaLearner, sampler: EpisodeSampler,
                 output_dir: str,
                 validate: Optional[Callable[[], float]] = None,
                 lr: float = 1e-3, weight_decay: float = 0.0,
                 max_steps: int = 10000, eval_every: int = 1000,
                 patience: int = 30, grad_clip: Optional[float] = None,
                 lr_schedule: str = 'constant', warmup_steps: int = 0,
                 amp: bool = False,
                 metadata: Optional[Dict[str, Any]] = None,
                 progress: bool = True) -> None:
        if lr_schedule not in ('constant', 'cosine'):
            raise ValueError(f"Unknown lr_schedule '{lr_schedule}': expected "
                             f"'constant' or 'cosine'")
        self.learner = learner
        self.model = learner.model
        self.sampler = sampler
        self.output_dir = output_dir
        self.validate = validate
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.patience = patience
        self.grad_clip = grad_clip
        self.amp = amp
        self.metadata = dict(metadata or {})
        self.progress = progress

        sparse_ids = {id(p) for p in self.model.sparse_parameters()}
        self.dense_params = [p for p in self.model.parameters()
                             if p.requires_grad and id(p) not in sparse_ids]
        self.sparse_params = [p for p in self.model.parameters()
                              if p.requires_grad and id(p) in sparse_ids]
        self.optimizers: List[torch.optim.Optimizer] = []
        if self.dense_params:
            self.optimizers.append(torch.optim.Adam(
                self.dense_params, lr=lr, weight_decay=weight_decay))
        if self.sparse_params:
            self.optimizers.append(torch.optim.SparseAdam(
                self.sparse_params, lr=lr))

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            if lr_schedule == 'cosine':
                span = max(1, max_steps - warmup_steps)
                return 0.5 * (1 + math.cos(math.pi * min(
                    1.0, (step - warmup_steps) / span)))
            return 1.0

        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor)
                           for opt in self.optimizers]
        self.step = 0
        self.best_score = -math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.history: List[Dict[str, float]] = []
        self.train_seconds = 0.0

    # State -----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            'metadata': self.metadata,
            'model_state': self.model.state_dict(),
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'sampler': self.sampler.state_dict(),
            'torch_rng': torch.get_rng_state(),
            'step': self.step,
            'best_score': self.best_score,
            'best_step': self.best_step,
            'bad_evals': self.bad_evals,
            'history': self.history,
            'train_seconds': self.train_seconds,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state['model_state'])
        for opt, s in zip(self.optimizers, state['optimizers']):
            opt.load_state_dict(s)
        for sch, s in zip(self.schedulers, state['schedulers']):
            sch.load_state_dict(s)
        self.sampler.load_state_dict(state['sampler'])
        torch.set_rng_state(state['torch_rng'])
        for key in ('step', 'best_score', 'best_step', 'bad_evals',
                    'history', 'train_seconds'):
            setattr(self, key, state[key])

    def _save_best(self) -> None:
        save_checkpoint({'metadata': self.metadata,
                         'model_state': self.model.state_dict(),
                         'step': self.step, 'best_score': self.best_score},
                        os.path.join(self.output_dir, BEST))

    # Loop ------------------------------------------------------------------
    def train_step(self) -> Dict[str, float]:
        r"""One meta-training step; returns the detached losses."""
        self.model.train()
        ep = self.sampler.sample().to(self.dense_params[0].device)
        device_type = self.dense_params[0].device.type
        with torch.autocast(device_type, dtype=torch.bfloat16,
                            enabled=self.amp):
            loss, logs = self.learner.loss(ep)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.dense_params, self.grad_clip)
        for opt in self.optimizers:
            opt.step()
        for sch in self.schedulers:
            sch.step()
        self.step += 1
        return {k: float(v) for k, v in logs.items()}

    def evaluate_now(self) -> bool:
        r"""Validates, checkpoints, and returns whether to stop early."""
        score = self.validate() if self.validate is not None else -math.inf
        self.history.append({'step': self.step, 'score': score})
        if score > self.best_score or self.validate is None:
            self.best_score, self.best_step, self.bad_evals = (
                score, self.step, 0)
            self._save_best()
        else:
            self.bad_evals += 1
        save_checkpoint(self.state_dict(),
                        os.path.join(self.output_dir, LAST))
        return self.bad_evals >= self.patience

    def fit(self, resume: bool = True) -> Dict[str, Any]:
        r"""Trains until early stopping or ``max_steps``; returns a summary
        (``steps``, ``best_step``, ``best_score``, ``train_seconds``,
        ``history``, ``stopped_early``)."""
        os.makedirs(self.output_dir, exist_ok=True)
        last = os.path.join(self.output_dir, LAST)
        if resume and os.path.isfile(last):
            self.load_state_dict(load_checkpoint(last))
        stopped_early = False
        bar = tqdm(total=self.max_steps, initial=self.step,
                   disable=not self.progress, desc='meta-train')
        t0 = time.perf_counter()
        try:
            while self.step < self.max_steps:
                logs = self.train_step()
                bar.update(1)
                if self.step % 50 == 0:
                    bar.set_postfix(loss=f"{logs['query_loss']:.4f}",
                                    best=f'{self.best_score:.4f}')
                if self.step % self.eval_every == 0 or (
                        self.step == self.max_steps):
                    self.train_seconds += time.perf_counter() - t0
                    stopped_early = self.evaluate_now()
                    t0 = time.perf_counter()
                    if stopped_early:
                        break
        finally:
            bar.close()
        return {'steps': self.step, 'best_step': self.best_step,
                'best_score': self.best_score,
                'train_seconds': self.train_seconds,
                'history': self.history, 'stopped_early': stopped_early}

    def load_best(self) -> None:
        r"""Loads the best checkpoint's weights into the model."""
        state = load_checkpoint(os.path.join(self.output_dir, BEST))
        self.model.load_state_dict(state['model_state'])
