r"""Background relations as extra meta-training tasks (the "In-Train"
setting of MetaR, and with pretrained vectors the hybrid of GANA and
NP-FKGC).

:class:`BackgroundTasks` appends every background relation with enough
triples and candidates to a :func:`~pyg_fewshot.data.build_fewshot_data`
graph as a *train* task relation, following MetaR's ``prepare.py`` and its
sampler:

* **Tasks.** Background relation ``r`` (forward edges only: inverse
  relations exist only inside the neighbour CSR) becomes a train task named
  ``data.relation_names[r]`` whose triples are its background edges in input
  order, unless it has at most ``min_triples`` triples or at most
  ``min_candidates`` candidates, or a task relation of that name already
  exists.
* **Candidates, typed rule** (names of the form ``concept:<type>:<name>``,
  *e.g.* NELL): every entity whose type is the type of one of ``r``'s tails.
  The type is the middle field of a name with exactly three ``:``-separated
  fields; every other name belongs to one type ``'num'``.
* **Candidates, observed rule** (otherwise): the distinct tails of ``r``.
  When that leaves a single tail ``t``, the candidates of the first other
  relation that has a triple with tail ``t`` and another candidate are
  added (train task relations in split order first, then background
  relations by id, their observed tails).
* **Filter.** Every triple of an added task is a known true triple
  (``true_keys``), so negatives never hit a background fact.

Dev and test relations keep their ids, triples, candidates and filter keys:
the new relations get the ids ``T, ..., T + B - 1`` after the test
relations, so ``train_rel`` is no longer contiguous.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from .hetero import ENTITY, triple_key

#: Name of the type of every entity name that is not ``concept:<type>:<x>``
#: (MetaR's ``prepare.py``).
UNTYPED = 'num'

RULES = ('auto', 'typed', 'observed')


def entity_names(data: HeteroData) -> Optional[List[str]]:
    r"""``data['entity'].names``, also when still packed as the UTF-8 blob of
    :func:`~pyg_fewshot.data.dataset.save_hetero`; :obj:`None` if absent."""
    store = data[ENTITY]
    if 'names' in store:
        return list(store.names)
    if 'names_utf8' in store:
        return bytes(store.names_utf8.numpy()).decode('utf-8').split('\n')
    return None


def entity_types(names: Sequence[str]) -> Tuple[Tensor, List[str]]:
    r"""The type of every entity under MetaR's rule: the middle field of a
    name with exactly three ``:``-separated fields, else ``'num'``.

    Returns:
        The type id of each entity, ``[N]``, and the type names by id (in
        order of first appearance).
    """
    table: dict = {}
    ids = []
    for name in names:
        fields = name.split(':')
        key = fields[1] if len(fields) == 3 else UNTYPED
        ids.append(table.setdefault(key, len(table)))
    return torch.tensor(ids, dtype=torch.long), list(table)


def has_typed_names(names: Optional[Sequence[str]]) -> bool:
    r"""Whether most entity names (more than half) carry a type
    (``concept:<type>:<name>``)."""
    if not names:
        return False
    typed = sum(len(n.split(':')) == 3 for n in names)
    return 2 * typed > len(names)


def _concat_ranges(start: Tensor, size: Tensor) -> Tensor:
    r"""``cat([arange(s, s + n) for s, n in zip(start, size)])``,
    vectorised."""
    total = int(size.sum())
    first = torch.cumsum(size, 0) - size  # output offset of each range
    return (torch.repeat_interleave(start - first, size) +
            torch.arange(total, dtype=torch.long))


def _csr_from_keys(keys: Tensor, num_rows: int,
                   num_cols: int) -> Tuple[Tensor, Tensor]:
    r"""CSR (``ptr`` ``[num_rows + 1]``, ``col``) of sorted unique
    ``row * num_cols + col`` keys."""
    counts = torch.bincount(keys // num_cols, minlength=num_rows)
    ptr = torch.zeros(num_rows + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr, keys % num_cols


def typed_candidates(rel: Tensor, tail: Tensor, types: Tensor,
                     num_relations: int) -> Tuple[Tensor, Tensor]:
    r"""Candidates of each relation under the typed rule: every entity of a
    type that one of its tails has.

    Args:
        rel (torch.Tensor): Relation id of each triple, ``[E]``.
        tail (torch.Tensor): Tail id of each triple, ``[E]``.
        types (torch.Tensor): Type id of each entity, ``[N]``.
        num_relations (int): Number of relations ``R``.

    Returns:
        CSR ``ptr`` ``[R + 1]`` and ``idx`` ``[C]``, entity ids ascending
        within a relation.
    """
    N = types.numel()
    T = int(types.max()) + 1 if N else 0
    # Entities grouped by type (ascending ids within a type).
    by_type = torch.sort(types, stable=True).indices
    type_ptr = torch.zeros(T + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(types, minlength=T), 0, out=type_ptr[1:])
    # The distinct (relation, tail type) pairs; types are disjoint, so a
    # relation's candidates are the concatenation of its types' entities.
    pair = torch.unique(rel.long() * T + types[tail])
    prel, ptype = pair // T, pair % T
    size = type_ptr[ptype + 1] - type_ptr[ptype]
    ent = by_type[_concat_ranges(type_ptr[ptype], size)]
    keys = torch.sort(torch.repeat_interleave(prel, size) * N + ent).values
    return _csr_from_keys(keys, num_relations, N)


def observed_candidates(rel: Tensor, tail: Tensor, num_relations: int,
                        num_entities: int) -> Tuple[Tensor, Tensor]:
    r"""Candidates of each relation under the observed rule, before
    widening: its distinct tails (CSR ``ptr`` ``[R + 1]``, ``idx`` ``[C]``,
    ascending within a relation)."""
    keys = torch.unique(rel.long() * num_entities + tail.long())
    return _csr_from_keys(keys, num_relations, num_entities)


def widen_single_candidates(data: HeteroData, ptr: Tensor,
                            idx: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Widens the observed candidates of background relations that have a
    single tail ``t`` by the candidates of the first *other* relation that
    has a triple with tail ``t`` and a candidate besides ``t``: the train
    task relations of ``data`` in split order (their ``cand_idx``), then
    the background relations by id (their observed tails ``ptr``/``idx``).

    MetaR's ``prepare.py`` takes the first relation with tail ``t`` in its
    dict order, which can be the relation itself or another single-tail
    one, and then widens nothing; those are passed over here.

    Returns:
        The widened CSR ``ptr`` ``[R + 1]`` and ``idx``.
    """
    sizes = ptr[1:] - ptr[:-1]
    single = (sizes == 1).nonzero().view(-1)
    if single.numel() == 0:
        return ptr, idx
    single_tail = idx[ptr[single]]

    # Only triples that end in one of the single tails matter: restrict to
    # them once, then loop over the (few) single-tail relations.
    train = data.train_rel
    tptr = data.task_ptr
    tsize = tptr[train + 1] - tptr[train]
    tpos = _concat_ranges(tptr[train], tsize)
    t_order = torch.repeat_interleave(torch.arange(train.numel()), tsize)
    t_tail = data.task_triples[tpos, 1]
    keep = torch.isin(t_tail, single_tail)
    t_order, t_tail = t_order[keep], t_tail[keep]
    bg_rel, bg_tail = data.bg_edge_type, data.bg_edge_index[1]
    keep = torch.isin(bg_tail, single_tail)
    bg_rel, bg_tail = bg_rel[keep], bg_tail[keep]

    cand_ptr, cand_idx = data.cand_ptr, data.cand_idx
    extra: List[Tensor] = [torch.empty(0, dtype=torch.long)] * sizes.numel()
    for r, t in zip(single.tolist(), single_tail.tolist()):
        sources = [cand_idx[cand_ptr[int(train[i])]:cand_ptr[int(train[i]) +
                                                             1]]
                   for i in torch.unique(t_order[t_tail == t]).tolist()]
        sources += [idx[ptr[s]:ptr[s + 1]]
                    for s in torch.unique(bg_rel[bg_tail == t]).tolist()
                    if s != r]
        for cand in sources:
            if bool((cand != t).any()):
                extra[r] = cand
                break
    new_sizes = sizes.clone()
    parts = []
    for r in range(sizes.numel()):
        own = idx[ptr[r]:ptr[r + 1]]
        if extra[r].numel():
            own = torch.unique(torch.cat([own, extra[r]]))
            new_sizes[r] = own.numel()
        parts.append(own)
    new_ptr = torch.zeros_like(ptr)
    torch.cumsum(new_sizes, 0, out=new_ptr[1:])
    return new_ptr, torch.cat(parts)


