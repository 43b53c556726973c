r"""Episodic sampling of few-shot tasks from a :func:`build_fewshot_data`
graph."""
from typing import Any, Dict, NamedTuple, Optional

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .config import EpisodeConfig
from .hetero import ENTITY, is_true_triple, split_relations


class Episode(NamedTuple):
    r"""A meta-batch of ``B`` few-shot tasks.

    Attributes:
        rel (torch.Tensor): Task relation id of each task, ``[B]``.
        support (torch.Tensor): (head, tail) support pairs, ``[B, K, 2]``.
        support_neg (torch.Tensor): Negative tail per support pair, ``[B, K]``.
        query (torch.Tensor): (head, tail) query pairs, ``[B, Q, 2]``.
        query_neg (torch.Tensor): Negative tail per query pair, ``[B, Q]``.
    """
    rel: Tensor
    support: Tensor
    support_neg: Tensor
    query: Tensor
    query_neg: Tensor

    def to(self, device: Any) -> 'Episode':
        return Episode(*(t.to(device) for t in self))


def sample_without_replacement(n: Tensor, k: int,
                               generator: Optional[torch.Generator] = None
                               ) -> Tensor:
    r"""Draws ``k`` distinct indices from ``[0, n_b)`` for every row ``b``, in
    random order, vectorised over the rows.

    The ``j``-th draw picks uniformly among the ``n_b - j`` positions not
    drawn yet (a virtual partial Fisher-Yates shuffle), so the cost is
    :math:`O(k^2)` vector operations of size ``B``, independent of ``n``.
    Rows with ``n_b < k`` repeat their draws cyclically after ``n_b``.

    Args:
        n (torch.Tensor): Population size of each row, ``[B]`` (all >= 1).
        k (int): Number of draws per row.
        generator (torch.Generator, optional): Random generator.

    Returns:
        ``[B, k]`` long tensor.
    """
    B = n.numel()
    out = n.new_empty(B, k)
    taken = n.new_empty(B, 0)  # draws so far, sorted ascending per row
    for j in range(k):
        left = (n - j).clamp(min=1)
        x = (torch.rand(B, generator=generator, device=n.device) *
             left).long().clamp_(max=left - 1)
        # Map x to the x-th position that is not taken yet.
        for i in range(taken.size(1)):
            x = x + (taken[:, i] <= x).long()
        out[:, j] = x
        taken = torch.sort(torch.cat([taken, x.unsqueeze(1)], dim=1),
                           dim=1).values
    if k > 0:
        cyc = torch.arange(k, device=n.device).unsqueeze(0) % n.clamp(
            min=1).unsqueeze(1)
        out = torch.gather(out, 1, cyc)
    return out


def sample_negative_tails(data: HeteroData, rel: Tensor, head: Tensor,
                          generator: Optional[torch.Generator] = None,
                          max_rounds: int = 20) -> Tensor:
    r"""One negative tail per (relation, head): a uniformly drawn candidate of
    ``rel`` that is not a known true tail of (``head``, ``rel``).

    Draws that hit a true tail are redrawn, up to ``max_rounds`` times (a
    relation whose candidates are all true tails of ``head`` keeps its last
    draw).

    Args:
        data (HeteroData): Graph from :func:`build_fewshot_data`.
        rel (torch.Tensor): Task relation ids, any shape.
        head (torch.Tensor): Head ids, same shape as ``rel``.
        generator (torch.Generator, optional): Random generator.
        max_rounds (int, optional): Rejection rounds. (default: :obj:`20`)
    """
    shape = head.shape
    rel, head = rel.reshape(-1), head.reshape(-1)
    start = data.cand_ptr.index_select(0, rel)
    size = data.cand_ptr.index_select(0, rel + 1) - start
    neg = torch.empty_like(head)
    # Redraws go to the rejected entries only (typically a few percent).
    todo = torch.arange(head.numel(), device=head.device)
    for _ in range(max_rounds):
        n = size.index_select(0, todo)
        offset = (torch.rand(todo.shape, generator=generator) *
                  n).long().clamp_(max=n - 1)
        draw = data.cand_idx.index_select(
            0, start.index_select(0, todo) + offset)
        neg.index_copy_(0, todo, draw)
        hit = is_true_triple(data, rel.index_select(0, todo),
                             head.index_select(0, todo), draw)
        todo = todo[hit]
        if todo.numel() == 0:
            break
    return neg.view(shape)


