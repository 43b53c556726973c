r""":mod:`networkx` interop: build a few-shot KG from a
:class:`networkx.MultiDiGraph` whose edges carry a relation attribute, and
export the background graph back.

:mod:`networkx` is imported inside the functions only, so importing
:mod:`pyg_fewshot.data` does not import it.
"""
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Hashable,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch_geometric.data import HeteroData

from .hetero import ENTITY, SPLITS, build_fewshot_data
from .io import FewShotDataError

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx

TaskSpec = Union[Mapping[str, Sequence[str]], Callable[[str], Optional[str]]]
CandidateSpec = Union[str, Mapping[str, Iterable[Hashable]],
                      Callable[[str], Iterable[Hashable]]]


def _split_of(task_relations: TaskSpec,
              relations: Sequence[str]) -> Dict[str, str]:
    r"""``{task relation: split}`` from a mapping or a callable."""
    out: Dict[str, str] = {}
    if callable(task_relations):
        for rel in relations:
            split = task_relations(rel)
            if split is None:
                continue
            if split not in SPLITS:
                raise FewShotDataError(
                    f"task_relations('{rel}') returned '{split}', expected "
                    f"one of {SPLITS} or None")
            out[rel] = split
        return out
    unknown = set(task_relations) - set(SPLITS)
    if unknown:
        raise FewShotDataError(f"task_relations has unknown split(s) "
                               f"{sorted(unknown)}; expected {SPLITS}")
    present = set(relations)
    for split in SPLITS:
        for rel in task_relations.get(split, ()):
            if rel in out:
                raise FewShotDataError(
                    f"Task relation '{rel}' is in both the {out[rel]} and the "
                    f"{split} split")
            if rel not in present:
                raise FewShotDataError(
                    f"Task relation '{rel}' ({split}) has no edge in the "
                    f"graph")
            out[rel] = split
    return out


