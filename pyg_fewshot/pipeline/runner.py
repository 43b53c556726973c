r"""One function that runs a configuration end to end: data → model →
meta-training → evaluation → results.

The CLI (``pyg-fewshot train``) and every benchmark call :func:`run`; a
checkpoint holds the :class:`~pyg_fewshot.pipeline.RunConfig` it was
trained with, so :func:`load_run` rebuilds the same model on the same data
for ``pyg-fewshot evaluate`` and ``experts``.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import HeteroData

from .. import __version__
from .._io import atomic_write_json
from ..data import EpisodeSampler
from ..data.config import load_data
from ..data.fingerprint import data_fingerprint
from ..evaluation import chance_level, degree_baseline, evaluate
from ..meta import MetaLearner, MetaTrainer, load_checkpoint
from ..meta import distributed as dist_utils
from ..meta.checkpoint import CheckpointError, check_data
from ..models import FewShotModel, build_model
from .config import RunConfig
from .trackers import resolve_trackers

RESULTS = 'results.json'

#: The metrics of one split kept in ``results.json``.
METRIC_KEYS = ('mrr', 'hits@1', 'hits@5', 'hits@10', 'mean_rank',
               'num_queries', 'num_relations', 'macro', 'per_relation',
               'ties_policy', 'candidate_set', 'nonfinite_scores', 'seconds')


def metrics_view(res: Dict[str, Any]) -> Dict[str, Any]:
    r"""The entries of an :func:`~pyg_fewshot.evaluation.evaluate` result
    that are written to files."""
    return {k: res[k] for k in METRIC_KEYS if k in res}


@dataclass
class RunResult:
    r"""What :func:`run` returns: the metrics, the training history and the
    configuration of a run (``results.json`` of its folder).

    Attributes:
        config (RunConfig): The resolved configuration.
        dev (dict): Dev metrics of the best checkpoint.
        test (dict): Test metrics of the best checkpoint.
        test_random_baseline (dict): The exact chance level on test.
        test_degree_baseline (dict, optional): The metrics on test of
            ranking by background degree
            (:func:`~pyg_fewshot.evaluation.degree_baseline`);
            :obj:`None` when read from a run that predates it.
        steps (int): Meta-training steps run.
        best_step (int): Step of the best dev validation.
        stopped_early (bool): Whether early stopping ended training.
        train_seconds (float): Wall time of training (validation excluded).
        history (List[dict]): ``{'step', 'score'}`` of every validation.
        output (str, optional): The run folder.
        info (dict): Versions, threads, data fingerprint, configuration
            hash.
        model (FewShotModel, optional): The trained model (best checkpoint
            loaded) when the run happened in this process.
    """
    config: RunConfig
    dev: Dict[str, Any]
    test: Dict[str, Any]
    test_random_baseline: Dict[str, Any]
    steps: int
    best_step: int
    stopped_early: bool
    train_seconds: float
    history: List[Dict[str, float]]
    output: Optional[str] = None
    info: Dict[str, Any] = field(default_factory=dict)
    model: Optional[FewShotModel] = field(default=None, repr=False,
                                          compare=False)
    test_degree_baseline: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        r"""The ``results.json`` form (plain values)."""
        c = self.config
        return dict(
            model=c.model.name, dataset=c.data.dataset,
            shots=c.episodes.shots, seed=c.seed, steps=self.steps,
            best_step=self.best_step,
            train_seconds=round(self.train_seconds, 2),
            stopped_early=self.stopped_early, dev=self.dev, test=self.test,
            test_random_baseline=self.test_random_baseline,
            test_degree_baseline=self.test_degree_baseline,
            history=self.history, config=c.to_dict(),
            config_hash=c.config_hash(), **self.info)

    @classmethod
    def from_dict(cls, d: Dict[str, Any],
                  output: Optional[str] = None) -> 'RunResult':
        r"""Reads the ``results.json`` form back."""
        known = {'model', 'dataset', 'shots', 'seed', 'steps', 'best_step',
                 'train_seconds', 'stopped_early', 'dev', 'test',
                 'test_random_baseline', 'test_degree_baseline', 'history',
                 'config', 'config_hash'}
        return cls(config=RunConfig.from_dict(d['config']), dev=d['dev'],
                   test=d['test'],
                   test_random_baseline=d['test_random_baseline'],
                   test_degree_baseline=d.get('test_degree_baseline'),
                   steps=d['steps'], best_step=d['best_step'],
                   stopped_early=d['stopped_early'],
                   train_seconds=d['train_seconds'], history=d['history'],
                   output=output,
                   info={k: v for k, v in d.items() if k not in known})

    def save_to_directory(self, path: str) -> str:
        r"""Writes ``results.json`` and the resolved ``config.yaml`` into
        ``path`` (created if needed); returns the results file."""
        os.makedirs(path, exist_ok=True)
        self.config.save(os.path.join(path, 'config.yaml'))
        out = os.path.join(path, RESULTS)
        atomic_write_json(self.to_dict(), out)
        return out

    def plot(self, path: Optional[str] = None) -> Any:
        r"""The training curves: the mean query loss between validations
        and the dev MRR at each validation (the best one marked), titled
        with the run's model, dataset, shots and seed. Needs matplotlib
        (``pip install 'pyg_fewshot[plot]'``).

        Args:
            path (str, optional): Also save the figure there (PNG, PDF ...
                by its suffix).

        Returns:
            The :class:`matplotlib.figure.Figure`.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError("RunResult.plot() needs matplotlib: pip "
                              "install 'pyg_fewshot[plot]'") from e
        # A Figure without pyplot: no GUI backend, no global state.
        fig = Figure(figsize=(9, 3.4), layout='constrained')
        loss_ax, mrr_ax = fig.subplots(1, 2)
        steps = [h['step'] for h in self.history]
        losses = [(h['step'], h['train_loss']) for h in self.history
                  if 'train_loss' in h]
        if losses:
            loss_ax.plot(*zip(*losses), marker='.')
        loss_ax.set(xlabel='step', ylabel='mean query loss',
                    title='training loss')
        mrr_ax.plot(steps, [h['score'] for h in self.history], marker='.')
        mrr_ax.axvline(self.best_step, color='grey', linestyle=':',
                       label=f'best step {self.best_step}')
        mrr_ax.set(xlabel='step', ylabel='dev MRR', title='validation')
        mrr_ax.legend(loc='lower right')
        c = self.config
        fig.suptitle(f'{c.model.name} on {c.data.dataset}, '
                     f'{c.episodes.shots}-shot, seed {c.seed}: test MRR '
                     f"{self.test['mrr']:.3f}")
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

    def __str__(self) -> str:
        t = self.test
        return (f"{self.config.model.name} on {self.config.data.dataset}, "
                f"{self.config.episodes.shots}-shot, seed {self.config.seed}:"
                f" test MRR {t['mrr']:.4f}, Hits@1 {t['hits@1']:.4f}, "
                f"Hits@10 {t['hits@10']:.4f} (best dev step "
                f"{self.best_step} of {self.steps})")


