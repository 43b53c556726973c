r"""A stable identity of a few-shot KG, to tie checkpoints to their data."""
import hashlib

import torch
from torch_geometric.data import HeteroData

from .hetero import ENTITY

# The tensors that define the KG in the id space a model is trained in.
# Names, pretrained vectors and modality features are left out: a model
# stays valid when they change, but not when an id means another entity.
FINGERPRINT_KEYS = ('bg_edge_index', 'bg_edge_type', 'task_ptr',
                    'task_triples', 'train_rel', 'dev_rel', 'test_rel',
                    'cand_ptr', 'cand_idx', 'true_keys')

_VERSION = b'pyg_fewshot.data_fingerprint.v1'


def data_fingerprint(data: HeteroData) -> str:
    r"""The SHA-256 (hex) of the tensors that define a few-shot KG built by
    :func:`~pyg_fewshot.data.build_fewshot_data`: the entity and background
    relation counts, the background edges, the task triples and splits, the
    candidate tails and the filter keys (see :data:`FINGERPRINT_KEYS`).

    Equal KGs give equal fingerprints on every machine and run (values are
    hashed as little-endian int64, whatever the stored integer dtype); any
    change, including a permutation of the entity ids, changes it.
    """
    h = hashlib.sha256(_VERSION)
    h.update(f'{int(data[ENTITY].num_nodes)},'
             f'{len(data.relation_names)};'.encode())
    for key in FINGERPRINT_KEYS:
        value = getattr(data, key)
        t = value.detach().to('cpu', torch.int64).contiguous()
        h.update(f'{key}:{tuple(t.shape)};'.encode())
        h.update(t.numpy().astype('<i8', copy=False).tobytes())
    return h.hexdigest()
