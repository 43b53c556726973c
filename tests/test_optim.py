import io

import pytest
import torch

from pyg_fewshot import optim as optim_module
from pyg_fewshot.optim import LazySparseAdam

N, D = 50, 4


def sparse_grad(rows, seed, dim=D, num_rows=N):
    gen = torch.Generator().manual_seed(seed)
    index = torch.tensor([rows])
    values = torch.randn(len(rows), dim, generator=gen)
    return torch.sparse_coo_tensor(index, values, (num_rows, dim),
                                   check_invariants=True)


# Overlapping and new rows; step 3 repeats row 7 (uncoalesced gradient);
# step 4 touches no row at all.
STEPS = [[1, 2, 3], [3, 4, 40], [7, 1, 7, 7, 45], [], [2, 49, 0, 40]]


def run(opt_cls, steps=STEPS, scheduler=False, **kw):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(N, D))
    opt = opt_cls([w], **kw)
    sch = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
           if scheduler else None)
    for i, rows in enumerate(steps):
        w.grad = sparse_grad(rows, seed=i)
        opt.step()
        if sch is not None:
            sch.step()
    return w, opt


def assert_rounding_close(a, b):
    # The fused kernel evaluates SparseAdam's formula in another order:
    # equal to a unit or two in the last place.
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('kw', [
    {}, dict(lr=0.1, betas=(0.5, 0.9), eps=1e-6), dict(maximize=True)])
def test_matches_sparse_adam(kw, fused, monkeypatch):
    if not fused:  # the path of devices without a fused Adam kernel
        monkeypatch.setattr(optim_module, '_fused_rows_supported',
                            lambda p, values: False)
    w_ref, ref = run(torch.optim.SparseAdam, **kw)
    w, opt = run(LazySparseAdam, **kw)
    s, s_ref = opt.state[w], ref.state[w_ref]
    rows = s['rows'][:s['num_rows']]
    m, m_ref = s['exp_avg'][:s['num_rows']], s_ref['exp_avg'][rows]
    v, v_ref = s['exp_avg_sq'][:s['num_rows']], s_ref['exp_avg_sq'][rows]
    if fused:
        for a, b in ((w, w_ref), (m, m_ref), (v, v_ref)):
            assert_rounding_close(a, b)
    else:  # SparseAdam's own operations: bit for bit
        for a, b in ((w, w_ref), (m, m_ref), (v, v_ref)):
            assert torch.equal(a, b)
    assert opt.state[w]['step'] == ref.state[w_ref]['step'] == len(STEPS)


def test_distinct_rows_skip_coalesce():
    # An embedding lookup of distinct ids gives an uncoalesced gradient with
    # distinct rows: used as it is, in its own row order.
    index = torch.tensor([7, 2, 9])
    values = torch.randn(3, 2)
    grad = torch.sparse_coo_tensor(index.view(1, -1), values, (10, 2))
    rows, vals = optim_module._coalesced_rows(grad)
    assert torch.equal(rows, index)
    assert vals.data_ptr() == grad._values().data_ptr()  # no copy
    # Duplicates are summed, rows sorted as coalesce() would.
    grad = torch.sparse_coo_tensor(torch.tensor([[4, 1, 4]]),
                                   torch.ones(3, 2), (10, 2))
    rows, vals = optim_module._coalesced_rows(grad)
    ref = grad.coalesce()
    assert torch.equal(rows, ref.indices()[0])
    assert torch.equal(vals, ref.values())


def test_lr_schedule():
    w_ref, _ = run(torch.optim.SparseAdam, scheduler=True, lr=0.05)
    w, opt = run(LazySparseAdam, scheduler=True, lr=0.05)
    assert_rounding_close(w, w_ref)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.05 / (1 + len(STEPS)))


def test_embedding_rows_only():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(5000, 8, sparse=True)
    untouched = emb.weight.detach().clone()
    opt = LazySparseAdam(emb.parameters(), lr=0.01)
    index = torch.tensor([[3, 5, 3], [4999, 5, 0]])
    emb(index).pow(2).sum().backward()
    opt.step()
    rows = {0, 3, 5, 4999}
    assert opt.num_state_rows() == len(rows)
    s = opt.state[emb.weight]
    assert set(s['rows'][:s['num_rows']].tolist()) == rows
    assert int((s['slot'] >= 0).sum()) == len(rows)
    # Moments for the first 1024 slots, not 2 x 5000 x 8 floats.
    assert s['exp_avg'].size(0) == 1024
    assert opt.state_bytes() < 2 * 5000 * 8 * 4
    other = [i for i in range(5000) if i not in rows]
    assert torch.equal(emb.weight[other], untouched[other])


def test_capacity_doubles_and_caps():
    w = torch.nn.Parameter(torch.zeros(3000, 2))
    opt = LazySparseAdam([w])
    caps = []
    for start in range(0, 3000, 500):
        w.grad = sparse_grad(list(range(start, start + 500)), start, dim=2,
                             num_rows=3000)
        opt.step()
        caps.append(opt.state[w]['exp_avg'].size(0))
    assert caps == [1024, 1024, 2048, 2048, 3000, 3000]
    assert opt.num_state_rows() == 3000


