import pytest
import torch

from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import MetaLearner
from pyg_fewshot.models import MetaR, TaskOutput, build_model
from pyg_fewshot.nn import EntityEncoder, MLPRelationMeta

MOE = {'num_experts': 4, 'top_k': 2, 'hidden_channels': 8,
       'gate_hidden_channels': 8}


def tiny_model(n=20, dim=4, seed=0):
    torch.manual_seed(seed)
    model = MetaR(EntityEncoder(n, dim, sparse=False),
                  MLPRelationMeta(2 * dim, dim, hidden_channels=(6, ),
                                  dropout=0.0)).double()
    return model


def tiny_batch(n=20, B=3, K=2, dim=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n, (B, K), generator=g) for _ in range(3)]


def embed(model, *ids):
    return [model.embed(i) for i in ids]


def init_local(model, heads, tails, h, t):
    # The local parameters of the tasks with support (heads, tails) ids
    # ([B, K] each) and rows h, t.
    out = model.init_local(torch.stack([heads, tails], -1), h, t)
    assert isinstance(out, TaskOutput)
    return out.local


def test_zero_inner_steps_is_no_adaptation():
    model = tiny_model()
    ids = tiny_batch()
    h, t, tn = embed(model, *ids)
    local = init_local(model, ids[0], ids[1], h, t)
    learner = MetaLearner(model, inner_steps=0)
    assert learner.adapt(local, h, t, tn) is local
    one = MetaLearner(model, inner_steps=1).adapt(local, h, t, tn)
    assert not torch.allclose(one['rel'], local['rel'])


def test_inner_step_is_per_task_and_independent_of_batch_size():
    model = tiny_model()
    ids = tiny_batch(B=4)
    h, t, tn = embed(model, *ids)
    local = init_local(model, ids[0], ids[1], h, t)
    learner = MetaLearner(model, inner_lr=0.7)
    full = learner.adapt(local, h, t, tn)['rel']
    for b in range(4):
        one = learner.adapt({'rel': local['rel'][b:b + 1]}, h[b:b + 1],
                            t[b:b + 1], tn[b:b + 1])['rel']
        assert torch.allclose(full[b:b + 1], one)
    # The published code averages over the batch: its step is beta / B.
    quirk = MetaLearner(model, inner_lr=0.7, published_quirks=True)
    scaled = quirk.adapt(local, h, t, tn)['rel']
    assert torch.allclose((scaled - local['rel']) * 4,
                          full - local['rel'])


def _outer(model, learner, ids, frozen_grad=None):
    """Query loss after adaptation, as a function of the model's params."""
    sh, st, sn = embed(model, *ids[:3])
    qh, qt, qn = embed(model, *ids[3:])
    local = init_local(model, ids[0], ids[1], sh, st)
    if frozen_grad is None:
        local = learner.adapt(local, sh, st, sn)
    else:
        local = {'rel': local['rel'] - learner.inner_lr * frozen_grad}
    pos = model.score(qh, qt, local)
    neg = model.score(qh, qn, local)
    return torch.relu(learner.margin - pos + neg).mean()


def _finite_difference(model, fn, eps=1e-6):
    grads = []
    for p in model.parameters():
        g = torch.zeros_like(p)
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 7)):
            old = flat[i].item()
            flat[i] = old + eps
            up = fn().item()
            flat[i] = old - eps
            down = fn().item()
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def _support_grad(model, learner, ids):
    sh, st, sn = embed(model, *ids[:3])
    local = init_local(model, ids[0], ids[1], sh, st)
    rel = local['rel'].detach().requires_grad_()
    loss = learner.support_loss({'rel': rel}, sh, st, sn)
    return torch.autograd.grad(loss, rel)[0]


@pytest.mark.parametrize('first_order', [True, False])
def test_meta_gradient_matches_finite_differences(first_order):
    model = tiny_model()
    # Large margin keeps every hinge active, so the loss is smooth here.
    learner = MetaLearner(model, inner_lr=0.3, margin=50.0,
                          first_order=first_order)
    ids = tiny_batch() + tiny_batch(seed=2)
    loss = _outer(model, learner, ids)
    analytic = torch.autograd.grad(loss, list(model.parameters()))
    if first_order:
        g0 = _support_grad(model, learner, ids).detach()
        numeric = _finite_difference(
            model, lambda: _outer(model, learner, ids, frozen_grad=g0))
    else:
        numeric = _finite_difference(model,
                                     lambda: _outer(model, learner, ids))
    for a, n in zip(analytic, numeric):
        mask = n != 0
        assert torch.allclose(a[mask], n[mask], atol=1e-6, rtol=1e-4)


def test_second_order_differs_from_first_order():
    model = tiny_model()
    ids = tiny_batch() + tiny_batch(seed=2)
    grads = []
    for fo in (True, False):
        learner = MetaLearner(model, inner_lr=0.3, margin=50.0,
                              first_order=fo)
        loss = _outer(model, learner, ids)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    assert any(not torch.allclose(a, b) for a, b in zip(*grads))


def test_published_quirks_leak_support_loss(tiny_data):
    torch.manual_seed(0)
    model = build_model('metar', tiny_data, embedding_dim=8,
                        hidden_channels=(8, ), dropout=0.0)
    ep = EpisodeSampler(tiny_data, 2, batch_size=8, seed=0).sample()
    clean, _ = MetaLearner(model).loss(ep)
    quirky, _ = MetaLearner(model, published_quirks=True).loss(ep)
    assert quirky.item() > clean.item()  # + support loss, weaker adaptation


