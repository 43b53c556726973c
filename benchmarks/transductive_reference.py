"""How learnable are a few-shot KG's test relations when they are *not*
few-shot? A transductive reference for the cross-dataset table.

    python benchmarks/transductive_reference.py --dataset PATH|umls-one \
        [--models transe distmult complex rotate] [--seeds 0 1 2] \
        [--epochs 300] [--eval-every 25] [--dim 100] [--shots 1] \
        [--output docs/...md]

A PyG knowledge-graph embedding model (``torch_geometric.nn.kge``) is
trained on the background graph, every train task triple, and for each dev
and test relation its support triples plus half of its queries (a seeded
split); it then ranks the tails of the other half exactly as the few-shot
evaluator ranks them (the relation's candidates, every known true tail
filtered, ties at the mean rank). So each test relation is seen through
about half its triples instead of ``K``: where even this stays near chance
(or near the degree baseline), the relations are not learnable by that
score function on that data, and a few-shot model cannot be expected to
learn them from one example. Dev chooses the epoch; the table reports test
MRR of the held-out halves, mean ± std over seeds, with the chance level and
the degree baseline of the same queries.

Mini-batch training with the models' own losses and loaders, Adam; meant
for the small KGs (UMLS-One, Nations-One, Kinships-One, the synthetic
settings), not NELL-One.
"""
import argparse
import sys
import time
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from _common import mean_std, write_output

MODELS = ('transe', 'distmult', 'complex', 'rotate')


def triples(data, split_seed: int, shots: int
            ) -> Tuple[Tensor, Dict[str, List[Tuple[int, Tensor]]]]:
    """``(train, held)``: the ``[E, 3]`` (head, relation, tail) training
    triples, and per split the held-out ``(task relation, [n, 2] queries)``
    of each dev and test relation."""
    from pyg_fewshot.data.hetero import split_relations, task_triples
    ei = data.bg_edge_index
    parts = [torch.stack([ei[0], data.bg_edge_type, ei[1]], 1)]
    R = len(data.relation_names)
    held: Dict[str, List[Tuple[int, Tensor]]] = {'dev': [], 'test': []}
    g = torch.Generator().manual_seed(split_seed)
    for split in ('train', 'dev', 'test'):
        for rel in split_relations(data, split).tolist():
            trip = task_triples(data, rel)
            seen = trip
            if split != 'train':
                query = trip[shots:]
                perm = torch.randperm(query.size(0), generator=g)
                half = query.size(0) // 2
                held[split].append((rel, query[perm[:half]]))
                seen = torch.cat([trip[:shots], query[perm[half:]]])
            parts.append(torch.stack([seen[:, 0],
                                      torch.full_like(seen[:, 0], R + rel),
                                      seen[:, 1]], 1))
    return torch.cat(parts), held


@torch.no_grad()
def rank_held(score, data, held: List[Tuple[int, Tensor]], R: int,
              ties: str = 'mean') -> float:
    """Filtered MRR of the held-out queries ``held``, ranked as the
    few-shot evaluator ranks them; ``score(h, r, t)`` scores triples."""
    from pyg_fewshot.data.hetero import candidates, is_true_triple
    from pyg_fewshot.evaluation import count_rank_terms, ranking_metrics
    rr = []
    for rel, query in held:
        cand = torch.unique(torch.cat([candidates(data, rel), query[:, 1]]))
        Q, C = query.size(0), cand.numel()
        h = query[:, 0].repeat_interleave(C)
        t = cand.repeat(Q)
        scores = score(h, torch.full_like(h, R + rel), t).view(Q, C)
        pos = scores.gather(1, torch.searchsorted(
            cand, query[:, 1].contiguous()).unsqueeze(1)).squeeze(1)
        valid = ~is_true_triple(data, torch.tensor(rel), query[:, :1],
                                cand.unsqueeze(0))
        higher, tied = count_rank_terms(pos, scores, valid)
        rr.append(ranking_metrics(higher, tied, ties)['rr'])
    return float(torch.cat(rr).mean())


