r"""Composing the pyg_fewshot layers with a stock PyG layer.

A small few-shot link predictor on a synthetic knowledge graph:

1. :class:`~pyg_fewshot.nn.ModalityFusion` adds a text modality (missing
   for some entities) to the structural embeddings;
2. :class:`torch_geometric.nn.RGCNConv` (stock PyG) mixes relational
   context over the background graph;
3. :class:`~pyg_fewshot.nn.AttentiveNeighborAggregator` enriches the
   entities of the meta-batch from the CSR form of the same graph;
4. :class:`~pyg_fewshot.nn.SparseMoERelationMeta` turns each task's support
   pairs into a relation meta ``R``;
5. :class:`~pyg_fewshot.nn.ProjectionAdapter` gives each task local
   projection vectors, adapted together with ``R`` by one first-order
   gradient step on the support loss (MetaR's gradient meta);
6. queries are scored with ``-||h' + R' - t'||``.

Run: ``python examples/compose_custom_gnn.py --steps 200``
"""
import argparse
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_geometric.nn import RGCNConv

from pyg_fewshot.nn import (
    AttentiveNeighborAggregator,
    ModalityFusion,
    ProjectionAdapter,
    SparseMoERelationMeta,
    diversity_loss,
)


class FewShotGNN(torch.nn.Module):
    def __init__(self, num_entities: int, num_relations: int, dim: int = 32,
                 text_dim: int = 24, inner_lr: float = 1.0):
        super().__init__()
        self.inner_lr = inner_lr
        self.ent = torch.nn.Embedding(num_entities, dim)
        self.rel = torch.nn.Embedding(num_relations, dim)
        self.fusion = ModalityFusion({'text': text_dim}, dim, dropout=0.1)
        self.conv = RGCNConv(dim, dim, num_relations, num_bases=4)
        self.agg = AttentiveNeighborAggregator(dim, max_neighbors=8)
        self.moe = SparseMoERelationMeta(2 * dim, dim, num_experts=8,
                                         top_k=2, hidden_channels=16,
                                         load_balance=0.01)
        self.proj = ProjectionAdapter(dim)

    def embed(self, graph: Dict[str, Tensor], index: Tensor
              ) -> Tuple[Tensor, Tensor]:
        x, per = self.fusion(self.ent.weight, {'text': graph['text']},
                             {'text': graph['text_mask']})
        div = diversity_loss(per, self.ent.weight,
                             masks={'text': graph['text_mask']})
        x = x + self.conv(x, graph['edge_index'], graph['edge_type']).relu()
        x = self.agg(x, self.rel.weight, index, graph['rowptr'],
                     graph['col_ent'], graph['col_rel'])
        return x, div

    @staticmethod
    def score(h: Tensor, t: Tensor, r: Tensor) -> Tensor:
        return -(h + r - t).norm(dim=-1)

    def forward(self, graph: Dict[str, Tensor], support: Tensor,
                query: Tensor, neg_tail: Tensor) -> Tuple[Tensor, Tensor]:
        r"""support, query: [B, K, 2] / [B, Q, 2] (head, tail) ids;
        neg_tail: [B, Q] corrupted tails. Returns (loss, aux)."""
        B, K, _ = support.shape
        ids = torch.cat([support.flatten(), query.flatten(),
                         neg_tail.flatten()])
        x, div = self.embed(graph, ids)
        n_s, n_q, d = support.numel(), query.numel(), x.size(-1)
        xs = x[:n_s].view(B, K, 2, d)
        xq = x[n_s:n_s + n_q].view(B, -1, 2, d)
        xn = x[n_s + n_q:].view(B, -1, d)

        pairs = xs.reshape(B * K, -1)  # [h ; t]
        batch = torch.arange(B).repeat_interleave(K)
        R, routing = self.moe(pairs, batch, B, return_routing=True)

        # Inner loop: one first-order step on R and the local vectors.
        local = self.proj.init_local(B)
        hs, ts, Rs = self.proj(xs[:, :, 0], xs[:, :, 1], R, local)
        pos = self.score(hs, ts, Rs.unsqueeze(1))
        neg = self.score(hs, ts.roll(1, dims=1), Rs.unsqueeze(1))
        loss_s = F.relu(1.0 + neg - pos).sum()
        grads = torch.autograd.grad(loss_s, [R, *local.values()],
                                    retain_graph=True)
        grads = [g.detach() for g in grads]
        R = R - self.inner_lr * grads[0]
        local = {k: v - self.inner_lr * g
                 for (k, v), g in zip(local.items(), grads[1:])}

        hq, tq, Rq = self.proj(xq[:, :, 0], xq[:, :, 1], R, local)
        _, tn, _ = self.proj(xq[:, :, 0], xn, R, local)
        pos = self.score(hq, tq, Rq.unsqueeze(1))
        neg = self.score(hq, tn, Rq.unsqueeze(1))
        loss = F.relu(1.0 + neg - pos).mean()
        return loss + routing.aux_loss + 0.1 * div, (pos > neg).float().mean()


def synthetic_graph(num_entities: int = 60, num_rel: int = 4,
                    num_triples: int = 300, text_dim: int = 24,
                    seed: int = 0) -> Dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(0, num_entities, (num_triples, ), generator=g)
    t = (h * 7 + torch.randint(0, 3, (num_triples, ), generator=g)) \
        % num_entities
    r = torch.randint(0, num_rel, (num_triples, ), generator=g)
    # Inverse edges as their own relations (r + R), as the datasets do.
    src, dst = torch.cat([h, t]), torch.cat([t, h])
    rel = torch.cat([r, r + num_rel])
    order = torch.argsort(src, stable=True)
    src, dst, rel = src[order], dst[order], rel[order]
    rowptr = torch.zeros(num_entities + 1, dtype=torch.long)
    rowptr[1:] = torch.bincount(src, minlength=num_entities).cumsum(0)
    return {
        'edge_index': torch.stack([dst, src]),  # neighbour -> centre
        'edge_type': rel,
        'rowptr': rowptr,
        'col_ent': dst,
        'col_rel': rel,
        'text': torch.randn(num_entities, text_dim, generator=g),
        'text_mask': torch.rand(num_entities, generator=g) > 0.2,
        'num_relations': torch.tensor(2 * num_rel),
    }


def sample_tasks(num_entities: int, B: int, K: int, Q: int,
                 g: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
    # Task b is the relation t = (h * a_b) mod N: learnable structure.
    a = torch.randint(2, 6, (B, 1), generator=g)
    heads = torch.randint(0, num_entities, (B, K + Q), generator=g)
    tails = (heads * a) % num_entities
    pairs = torch.stack([heads, tails], dim=-1)
    neg = torch.randint(0, num_entities, (B, Q), generator=g)
    return pairs[:, :K], pairs[:, K:], neg


def main(steps: int = 100, seed: int = 0, verbose: bool = True) -> float:
    torch.manual_seed(seed)
    graph = synthetic_graph(seed=seed)
    N = graph['rowptr'].numel() - 1
    model = FewShotGNN(N, int(graph['num_relations']))
    if verbose:
        print(model)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed + 1)
    loss = torch.tensor(0.0)
    for step in range(steps):
        support, query, neg = sample_tasks(N, B=16, K=3, Q=4, g=g)
        loss, acc = model(graph, support, query, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step % 20 == 0 or step == steps - 1):
            print(f'step {step:4d}  loss {loss.item():.4f}  '
                  f'pos>neg {acc.item():.3f}')
    return float(loss.detach())


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    main(args.steps, args.seed)