def run(config: RunConfig, output: str = os.path.join('runs', 'latest'),
        resume: bool = True, progress: bool = True,
        trackers: Optional[Sequence[Any]] = None) -> RunResult:
    r"""Runs a configuration end to end and returns its :class:`RunResult`.

    Loads the data (:func:`~pyg_fewshot.data.load_data`), checks
    every split against the episode specification, builds the model
    (:func:`~pyg_fewshot.models.build_model`), meta-trains it with
    validation on dev (:class:`~pyg_fewshot.meta.MetaTrainer`, checkpoints
    in ``output``), reloads the best checkpoint, evaluates dev and test, and
    writes ``results.json`` and ``config.yaml`` into ``output``.

    With ``config.nproc > 1`` (and outside ``torchrun``) it launches that
    many data-parallel worker processes on this machine and returns rank
    0's result; under ``torchrun`` every rank calls it.

    Args:
        config (RunConfig): The run.
        output (str, optional): Run folder. (default: ``runs/latest``; the
            CLI names one after the configuration)
        resume (bool, optional): Continue from ``output/last.pt`` if it was
            written with the same configuration (otherwise
            :class:`~pyg_fewshot.meta.checkpoint.ConfigMismatchError`);
            :obj:`False` removes the folder's previous checkpoints and
            starts afresh. (default: :obj:`True`)
        progress (bool, optional): Show a progress bar.
            (default: :obj:`True`)
        trackers (Sequence, optional): Experiment trackers, by name
            (``'tensorboard'``, ``'csv'``, ``'json'``, ``'mlflow'``,
            ``'wandb'``; they write into ``output``) or as
            :class:`~pyg_fewshot.pipeline.trackers.Tracker` objects.
            (default: :obj:`None`)
    """
    if config.nproc > 1 and not dist_utils.launched_by_torchrun():
        # Fails here, before any worker starts, on a batch that does not
        # split or a folder another job holds.
        dist_utils.split_batch_size(config.episodes.batch_size, config.nproc)
        from .._io import run_lock
        with run_lock(output):
            pass
        dist_utils.launch(_worker, config.nproc,
                          (config, output, resume, progress, trackers))
        with open(os.path.join(output, RESULTS)) as f:
            return RunResult.from_dict(json.load(f), output)
    try:
        # One writer per run folder, from the first check to results.json.
        with dist_utils.writer_lock(output):
            return _run(config, output, resume, progress, trackers)
    finally:
        dist_utils.cleanup()


