r"""The one in-memory layout every part of :mod:`pyg_fewshot` reads.

A few-shot knowledge graph is stored as a single
:class:`~torch_geometric.data.HeteroData` built by
:func:`build_fewshot_data`. Readers (the standard file layout, the synthetic
generator, :mod:`networkx` interop) all produce integer arrays and call this
builder, so the schema below is the only contract between data and models.

Node type ``'entity'``:

* ``num_nodes`` (int), ``names`` (list of str, optional),
  ``emb`` (``[N, d]`` float, optional pretrained vectors),
  ``x_<modality>`` (``[N, D_m]``) and ``mask_<modality>`` (``[N]`` bool),
  optional per-modality features.

Edge types ``('entity', <background relation name>, 'entity')``:
``edge_index`` ``[2, E_r]`` of that background relation (PyG style).

Global attributes:

* ``relation_names`` (list of str, ``R`` background relations),
  ``bg_edge_index`` ``[2, E]`` and ``bg_edge_type`` ``[E]`` (all background
  edges in input order).
* ``nbr_ptr`` ``[N + 1]``, ``nbr_ent`` ``[2E]``, ``nbr_rel`` ``[2E]``: CSR of
  the background graph with inverse edges; the inverse of relation ``r`` has
  id ``r + R``; a row keeps the input order of its edges (forward edges
  first), so "the first 50 neighbours" is deterministic.
* ``task_relation_names`` (list of str, ``T`` task relations, ordered train,
  dev, test), ``task_ptr`` ``[T + 1]`` and ``task_triples`` ``[M, 2]``
  (head, tail) of each task relation in file order.
* ``train_rel``, ``dev_rel``, ``test_rel``: task relation ids of each split.
  :class:`~pyg_fewshot.data.BackgroundTasks` appends train relations after
  the test ones (ids listed in ``bg_task_rel``), so read the splits from
  these tensors, never from id ranges.
* ``cand_ptr`` ``[T + 1]``, ``cand_idx`` ``[C]``: candidate tails of each task
  relation (CSR).
* ``true_keys`` ``[F]``: sorted unique :func:`triple_key` of every known true
  task triple (for filtered ranking and negative sampling).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

SPLITS = ('train', 'dev', 'test')
ENTITY = 'entity'


def triple_key(rel: Tensor, head: Tensor, tail: Tensor,
               num_entities: int) -> Tensor:
    r"""Encodes task triples as one int64 each, ``(rel * N + head) * N + tail``.

    Keys sort by relation, then head, then tail, so membership is a
    :func:`torch.searchsorted` away. Fits int64 up to Wiki-One sizes
    (``T * N^2 < 2^63`` for ``N`` = 4.8 M and ``T`` < 390 K).
    """
    n = num_entities
    return (rel.long() * n + head.long()) * n + tail.long()


def is_true_triple(data: HeteroData, rel: Tensor, head: Tensor,
                   tail: Tensor) -> Tensor:
    r"""Whether each ``(head, rel, tail)`` is a known true task triple.

    Shapes broadcast; returns a bool tensor of the broadcast shape.
    """
    keys = data.true_keys
    q = triple_key(rel, head, tail, data[ENTITY].num_nodes)
    if keys.numel() == 0:
        return torch.zeros_like(q, dtype=torch.bool)
    pos = torch.searchsorted(keys, q).clamp_(max=keys.numel() - 1)
    return keys.index_select(0, pos.reshape(-1)).view(q.shape) == q


def split_relations(data: HeteroData, split: str) -> Tensor:
    r"""The task relation ids of ``split`` (``'train'``, ``'dev'`` or
    ``'test'``)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split '{split}': expected one of {SPLITS}")
    return data[f'{split}_rel']


def task_triples(data: HeteroData, rel: int) -> Tensor:
    r"""The ``[n, 2]`` (head, tail) triples of task relation ``rel`` in file
    order."""
    ptr = data.task_ptr
    return data.task_triples[int(ptr[rel]):int(ptr[rel + 1])]


def candidates(data: HeteroData, rel: int) -> Tensor:
    r"""The candidate tail ids of task relation ``rel``."""
    ptr = data.cand_ptr
    return data.cand_idx[int(ptr[rel]):int(ptr[rel + 1])]


def background_degree(data: HeteroData) -> Tensor:
    r"""The ``[N]`` degree (in plus out) of every entity in the background
    graph."""
    return torch.bincount(data.bg_edge_index.reshape(-1),
                          minlength=data[ENTITY].num_nodes)


