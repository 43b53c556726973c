"""The library's hand-written kernels against the plain PyTorch they replace,
in isolation, at the sizes of a 1-shot NELL-One meta-batch (B = 1,024).

    python benchmarks/bench_kernels.py [--rounds 30] [--output FILE]

Each row times the library function and its reference (the expression or
PyTorch function used before) in interleaved rounds (median wall time);
outputs are checked to agree first. Sizes are those of one meta-batch
(docs/benchmarks.md, throughput section): 12,288 entity ids of 68,544; a
51,000-edge neighbourhood over 29,000 distinct (relation, neighbour) pairs
and 6,250 centres, d = 100; queries of 1,024 tasks against 2 x 3 tails;
6,244 and 18,700 entity rows for the row-wise Adam.
"""
import argparse
import warnings

import torch
import torch.nn.functional as F

from _common import interleaved_medians, load_average, machine, write_output
from pyg_fewshot.ops import unique_ids
from pyg_fewshot.meta import LazySparseAdam
from pyg_fewshot.ops import (csr_weighted_sum, relu_pair_messages,
                             transd_project, translational_distance)

N, D = 68544, 100


def unique_rows(g):
    ids = torch.randint(0, N, (12288, ), generator=g)
    torch.testing.assert_close(unique_ids(ids, N),
                               torch.unique(ids, return_inverse=True))
    return ('dedup of 12,288 entity ids (of 68,544)', 'forward',
            lambda: unique_ids(ids, N),
            lambda: torch.unique(ids, return_inverse=True))


def segment_sum_rows(g):
    C, P, E = 6250, 29000, 51000
    batch = torch.randint(0, C, (E, ), generator=g).sort().values
    col = torch.randint(0, P, (E, ), generator=g)
    ptr = torch.zeros(C + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(batch, minlength=C).cumsum(0)
    w = torch.rand(E, generator=g, requires_grad=True)
    x = torch.randn(P, D, generator=g, requires_grad=True)
    grad = torch.randn(C, D, generator=g)

    def ours():
        out = csr_weighted_sum(w, x, col, batch, ptr=ptr)
        return torch.autograd.grad(out, (w, x), grad)

    def sparse_mm():
        # The previous implementation (commit 07d4ddf): CSR sparse.mm
        # forward; backward A^T @ grad (transpose by an int64 argsort) and
        # sampled_addmm for the weights.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            wd, xd = w.detach(), x.detach()
            a = torch.sparse_csr_tensor(ptr, col, wd, size=(C, P))
            torch.sparse.mm(a, xd)
            pattern = torch.sparse_csr_tensor(ptr, col, torch.zeros_like(wd),
                                              size=(C, P))
            grad_w = torch.sparse.sampled_addmm(pattern, grad,
                                                xd.t()).values()
            perm = torch.argsort(col, stable=True)
            counts = torch.bincount(col, minlength=P)
            tptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            at = torch.sparse_csr_tensor(tptr, batch[perm], wd[perm],
                                         size=(P, C))
            return grad_w, torch.sparse.mm(at, grad)

    for u, v in zip(ours(), sparse_mm()):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
    return ('weighted neighbourhood sum, 51,000 edges (CSR sparse.mm)',
            'forward+backward', ours, sparse_mm)


def pair_message_rows(g):
    P, U, R = 29000, 15000, 582
    a = torch.randn(R, D, generator=g, requires_grad=True)
    b = torch.randn(U, D, generator=g, requires_grad=True)
    rel = torch.randint(0, R, (P, ), generator=g).sort().values
    ent = torch.randint(0, U, (P, ), generator=g)
    vecs = torch.randn(D, 2, generator=g, requires_grad=True)
    gc, gl = torch.randn(P, D, generator=g), torch.randn(2, P, generator=g)

    def ours():
        c, logits = relu_pair_messages(a, b, rel, ent, vecs)
        return torch.autograd.grad((c, logits), (a, b, vecs), (gc, gl))

    def plain():
        c = (a.index_select(0, rel) + b.index_select(0, ent)).relu()
        return torch.autograd.grad((c, (c @ vecs).t()), (a, b, vecs),
                                   (gc, gl))

    for u, v in zip(ours(), plain()):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-3)
    return ('ReLU pair messages and logits, 29,000 pairs (autograd)',
            'forward+backward', ours, plain)


def distance_rows(g):
    B, Q = 1024, 3

    def leaf(*shape):
        return torch.randn(*shape, generator=g, requires_grad=True)

    h, tails, rel = leaf(B, Q, D), leaf(B, 2, Q, D), leaf(B, D)
    ps = [leaf(B, D) for _ in range(3)]

    def margin(dist):
        return F.relu(1.0 + dist[:, 0] - dist[:, 1]).mean()

    def ours():
        loss = margin(translational_distance(h, tails, rel, *ps))
        return torch.autograd.grad(loss, (h, tails, rel, *ps))

    def plain():
        p_h, p_r, p_t = ps
        hh = transd_project(h, p_h, p_r)
        tt = transd_project(tails, p_t, p_r)
        dist = ((hh + rel.view(B, 1, D)).unsqueeze(1) - tt).norm(dim=-1)
        return torch.autograd.grad(margin(dist), (h, tails, rel, *ps))

    for u, v in zip(ours(), plain()):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)
    return ('TransD margin loss, 1,024 tasks x 2 x 3 tails (autograd)',
            'forward+backward', ours, plain)


def adam_rows(g, rows):
    def setup(cls):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(N, D))
        return w, cls([w])

    grads = [torch.sparse_coo_tensor(
        torch.randperm(N, generator=g)[:rows].view(1, -1),
        torch.randn(rows, D, generator=g), (N, D)) for _ in range(4)]
    states = {}

    def step(cls):
        if cls not in states:
            states[cls] = (setup(cls), [0])
        (w, opt), k = states[cls]
        w.grad = grads[k[0] % 4]
        k[0] += 1
        opt.step()

    return (f'row-wise Adam, {rows:,} of {N:,} rows (SparseAdam)', 'step',
            lambda: step(LazySparseAdam),
            lambda: step(torch.optim.SparseAdam))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--rounds', type=int, default=30)
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    rows = [unique_rows(g), segment_sum_rows(g), pair_message_rows(g),
            distance_rows(g), adam_rows(g, 6244), adam_rows(g, 18700)]
    lines = [
        f'Library kernels against the PyTorch they replace, median of '
        f'{args.rounds} interleaved rounds ({machine()}; load average '
        f'{load_average()}).', '',
        '| kernel (reference) | pass | ours (ms) | reference (ms) | '
        'speed-up |', '|---|---|---|---|---|'
    ]
    for name, what, ours, ref in rows:
        t = interleaved_medians({'ours': ours, 'ref': ref}, args.rounds)
        lines.append(f"| {name} | {what} | {1000 * t['ours']:.2f} | "
                     f"{1000 * t['ref']:.2f} | {t['ref'] / t['ours']:.1f}x |")
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
