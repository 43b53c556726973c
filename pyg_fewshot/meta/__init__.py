r"""The bi-level meta-learning engine shared by every model."""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import LearnerConfig, TrainerConfig
from .learner import MetaLearner, margin_loss
from ..optim import LazySparseAdam
from .trainer import MetaTrainer

__all__ = ['MetaLearner', 'MetaTrainer', 'margin_loss', 'save_checkpoint',
           'load_checkpoint', 'LazySparseAdam', 'LearnerConfig',
           'TrainerConfig']