def floors(data, held: List[Tuple[int, Tensor]], R: int
           ) -> Tuple[float, float]:
    """The exact chance level and the degree baseline
    (:func:`pyg_fewshot.evaluation.degree_baseline`'s ranking) of the
    held-out queries ``held``."""
    from pyg_fewshot.data.hetero import background_degree
    deg = background_degree(data)
    chance = rank_held(lambda h, r, t: torch.zeros(t.numel()), data, held,
                       R, ties='expected')
    by_degree = rank_held(lambda h, r, t: deg[t], data, held, R,
                          ties='expected')
    return chance, by_degree


def train_one(name: str, data, seed: int, args) -> Dict[str, float]:
    import torch_geometric.nn.kge as kge
    cls = {'transe': kge.TransE, 'distmult': kge.DistMult,
           'complex': kge.ComplEx, 'rotate': kge.RotatE}[name]
    train, held = triples(data, seed, args.shots)
    R = len(data.relation_names)
    num_rel = R + len(data.task_relation_names)
    torch.manual_seed(seed)
    model = cls(data['entity'].num_nodes, num_rel, args.dim)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = model.loader(train[:, 0], train[:, 1], train[:, 2],
                          batch_size=args.batch_size, shuffle=True)
    best = (-1.0, 0, 0.0)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for h, r, t in loader:
            opt.zero_grad()
            model.loss(h, r, t).backward()
            opt.step()
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            model.eval()
            dev = rank_held(model, data, held['dev'], R)
            if dev > best[0]:
                best = (dev, epoch, rank_held(model, data, held['test'], R))
    return {'dev': best[0], 'epoch': best[1], 'test': best[2],
            'seconds': time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dataset', required=True)
    parser.add_argument('--models', nargs='+', default=list(MODELS),
                        choices=MODELS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=300)
    parser.add_argument('--eval-every', type=int, default=25)
    parser.add_argument('--dim', type=int, default=100)
    parser.add_argument('--lr', type=float, default=0.01)
    parser.add_argument('--batch-size', type=int, default=512)
    parser.add_argument('--output', default=None)
    args = parser.parse_args()

    from pyg_fewshot.data import load_dataset
    data = load_dataset(args.dataset)[0]
    R = len(data.relation_names)
    rows = []
    per_seed_floors = [floors(data, triples(data, s, args.shots)[1]['test'],
                              R) for s in args.seeds]
    chance = mean_std([f[0] for f in per_seed_floors])
    by_degree = mean_std([f[1] for f in per_seed_floors])
    for name in args.models:
        runs = []
        for seed in args.seeds:
            res = train_one(name, data, seed, args)
            print(f"{name} s{seed}: test {res['test']:.3f}, dev "
                  f"{res['dev']:.3f} at epoch {res['epoch']} "
                  f"({res['seconds']:.0f} s)", file=sys.stderr)
            runs.append(res)
        rows.append(f"| {name} | {mean_std([r['test'] for r in runs])} | "
                    f"{mean_std([r['dev'] for r in runs])} | "
                    + ', '.join(str(r['epoch']) for r in runs) + ' |')
    text = '\n'.join([
        f'Transductive reference on {args.dataset}: test MRR of the held-out '
        f'half of each test relation (mean ± std over seeds {args.seeds}); '
        f'chance {chance}, degree baseline {by_degree} on the same queries.',
        '', '| model | test MRR | dev MRR | epoch chosen on dev |',
        '|---|---|---|---|'] + rows + [
        '', f'{args.epochs} epochs, dev every {args.eval_every}, dimension '
        f'{args.dim}, Adam lr {args.lr}, batch {args.batch_size}, '
        f'{torch.get_num_threads()} thread(s).'])
    write_output(text, args.output)


if __name__ == '__main__':
    main()