def test_negative_inner_steps_rejected():
    with pytest.raises(ValueError, match='inner_steps'):
        MetaLearner(tiny_model(), inner_steps=-1)


def test_inner_step_per_local_parameter(tiny_data):
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        aggregator=None, relation_meta_kwargs=MOE)
    ep = EpisodeSampler(tiny_data, 2, batch_size=4, seed=0).sample()
    sup_h, sup_t, sup_neg, *_ = MetaLearner(model).embed_episode(ep)
    local = model.init_local(ep.support, sup_h, sup_t).local

    def adapted(inner_lr):
        return MetaLearner(model, inner_lr=inner_lr).adapt(
            local, sup_h, sup_t, sup_neg)

    same = adapted(0.3)
    star = adapted({'*': 0.3})
    for k in same:
        assert torch.equal(same[k], star[k])
    mixed = adapted({'rel': 0.3, '*': 0.0})
    assert torch.equal(mixed['rel'], same['rel'])
    for k in ('p_h', 'p_r', 'p_t'):
        assert torch.equal(mixed[k], local[k])
    with pytest.raises(ValueError, match='unknown local parameter'):
        MetaLearner(model, inner_lr={'rel': 1.0, 'bogus': 1.0, '*': 0.1})
    with pytest.raises(ValueError, match='no step for'):
        MetaLearner(model, inner_lr={'rel': 1.0})


@pytest.mark.parametrize('projection', ['transd', 'paper', 'none'])
def test_first_order_step_equals_torch_func_grad(tiny_data, projection):
    # The first-order inner gradient comes from torch.autograd.grad on
    # detached copies; it must be torch.func.grad's, for every local key.
    from pyg_fewshot.meta.learner import _first_order_grad
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta_kwargs=MOE,
                        projection=None if projection == 'none'
                        else projection)
    ep = EpisodeSampler(tiny_data, 2, 3, 5, seed=0).sample()
    learner = MetaLearner(model, inner_lr=0.3)
    sup_h, sup_tails, _, _ = learner.embed_stacked(ep)
    local = model.init_local(ep.support, sup_h, sup_tails[:, 0]).local
    keys = list(model.adapt_keys)
    adapted = {k: local[k] for k in keys}
    rest = {k: v for k, v in local.items() if k not in keys}

    def loss_fn(a, r):
        return learner._support_loss({**r, **a}, sup_h.detach(),
                                     sup_tails.detach())

    got = _first_order_grad(loss_fn, adapted, rest)
    want = torch.func.grad(loss_fn)(
        {k: v.detach() for k, v in adapted.items()},
        {k: v.detach() for k, v in rest.items()})
    assert set(got) == set(keys)
    for k in keys:
        torch.testing.assert_close(got[k], want[k])
    # A loss that does not depend on the local parameters: zero gradient.
    zeros = _first_order_grad(lambda a, r: sup_h.sum().detach(), adapted,
                              rest)
    assert all(bool((zeros[k] == 0).all()) for k in keys)


def test_stacked_tails_match_separate_scores(tiny_data):
    # margins() scores positives and negatives with one projection of the
    # heads (score_tails); the values are score()'s on each side.
    torch.manual_seed(0)
    for name in ('metar', 'moemeta'):
        model = build_model(name, tiny_data, embedding_dim=8)
        learner = MetaLearner(model)
        ep = EpisodeSampler(tiny_data, 2, 3, 4, seed=1).sample()
        sh, st, sn, qh, qt, qn = learner.embed_episode(ep)
        sup_h, sup_tails, qry_h, qry_tails = learner.embed_stacked(ep)
        torch.testing.assert_close(sup_tails[:, 0], st)
        torch.testing.assert_close(qry_tails[:, 1], qn)
        local = model.init_local(ep.support, sh, st).local
        s = model.score_tails(qh, qry_tails, local)
        torch.testing.assert_close(s[:, 0], model.score(qh, qt, local))
        torch.testing.assert_close(s[:, 1], model.score(qh, qn, local))
        ref = torch.relu(1.0 - model.score(qh, qt, local) +
                         model.score(qh, qn, local))
        torch.testing.assert_close(learner.margins(local, qh, qry_tails), ref)


class _Recording(MetaR):
    r"""MetaR that records what :meth:`init_local` is given and reports two
    fixed auxiliary losses."""
    def init_local(self, support, sup_h, sup_t):
        self.seen = (support, sup_h, sup_t)
        out = super().init_local(support, sup_h, sup_t)
        return TaskOutput(out.local, {'a': sup_h.new_tensor(0.25),
                                      'b': sup_h.new_tensor(0.5)},
                          out.routing)


def test_loss_passes_support_ids_and_adds_the_aux_losses(tiny_data):
    torch.manual_seed(0)
    model = _Recording(EntityEncoder(40, 8),
                       MLPRelationMeta(16, 8, hidden_channels=(8, ),
                                       dropout=0.0))
    learner = MetaLearner(model)
    ep = EpisodeSampler(tiny_data, 2, 3, 4, seed=0).sample()
    loss, logs = learner.loss(ep)
    support, sup_h, sup_t = model.seen
    assert torch.equal(support, ep.support)  # [B, K, 2] ids
    torch.testing.assert_close(sup_h, model.embed(ep.support[..., 0]))
    torch.testing.assert_close(sup_t, model.embed(ep.support[..., 1]))
    assert logs['aux_loss'].item() == 0.75
    assert (logs['aux/a'].item(), logs['aux/b'].item()) == (0.25, 0.5)
    assert 'routing/max_share' not in logs  # no routing reported
    assert loss.item() == pytest.approx(logs['query_loss'].item() + 0.75,
                                        rel=1e-6)