def _worker(config: RunConfig, output: str, resume: bool,
            progress: bool, trackers: Optional[Sequence[Any]]) -> None:
    try:
        with dist_utils.writer_lock(output):
            _run(config, output, resume, progress, trackers)
    finally:
        dist_utils.cleanup()


def _embedding_dim(config: RunConfig) -> int:
    model = config.model
    return getattr(model, 'backbone', model).embedding_dim


def _text(config: RunConfig) -> bool:
    # Text features are what FusionAdapter fuses unless told otherwise.
    if config.data.text is not None:
        return bool(config.data.text)
    return config.model.name == 'fusionadapter'


def _load(config: RunConfig, pretrain: bool,
          progress: bool = True) -> Tuple[Any, HeteroData]:
    data_config = dataclasses.replace(config.data, pretrain=pretrain,
                                      text=_text(config))
    return load_data(data_config, embedding_dim=_embedding_dim(config),
                     progress=progress)


def _run(config: RunConfig, output: str, resume: bool,
         progress: bool, trackers: Optional[Sequence[Any]]) -> RunResult:
    if config.device == 'cuda' and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA device is "
                         'available')
    rank, world, device = dist_utils.init_distributed(device=config.device)
    main_process = rank == 0
    torch.manual_seed(config.seed)
    # Rank 0 processes and pretrains once; the others then read its cache.
    if not main_process:
        dist_utils.barrier()
    dataset, data = _load(config, config.data.pretrain,
                          progress=progress and main_process)
    if main_process and world > 1:
        dist_utils.barrier()
    shots = config.episodes.shots
    config.episodes.check(data)
    model = build_model(config.model, data).to(device)
    learner = MetaLearner.from_config(model, config.learner)

    # Each rank draws its share of the meta-batch from its own stream, and
    # its own dropout masks (the replicas still start from rank 0's weights).
    sampler = EpisodeSampler(
        data, shots, config.episodes.num_queries,
        dist_utils.split_batch_size(config.episodes.batch_size, world),
        'train', seed=dist_utils.rank_seed(config.seed, rank))
    if world > 1:
        torch.manual_seed(dist_utils.rank_seed(config.seed, rank))
    distributed = world > 1

    def evaluate_split(split: str) -> Dict[str, Any]:
        return evaluate(model, data, split, shots, learner,
                        ties_policy=config.ties, seed=config.seed,
                        distributed=distributed)

    monitor = None
    if config.trainer.monitor:
        def monitor() -> Dict[str, float]:
            return {f'{split}_mrr': evaluate_split(split)['mrr']
                    for split in config.trainer.monitor}

    # Only rank 0 reports, as only rank 0 writes.
    tracking = resolve_trackers(trackers, output) if main_process else []
    for tracker in tracking:
        tracker.start(config.to_dict())
    trainer = MetaTrainer.from_config(
        learner, sampler, output, config.trainer,
        validate=lambda: evaluate_split('dev')['mrr'], monitor=monitor,
        run_config=config.resume_key(),
        metadata={'run_config': config.to_dict(), 'version': __version__},
        progress=progress, callbacks=tracking)
    summary = trainer.fit(resume=resume)
    trainer.load_best()
    dev = evaluate_split('dev')
    test = evaluate_split('test')
    result = RunResult(
        config=config, dev=metrics_view(dev), test=metrics_view(test),
        test_random_baseline=chance_level(data, 'test', shots),
        test_degree_baseline=degree_baseline(data, 'test', shots),
        steps=summary['steps'], best_step=summary['best_step'],
        stopped_early=summary['stopped_early'],
        train_seconds=summary['train_seconds'], history=summary['history'],
        output=output, model=model,
        info=dict(environment(device), nproc=world,
                  data_fingerprint=trainer.run_config.get(
                      'data_fingerprint')))
    if main_process:
        result.save_to_directory(output)
        for tracker in tracking:
            tracker.finish(result.to_dict())
    return result


