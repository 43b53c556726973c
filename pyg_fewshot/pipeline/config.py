r"""The configuration of a whole run, composed of the configurations of its
parts, with its files (YAML or JSON), overrides and hash.

A run file names every setting once, in the sections of the parts that
use them (the way PyKEEN's pipeline configuration files do)::

    data:
      dataset: umls-one
      pretrain: true
    episodes:
      shots: 1
    model:
      name: moemeta
      embedding_dim: 100
      aggregator_kwargs: {mix: convex}
    learner:
      inner_lr: 0.05
    trainer:
      lr: 1.0e-3
      max_steps: 20000
    seed: 0

Omitted settings take their defaults; an unknown key or a value of the
wrong type is refused with one line naming the key and the file.
"""
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, Tuple

from .. import _config
from ..data.config import DataConfig, EpisodeConfig
from ..meta.config import LearnerConfig, TrainerConfig
from ..models.config import MetaRConfig, ModelConfig


#: Tie policies of the evaluator (see pyg_fewshot.evaluation.ranking).
TIES_POLICIES = ('mean', 'optimistic', 'pessimistic', 'expected')


@dataclass
class RunConfig:
    r"""Every setting of a run: the data, its episodes, the model, the
    learner and the trainer, and the run-wide values.

    Args:
        data (DataConfig): The dataset and its features.
            (default: :class:`~pyg_fewshot.data.DataConfig`)
        episodes (EpisodeConfig): Shots, queries and meta-batch size.
            (default: :class:`~pyg_fewshot.data.EpisodeConfig`)
        model (MetaRConfig, MoEMetaConfig or FusionAdapterConfig): The
            model, chosen by the ``name`` entry of its section.
            (default: :class:`~pyg_fewshot.models.MetaRConfig`)
        learner (LearnerConfig): Inner loop and outer objective.
            (default: :class:`~pyg_fewshot.meta.LearnerConfig`)
        trainer (TrainerConfig): Optimisation and early stopping.
            (default: :class:`~pyg_fewshot.meta.TrainerConfig`)
        seed (int): Seed of the initialisation, sampling and evaluation.
            (default: :obj:`0`)
        ties (str): Rank of the true tail among equal scores
            (``'mean'``, ``'optimistic'``, ``'pessimistic'``,
            ``'expected'``). (default: :obj:`'mean'`)
        device (str): Device to run on. (default: :obj:`'cpu'`)
        nproc (int): Data-parallel processes; the meta-batch is split
            between them. (default: :obj:`1`)
    """
    data: DataConfig = field(default_factory=DataConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    model: ModelConfig = field(default_factory=MetaRConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    ties: str = 'mean'
    device: str = 'cpu'
    nproc: int = 1

    def __post_init__(self) -> None:
        # Refused at once, not at the first validation eval_every steps in.
        if self.ties not in TIES_POLICIES:
            raise ValueError(f"RunConfig: 'ties' must be one of "
                             f"{', '.join(TIES_POLICIES)} (got {self.ties!r})")
        if self.device not in ('cpu', 'cuda'):
            raise ValueError(f"RunConfig: 'device' must be 'cpu' or 'cuda' "
                             f'(got {self.device!r})')
        # The dev MRR is every history entry's score already; ranking dev
        # a second time would only repeat that work.
        unknown = [s for s in self.trainer.monitor if s != 'test']
        if unknown:
            raise ValueError(f"RunConfig: 'trainer.monitor' may list only "
                             f"'test' (the dev MRR is the history's score "
                             f"already; got {unknown[0]!r})")
        if not (isinstance(self.nproc, int) and self.nproc >= 1):
            raise ValueError(f"RunConfig: 'nproc' must be a positive integer "
                             f'(got {self.nproc!r})')

    #: Settings a run may change and still resume (see :meth:`resume_key`):
    #: raising ``max_steps`` extends a run; the device and the data cache
    #: folder change where it runs, not what it computes (the data
    #: fingerprint guards the data itself); the monitored splits change
    #: what is recorded, not what is trained.
    RESUMABLE: ClassVar[Tuple[str, ...]] = ('trainer.max_steps', 'device',
                                            'data.root', 'trainer.monitor')

    def to_dict(self) -> Dict[str, Any]:
        r"""Nested plain values, in the layout of a run file."""
        return _config.to_dict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = '') -> 'RunConfig':
        r"""The configuration of the plain values ``d``; missing settings
        take their defaults.

        Args:
            d (dict): Nested plain values, as :meth:`to_dict` writes them.
            where (str, optional): Where ``d`` came from (*e.g.* a file
                name), named by the error messages. (default: :obj:`''`)

        Raises:
            ValueError: One line naming the dotted key of an unknown
                setting or of a value of the wrong type, and ``where``.
        """
        return _config.from_dict(cls, d, where)

    def save(self, path: str) -> None:
        r"""Writes the configuration to ``path`` (YAML for ``.yaml`` /
        ``.yml``, JSON for ``.json``), atomically."""
        _config.save_file(self.to_dict(), path)

    @classmethod
    def load(cls, path: str) -> 'RunConfig':
        r"""Reads the configuration written to ``path`` (YAML or JSON, by
        suffix); errors name the file."""
        path = os.fspath(path)
        return cls.from_dict(_config.load_file(path), where=f"'{path}'")

    def override(self, items: Iterable[str],
                 where: str = 'the overrides') -> 'RunConfig':
        r"""A new configuration with ``items`` set, each
        ``'dotted.key=value'`` (*e.g.* ``'trainer.lr=0.01'``,
        ``'model.aggregator_kwargs.mix=convex'``, ``'model.name=moemeta'``),
        the value read as YAML and checked against the setting's type."""
        return self.from_dict(
            _config.apply_overrides(self.to_dict(), items), where)

    def config_hash(self) -> str:
        r"""The first 12 hex digits of the SHA-256 of :meth:`to_dict` as
        canonical JSON: equal configurations, equal hash."""
        return _config.config_hash(self.to_dict())

    def resume_key(self) -> Dict[str, Any]:
        r"""What a run must match to resume from a checkpoint, as plain
        values on dotted keys (``{'trainer.lr': 0.001, ...}``, so a
        mismatch names the setting): every setting but those in
        :attr:`RESUMABLE`. Pass it as the ``run_config`` of
        :class:`~pyg_fewshot.meta.MetaTrainer`."""
        return {k: v for k, v in _config.flatten(self).items()
                if k not in self.RESUMABLE}