class EpisodeSampler:
    r"""Samples meta-batches of few-shot tasks (:class:`Episode`).

    Each task picks a relation of ``split`` uniformly at random, then ``K``
    support and ``Q`` query triples of that relation without replacement
    (support and query never overlap; a relation with fewer than ``K + Q``
    triples repeats its queries), and one negative tail per positive drawn
    from the relation's candidates, rejecting every known true tail of that
    (head, relation). All steps are vectorised over the meta-batch; the only
    Python loops run over ``K + Q`` draws and over rejection rounds.

    Args:
        data (HeteroData): Graph from :func:`build_fewshot_data`.
        shots (int): Number of support triples ``K``.
        num_queries (int, optional): Number of query triples ``Q``.
            (default: :obj:`3`)
        batch_size (int, optional): Tasks per meta-batch ``B``.
            (default: :obj:`1024`)
        split (str, optional): Split to sample from. (default: :obj:`'train'`)
        seed (int, optional): Seed of the sampler's own generator.
            (default: :obj:`0`)
        max_rejection_rounds (int, optional): Redraws of negatives that hit a
            true tail before giving up on them. (default: :obj:`20`)
    """
    def __init__(self, data: HeteroData, shots: int, num_queries: int = 3,
                 batch_size: int = 1024, split: str = 'train', seed: int = 0,
                 max_rejection_rounds: int = 20) -> None:
        if shots < 1 or num_queries < 1 or batch_size < 1:
            raise ValueError(
                f'shots, num_queries and batch_size must be positive '
                f'(got {shots}, {num_queries}, {batch_size})')
        self.data = data
        self.shots = shots
        self.num_queries = num_queries
        self.batch_size = batch_size
        self.split = split
        self.max_rejection_rounds = max_rejection_rounds
        self.relations = split_relations(data, split)
        EpisodeConfig(shots=int(shots)).check(
            data, (split, ), use='to sample episodes from')
        csize = data.cand_ptr[1:] - data.cand_ptr[:-1]
        empty = (csize[self.relations] == 0).nonzero().view(-1)
        if empty.numel() > 0:
            name = data.task_relation_names[int(self.relations[empty[0]])]
            raise ValueError(f"Task relation '{name}' has no candidates")
        self.generator = torch.Generator().manual_seed(seed)

    def sample_negatives(self, rel: Tensor, head: Tensor) -> Tensor:
        r"""One negative tail per (relation, head), see
        :func:`sample_negative_tails`."""
        return sample_negative_tails(self.data, rel, head, self.generator,
                                     self.max_rejection_rounds)

    def sample(self) -> Episode:
        r"""Draws one meta-batch."""
        B, K, Q = self.batch_size, self.shots, self.num_queries
        data = self.data
        choice = torch.randint(self.relations.numel(), (B, ),
                               generator=self.generator)
        rel = self.relations.index_select(0, choice)
        start = data.task_ptr.index_select(0, rel)
        size = data.task_ptr.index_select(0, rel + 1) - start
        # Support first, then queries among the remaining triples.
        sup_pos = sample_without_replacement(size, K, self.generator)
        qry_pos = sample_without_replacement(size - K, Q, self.generator)
        # Map query draws (indices into the non-support triples) past the
        # support positions, exactly like the inner loop above.
        sup_sorted = torch.sort(sup_pos, dim=1).values
        for i in range(K):
            qry_pos = qry_pos + (sup_sorted[:, i:i + 1] <= qry_pos).long()
        pos = torch.cat([sup_pos, qry_pos], dim=1).add_(start.unsqueeze(1))
        triples = data.task_triples.index_select(0, pos.view(-1)).view(
            B, K + Q, 2)
        # Support and query negatives in one rejection loop.
        negs = self.sample_negatives(rel.unsqueeze(1).expand(-1, K + Q),
                                     triples[..., 0])
        support, query = triples.split([K, Q], dim=1)
        support_neg, query_neg = negs.split([K, Q], dim=1)
        return Episode(rel, support, support_neg, query, query_neg)

    def __iter__(self) -> 'EpisodeSampler':
        return self

    def __next__(self) -> Episode:
        return self.sample()

    def state_dict(self) -> Dict[str, Tensor]:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.generator.set_state(state['generator'])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(split={self.split}, '
                f'shots={self.shots}, num_queries={self.num_queries}, '
                f'batch_size={self.batch_size}, '
                f'num_relations={self.relations.numel()}, '
                f'num_entities={self.data[ENTITY].num_nodes})')
