r"""Worker of ``test_distributed.py``, started by ``torchrun`` (so the real
launch path, environment variables and gloo rendezvous are exercised).

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        tests/meta/dist_worker.py OUT_DIR STEPS|averager

Each rank meta-trains a deterministic MoEMeta (no dropout, every neighbour
used) on its half of the meta-batch, then evaluates the test split with the
relations split over the ranks, and saves what it ended with to
``OUT_DIR/rank<r>.pt``. The test rebuilds the same set-up in one process.
"""
import os
import sys
from typing import Any, Dict

import torch

from pyg_fewshot.data import EpisodeSampler, make_synthetic
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.meta import distributed as dist_utils
from pyg_fewshot.models import MoEMeta
from pyg_fewshot.models import build_model as _build_model

GLOBAL_BATCH = 8
SEED = 0


def build_data():
    return make_synthetic(num_entities=60, num_background_relations=3,
                          num_train_relations=6, num_dev_relations=2,
                          num_test_relations=2, triples_per_relation=10,
                          seed=3)


def build_model(data) -> MoEMeta:
    torch.manual_seed(SEED)
    # Deterministic forward: no dropout, no neighbour sampling.
    return _build_model(
        'moemeta', data, pretrained=False, embedding_dim=8,
        aggregator_kwargs={'max_neighbors': None, 'dropout': 0.0},
        relation_meta_kwargs={'num_experts': 4, 'top_k': 2,
                              'hidden_channels': 8,
                              'gate_hidden_channels': 8})


def rank_sampler(data, rank: int, world: int) -> EpisodeSampler:
    return EpisodeSampler(data, 1, num_queries=2,
                          batch_size=GLOBAL_BATCH // world, split='train',
                          seed=dist_utils.rank_seed(SEED, rank))


def main(out_dir: str, steps: int) -> None:
    rank, world, _ = dist_utils.init_distributed()
    data = build_data()
    model = build_model(data)
    if rank == 1:
        # A different local initialisation: the trainer must broadcast
        # rank 0's weights before the first step.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    learner = MetaLearner(model)
    trainer = MetaTrainer(learner, rank_sampler(data, rank, world), out_dir,
                          validate=None, max_steps=steps, eval_every=2,
                          progress=False, metadata={'model': 'moemeta'})
    trainer.fit(resume=False)
    result = evaluate(model, data, 'test', 1, learner, distributed=True)
    saved: Dict[str, Any] = {
        'world': world,
        'state': {k: v.detach().clone()
                  for k, v in model.state_dict().items()},
        'mrr': result['mrr'],
        'num_queries': result['num_queries'],
        'per_relation': result['per_relation'],
    }
    torch.save(saved, os.path.join(out_dir, f'rank{rank}.pt'))
    dist_utils.cleanup()


def averager(out_dir: str) -> None:
    r"""Edge cases of :class:`GradientAverager`: a gradient on one rank
    only, on no rank, and sparse gradients with different rows (and
    duplicates) on each rank."""
    rank, world, _ = dist_utils.init_distributed()
    both = torch.nn.Parameter(torch.zeros(3))
    one = torch.nn.Parameter(torch.zeros(2))
    none = torch.nn.Parameter(torch.zeros(2))
    table = torch.nn.Parameter(torch.zeros(5, 2))
    both.grad = torch.full((3, ), 1.0 + 2 * rank)
    if rank == 0:
        one.grad = torch.tensor([4.0, -2.0])
    rows = [torch.tensor([0, 2]), torch.tensor([2, 3, 3])][rank]
    table.grad = torch.sparse_coo_tensor(
        rows.unsqueeze(0), torch.ones(rows.numel(), 2) * (rank + 1), (5, 2))
    dist_utils.GradientAverager([both, one, none], [table])()
    torch.save({'both': both.grad, 'one': one.grad, 'none': none.grad,
                'table': table.grad.to_dense(),
                'table_sparse': table.grad.is_sparse},
               os.path.join(out_dir, f'avg{rank}.pt'))
    dist_utils.cleanup()


if __name__ == '__main__':
    torch.set_num_threads(1)
    if sys.argv[2] == 'averager':
        averager(sys.argv[1])
    else:
        main(sys.argv[1], int(sys.argv[2]))