def test_state_dict_round_trip():
    w, opt = run(LazySparseAdam, steps=STEPS[:3], lr=0.1)
    sd = opt.state_dict()
    packed = sd['state'][0]
    assert set(packed) == {'step', 'rows', 'exp_avg', 'exp_avg_sq'}
    assert packed['exp_avg'].size(0) == packed['rows'].numel() == 7
    buf = io.BytesIO()
    torch.save({'opt': sd, 'w': w.detach().clone()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)

    w2 = torch.nn.Parameter(loaded['w'])
    opt2 = LazySparseAdam([w2], lr=0.1)
    opt2.load_state_dict(loaded['opt'])
    assert opt2.state[w2]['rows'].dtype == torch.long
    for i, rows in enumerate(STEPS[3:], start=3):
        for param, o in ((w, opt), (w2, opt2)):
            param.grad = sparse_grad(rows, seed=i)
            o.step()
    assert torch.equal(w, w2)
    w_ref, _ = run(torch.optim.SparseAdam, lr=0.1)
    assert_rounding_close(w2, w_ref)


def test_loads_sparse_adam_state():
    w_ref, ref = run(torch.optim.SparseAdam, steps=STEPS[:3])
    w = torch.nn.Parameter(w_ref.detach().clone())
    opt = LazySparseAdam([w])
    opt.load_state_dict(ref.state_dict())
    assert opt.num_state_rows() == 7
    for i, rows in enumerate(STEPS[3:], start=3):
        for param, o in ((w, opt), (w_ref, ref)):
            param.grad = sparse_grad(rows, seed=i)
            o.step()
    assert_rounding_close(w, w_ref)


def test_errors():
    w = torch.nn.Parameter(torch.zeros(4, 2))
    opt = LazySparseAdam([w])
    w.grad = torch.ones(4, 2)
    with pytest.raises(RuntimeError, match='dense gradients'):
        opt.step()
    w.grad = torch.ones(4, 2).to_sparse()  # sparse_dim() == 2
    with pytest.raises(RuntimeError, match='row-sparse'):
        opt.step()
    with pytest.raises(ValueError, match='learning rate'):
        LazySparseAdam([w], lr=0.0)
    with pytest.raises(ValueError, match="Invalid 'eps_mode' 'fused'"):
        LazySparseAdam([w], eps_mode='fused')


class RowAdam:
    r"""TransE pretraining's optimiser before it became
    ``LazySparseAdam(eps_mode='adam')`` (pyg_fewshot/data/pretrain.py at
    b39fae6), kept as the reference the cached vectors were made with."""
    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.state = [(torch.zeros_like(p), torch.zeros_like(p))
                      for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        for p, (m, v) in zip(self.params, self.state):
            g = p.grad.coalesce()
            idx, val = g.indices()[0], g.values()
            m_rows = m.index_select(0, idx).mul_(b1).add_(val, alpha=1 - b1)
            v_rows = v.index_select(0, idx).mul_(b2).addcmul_(
                val, val, value=1 - b2)
            m.index_copy_(0, idx, m_rows)
            v.index_copy_(0, idx, v_rows)
            denom = v_rows.div_(c2).sqrt_().add_(self.eps)
            p.index_add_(0, idx, m_rows.div_(denom), alpha=-self.lr / c1)


@pytest.mark.parametrize('kw', [dict(lr=0.01), dict(lr=0.1, eps=1e-3)])
def test_adam_eps_mode_is_row_adam_bit_for_bit(kw):
    # Two tables, rows drawn with many repeats, gradients coalesced as
    # pretrain_transe does: the vectors it caches must not change by a bit.
    torch.manual_seed(0)
    embs = [torch.nn.Embedding(n, 16, sparse=True) for n in (300, 7)]
    ref = [torch.nn.Embedding(n, 16, sparse=True) for n in (300, 7)]
    for a, b in zip(embs, ref):
        b.load_state_dict(a.state_dict())
    params = [e.weight for e in embs]
    opt = LazySparseAdam(params, eps_mode='adam', **kw)
    opt_ref = RowAdam([e.weight for e in ref], **kw)
    for step in range(30):
        idx = torch.randint(0, 300, (2, 64))
        rel = torch.randint(0, 7, (64, ))
        for (ent, r), o in (((embs[0], embs[1]), opt),
                            ((ref[0], ref[1]), opt_ref)):
            for p in (ent.weight, r.weight):
                p.grad = None
            x = ent(idx[0]) + r(rel) - ent(idx[1])
            x.abs().sum(-1).pow(2).mean().backward()
            if o is opt:
                for p in params:
                    p.grad = p.grad.coalesce()
            o.step()
    for a, b in zip(embs, ref):
        assert torch.equal(a.weight, b.weight)


def test_adam_eps_mode_is_adam():
    # Dense in all rows every step, it is torch.optim.Adam's update.
    torch.manual_seed(0)
    a = torch.nn.Embedding(20, 4, sparse=True)
    b = torch.nn.Embedding(20, 4)
    b.load_state_dict(a.state_dict())
    opt_a = LazySparseAdam(a.parameters(), lr=0.1, eps=1e-2,
                           eps_mode='adam')
    opt_b = torch.optim.Adam(b.parameters(), lr=0.1, eps=1e-2,
                             foreach=False)
    idx = torch.arange(20)
    for step in range(5):
        for emb, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (emb(idx)**2).sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-6, atol=1e-7)
    # The two modes differ while sqrt(v) is of the order of eps.
    w, _ = run(LazySparseAdam, lr=0.1, eps=1e-1)
    w_adam, _ = run(LazySparseAdam, lr=0.1, eps=1e-1, eps_mode='adam')
    assert not torch.allclose(w, w_adam)


def test_eps_mode_state_dict():
    w, opt = run(LazySparseAdam, steps=STEPS[:3], eps_mode='adam')
    sd = opt.state_dict()
    assert sd['param_groups'][0]['eps_mode'] == 'adam'
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = LazySparseAdam([w2])
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]['eps_mode'] == 'adam'
    # A state dict from before 'eps_mode' existed is SparseAdam's update.
    del sd['param_groups'][0]['eps_mode']
    opt3 = LazySparseAdam([w2], eps_mode='adam')
    opt3.load_state_dict(sd)
    assert opt3.param_groups[0]['eps_mode'] == 'sparse_adam'
