r"""What data a run uses (:class:`DataConfig`, :func:`load_data`) and how
its episodes are drawn (:class:`EpisodeConfig`, whose
:meth:`~pyg_fewshot.data.EpisodeConfig.check` is the one check that the data can give
them)."""
from dataclasses import dataclass, fields
from typing import Any, Optional, Sequence, Tuple, Union, get_args, get_origin

from torch_geometric.data import HeteroData

from .background import BackgroundTasks
from .dataset import FewShotKGDataset, load_dataset
from .hetero import ENTITY, SPLITS, split_relations
from .io import FewShotDataError, check_shots
from .modalities import attach_modalities
from .text import text_features
from .transforms import ScaleEmbeddings

#: What each split is needed for, in the message of an empty split.
SPLIT_USE = {
    'train': 'to meta-train on',
    'dev': 'to pick the best checkpoint on',
    'test': 'to report test metrics on',
}


def _check_types(config: Any) -> None:
    # A config read from a file may hold the string 'false' for a flag, which
    # would count as true: refuse anything but the declared type.
    name = type(config).__name__
    for f in fields(config):
        value = getattr(config, f.name)
        args = get_args(f.type)
        optional = get_origin(f.type) is Union and type(None) in args
        if value is None and optional:
            continue
        want = args[0] if optional else f.type
        # bool is an int: True must not pass for 1.
        ok = isinstance(value, want) and (want is bool
                                          or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{name}: '{f.name}' must be "
                             f"{'None or ' if optional else ''}"
                             f"{want.__name__} (got {value!r})")


@dataclass
class DataConfig:
    r"""The data of a run, as :func:`load_data` prepares it.

    Args:
        dataset (str): ``'umls-one'`` (bundled) or a folder in the standard
            few-shot layout (:func:`~pyg_fewshot.data.load_dataset`).
            (default: :obj:`'umls-one'`)
        root (str, optional): Where processed files and caches go.
            (default: :obj:`None`, see
            :func:`~pyg_fewshot.data.load_dataset`)
        pretrain (bool): Start from TransE vectors of the background graph
            (:meth:`~pyg_fewshot.data.FewShotKGDataset.pretrained_embeddings`,
            rescaled by :class:`~pyg_fewshot.data.ScaleEmbeddings`).
            (default: :obj:`False`)
        background_tasks (bool): Add the background relations as train tasks
            (:class:`~pyg_fewshot.data.BackgroundTasks`).
            (default: :obj:`False`)
        text (bool, optional): Encode the text modality of the entity names
            (:func:`~pyg_fewshot.data.text_features`); :obj:`None` leaves it
            to the caller (the :obj:`text` argument of :func:`load_data`).
            (default: :obj:`None`)
        text_model (str, optional): The sentence encoder of the text
            modality. (default: :obj:`None`, see
            :func:`~pyg_fewshot.data.text_features`)
        modality_dir (str, optional): A folder of modality matrices
            (:func:`~pyg_fewshot.data.attach_modalities`).
            (default: :obj:`None`)
    """
    dataset: str = 'umls-one'
    root: Optional[str] = None
    pretrain: bool = False
    background_tasks: bool = False
    text: Optional[bool] = None
    text_model: Optional[str] = None
    modality_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.dataset.strip():
            raise ValueError("DataConfig: 'dataset' must not be empty")


@dataclass
class EpisodeConfig:
    r"""The shape of the episodes of a run: :obj:`shots` support triples
    :math:`K`, up to :obj:`num_queries` query triples per task, and
    :obj:`batch_size` tasks per meta-batch
    (:class:`~pyg_fewshot.data.EpisodeSampler`).

    Args:
        shots (int): :math:`K`. (default: :obj:`1`)
        num_queries (int): Queries per task. (default: :obj:`3`)
        batch_size (int): Tasks per meta-batch. (default: :obj:`1024`)
    """
    shots: int = 1
    num_queries: int = 3
    batch_size: int = 1024

    def __post_init__(self) -> None:
        _check_types(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 1:
                raise ValueError(f"EpisodeConfig: '{f.name}' must be "
                                 f"positive (got {value})")

    def check(self, data: HeteroData, splits: Sequence[str] = SPLITS,
              use: Optional[str] = None) -> None:
        r"""Raises :class:`~pyg_fewshot.data.FewShotDataError` if one of
        :obj:`splits` has no task relations, or a task relation with fewer
        than :math:`K + 1` triples (:math:`K` support triples and at least
        one query; :func:`~pyg_fewshot.data.check_shots`), so that the data
        is refused before training or evaluation starts instead of during
        it.

        Args:
            data (HeteroData): A few-shot KG.
            splits (Sequence[str]): The splits to check.
                (default: :obj:`('train', 'dev', 'test')`)
            use (str, optional): What the splits are needed for, in the
                message of an empty one (*e.g.* ``'to evaluate'``).
                (default: the split's own use)
        """
        for split in splits:
            if split_relations(data, split).numel() == 0:
                raise FewShotDataError(
                    f"The {split} split has no task relations ({split}_tasks."
                    f"json is empty); at least one is needed "
                    f"{use or SPLIT_USE[split]}")
        check_shots(data, self.shots, splits)


def load_data(config: DataConfig, embedding_dim: int = 100,
              text: bool = False, progress: bool = True
              ) -> Tuple[FewShotKGDataset, HeteroData]:
    r"""Loads the data of a run: the dataset
    (:func:`~pyg_fewshot.data.load_dataset`), with
    :obj:`config.pretrain` its TransE vectors (cached) rescaled by
    :class:`~pyg_fewshot.data.ScaleEmbeddings` as ``data['entity'].emb`` and
    ``data.relation_emb``, with :obj:`config.background_tasks` the background
    relations as train tasks (:class:`~pyg_fewshot.data.BackgroundTasks`;
    dev and test unchanged), then the modalities of
    :obj:`config.modality_dir` and the text modality.

    Args:
        config (DataConfig): The data.
        embedding_dim (int): Size of the pretrained vectors.
            (default: :obj:`100`)
        text (bool): Whether to encode the text modality when
            :obj:`config.text` is :obj:`None` (*e.g.* :obj:`True` for
            :class:`~pyg_fewshot.models.FusionAdapter`).
            (default: :obj:`False`)
        progress (bool): Show the progress bar of TransE pretraining (when
            it is not cached yet). (default: :obj:`True`)

    Returns:
        ``(dataset, data)``: the :class:`~pyg_fewshot.data.FewShotKGDataset`
        (its processed folder holds the caches) and the prepared graph.
    """
    dataset = load_dataset(config.dataset, root=config.root)
    data = dataset[0]
    if config.pretrain:
        ent, rel = dataset.pretrained_embeddings(dim=embedding_dim,
                                                 progress=progress)
        data[ENTITY].emb, data.relation_emb = ent, rel
        data = ScaleEmbeddings()(data)
    if config.background_tasks:
        data = BackgroundTasks()(data)
    if config.modality_dir:
        attach_modalities(data, config.modality_dir)
    text = text if config.text is None else config.text
    if text and 'x_text' not in data[ENTITY]:
        text_features(data, dataset.processed_dir, model=config.text_model)
    return dataset, data


__all__ = ['DataConfig', 'EpisodeConfig', 'SPLIT_USE', 'load_data']
