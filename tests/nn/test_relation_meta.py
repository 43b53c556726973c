import torch
from torch_geometric.nn import MLP

from pyg_fewshot.nn.relation_meta import MLPRelationMeta


def test_forward_tasks_is_the_mean_of_the_pair_vectors():
    torch.manual_seed(0)
    meta = MLPRelationMeta(8, 4, hidden_channels=(6, 5)).eval()
    x = torch.randn(3, 5, 8)
    rel, routing = meta.forward_tasks(x)
    assert routing is None
    assert rel.shape == (3, 4)
    for b in range(3):
        torch.testing.assert_close(rel[b], meta.mlp(x[b]).mean(dim=0))
    # The flat form with a batch vector gives the same relation meta.
    batch = torch.arange(3).repeat_interleave(5)
    torch.testing.assert_close(meta(x.flatten(0, 1), batch, 3), rel)
    torch.testing.assert_close(meta(x[1]), rel[1:2])


def test_is_metars_mlp_under_a_seed():
    # The same torch_geometric MLP, built with the same random draws: a
    # seed gives the initial values of MLP([in, *hidden, out]).
    torch.manual_seed(1)
    meta = MLPRelationMeta(8, 4, hidden_channels=(6, 5), dropout=0.3)
    after = torch.rand(1)
    torch.manual_seed(1)
    ref = MLP([8, 6, 5, 4], act='leaky_relu', dropout=0.3, norm=None)
    assert torch.equal(after, torch.rand(1))
    for p, q in zip(meta.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    assert isinstance(meta.mlp.act, torch.nn.LeakyReLU)
    assert all(isinstance(n, torch.nn.Identity) for n in meta.mlp.norms)


def test_dropout_in_training_and_reset():
    torch.manual_seed(2)
    meta = MLPRelationMeta(8, 4, hidden_channels=(16, ), dropout=0.5)
    x = torch.randn(2, 3, 8)
    torch.manual_seed(3)
    a, _ = meta.forward_tasks(x)
    torch.manual_seed(4)
    b, _ = meta.forward_tasks(x)
    assert not torch.allclose(a, b)  # dropout is active in training
    a.sum().backward()
    assert all(p.grad is not None for p in meta.parameters())
    meta.eval()
    torch.testing.assert_close(meta.forward_tasks(x)[0],
                               meta.forward_tasks(x)[0])
    before = meta.mlp.lins[0].weight.detach().clone()
    meta.reset_parameters()
    assert not torch.equal(before, meta.mlp.lins[0].weight)
    assert repr(meta) == 'MLPRelationMeta(8, 4, hidden=[16], dropout=0.5)'
