r"""Data layer: the few-shot KG schema, readers and generators.

Import-light: :mod:`networkx` is imported only when
:func:`from_networkx` / :func:`to_networkx` are called.
"""
from .hetero import (
    SPLITS,
    build_fewshot_data,
    candidates,
    is_true_triple,
    split_relations,
    summary,
    task_triples,
    triple_key,
)
from .io import (
    FewShotDataError,
    MissingRawFilesError,
    check_shots,
    read_fewshot_folder,
    validate,
)
from .dataset import FewShotKGDataset, load_dataset
from .writer import write_fewshot_folder
from .sampler import (Episode, EpisodeSampler, sample_negative_tails,
                      sample_without_replacement)
from .background import BackgroundTasks
from .synthetic import SyntheticFewShotDataset, make_synthetic
from .networkx import from_networkx, to_networkx
from .pretrain import load_or_pretrain, pretrain_transe
from .stats import graph_statistics, relation_categories
from .modalities import (ModalityError, attach_modalities,
                         mask_random_entities, modality_features,
                         modality_names, remove_modality, set_modality)
from .text import encode_text, entity_text, text_features, text_model_path
from .transforms import ScaleEmbeddings
from .config import DataConfig, EpisodeConfig, load_data

__all__ = [
    # modalities.py, text.py
    'ModalityError',
    'attach_modalities',
    'mask_random_entities',
    'modality_features',
    'modality_names',
    'remove_modality',
    'set_modality',
    'encode_text',
    'entity_text',
    'text_features',
    'text_model_path',
    # hetero.py (the schema)
    'SPLITS',
    'build_fewshot_data',
    'triple_key',
    'is_true_triple',
    'split_relations',
    'task_triples',
    'candidates',
    'summary',
    # io.py
    'FewShotDataError',
    'MissingRawFilesError',
    'read_fewshot_folder',
    'validate',
    'check_shots',
    'write_fewshot_folder',
    # dataset.py
    'FewShotKGDataset',
    'load_dataset',
    # sampler.py
    'EpisodeSampler',
    'Episode',
    'sample_negative_tails',
    'sample_without_replacement',
    # background.py, transforms.py
    'BackgroundTasks',
    'ScaleEmbeddings',
    # config.py
    'DataConfig',
    'EpisodeConfig',
    'load_data',
    # synthetic.py
    'make_synthetic',
    'SyntheticFewShotDataset',
    # networkx.py
    'from_networkx',
    'to_networkx',
    # pretrain.py
    'pretrain_transe',
    'load_or_pretrain',
    # stats.py
    'relation_categories',
    'graph_statistics',
]
