"""Item 1: non-finite scores never improve a metric, and training stops
with a clear error when it diverges."""
import math
import os

import pytest
import torch

from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.evaluation import (chance_level, count_rank_terms, evaluate,
                                    rank_candidates)
from pyg_fewshot.meta import MetaLearner, MetaTrainer, load_checkpoint
from pyg_fewshot.models import build_model


def test_nan_true_score_ranks_last():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    valid = torch.tensor([[True, True, True, False]])
    for bad in (math.nan, math.inf, -math.inf):
        higher, ties = count_rank_terms(torch.tensor([bad]), scores, valid)
        assert higher.tolist() == [3] and ties.tolist() == [0]
        res = rank_candidates(torch.tensor([bad]), scores, valid, 'mean')
        assert res['rank'].tolist() == [4.0]
        assert res['hits@1'].tolist() == [0.0]


def test_nan_candidate_counts_as_higher():
    scores = torch.tensor([[math.nan, -1.0, 5.0]])
    higher, ties = count_rank_terms(torch.tensor([0.0]), scores)
    assert higher.tolist() == [2] and ties.tolist() == [0]


def test_all_nan_model_scores_below_chance(tiny_data):
    torch.manual_seed(0)
    model = build_model('metar', tiny_data, embedding_dim=8,
                        hidden_channels=(8, ))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    with pytest.warns(RuntimeWarning, match='non-finite'):
        res = evaluate(model, tiny_data, 'test', shots=1)
    chance = chance_level(tiny_data, 'test', shots=1)
    # Every query is ranked last among its filtered candidates.
    assert res['nonfinite_scores'] > 0
    assert res['hits@10'] == 0.0
    assert res['mrr'] < chance['mrr']


def _trainer(data, out, lr):
    torch.manual_seed(0)
    model = build_model('metar', data, embedding_dim=8,
                        hidden_channels=(8, ))
    sampler = EpisodeSampler(data, 1, batch_size=8, seed=0)
    return MetaTrainer(MetaLearner(model), sampler, str(out),
                       validate=lambda: 0.0, lr=lr, max_steps=50,
                       eval_every=2, progress=False)


def test_nan_loss_stops_training_and_keeps_checkpoints(tiny_data, tmp_path):
    trainer = _trainer(tiny_data, tmp_path, 1e-3)
    trainer.fit()
    good = load_checkpoint(os.path.join(tmp_path, 'last.pt'))['step']
    trainer = _trainer(tiny_data, tmp_path / 'nan', 1e-3)
    calls = {'n': 0}
    loss_fn = trainer.learner.loss

    def poisoned(ep):
        calls['n'] += 1
        loss, logs = loss_fn(ep)
        return (loss * math.nan if calls['n'] == 3 else loss), logs

    trainer.learner.loss = poisoned
    with pytest.raises(FloatingPointError, match='diverged at step 3: the '
                       'loss is nan'):
        trainer.fit()
    # The checkpoint of step 2 is intact and finite.
    state = load_checkpoint(os.path.join(tmp_path / 'nan', 'last.pt'))
    assert state['step'] == 2 and good == 50
    assert all(torch.isfinite(v).all() for v in state['model_state'].values()
               if v.is_floating_point())


def test_nonfinite_parameters_stop_before_checkpoint(tiny_data, tmp_path):
    trainer = _trainer(tiny_data, tmp_path, 1e-3)
    step = trainer.train_step

    def poisoned_step():
        out = step()
        if trainer.step == 2:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.inf)
        return out

    trainer.train_step = poisoned_step
    with pytest.raises(FloatingPointError, match="by step 2: parameter"):
        trainer.fit()
    assert not os.path.exists(os.path.join(tmp_path, 'last.pt'))
    assert not os.path.exists(os.path.join(tmp_path, 'best.pt'))
