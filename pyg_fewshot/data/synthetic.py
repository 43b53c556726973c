r"""Synthetic few-shot knowledge graphs with planted relational structure.

:func:`make_synthetic` scales from a 100-entity test fixture to Wiki-One size
(4.8 M entities, 5.9 M background triples, 822 relations) in vectorised numpy:
no Python loop runs per triple, and memory stays a few arrays of the triple
count.

The planted structure
---------------------
Entities are split into ``C`` latent clusters (their "types") laid on a
line, ``0 .. C-1``; within a cluster, entities have a popularity rank. Every
relation ``j`` (background and task alike) is a *translation along the
line*: a triple ``(h, j, t)`` has ``cluster(t) = cluster(h) + shift_j``
(``0 < |shift_j| <= C / 2``; heads come from the clusters where the target
exists). This is exactly representable by TransE (a cluster at ``c * u``,
relation ``j`` at ``shift_j * u``), so a model can recover it from the
background graph (which tells which entities share a cluster and how
clusters are arranged) and from a task's support set (which tells its
shift). Within the target cluster the tail is chosen by the relation's
*category*:

* ``'N-N'``: head and tail ranks drawn independently from a truncated Zipf
  law (exponent :obj:`degree_exponent`), giving a skewed degree
  distribution;
* ``'N-1'``: the tail is the most popular entity of the target cluster;
* ``'1-N'``: the head is the most popular entity of its cluster;
* ``'1-1'``: the tail has the head's rank (a bijection between clusters).

A relation with more than ``N / 4`` triples is made ``'N-N'`` (the other
categories cannot hold that many distinct triples). A ``Binomial(n, noise)``
share of a relation's ``n`` triples has a uniformly random tail instead (the
*noise*), shuffled among the others. Background relation frequencies follow
a Zipf law. All triples of a relation are distinct.
"""
import hashlib
import json
import os.path as osp
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import HeteroData, InMemoryDataset

from .hetero import build_fewshot_data

CATEGORIES = ('1-1', '1-N', 'N-1', 'N-N')
_ONE_ONE, _ONE_N, _N_ONE, _N_N = range(4)

#: Largest candidate matrix (task relations x entities) built by default.
MAX_DENSE_CANDIDATES = 50_000_000


def _zipf_rank(rng: np.random.Generator, size: np.ndarray,
               exponent: float) -> np.ndarray:
    r"""Ranks in ``[0, size)`` with ``P(rank = k)`` roughly proportional to
    ``(k + 1) ** -exponent`` (inverse CDF of a bounded Pareto law)."""
    u = rng.random(size.shape[0])
    top = size.astype(np.float64) + 1.0
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(top))
    elif exponent == 0.0:
        x = 1.0 + u * (top - 1.0)
    else:
        a = 1.0 - exponent
        x = (1.0 + u * (top**a - 1.0))**(1.0 / a)
    rank = np.floor(x - 1.0).astype(np.int64)
    return np.minimum(np.maximum(rank, 0), size - 1)