def _csr(index: Tensor, num_rows: int) -> Tuple[Tensor, Tensor]:
    """Stable sort of ``index`` and the row pointer of the sorted order."""
    perm = torch.sort(index, stable=True).indices
    counts = torch.bincount(index, minlength=num_rows)
    ptr = torch.zeros(num_rows + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr, perm


def build_fewshot_data(
    num_entities: int,
    bg_triples: Tensor,
    relation_names: Sequence[str],
    tasks: Dict[str, List[Tuple[str, Tensor]]],
    candidates: Dict[str, Tensor],
    extra_true_triples: Optional[Tensor] = None,
    entity_names: Optional[Sequence[str]] = None,
    entity_emb: Optional[Tensor] = None,
) -> HeteroData:
    r"""Builds the :class:`~torch_geometric.data.HeteroData` of a few-shot KG.

    Args:
        num_entities (int): Number of entities ``N``.
        bg_triples (torch.Tensor): Background triples ``[E, 3]`` as
            (head, relation, tail) ids, relation ids in ``[0, R)``.
        relation_names (Sequence[str]): Names of the ``R`` background
            relations.
        tasks (Dict[str, List[Tuple[str, torch.Tensor]]]): For each split in
            ``('train', 'dev', 'test')``, a list of (task relation name,
            ``[n, 2]`` (head, tail) triples in file order).
        candidates (Dict[str, torch.Tensor]): Candidate tail ids of each task
            relation name.
        extra_true_triples (torch.Tensor, optional): ``[F, 3]`` (task relation
            id, head, tail) true triples known besides the task triples
            (*e.g.* from ``e1rel_e2.json``). (default: :obj:`None`)
        entity_names (Sequence[str], optional): Entity names by id.
            (default: :obj:`None`)
        entity_emb (torch.Tensor, optional): Pretrained ``[N, d]`` entity
            vectors. (default: :obj:`None`)
    """
    N = int(num_entities)
    R = len(relation_names)
    bg = bg_triples.long().view(-1, 3)

    data = HeteroData()
    data[ENTITY].num_nodes = N
    if entity_names is not None:
        data[ENTITY].names = list(entity_names)
    if entity_emb is not None:
        if entity_emb.size(0) != N:
            raise ValueError(f"'entity_emb' has {entity_emb.size(0)} rows "
                             f"but there are {N} entities")
        data[ENTITY].emb = entity_emb.float()

    # Background graph: one edge type per relation, plus flat arrays.
    data.relation_names = list(relation_names)
    data.bg_edge_index = bg[:, [0, 2]].t().contiguous()
    data.bg_edge_type = bg[:, 1].contiguous()
    rel_ptr, rel_perm = _csr(data.bg_edge_type, R)
    # One gather, then views per relation (a per-relation fancy index is
    # slow with hundreds of relations).
    by_rel = data.bg_edge_index.index_select(1, rel_perm)
    bounds = rel_ptr.tolist()
    for r, name in enumerate(relation_names):
        data[ENTITY, name, ENTITY].edge_index = by_rel[:, bounds[r]:bounds[r +
                                                                          1]]

    # CSR with inverse edges for neighbour aggregation.
    center = torch.cat([bg[:, 0], bg[:, 2]])
    nbr = torch.cat([bg[:, 2], bg[:, 0]])
    rel = torch.cat([bg[:, 1], bg[:, 1] + R])
    data.nbr_ptr, perm = _csr(center, N)
    data.nbr_ent = nbr[perm]
    data.nbr_rel = rel[perm]

    # Task relations, globally indexed in split order.
    names: List[str] = []
    triples: List[Tensor] = []
    for split in SPLITS:
        start = len(names)
        for name, trip in tasks.get(split, []):
            names.append(name)
            triples.append(trip.long().view(-1, 2))
        data[f'{split}_rel'] = torch.arange(start, len(names))
    T = len(names)
    data.task_relation_names = names
    sizes = torch.tensor([t.size(0) for t in triples], dtype=torch.long)
    data.task_ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    data.task_triples = (torch.cat(triples) if triples else torch.empty(
        0, 2, dtype=torch.long))

    cands = [candidates[name].long().view(-1) for name in names]
    csizes = torch.tensor([c.numel() for c in cands], dtype=torch.long)
    data.cand_ptr = torch.cat([csizes.new_zeros(1), csizes.cumsum(0)])
    data.cand_idx = (torch.cat(cands)
                     if cands else torch.empty(0, dtype=torch.long))

    task_rel = torch.repeat_interleave(torch.arange(T), sizes)
    keys = triple_key(task_rel, data.task_triples[:, 0],
                      data.task_triples[:, 1], N)
    if extra_true_triples is not None and extra_true_triples.numel() > 0:
        extra = extra_true_triples.long().view(-1, 3)
        keys = torch.cat([keys, triple_key(extra[:, 0], extra[:, 1],
                                           extra[:, 2], N)])
    data.true_keys = torch.unique(keys)  # sorted
    return data


def summary(data: HeteroData) -> Dict[str, int]:
    r"""Counts of a few-shot KG: entities, background relations and triples,
    and task relations and triples per split."""
    out = {
        'num_entities': data[ENTITY].num_nodes,
        'num_background_relations': len(data.relation_names),
        'num_background_triples': data.bg_edge_index.size(1),
    }
    ptr = data.task_ptr
    for split in SPLITS:
        rels = data[f'{split}_rel']
        out[f'num_{split}_relations'] = rels.numel()
        out[f'num_{split}_triples'] = int(
            (ptr[rels + 1] - ptr[rels]).sum()) if rels.numel() else 0
    return out
