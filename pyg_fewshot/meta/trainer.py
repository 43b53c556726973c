r"""The meta-training loop: optimisation, periodic validation, early
stopping, atomic checkpoints and resumption."""
import contextlib
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .._io import remove_stale_tmp, run_lock
from ..data.fingerprint import data_fingerprint
from ..data.sampler import EpisodeSampler
from ..optim import LazySparseAdam
from . import distributed as dist_utils
from .checkpoint import check_config, load_checkpoint, save_checkpoint
from .config import TrainerConfig
from .learner import MetaLearner

LAST = 'last.pt'
BEST = 'best.pt'
RESULTS = 'results.json'


def _fused_adam_supported(params: List[torch.nn.Parameter]) -> bool:
    devices = {p.device for p in params}
    return (len(devices) == 1 and next(iter(devices)).type in ('cpu', 'cuda')
            and all(p.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                torch.float64) for p in params))


class MetaTrainer:
    r"""Meta-trains a :class:`~pyg_fewshot.models.FewShotModel` with a
    :class:`MetaLearner` on episodes from an
    :class:`~pyg_fewshot.data.EpisodeSampler`.

    Dense global parameters use :class:`torch.optim.Adam` (its fused
    kernel where the device supports it); parameters with
    sparse gradients (the entity table, see
    :meth:`~pyg_fewshot.models.FewShotModel.sparse_parameters`) use
    :class:`~pyg_fewshot.optim.LazySparseAdam` (the same updates as
    :class:`torch.optim.SparseAdam`, with moments only for rows that have
    had a gradient) or, if asked, :class:`torch.optim.SparseAdam` (dense
    moments for every row), so a step touches only the rows of the
    entities in its meta-batch.

    Inside a :mod:`torch.distributed` job (see
    :mod:`pyg_fewshot.meta.distributed`) every rank runs this loop on its own
    sampler (its share of the meta-batch, its own seed stream); the replicas
    start from rank 0's parameters, gradients are averaged over the ranks
    before clipping and the optimiser step, ``validate`` is called on every
    rank (it may itself be distributed) and rank 0's score decides, and only
    rank 0 writes checkpoints; ``last.pt`` holds every rank's sampler and
    RNG state, so a job resumes with the same number of processes. Every ``eval_every`` steps ``validate`` is
    called (higher is better, *e.g.* dev MRR); the best state is written to
    ``output_dir/best.pt`` and the full training state to
    ``output_dir/last.pt``, both atomically. Training stops after
    ``patience`` validations without improvement or at ``max_steps``, and
    resumes from ``last.pt`` when one exists.

    A run resumes only with the configuration it was started with: every
    checkpoint stores ``run_config`` and the
    :func:`~pyg_fewshot.data.fingerprint.data_fingerprint` of the sampler's
    KG (under ``'config'``), and :meth:`fit` raises
    :class:`~pyg_fewshot.meta.checkpoint.ConfigMismatchError` on any
    difference. ``max_steps`` is deliberately not part of it: raising it
    extends a finished run. While :meth:`fit` runs, rank 0 holds the lock of
    ``output_dir`` (:func:`~pyg_fewshot._io.run_lock`), so a second writer
    fails at once; on start it removes the temporary files of a write that
    was killed, and a run that does not resume removes the previous run's
    ``last.pt``, ``best.pt`` and ``results.json``, so its files never mix
    with the new run's.

    The learning rates stay constant (Adam's own step-size adaptation is
    all the published models use).

    Args:
        learner (MetaLearner): Inner loop and outer objective.
        sampler (EpisodeSampler): Training episodes.
        output_dir (str): Folder for checkpoints.
        validate (callable, optional): Returns the validation score.
        lr (float, optional): Learning rate. (default: :obj:`1e-3`)
        max_steps (int, optional): Maximum meta-training steps.
            (default: :obj:`10000`)
        eval_every (int, optional): Steps between validations.
            (default: :obj:`1000`)
        patience (int, optional): Validations without improvement before
            stopping. (default: :obj:`30`)
        grad_clip (float, optional): Max gradient norm of the dense
            parameters (:obj:`None` for no clipping). (default: :obj:`None`)
        amp (bool, optional): Mixed precision (bfloat16 autocast).
            (default: :obj:`False`)
        sparse_optimizer (str, optional): ``'lazy_adam'`` or
            ``'sparse_adam'``. (default: :obj:`'lazy_adam'`)
        sparse_lr (float, optional): Learning rate of the sparse parameters
            (the entity table); :obj:`None` means :obj:`lr`, and ``0``
            freezes them (``requires_grad=False``, so no gradient is even
            computed for them). (default: :obj:`None`)
        metadata (dict, optional): Plain values stored in every checkpoint
            (model name and config, dataset, shots ...).
        run_config (dict, optional): The plain values of every setting
            that affects training (model and its arguments, learner, shots,
            seed, batch size, learning rates, ...; *e.g.*
            :meth:`RunConfig.resume_key()
            <pyg_fewshot.pipeline.RunConfig.resume_key>`), without
            ``max_steps``; a checkpoint resumes only under an equal one. It
            is stored, with ``'data_fingerprint'`` added, under ``'config'``
            in every checkpoint.
        keep_eval_mode (bool, optional): Reproduce the published MetaR and
            MoEMeta code's third quirk: after the first validation the model
            stays in evaluation mode, so training goes on without dropout
            (and with batch norm frozen). (default: :obj:`False`)
        monitor (callable, optional): Returns other scores to record in
            each validation's history entry beside ``score`` (*e.g.*
            ``{'test_mrr': ...}`` for a learning curve of the test set);
            early stopping and the best checkpoint never read them.
            (default: :obj:`None`)
        progress (bool, optional): Show a tqdm bar. (default: :obj:`True`)
        callbacks (Sequence, optional): Objects told of the run's progress
            (*e.g.* the experiment trackers of :mod:`pyg_fewshot.pipeline`):
            ``on_step(step, logs)`` after every step with its losses and
            ``on_validation(step, entry)`` after every validation with its
            history entry (``score``, ``train_loss``); either method may be
            missing. (default: :obj:`None`)
    """
    def __init__(self, learner: MetaLearner, sampler: EpisodeSampler,
                 output_dir: str,
                 validate: Optional[Callable[[], float]] = None,
                 lr: float = 1e-3, max_steps: int = 10000,
                 eval_every: int = 1000, patience: int = 30,
                 grad_clip: Optional[float] = None, amp: bool = False,
                 sparse_optimizer: str = 'lazy_adam',
                 sparse_lr: Optional[float] = None,
                 metadata: Optional[Dict[str, Any]] = None,
                 run_config: Optional[Dict[str, Any]] = None,
                 keep_eval_mode: bool = False,
                 monitor: Optional[Callable[[], Dict[str, float]]] = None,
                 progress: bool = True,
                 callbacks: Optional[Sequence[Any]] = None) -> None:
        # Rejected here rather than failing late (ZeroDivisionError at the
        # first step, no best.pt after 0 steps) or training the wrong way (a
        # negative rate or clip norm ascends the loss). NaN fails `0 < x`;
        # only patience may be infinite (no early stopping).
        for name, value in (('lr', lr), ('max_steps', max_steps),
                            ('eval_every', eval_every), ('patience', patience),
                            ('grad_clip', grad_clip)):
            if value is not None and not 0 < value < math.inf and not (
                    name == 'patience' and value == math.inf):
                raise ValueError(f"'{name}' must be a positive number (got "
                                 f"{value})")
        sparse_classes = {'lazy_adam': LazySparseAdam,
                          'sparse_adam': torch.optim.SparseAdam}
        if sparse_optimizer not in sparse_classes:
            raise ValueError(f"Unknown sparse_optimizer '{sparse_optimizer}':"
                             f" expected one of {sorted(sparse_classes)}")
        self.learner = learner
        self.model = learner.model
        self.sampler = sampler
        self.output_dir = output_dir
        self.validate = validate
        self.monitor = monitor
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.patience = patience
        self.grad_clip = grad_clip
        self.keep_eval_mode = keep_eval_mode
        self.amp = amp
        self.metadata = dict(metadata or {})
        self.run_config = dict(run_config or {})
        # Ties every checkpoint to the KG it was trained on (a sampler
        # without a KG, e.g. a test double, records none).
        if getattr(sampler, 'data', None) is not None:
            self.run_config['data_fingerprint'] = data_fingerprint(
                sampler.data)
        self.rank = dist_utils.get_rank()
        self.world_size = dist_utils.get_world_size()
        self.progress = progress and self.rank == 0

        sparse_ids = {id(p) for p in self.model.sparse_parameters()}
        if sparse_lr is not None and sparse_lr < 0:
            raise ValueError(f"'sparse_lr' must be >= 0 (got {sparse_lr})")
        if sparse_lr == 0:
            for p in self.model.sparse_parameters():
                p.requires_grad_(False)
        self.dense_params = [p for p in self.model.parameters()
                             if p.requires_grad and id(p) not in sparse_ids]
        self.sparse_params = [p for p in self.model.parameters()
                              if p.requires_grad and id(p) in sparse_ids]
        self.optimizers: List[torch.optim.Optimizer] = []
        if self.dense_params:
            # The fused kernel does Adam's element-wise work in one pass
            # (about 5x faster than the per-tensor loop on CPU here).
            self.optimizers.append(torch.optim.Adam(
                self.dense_params, lr=lr,
                fused=_fused_adam_supported(self.dense_params)))
        if self.sparse_params:
            self.optimizers.append(sparse_classes[sparse_optimizer](
                self.sparse_params,
                lr=lr if sparse_lr is None else sparse_lr))
        dist_utils.broadcast_module(self.model)
        self.average_gradients = dist_utils.GradientAverager(
            self.dense_params, self.sparse_params)
        self.step = 0
        self.best_score = -math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.history: List[Dict[str, float]] = []
        self.train_seconds = 0.0
        # Query losses since the last validation, for the history's
        # training curve (zero at every checkpoint, so not saved).
        self._loss_sum, self._loss_steps = 0.0, 0
        self.callbacks: List[Any] = list(callbacks or [])

    @classmethod
    def from_config(cls, learner: MetaLearner, sampler: EpisodeSampler,
                    output_dir: str, config: TrainerConfig,
                    validate: Optional[Callable[[], float]] = None,
                    monitor: Optional[Callable[[], Dict[str, float]]] = None,
                    run_config: Optional[Dict[str, Any]] = None,
                    metadata: Optional[Dict[str, Any]] = None,
                    progress: bool = True,
                    callbacks: Optional[Sequence[Any]] = None
                    ) -> 'MetaTrainer':
        r"""The trainer of the optimisation settings ``config`` (see
        :class:`~pyg_fewshot.meta.TrainerConfig`); the other arguments are
        those of :class:`MetaTrainer`. ``run_config`` is what a run must
        match to resume (*e.g.* :meth:`RunConfig.resume_key()
        <pyg_fewshot.pipeline.RunConfig.resume_key>`): leave
        ``config.max_steps`` out of it, so raising it extends a run."""
        return cls(learner, sampler, output_dir, validate=validate,
                   lr=config.lr, max_steps=config.max_steps,
                   eval_every=config.eval_every, patience=config.patience,
                   grad_clip=config.grad_clip, amp=config.amp,
                   sparse_lr=config.entity_lr, metadata=metadata,
                   run_config=run_config,
                   keep_eval_mode=config.keep_eval_mode, monitor=monitor,
                   progress=progress,
                   callbacks=callbacks)

    # State -----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            'metadata': self.metadata,
            'config': self.run_config,
            'model_state': self.model.state_dict(),
            'optimizers': [o.state_dict() for o in self.optimizers],
            'sampler': self.sampler.state_dict(),
            'torch_rng': torch.get_rng_state(),
            'step': self.step,
            'best_score': self.best_score,
            'best_step': self.best_step,
            'bad_evals': self.bad_evals,
            'history': self.history,
            'train_seconds': self.train_seconds,
            'world_size': self.world_size,
        }

    def _rank_state(self) -> Dict[str, Any]:
        return {'sampler': self.sampler.state_dict(),
                'torch_rng': torch.get_rng_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state['model_state'])
        for opt, s in zip(self.optimizers, state['optimizers']):
            # The kernel choice belongs to this run, not to the checkpoint
            # (which may come from before fused Adam or another device).
            kernels = [{k: g[k] for k in ('fused', 'foreach') if k in g}
                       for g in opt.param_groups]
            opt.load_state_dict(s)
            for g, kernel in zip(opt.param_groups, kernels):
                g.update(kernel)
        saved_world = state.get('world_size', 1)
        if saved_world != self.world_size:
            raise ValueError(
                f"The checkpoint was written by a job of {saved_world} "
                f"process(es); resume it with the same number (this job has "
                f"{self.world_size}), or start afresh (no resume)")
        own = state['ranks'][self.rank] if 'ranks' in state else state
        self.sampler.load_state_dict(own['sampler'])
        torch.set_rng_state(own['torch_rng'])
        for key in ('step', 'best_score', 'best_step', 'bad_evals',
                    'history', 'train_seconds'):
            setattr(self, key, state[key])

    def _start_afresh(self) -> None:
        # A stale best.pt would otherwise be what load_best() and
        # 'pyg-fewshot evaluate' read until this run's first validation.
        if self.rank != 0:
            return
        for name in (LAST, BEST, RESULTS):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.output_dir, name))

    def _save_best(self) -> None:
        if self.rank != 0:
            return
        save_checkpoint({'metadata': self.metadata,
                         'config': self.run_config,
                         'model_state': self.model.state_dict(),
                         'step': self.step, 'best_score': self.best_score},
                        os.path.join(self.output_dir, BEST))

    # Loop ------------------------------------------------------------------
    def train_step(self) -> Dict[str, float]:
        r"""One meta-training step; returns the detached losses."""
        # ``keep_eval_mode``: the published code validates with
        # model.eval() and never calls model.train() again.
        self.model.train(not (self.keep_eval_mode and self.history))
        ep = self.sampler.sample().to(self.dense_params[0].device)
        device_type = self.dense_params[0].device.type
        with torch.autocast(device_type, dtype=torch.bfloat16,
                            enabled=self.amp):
            loss, logs = self.learner.loss(ep)
        # Checked before the update, so the parameters (and every checkpoint
        # written so far) stay finite.
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(
                f'Training diverged at step {self.step + 1}: the loss is '
                f'{float(loss.detach())}; lower the learning rate or the inner step '
                f'size (the checkpoints in {self.output_dir} are from before '
                f'this step)')
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self.average_gradients()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.dense_params, self.grad_clip)
        for opt in self.optimizers:
            opt.step()
        self.step += 1
        out = {k: float(v) for k, v in logs.items()}
        self._loss_sum += out['query_loss']
        self._loss_steps += 1
        for cb in self.callbacks:
            if hasattr(cb, 'on_step'):
                cb.on_step(self.step, out)
        return out

    def check_finite(self) -> None:
        r"""Raises :class:`FloatingPointError` naming the first parameter
        that holds a NaN or infinite value."""
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p.detach()).all()):
                raise FloatingPointError(
                    f"Training diverged by step {self.step}: parameter "
                    f"'{name}' is no longer finite; lower the learning rate "
                    f"(no checkpoint was written for this step)")

    def evaluate_now(self) -> bool:
        r"""Validates, checkpoints, and returns whether to stop early."""
        # A diverged model must never be validated (its scores are
        # meaningless) nor checkpointed over the last good state.
        self.check_finite()
        score = self.validate() if self.validate is not None else -math.inf
        # Every rank must take the same early-stopping decision.
        score = dist_utils.broadcast_object(score)
        # Training time so far (validation excluded): curves against
        # wall-clock time and the time to reach a score read it.
        entry = {'step': self.step, 'score': score,
                 'train_seconds': round(self.train_seconds, 3)}
        if self.monitor is not None:
            entry.update(dist_utils.broadcast_object(self.monitor()))
        if self._loss_steps:
            entry['train_loss'] = self._loss_sum / self._loss_steps
        self._loss_sum, self._loss_steps = 0.0, 0
        self.history.append(entry)
        for cb in self.callbacks:
            if hasattr(cb, 'on_validation'):
                cb.on_validation(self.step, dict(entry))
        if score > self.best_score or self.validate is None:
            self.best_score, self.best_step, self.bad_evals = (
                score, self.step, 0)
            self._save_best()
        else:
            self.bad_evals += 1
        state = self.state_dict()
        if self.world_size > 1:
            state['ranks'] = dist_utils.all_gather_objects(self._rank_state())
        if self.rank == 0:
            save_checkpoint(state, os.path.join(self.output_dir, LAST))
        dist_utils.barrier()
        return self.bad_evals >= self.patience

    def fit(self, resume: bool = True) -> Dict[str, Any]:
        r"""Trains until early stopping or ``max_steps``; returns a summary
        (``steps``, ``best_step``, ``best_score``, ``train_seconds``,
        ``history``, ``stopped_early``).

        Args:
            resume (bool, optional): Continue from ``output_dir/last.pt`` if
                there is one (it must have been written with this
                trainer's configuration); otherwise the previous run's
                files in ``output_dir`` are removed and training starts
                afresh. (default: :obj:`True`)
        """
        os.makedirs(self.output_dir, exist_ok=True)
        # Only rank 0 writes; the lock keeps any other job out meanwhile.
        with run_lock(self.output_dir) if self.rank == 0 else (
                contextlib.nullcontext()):
            return self._fit(resume)

    def _fit(self, resume: bool) -> Dict[str, Any]:
        last = os.path.join(self.output_dir, LAST)
        if self.rank == 0:
            # Left by a process killed mid-write; nobody else writes here.
            remove_stale_tmp(self.output_dir)
        if resume and os.path.isfile(last):
            state = load_checkpoint(last)
            check_config(state, self.run_config, last)
            self.load_state_dict(state)
        else:
            self._start_afresh()
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
        dist_utils.barrier()
        state = load_checkpoint(os.path.join(self.output_dir, BEST))
        self.model.load_state_dict(state['model_state'])
