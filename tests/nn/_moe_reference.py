r"""Dense references of :class:`pyg_fewshot.nn.SparseMoERelationMeta`:
every expert on every pair, then the top-N picked (the published MoEMeta
code's computation), written independently of the layer's kernels.

The tests check the sparse dispatch against them, and
benchmarks/bench_moe_dispatch.py times them as its dense baselines (it
imports this file, so there is one copy).
"""
import torch


def dense_published(moe, x, weights, experts):
    r"""Per-pair outputs ``[P, out]``: each expert run on all pairs in a
    Python loop, stacked to ``[P, M, out]``, the chosen ones gathered."""
    ex = moe.experts
    outs = [
        ex.act(x @ ex.weight1[j] + ex.bias1[j]) @ ex.weight2[j] + ex.bias2[j]
        for j in range(ex.num_experts)
    ]
    all_out = torch.stack(outs, dim=1)
    idx = experts.unsqueeze(-1).expand(-1, -1, all_out.size(-1))
    return (all_out.gather(1, idx) * weights.unsqueeze(-1)).sum(1)


def dense_einsum(moe, x, weights, experts):
    r"""The same dense computation batched into two einsums (a stronger
    dense baseline than the published loop)."""
    ex = moe.experts
    h = ex.act(torch.einsum('pi,mih->pmh', x, ex.weight1) + ex.bias1)
    y = torch.einsum('pmh,mho->pmo', h, ex.weight2) + ex.bias2
    idx = experts.unsqueeze(-1).expand(-1, -1, y.size(-1))
    return (y.gather(1, idx) * weights.unsqueeze(-1)).sum(1)


def dense_route(moe, x):
    r"""The gate without noise: ``(probs, weights, experts)``."""
    router = moe.router
    probs = router.gate(x).softmax(dim=-1)
    weights, experts = probs.topk(router.top_k, dim=-1)
    if router.renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    if router.scale_by_k:
        weights = weights / router.top_k
    return probs, weights, experts


def dense_reference(moe, x, batch, num_tasks, kernel=dense_published):
    r"""The relation meta ``[num_tasks, out]`` of the pairs ``x`` grouped by
    ``batch``, every expert computed on every pair."""
    _, weights, experts = dense_route(moe, x)
    r = kernel(moe, x, weights, experts)
    meta = r.new_zeros(num_tasks, r.size(-1)).index_add(0, batch, r)
    count = torch.bincount(batch, minlength=num_tasks).clamp(min=1)
    return meta / count.unsqueeze(-1).to(r.dtype)
