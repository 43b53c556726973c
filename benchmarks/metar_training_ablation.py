"""Which part of the published MetaR training makes it learn on KGs that
start from random vectors? Each published quirk switched on alone, and in
combinations, against the library's per-task training, on one dataset.

The quirks (METHODS.md): (1) the support loss is a mean over the
meta-batch, so the inner step is beta / B in training and beta at
evaluation; (2) the (pre-adaptation) support loss is added to the outer
objective; (3) dropout is off from the first validation on. They are
rebuilt here as a small learner subclass, so the library keeps one
training path.

    python benchmarks/metar_training_ablation.py [--dataset umls-one] \
        [--seeds 0 1 2] [--max-steps 1000] [--batch-size 1024] \
        [--variants ...] [--runs-dir runs/metar_ablation] [--output FILE]

Each run's result is written as JSON under --runs-dir and reused.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict

import torch

from _common import machine, write_output
from pyg_fewshot.data import EpisodeSampler, load_dataset
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import build_model


class AblationLearner(MetaLearner):
    """MetaLearner whose training-time inner step and outer objective can be
    changed independently of evaluation."""
    def __init__(self, model, train_scale: float = 1.0,
                 support_weight: float = 0.0, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.train_scale = train_scale
        self.support_weight = support_weight

    def loss(self, ep):
        eval_steps = self._steps
        self._steps = {k: v * self.train_scale for k, v in eval_steps.items()}
        try:
            total, logs = super().loss(ep)
            if self.support_weight:
                sup_h, sup_tails, _, _ = self.embed_stacked(ep)
                local = self.model.init_local(ep.support, sup_h,
                                              sup_tails[:, 0]).local
                sup = self.margins(local, sup_h, sup_tails).mean()
                total = total + self.support_weight * sup
        finally:
            self._steps = eval_steps
        return total, logs


class ScalarBatchNorm(torch.nn.Module):
    """One mean and variance over every entry of the batch, with a scalar
    affine map: the published ``BatchNorm1d(K)`` over ``[B, K, C]`` at
    K = 1, without tying parameters to K."""
    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(1)

    def forward(self, x):
        return self.norm(x.reshape(-1, 1)).view_as(x)


class PairwiseRelationMeta(torch.nn.Module):
    """A relation meta of ``forward_tasks(x [B, K, 2d]) -> (R [B, d], None)``
    (the interface of :class:`~pyg_fewshot.nn.MLPRelationMeta`) from any
    network of the pairs: ``net`` on every pair, mean over the K pairs."""
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward_tasks(self, x):
        B, K = x.size(0), x.size(1)
        return self.net(x.flatten(0, 1)).view(B, K, -1).mean(dim=1), None


def published_relation_meta(d: int, hidden=(500, 200), dropout=0.5):
    """The published relation learner's layer order: Linear, norm,
    LeakyReLU, Dropout, ..., Linear, norm."""
    sizes = [2 * d, *hidden, d]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(a, b), ScalarBatchNorm()]
        if i < len(sizes) - 2:
            layers += [torch.nn.LeakyReLU(), torch.nn.Dropout(dropout)]
    return PairwiseRelationMeta(torch.nn.Sequential(*layers))


VARIANTS: Dict[str, dict] = {
    'per-task beta=5': dict(inner_lr=5.0),
    'per-task beta=0.05': dict(inner_lr=0.05),
    'no inner loop': dict(inner_lr=5.0, inner_steps=0),
    'published quirks (1)+(2)': dict(inner_lr=5.0, published=True),
    '(1) beta/B in training only': dict(inner_lr=5.0, train_scale='1/B'),
    '(2) support loss in outer only': dict(inner_lr=5.0, support_weight=1.0),
    '(2) + beta=0.05': dict(inner_lr=0.05, support_weight=1.0),
    '(2) + no inner loop in training, beta=5 at eval': dict(
        inner_lr=5.0, support_weight=1.0, train_scale=0.0),
    '(1)+(2)+(3) dropout off after 1st validation': dict(
        inner_lr=5.0, published=True, quirk3=True),
    '(2) + published norm layers': dict(
        inner_lr=5.0, support_weight=1.0, norm='published'),
    '(2) + batch norm per channel': dict(
        inner_lr=5.0, support_weight=1.0, norm='batch_norm'),
    'batch norm per channel': dict(inner_lr=5.0, norm='batch_norm'),
    '(1)+(2) + published norm layers': dict(
        inner_lr=5.0, published=True, norm='published'),
    '(1)+(2)+(3) + published norm layers': dict(
        inner_lr=5.0, published=True, quirk3=True, norm='published'),
}


def run_one(name: str, seed: int, args) -> dict:
    spec = dict(VARIANTS[name])
    tag = ''.join(c if c.isalnum() else '_' for c in name)
    out = os.path.join(args.runs_dir, f'{tag}_s{seed}')
    path = os.path.join(out, 'result.json')
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    torch.manual_seed(seed)
    dataset = load_dataset(args.dataset)
    data = dataset[0]
    if args.pretrain:
        # As `pyg-fewshot train --pretrain`: TransE vectors of the
        # background graph, scaled to a mean row norm of 1.
        ent, _ = dataset.pretrained_embeddings(dim=100)
        data['entity'].emb = ent / ent.norm(dim=1).mean().clamp(min=1e-12)
    model = build_model('metar', data)
    norm = spec.pop('norm', None)
    if norm == 'published':
        model.relation_meta = published_relation_meta(
            model.encoder.embedding_dim)
    elif norm is not None:
        from torch_geometric.nn import MLP
        d = model.encoder.embedding_dim
        model.relation_meta = PairwiseRelationMeta(
            MLP([2 * d, 500, 200, d], act='leaky_relu', dropout=0.5,
                norm=norm))
    scale = spec.pop('train_scale', 1.0)
    if scale == '1/B':
        scale = 1.0 / args.batch_size
    published = spec.pop('published', False)
    quirk3 = spec.pop('quirk3', False)
    learner = AblationLearner(model, train_scale=scale,
                              published_quirks=published, **spec)
    sampler = EpisodeSampler(data, args.shots, 3, args.batch_size, 'train',
                             seed=seed)

    def validate() -> float:
        return evaluate(model, data, 'dev', args.shots, learner,
                        seed=seed)['mrr']

    trainer = MetaTrainer(learner, sampler, out, validate=validate,
                          max_steps=args.max_steps,
                          eval_every=args.eval_every, progress=False)
    if quirk3:
        # The published code never calls model.train() after validating.
        original_train = model.train

        def train(mode: bool = True):
            if trainer.history:
                mode = False
            return original_train(mode)
        model.train = train
    t0 = time.perf_counter()
    trainer.fit(resume=False)
    trainer.load_best()
    test = evaluate(model, data, 'test', args.shots, learner, seed=seed)
    res = {'variant': name, 'seed': seed, 'test_mrr': test['mrr'],
           'hits@10': test['hits@10'], 'best_step': trainer.best_step,
           'dev_mrr': trainer.best_score,
           'seconds': round(time.perf_counter() - t0, 1)}
    os.makedirs(out, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(res, f, indent=2)
    for name_ in ('last.pt', 'best.pt'):
        if os.path.exists(os.path.join(out, name_)):
            os.remove(os.path.join(out, name_))
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--dataset', default='umls-one')
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--max-steps', type=int, default=1000)
    parser.add_argument('--eval-every', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--pretrain', action='store_true',
                        help='start from TransE vectors of the background '
                        'graph (as pyg-fewshot train --pretrain)')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS))
    parser.add_argument('--runs-dir', default='runs/metar_ablation')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    start = 'TransE-pretrained' if args.pretrain else 'random'
    lines = [f'MetaR training ablation on {args.dataset} ({start} initial '
             f'vectors), {args.shots}-shot: '
             f'{args.max_steps} steps of B = {args.batch_size}, dev MRR '
             f'every {args.eval_every} steps, seeds {args.seeds}; '
             f'{machine()}.', '',
             '| training | test MRR | dev MRR | per seed |',
             '|---|---|---|---|']
    for name in args.variants:
        rows = []
        for seed in args.seeds:
            rows.append(run_one(name, seed, args))
            print(f"{name} seed {seed}: test {rows[-1]['test_mrr']:.3f} "
                  f"dev {rows[-1]['dev_mrr']:.3f} "
                  f"({rows[-1]['seconds']} s)", file=sys.stderr)
        t = [r['test_mrr'] for r in rows]
        d = [r['dev_mrr'] for r in rows]

        def ms(v):
            return (f'{statistics.mean(v):.3f}' if len(v) == 1 else
                    f'{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}')
        lines.append(f"| {name} | {ms(t)} | {ms(d)} | "
                     + ', '.join(f'{x:.3f}' for x in t) + ' |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