def append_train_tasks(data: HeteroData, names: Sequence[str],
                       triples: Tensor, sizes: Tensor, cand_idx: Tensor,
                       cand_sizes: Tensor) -> HeteroData:
    r"""Appends ``B`` train task relations after the existing ones (in
    place), extending ``true_keys`` by their triples.

    Args:
        data (HeteroData): Graph from
            :func:`~pyg_fewshot.data.build_fewshot_data`.
        names (Sequence[str]): Names of the new relations (``B``).
        triples (torch.Tensor): Their (head, tail) triples, ``[M_B, 2]``,
            grouped by relation.
        sizes (torch.Tensor): Triples per new relation, ``[B]``.
        cand_idx (torch.Tensor): Their candidates, ``[C_B]``, grouped by
            relation.
        cand_sizes (torch.Tensor): Candidates per new relation, ``[B]``.
    """
    N = int(data[ENTITY].num_nodes)
    T = len(data.task_relation_names)
    B = len(names)
    new = torch.arange(T, T + B)
    data.task_relation_names = list(data.task_relation_names) + list(names)
    data.task_ptr = torch.cat([data.task_ptr,
                               data.task_ptr[-1] + torch.cumsum(sizes, 0)])
    data.task_triples = torch.cat([data.task_triples, triples])
    data.cand_ptr = torch.cat([data.cand_ptr,
                               data.cand_ptr[-1] + torch.cumsum(cand_sizes,
                                                                0)])
    data.cand_idx = torch.cat([data.cand_idx, cand_idx])
    data.train_rel = torch.cat([data.train_rel, new])
    keys = torch.unique(triple_key(torch.repeat_interleave(new, sizes),
                                   triples[:, 0], triples[:, 1], N))
    # The new relation ids exceed every old one, so every new key exceeds
    # every old key and the concatenation stays sorted.
    data.true_keys = torch.cat([data.true_keys, keys])
    return data


