import importlib.util
from pathlib import Path

import pytest
import torch

from torch_geometric.nn import RGCNConv

from pyg_fewshot.nn import (
    AttentiveNeighborAggregator,
    ModalityFusion,
    ProjectionAdapter,
    SparseMoERelationMeta,
    diversity_loss,
)


EXAMPLE = Path(__file__).parents[2] / 'examples' / 'compose_custom_gnn.py'


class TinyNet(torch.nn.Module):
    r"""Each pyg_fewshot layer next to a stock PyG RGCNConv, with the
    aggregator on an ``edge_index`` layout."""
    def __init__(self, N, R, d=16):
        super().__init__()
        self.ent = torch.nn.Embedding(N, d)
        self.rel = torch.nn.Embedding(R, d)
        self.fusion = ModalityFusion({'text': 10, 'image': 12}, d,
                                     hidden_channels=8, dropout=0.0,
                                     fusion='weighted')
        self.conv1 = RGCNConv(d, d, R)
        self.agg = AttentiveNeighborAggregator(d, hidden_dim=12)
        self.conv2 = RGCNConv(d, d, R, num_bases=2)
        self.moe = SparseMoERelationMeta(2 * d, d, num_experts=6, top_k=2,
                                         hidden_channels=8, load_balance=0.1)
        self.proj = ProjectionAdapter(d, init_bound=0.1)

    def forward(self, edge_index, edge_type, feats, masks, support, query):
        x, per = self.fusion(self.ent.weight, feats, masks)
        div = diversity_loss(per, self.ent.weight, masks=masks,
                             pairwise=True)
        x = self.conv1(x, edge_index, edge_type).relu()
        x = self.agg.forward_edges(x, self.rel.weight, x, edge_index[1],
                                   num_nodes=x.size(0), rel_index=edge_type,
                                   ent_index=edge_index[0])
        x = self.conv2(x, edge_index, edge_type)
        B, K, _ = support.shape
        pairs = torch.cat([x[support[..., 0]], x[support[..., 1]]], -1)
        R, routing = self.moe(pairs.view(B * K, -1),
                              torch.arange(B).repeat_interleave(K), B,
                              return_routing=True)
        local = self.proj.init_local(B)
        h, t, R = self.proj(x[query[..., 0]], x[query[..., 1]], R, local)
        score = -(h + R.unsqueeze(1) - t).norm(dim=-1)
        return -score.mean() + routing.aux_loss + div


def test_layers_compose_with_rgcn():
    torch.manual_seed(0)
    N, R, E = 20, 6, 60
    edge_index = torch.randint(0, N, (2, E))
    edge_type = torch.randint(0, R, (E, ))
    feats = {'text': torch.randn(N, 10), 'image': torch.randn(N, 12)}
    masks = {'image': torch.rand(N) > 0.3}
    support = torch.randint(0, N, (3, 2, 2))
    query = torch.randint(0, N, (3, 4, 2))
    net = TinyNet(N, R)
    loss = net(edge_index, edge_type, feats, masks, support, query)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in net.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()]
    # Experts never routed to have zero (not missing) gradients.
    assert missing == []
    for name in ('conv1.weight', 'agg.lin_ent.weight', 'moe.router.gate.0.weight',
                 'proj.p_h', 'fusion.weight'):
        assert dict(net.named_parameters())[name].grad.abs().sum() > 0, name


def test_example_runs_and_learns():
    spec = importlib.util.spec_from_file_location('compose_example', EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = module.main(steps=1, verbose=False)
    last = module.main(steps=10, verbose=False)
    assert last < first