class _Planted:
    r"""The latent structure and a vectorised triple sampler."""
    def __init__(self, rng: np.random.Generator, num_entities: int,
                 num_clusters: int, num_relations: int,
                 category_probs: Sequence[float], degree_exponent: float,
                 noise: float):
        N, C = num_entities, num_clusters
        self.rng, self.N, self.C = rng, N, C
        self.exponent, self.noise = degree_exponent, noise
        # Slot s holds entity perm[s]; slot s is in cluster s % C with
        # popularity rank s // C.
        self.perm = rng.permutation(N).astype(np.int64)
        self.size = (N - np.arange(C) + C - 1) // C
        # Shifts in [-C/2, C/2] \ {0}: at least half the clusters have a
        # target.
        half = max(1, C // 2)
        mag = rng.integers(1, half + 1, size=num_relations)
        sign = np.where(rng.random(num_relations) < 0.5, -1, 1)
        self.shift = (mag * sign if C > 1 else np.zeros(
            num_relations, dtype=np.int64)).astype(np.int64)
        p = np.asarray(category_probs, dtype=np.float64)
        self.category = rng.choice(4, size=num_relations, p=p / p.sum())

    def restrict_categories(self, rel: np.ndarray, counts: np.ndarray
                            ) -> None:
        r"""Relations with more than ``N / 4`` triples become ``'N-N'``: the
        other categories hold at most about ``N`` distinct triples."""
        big = rel[counts > self.N // 4]
        self.category[big] = _N_N

    def sample(self, rel: np.ndarray,
               noisy: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        rng, C = self.rng, self.C
        m = rel.shape[0]
        cat = self.category[rel]
        # Head clusters c with c + shift in [0, C).
        shift = self.shift[rel]
        low = np.maximum(0, -shift)
        span = C - np.abs(shift)
        ch = low + (rng.random(m) * span).astype(np.int64)
        sh = self.size[ch]
        rank_h = _zipf_rank(rng, sh, self.exponent)
        rank_h[cat == _ONE_N] = 0
        head = self.perm[ch + C * rank_h]
        if noisy:  # a uniformly random tail
            return head, rng.integers(self.N, size=m)
        ct = ch + shift
        st = self.size[ct]
        rank_t = _zipf_rank(rng, st, self.exponent)
        rank_t[cat == _N_ONE] = 0
        one = cat == _ONE_ONE
        rank_t[one] = rank_h[one] % st[one]
        tail = self.perm[ct + C * rank_t]
        return head, tail

    def cluster_of(self) -> np.ndarray:
        out = np.empty(self.N, dtype=np.int64)
        out[self.perm] = np.arange(self.N) % self.C
        return out

    def rank_of(self) -> np.ndarray:
        out = np.empty(self.N, dtype=np.int64)
        out[self.perm] = np.arange(self.N) // self.C
        return out


def _sample_distinct(planted: _Planted, counts: np.ndarray,
                     rel_offset: int, names: Sequence[str],
                     noisy: bool = False,
                     exclude: Optional[np.ndarray] = None,
                     max_rounds: int = 40) -> np.ndarray:
    r"""``counts[j]`` distinct (head, tail) pairs of relation
    ``rel_offset + j`` each, as ``[sum(counts), 3]`` (local relation, head,
    tail), none of whose keys ``(j * N + head) * N + tail`` is in the sorted
    :obj:`exclude`."""
    N = planted.N
    counts = np.asarray(counts, dtype=np.int64)
    num = counts.shape[0]
    kept = np.empty((0, 3), dtype=np.int64)
    need = counts.copy()
    stalled = 0
    for it in range(max_rounds):
        if need.sum() == 0:
            break
        # Over-sample more each round, at most ~16x what is missing.
        factor = 1.1 * (2.0**min(it, 4))
        want = np.ceil(need * factor).astype(np.int64) + (need > 0) * 8
        rel = np.repeat(np.arange(num, dtype=np.int64), want)
        head, tail = planted.sample(rel + rel_offset, noisy=noisy)
        cand = np.concatenate([kept, np.stack([rel, head, tail], 1)])
        key = (cand[:, 0] * N + cand[:, 1]) * N + cand[:, 2]
        _, first = np.unique(key, return_index=True)
        first.sort()
        if exclude is not None and exclude.size:
            first = first[~_isin_sorted(key[first], exclude)]
        cand = cand[first]
        # Keep the first counts[j] of each relation, in sampling order.
        order = np.argsort(cand[:, 0], kind='stable')
        grp = cand[order, 0]
        start = np.searchsorted(grp, np.arange(num))
        pos = np.empty(cand.shape[0], dtype=np.int64)
        pos[order] = np.arange(cand.shape[0]) - start[grp]
        kept = cand[pos < counts[cand[:, 0]]]
        before = need.sum()
        need = counts - np.bincount(kept[:, 0], minlength=num)
        stalled = stalled + 1 if need.sum() == before else 0
        if stalled >= 3:  # no new distinct triple in 3 rounds: infeasible
            break
    if need.sum() > 0:
        j = int(np.flatnonzero(need > 0)[0])
        cat = CATEGORIES[planted.category[j + rel_offset]]
        raise ValueError(
            f"Could not sample {counts[j]} distinct triples of relation "
            f"'{names[j]}' (category {cat}): its planted structure allows "
            f"too few; use fewer triples per relation or more entities")
    return kept


def _isin_sorted(x: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_keys, x).clip(max=sorted_keys.size - 1)
    return sorted_keys[pos] == x


def _sample_relations(planted: _Planted, counts: np.ndarray,
                      rel_offset: int, names: Sequence[str]) -> np.ndarray:
    r"""Distinct triples of each relation, a ``Binomial(count, noise)``
    share of them with a uniformly random tail, in random order within each
    relation: ``[sum(counts), 3]`` (local relation, head, tail), grouped by
    relation."""
    rng, N = planted.rng, planted.N
    counts = np.asarray(counts, dtype=np.int64)
    noise = (rng.binomial(counts, planted.noise)
             if planted.noise > 0 else np.zeros_like(counts))
    clean = _sample_distinct(planted, counts - noise, rel_offset, names)
    if noise.sum():
        keys = np.sort((clean[:, 0] * N + clean[:, 1]) * N + clean[:, 2])
        noisy = _sample_distinct(planted, noise, rel_offset, names,
                                 noisy=True, exclude=keys)
        clean = np.concatenate([clean, noisy])
    clean = clean[rng.permutation(clean.shape[0])]
    return clean[np.argsort(clean[:, 0], kind='stable')]


def _counts(spec: Union[int, Tuple[int, int]], num: int,
            rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec, (tuple, list)):
        lo, hi = int(spec[0]), int(spec[1])
        if lo < 1 or hi < lo:
            raise ValueError(f"Invalid triples_per_relation range {spec}")
        return rng.integers(lo, hi + 1, size=num).astype(np.int64)
    if int(spec) < 1:
        raise ValueError("'triples_per_relation' must be positive")
    return np.full(num, int(spec), dtype=np.int64)


def make_synthetic(
    num_entities: int = 100,
    num_background_relations: int = 4,
    num_background_triples: Optional[int] = None,
    num_train_relations: int = 6,
    num_dev_relations: int = 2,
    num_test_relations: int = 2,
    triples_per_relation: Union[int, Tuple[int, int]] = 20,
    num_candidates: Optional[int] = None,
    num_clusters: Optional[int] = None,
    noise: float = 0.05,
    degree_exponent: float = 1.0,
    category_probs: Sequence[float] = (0.1, 0.2, 0.3, 0.4),
    entity_names: Optional[bool] = None,
    return_latent: bool = False,
    seed: int = 0,
) -> Union[HeteroData, Tuple[HeteroData, Dict[str, Any]]]:
    r"""A synthetic few-shot KG with planted relational structure (see the
    module docstring), built through
    :func:`~pyg_fewshot.data.hetero.build_fewshot_data`.

    Args:
        num_entities (int): Number of entities ``N``. (default: :obj:`100`)
        num_background_relations (int): Background relations. (default: 4)
        num_background_triples (int, optional): Distinct background triples.
            (default: ``3 * N``)
        num_train_relations, num_dev_relations, num_test_relations (int):
            Task relations per split. (default: 6 / 2 / 2)
        triples_per_relation (int or (int, int)): Triples of each task
            relation, or an inclusive range to draw from. (default: 20)
        num_candidates (int, optional): Candidate set size of each task
            relation: its true tails plus entities drawn from the clusters of
            those tails (a "type constraint"), fewer if those clusters are
            smaller, all true tails if they are more. :obj:`None` means
            every entity (only allowed up to 50 M candidate entries in
            total).
        num_clusters (int, optional): Latent clusters ``C``. (default:
            ``round(sqrt(N))``, at least 2)
        noise (float): Probability that a tail is a random entity.
            (default: :obj:`0.05`)
        degree_exponent (float): Zipf exponent of popularity within a
            cluster (0 means uniform). (default: :obj:`1.0`)
        category_probs (Sequence[float]): Probabilities of the relation
            categories ``('1-1', '1-N', 'N-1', 'N-N')``.
        entity_names (bool, optional): Store names ``'e<id>'``. (default:
            only if ``N <= 100_000``)
        return_latent (bool): Also return the planted structure: a dict with
            ``cluster`` and ``rank`` (``[N]``), ``shift`` and ``category``
            per relation (background relations first, then task relations
            in ``task_relation_names`` order), ``num_clusters`` and
            ``relation_names``. (default: :obj:`False`)
        seed (int): Random seed; equal arguments give equal data.
    """
    N = int(num_entities)
    R = int(num_background_relations)
    E = 3 * N if num_background_triples is None else int(
        num_background_triples)
    split_sizes = {'train': int(num_train_relations),
                   'dev': int(num_dev_relations),
                   'test': int(num_test_relations)}
    T = sum(split_sizes.values())
    if N < 2:
        raise ValueError("'num_entities' must be at least 2")
    if R < 1 and E > 0:
        raise ValueError("Background triples need at least one relation")
    if T < 1:
        raise ValueError('At least one task relation is needed')
    if not 0.0 <= noise <= 1.0:
        raise ValueError("'noise' must be in [0, 1]")
    C = int(num_clusters) if num_clusters else max(2, int(round(N**0.5)))
    C = max(1, min(C, N))

    rng = np.random.default_rng(seed)
    planted = _Planted(rng, N, C, R + T, category_probs, degree_exponent,
                       noise)

    bg_names = [f'bg_{j}' for j in range(R)]
    task_names = {s: [f'{s}_{j}' for j in range(n)]
                  for s, n in split_sizes.items()}
    flat_task_names = [n for s in split_sizes for n in task_names[s]]

    # Background: Zipf relation frequencies, distinct triples.
    bg_counts = np.zeros(R, dtype=np.int64)
    if E > 0:
        w = 1.0 / np.arange(1, R + 1)
        bg_counts = rng.multinomial(E, w / w.sum())
    counts = _counts(triples_per_relation, T, rng)
    planted.restrict_categories(np.arange(R + T),
                                np.concatenate([bg_counts, counts]))
    if E > 0:
        bg = _sample_relations(planted, bg_counts, 0, bg_names)
        bg = bg[rng.permutation(bg.shape[0])]  # interleave relations
        bg_triples = torch.from_numpy(bg[:, [1, 0, 2]].copy())
    else:
        bg_triples = torch.empty(0, 3, dtype=torch.long)

    task = _sample_relations(planted, counts, R, flat_task_names)
    ptr = np.concatenate([[0], np.cumsum(counts)])

    tasks: Dict[str, List[Tuple[str, torch.Tensor]]] = {}
    k = 0
    for s in split_sizes:
        tasks[s] = []
        for name in task_names[s]:
            pairs = torch.from_numpy(task[ptr[k]:ptr[k + 1], 1:].copy())
            tasks[s].append((name, pairs))
            k += 1

    cands: Dict[str, torch.Tensor] = {}
    if num_candidates is None:
        if T * N > MAX_DENSE_CANDIDATES:
            raise ValueError(
                f"Every entity as candidate of every task relation makes "
                f"{T * N:,} entries; pass 'num_candidates'")
        every = torch.arange(N)
        cands = {name: every for name in flat_task_names}
    else:
        cluster = planted.cluster_of()
        for j, name in enumerate(flat_task_names):
            tails = np.unique(task[ptr[j]:ptr[j + 1], 2])
            cands[name] = torch.from_numpy(
                _candidates(rng, planted, cluster, tails,
                            int(num_candidates)))

    names = None
    if entity_names or (entity_names is None and N <= 100_000):
        names = [f'e{i}' for i in range(N)]
    data = build_fewshot_data(N, bg_triples, bg_names, tasks, cands,
                              entity_names=names)
    if not return_latent:
        return data
    latent = {
        'cluster': torch.from_numpy(planted.cluster_of()),
        'rank': torch.from_numpy(planted.rank_of()),
        'shift': torch.from_numpy(planted.shift.copy()),
        'category': [CATEGORIES[c] for c in planted.category],
        'num_clusters': C,
        'relation_names': bg_names + flat_task_names,
    }
    return data, latent


def _candidates(rng: np.random.Generator, planted: _Planted,
                cluster: np.ndarray, tails: np.ndarray,
                k: int) -> np.ndarray:
    r"""The true ``tails`` plus entities of their clusters, ``k`` in all
    (fewer if the clusters are smaller), sorted."""
    if k <= tails.size:
        return np.sort(tails)
    clusters = np.unique(cluster[tails])
    pool = int(planted.size[clusters].sum())
    if pool <= k:  # the whole "type"
        sizes = planted.size[clusters]
        offset = np.repeat(np.cumsum(sizes) - sizes, sizes)
        rank = np.arange(pool) - offset
        slots = np.repeat(clusters, sizes) + planted.C * rank
        return np.union1d(planted.perm[slots], tails)
    got = tails
    for _ in range(64):
        missing = k - got.size
        if missing <= 0:
            break
        m = 2 * missing + 16
        c = clusters[rng.integers(clusters.size, size=m)]
        rank = (rng.random(m) * planted.size[c]).astype(np.int64)
        got = np.union1d(got, planted.perm[c + planted.C * rank])
    if got.size > k:  # trim extras, never a true tail
        extra = np.setdiff1d(got, tails)
        drop = rng.choice(extra, size=got.size - k, replace=False)
        got = np.setdiff1d(got, drop)
    return got


class SyntheticFewShotDataset(InMemoryDataset):
    r""":func:`make_synthetic` as a cached
    :class:`~torch_geometric.data.InMemoryDataset`: the graph is generated
    once per distinct set of arguments and stored (atomically) under
    ``<root>/processed/synthetic-<hash>.pt``.

    Args:
        root (str): Root folder.
        transform, pre_transform (callable, optional): As in PyG.
        force_reload (bool): Generate again. (default: :obj:`False`)
        **kwargs: Arguments of :func:`make_synthetic` (not
            :obj:`return_latent`).
    """
    def __init__(self, root: str, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 force_reload: bool = False, **kwargs: Any) -> None:
        kwargs.pop('return_latent', None)
        self.kwargs = kwargs
        super().__init__(root, transform, pre_transform,
                         force_reload=force_reload)
        from .dataset import load_hetero
        path = self.processed_paths[0]
        try:
            self.data = load_hetero(path)
        except Exception as e:  # tampered or truncated: regenerate it
            # Never fall back to an unsafe load (PyG's loader retries with
            # weights_only=False, which runs whatever the file pickles).
            warnings.warn(f"Unreadable processed file '{path}' "
                          f"({type(e).__name__}: {e}); generating the graph "
                          f"again")
            self.process()
            self.data = load_hetero(path)

    @property
    def raw_file_names(self) -> List[str]:
        return []

    @property
    def processed_file_names(self) -> str:
        blob = json.dumps(self.kwargs, sort_keys=True, default=str)
        return f'synthetic-{hashlib.sha1(blob.encode()).hexdigest()[:12]}.pt'

    @property
    def data(self) -> HeteroData:  # type: ignore[override]
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self._data_list = None

    def process(self) -> None:
        data = make_synthetic(**self.kwargs)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        from .dataset import save_hetero
        save_hetero(data, osp.join(self.processed_dir,
                                   self.processed_file_names))