def environment(device: Any = 'cpu') -> Dict[str, Any]:
    r"""What a result needs to be reproduced and compared: the versions of
    pyg_fewshot, torch, PyG and NumPy, the git commit of the package when
    it runs from a checkout (with ``+dirty`` for uncommitted changes), the
    thread count and the device."""
    import numpy
    import torch_geometric
    return dict(version=__version__, torch_version=torch.__version__,
                pyg_version=torch_geometric.__version__,
                numpy_version=numpy.__version__, git_commit=_git_commit(),
                threads=torch.get_num_threads(), device=str(device))


def _git_commit() -> Optional[str]:
    import subprocess
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(['git', '-C', here, 'rev-parse', 'HEAD'],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:  # an installed copy, not a checkout
            return None
        dirty = subprocess.run(['git', '-C', here, 'status', '--porcelain',
                                '--untracked-files=no', '--', here],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def load_run(checkpoint: str, dataset: Optional[str] = None,
             device: str = 'cpu'
             ) -> Tuple[FewShotModel, HeteroData, RunConfig]:
    r"""Rebuilds the model of a saved run from its best checkpoint (or the
    checkpoint file ``checkpoint``) on the data it was trained on.

    Args:
        checkpoint (str): Run folder (its ``best.pt``) or checkpoint file.
        dataset (str, optional): Where to read the dataset from, if not
            where the run read it (*e.g.* another copy); it must be the
            same KG (checked by its fingerprint).
        device (str, optional): Device to load onto. (default: ``'cpu'``)

    Returns:
        ``(model, data, config)``, ``config`` the run's configuration as it
        was trained (its :meth:`~RunConfig.config_hash` is that of the
        run's ``results.json``, whatever ``dataset`` says).
    """
    path = checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, 'best.pt')
    state = load_checkpoint(path)
    stored = (state.get('metadata') or {}).get('run_config')
    if stored is None:
        raise CheckpointError(
            f"Checkpoint '{path}' records no run configuration (written by "
            f"a version before {__version__}'s configuration files); "
            f"retrain it with this version")
    config = RunConfig.from_dict(stored, where=path)
    # Where the data is read from and how the model is built here change
    # no setting of the run: the returned configuration stays the run's.
    where = config
    if dataset is not None:
        where = dataclasses.replace(config, data=dataclasses.replace(
            config.data, dataset=dataset))
    # The vectors come from the checkpoint, not from pretraining again.
    _, data = _load(where, pretrain=False)
    # Another KG (even the same one with renumbered entities) would load
    # and score, just meaninglessly: refuse it.
    check_data(state, data_fingerprint(data), path)
    model = build_model(_without_pretrained(config.model), data)
    model.load_state_dict(state['model_state'])
    return model.to(device), data, config


def _without_pretrained(model_config: Any) -> Any:
    # A rebuilt model takes every weight from the checkpoint: no pretrained
    # vectors need to be read (or computed) for it.
    if hasattr(model_config, 'backbone'):
        return dataclasses.replace(
            model_config,
            backbone=dataclasses.replace(model_config.backbone,
                                         pretrained=False))
    return dataclasses.replace(model_config, pretrained=False)