class BackgroundTasks(BaseTransform):
    r"""Adds every background relation with more than :obj:`min_triples`
    triples and more than :obj:`min_candidates` candidates as an extra
    *train* task relation (MetaR's "In-Train" setting; with pretrained
    entity vectors, the hybrid of GANA and NP-FKGC). The rules are in the
    docstring of :mod:`pyg_fewshot.data.background`.

    The returned graph (a shallow copy) has the new relations at task ids
    ``T, ..., T + B - 1`` (named like the background relations, listed in
    ``train_rel`` and in ``bg_task_rel`` ``[B]``), their candidates appended
    to ``cand_ptr``/``cand_idx`` and their triples to ``true_keys``; dev and
    test are unchanged, so a model trained on it is evaluated on the
    original graph. Applying it twice adds nothing the second time.

    .. code-block:: python

        from pyg_fewshot.data import BackgroundTasks, load_dataset

        data = BackgroundTasks()(load_dataset('/data/nell-one')[0])
        # or: load_dataset(path, transform=BackgroundTasks())

    Args:
        min_triples (int, optional): Skip relations with at most this many
            triples. (default: :obj:`10`)
        min_candidates (int, optional): Skip relations with at most this
            many candidates. (default: :obj:`10`)
        candidates (str, optional): ``'typed'``, ``'observed'`` or
            ``'auto'`` (typed when most entity names are
            ``concept:<type>:<name>``). (default: :obj:`'auto'`)
    """
    def __init__(self, min_triples: int = 10, min_candidates: int = 10,
                 candidates: str = 'auto') -> None:
        if candidates not in RULES:
            raise ValueError(f"Unknown candidate rule '{candidates}': "
                             f"expected one of {RULES}")
        self.min_triples = int(min_triples)
        self.min_candidates = int(min_candidates)
        self.candidates = candidates

    def rule(self, data: HeteroData) -> str:
        r"""The candidate rule used on ``data`` (``'typed'`` or
        ``'observed'``)."""
        if self.candidates != 'auto':
            return self.candidates
        return 'typed' if has_typed_names(entity_names(data)) else 'observed'

    def background_candidates(self, data: HeteroData
                              ) -> Tuple[Tensor, Tensor]:
        r"""Candidate CSR (``ptr`` ``[R + 1]``, ``idx``) of every background
        relation under :meth:`rule`."""
        N = int(data[ENTITY].num_nodes)
        R = len(data.relation_names)
        rel, tail = data.bg_edge_type, data.bg_edge_index[1]
        if self.rule(data) == 'typed':
            names = entity_names(data)
            if names is None:
                raise ValueError("The typed candidate rule needs "
                                 "data['entity'].names")
            types, _ = entity_types(names)
            return typed_candidates(rel, tail, types, R)
        ptr, idx = observed_candidates(rel, tail, R, N)
        return widen_single_candidates(data, ptr, idx)

    def forward(self, data: HeteroData) -> HeteroData:
        R = len(data.relation_names)
        rel = data.bg_edge_type
        counts = torch.bincount(rel, minlength=R)
        cand_ptr, cand_idx = self.background_candidates(data)
        cand_sizes = cand_ptr[1:] - cand_ptr[:-1]
        # A relation that is already a task (or was added before) is not
        # added twice: names identify task relations.
        taken = set(data.task_relation_names)
        fresh = torch.tensor([n not in taken for n in data.relation_names],
                             dtype=torch.bool)
        keep = ((counts > self.min_triples) &
                (cand_sizes > self.min_candidates) & fresh)
        chosen = keep.nonzero().view(-1)
        if chosen.numel() == 0:
            if 'bg_task_rel' not in data:
                data.bg_task_rel = torch.empty(0, dtype=torch.long)
            return data

        # Triples of the chosen relations, grouped by relation, each group
        # in input order (stable sort).
        perm = torch.sort(rel, stable=True).indices
        rel_ptr = torch.zeros(R + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=rel_ptr[1:])
        pos = perm[_concat_ranges(rel_ptr[chosen], counts[chosen])]
        triples = data.bg_edge_index[:, pos].t().contiguous()
        cands = cand_idx[_concat_ranges(cand_ptr[chosen],
                                        cand_sizes[chosen])]

        T = len(data.task_relation_names)
        append_train_tasks(data, [data.relation_names[r] for r in
                                  chosen.tolist()], triples, counts[chosen],
                           cands, cand_sizes[chosen])
        new = torch.arange(T, T + chosen.numel())
        old = data.bg_task_rel if 'bg_task_rel' in data else new[:0]
        data.bg_task_rel = torch.cat([old, new])
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(min_triples={self.min_triples}, '
                f'min_candidates={self.min_candidates}, '
                f"candidates='{self.candidates}')")