def from_networkx(
    G: 'nx.MultiDiGraph',
    task_relations: TaskSpec,
    relation_key: str = 'relation',
    candidates: CandidateSpec = 'all',
    min_triples: int = 1,
    emb_key: Optional[str] = None,
    order_key: Optional[str] = 'position',
) -> HeteroData:
    r"""Builds a few-shot KG from a :class:`networkx.MultiDiGraph` (a
    :class:`~networkx.DiGraph` works too) whose edges carry a relation name
    under :obj:`relation_key`.

    Edges of task relations become the tasks (triples in edge iteration
    order, exact duplicates dropped), all other edges the background graph
    (duplicates dropped too). Task relations are ordered as listed in the
    mapping (by first appearance for a callable). Entity ids follow
    ``G.nodes`` order and
    ``data['entity'].names`` holds ``str(node)``; background relation ids
    follow first appearance in ``G.edges``.

    Args:
        G (networkx.MultiDiGraph): The graph.
        task_relations (dict or callable): ``{split: [relation, ...]}`` for
            splits among ``('train', 'dev', 'test')``, or a function mapping
            a relation name to its split or :obj:`None` (background).
        relation_key (str): Edge attribute holding the relation name.
            (default: ``'relation'``)
        candidates (str, dict or callable): Candidate tails of each task
            relation: ``'all'`` (every entity, type-free; the default),
            ``'tails'`` (every tail of that relation in the graph),
            a ``{relation: nodes}`` mapping or a function
            ``relation -> nodes``. True tails missing from a given set are
            an error.
        min_triples (int): Minimum triples per task relation. (default: 1)
        emb_key (str, optional): Node attribute holding a vector per node,
            stored as ``data['entity'].emb``. (default: :obj:`None`)
        order_key (str, optional): Edge attribute giving the triple order.
            (default: ``'position'``)
    """
    import networkx as nx  # noqa: F401  (lazy: heavy import)

    if not G.is_directed():
        raise FewShotDataError('from_networkx needs a directed graph '
                               '(MultiDiGraph or DiGraph)')
    nodes = list(G.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    N = len(nodes)
    if N == 0:
        raise FewShotDataError('The graph has no nodes')

    heads: List[int] = []
    tails: List[int] = []
    rels: List[str] = []
    positions: List[Any] = []
    for u, v, attr in G.edges(data=True):
        rel = attr.get(relation_key)
        if rel is None:
            raise FewShotDataError(
                f"Edge ({u!r}, {v!r}) has no '{relation_key}' attribute")
        heads.append(index[u])
        tails.append(index[v])
        rels.append(str(rel))
        if order_key is not None:
            positions.append(attr.get(order_key))
    if order_key is not None and positions and all(
            p is not None for p in positions):
        order = sorted(range(len(rels)), key=positions.__getitem__)
        heads = [heads[i] for i in order]
        tails = [tails[i] for i in order]
        rels = [rels[i] for i in order]
    relations = list(dict.fromkeys(rels))
    split_of = _split_of(task_relations, relations)
    if not split_of:
        raise FewShotDataError('No task relation: every edge would be '
                               'background')

    bg_names = [r for r in relations if r not in split_of]
    known = [str(r) for r in G.graph.get('relation_names', ())]
    if known and set(bg_names) <= set(known):
        bg_names = [r for r in known if r not in split_of]
    bg_id = {r: i for i, r in enumerate(bg_names)}
    bg_rows: List[Tuple[int, int, int]] = []
    task_rows: Dict[str, List[Tuple[int, int]]] = {r: [] for r in split_of}
    seen_bg = set()
    seen_task = set()
    for h, t, r in zip(heads, tails, rels):
        if r in split_of:
            if (r, h, t) not in seen_task:
                seen_task.add((r, h, t))
                task_rows[r].append((h, t))
        elif (h, bg_id[r], t) not in seen_bg:
            seen_bg.add((h, bg_id[r], t))
            bg_rows.append((h, bg_id[r], t))

    tasks: Dict[str, List[Tuple[str, torch.Tensor]]] = {s: [] for s in SPLITS}
    for rel, split in split_of.items():  # mapping order, else first seen
        rows = task_rows[rel]
        if len(rows) < min_triples:
            raise FewShotDataError(
                f"Task relation '{rel}' has {len(rows)} triple(s), fewer "
                f"than the {min_triples} required")
        tasks[split].append(
            (rel, torch.tensor(rows, dtype=torch.long).view(-1, 2)))

    cands: Dict[str, torch.Tensor] = {}
    every = torch.arange(N)
    for split in SPLITS:
        for rel, trip in tasks[split]:
            true_tails = torch.unique(trip[:, 1])
            if isinstance(candidates, str):
                if candidates == 'all':
                    cands[rel] = every
                    continue
                if candidates == 'tails':
                    cands[rel] = true_tails
                    continue
                raise ValueError(f"Unknown candidates '{candidates}': use "
                                 f"'all', 'tails', a mapping or a callable")
            given = (candidates(rel) if callable(candidates) else
                     candidates.get(rel))
            if given is None:
                raise FewShotDataError(f"No candidates given for task "
                                       f"relation '{rel}'")
            ids = []
            for node in given:
                if node not in index:
                    raise FewShotDataError(
                        f"Candidate {node!r} of relation '{rel}' is not a "
                        f"node of the graph")
                ids.append(index[node])
            if not ids:
                raise FewShotDataError(
                    f"Empty candidate set for task relation '{rel}'")
            c = torch.tensor(list(dict.fromkeys(ids)), dtype=torch.long)
            missing = true_tails[~torch.isin(true_tails, c)]
            if missing.numel():
                t = int(missing[0])
                h = int(trip[(trip[:, 1] == t).nonzero()[0, 0], 0])
                raise FewShotDataError(
                    f"The true tail {nodes[t]!r} of task triple "
                    f"({nodes[h]!r}, {rel}, {nodes[t]!r}) is not among the "
                    f"candidates of relation '{rel}'")
            cands[rel] = c

    emb = None
    if emb_key is not None:
        rows_emb = []
        for node in nodes:
            vec = G.nodes[node].get(emb_key)
            if vec is None:
                raise FewShotDataError(
                    f"Node {node!r} has no '{emb_key}' attribute")
            rows_emb.append(torch.as_tensor(vec, dtype=torch.float))
        emb = torch.stack(rows_emb)

    bg = (torch.tensor(bg_rows, dtype=torch.long)
          if bg_rows else torch.empty(0, 3, dtype=torch.long))
    return build_fewshot_data(N, bg, bg_names, tasks, cands,
                              entity_names=[str(n) for n in nodes],
                              entity_emb=emb)


def to_networkx(
    data: HeteroData,
    include_tasks: bool = False,
    relation_key: str = 'relation',
    use_names: bool = True,
) -> 'nx.MultiDiGraph':
    r"""Exports a few-shot KG as a :class:`networkx.MultiDiGraph`.

    Nodes are the entity names (ids if there are none, or with
    ``use_names=False``), added in id order so that :func:`from_networkx`
    gives the same ids back; each node has an ``'id'`` attribute and
    ``G.graph['relation_names']`` lists the background relations by id.
    Edges are the background triples with ``{relation_key: name,
    'position': i}`` (``i`` the input order); with :obj:`include_tasks`, the
    task triples follow (file order, positions continuing) with an extra
    ``'split'`` attribute.
    """
    import networkx as nx

    N = int(data[ENTITY].num_nodes)
    names = getattr(data[ENTITY], 'names', None) if use_names else None
    labels: Sequence[Any] = list(names) if names is not None else range(N)
    if len(set(labels)) != N:
        raise FewShotDataError('Entity names are not unique; pass '
                               'use_names=False')
    rel_names = list(data.relation_names)
    G = nx.MultiDiGraph(relation_names=rel_names)
    G.add_nodes_from((labels[i], {'id': i}) for i in range(N))
    src = data.bg_edge_index[0].tolist()
    dst = data.bg_edge_index[1].tolist()
    typ = data.bg_edge_type.tolist()
    G.add_edges_from((labels[h], labels[t], {
        relation_key: rel_names[r],
        'position': i
    }) for i, (h, t, r) in enumerate(zip(src, dst, typ)))
    if include_tasks:
        task_names = list(data.task_relation_names)
        ptr = data.task_ptr.tolist()
        trip = data.task_triples.tolist()
        pos = len(src)
        for split in SPLITS:
            for rel in data[f'{split}_rel'].tolist():
                rows = trip[ptr[rel]:ptr[rel + 1]]
                G.add_edges_from((labels[h], labels[t], {
                    relation_key: task_names[rel],
                    'split': split,
                    'position': pos + i
                }) for i, (h, t) in enumerate(rows))
                pos += len(rows)
    return G
