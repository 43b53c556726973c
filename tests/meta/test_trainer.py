import os

import pytest
import torch

from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.meta import (LazySparseAdam, MetaLearner, MetaTrainer,
                              load_checkpoint)
from pyg_fewshot.meta.checkpoint import ConfigMismatchError
from pyg_fewshot.models import build_model


def make_trainer(data, out, max_steps, validate=None, **kw):
    torch.manual_seed(0)
    model = build_model('metar', data, embedding_dim=8, hidden_channels=(8, ))
    sampler = EpisodeSampler(data, 2, batch_size=8, seed=0)
    return MetaTrainer(MetaLearner(model), sampler, str(out),
                       validate=validate or (lambda: 0.0),
                       max_steps=max_steps, eval_every=2, progress=False,
                       metadata={'model': 'metar'}, **kw)


def test_resume_equals_uninterrupted_run(tiny_data, tmp_path):
    full = make_trainer(tiny_data, tmp_path / 'full', 6)
    full.fit()
    part = make_trainer(tiny_data, tmp_path / 'part', 4)
    part.fit()
    resumed = make_trainer(tiny_data, tmp_path / 'part', 6)
    summary = resumed.fit()
    assert summary['steps'] == 6
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b)


def test_run_config_is_stored_and_checked_on_resume(tiny_data, tmp_path):
    run_config = {'trainer.lr': 0.001, 'seed': 0}
    first = make_trainer(tiny_data, tmp_path, 2, run_config=run_config)
    first.fit()
    assert run_config == {'trainer.lr': 0.001, 'seed': 0}  # not mutated
    stored = load_checkpoint(str(tmp_path / 'last.pt'))['config']
    assert stored == first.run_config
    assert stored['data_fingerprint'] and stored['seed'] == 0
    assert load_checkpoint(str(tmp_path / 'best.pt'))['config'] == stored
    with pytest.raises(ConfigMismatchError,
                       match='trainer.lr: 0.001 → 0.01'):
        make_trainer(tiny_data, tmp_path, 4,
                     run_config={'trainer.lr': 0.01, 'seed': 0}).fit()
    # max_steps is not part of it: raising it extends the run.
    summary = make_trainer(tiny_data, tmp_path, 4,
                           run_config=run_config).fit()
    assert summary['steps'] == 4 and summary['history'][0]['step'] == 2
    # Each validation records the training time so far; the resumed run
    # adds to it, and the last entry is the run's total.
    seconds = [h['train_seconds'] for h in summary['history']]
    assert len(seconds) == 2 and 0 < seconds[0] <= seconds[1]
    assert seconds[1] == pytest.approx(summary['train_seconds'], abs=1e-3)


@pytest.mark.parametrize('option', [dict(lr_schedule='cosine'),
                                    dict(warmup_steps=10),
                                    dict(weight_decay=0.1),
                                    dict(config={'seed': 0})])
def test_removed_options_are_refused(tiny_data, tmp_path, option):
    with pytest.raises(TypeError, match='unexpected keyword'):
        make_trainer(tiny_data, tmp_path, 2, **option)


def test_learning_rate_stays_constant(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, 4, sparse_lr=1e-2)
    trainer.fit()
    lrs = sorted(g['lr'] for o in trainer.optimizers for g in o.param_groups)
    assert lrs == [1e-3, 1e-2]
    state = load_checkpoint(str(tmp_path / 'last.pt'))
    assert 'schedulers' not in state
    # The optimiser state (Adam's moments) still travels with the run.
    assert len(state['optimizers']) == 2
    assert state['optimizers'][0]['state']


def test_early_stopping_and_best_checkpoint(tiny_data, tmp_path):
    scores = iter([0.5, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    trainer = make_trainer(tiny_data, tmp_path, 100,
                           validate=lambda: next(scores), patience=3)
    summary = trainer.fit()
    assert summary['stopped_early'] and summary['steps'] == 10
    assert summary['best_step'] == 4 and summary['best_score'] == 0.7
    best = load_checkpoint(os.path.join(tmp_path, 'best.pt'))
    assert best['step'] == 4 and best['metadata'] == {'model': 'metar'}


def test_checkpoint_write_is_atomic(tiny_data, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_data, tmp_path, 2)
    trainer.fit()
    before = load_checkpoint(os.path.join(tmp_path, 'last.pt'))

    def broken_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as fh:
            fh.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        make_trainer(tiny_data, tmp_path, 4).fit()
    monkeypatch.undo()
    after = load_checkpoint(os.path.join(tmp_path, 'last.pt'))
    assert after['step'] == before['step'] == 2
    assert sorted(os.listdir(tmp_path)) == ['best.pt', 'last.pt']


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / 'last.pt'
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='Could not read checkpoint'):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / 'missing.pt'))


def test_sparse_entity_table_only_updates_touched_rows(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, 1)
    state = trainer.sampler.state_dict()
    ep = trainer.sampler.sample()
    trainer.sampler.load_state_dict(state)
    touched = torch.zeros(tiny_data['entity'].num_nodes, dtype=torch.bool)
    for ids in (ep.support, ep.support_neg, ep.query, ep.query_neg):
        touched[ids.reshape(-1)] = True
    assert not touched.all()
    before = trainer.model.encoder.entity.weight.detach().clone()
    trainer.train_step()
    changed = (trainer.model.encoder.entity.weight != before).any(1)
    assert changed.any() and not (changed & ~touched).any()
    sparse_opt = [o for o in trainer.optimizers
                  if isinstance(o, LazySparseAdam)]
    assert len(sparse_opt) == 1
    # Moments exist for the touched rows only.
    assert 0 < sparse_opt[0].num_state_rows() <= int(touched.sum())


def test_sparse_optimizer_choice(tiny_data, tmp_path):
    a = make_trainer(tiny_data, tmp_path / 'a', 1)
    b = make_trainer(tiny_data, tmp_path / 'b', 1,
                     sparse_optimizer='sparse_adam')
    assert any(isinstance(o, torch.optim.SparseAdam) for o in b.optimizers)
    a.model.load_state_dict(b.model.state_dict())
    for step in range(3):
        for trainer in (a, b):  # same dropout masks for both
            torch.manual_seed(step)
            trainer.train_step()
    # Same updates, different bookkeeping.
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    with pytest.raises(ValueError, match='sparse_optimizer'):
        make_trainer(tiny_data, tmp_path / 'c', 1, sparse_optimizer='sgd')


def test_sparse_lr_sets_or_freezes_the_entity_table(tiny_data, tmp_path):
    slow = make_trainer(tiny_data, tmp_path / 'slow', 1, sparse_lr=1e-5)
    lrs = [g['lr'] for o in slow.optimizers for g in o.param_groups]
    assert sorted(lrs) == [1e-5, 1e-3]

    frozen = make_trainer(tiny_data, tmp_path / 'frozen', 1, sparse_lr=0.0)
    assert not frozen.model.encoder.entity.weight.requires_grad
    assert frozen.sparse_params == []
    before = frozen.model.encoder.entity.weight.detach().clone()
    dense_before = [p.detach().clone() for p in frozen.dense_params]
    frozen.train_step()
    assert torch.equal(frozen.model.encoder.entity.weight, before)
    assert any(not torch.equal(p, q)
               for p, q in zip(frozen.dense_params, dense_before))
    with pytest.raises(ValueError, match='sparse_lr'):
        make_trainer(tiny_data, tmp_path / 'bad', 1, sparse_lr=-1.0)


def test_dense_adam_is_fused_and_stays_fused_on_resume(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path / 'a', 2)
    dense = trainer.optimizers[0]
    assert isinstance(dense, torch.optim.Adam)
    assert dense.param_groups[0]['fused'] is True
    trainer.fit()
    # A checkpoint written by the per-tensor Adam (older runs) resumes with
    # the fused kernel of this run, and the same moments.
    state = load_checkpoint(str(tmp_path / 'a' / 'last.pt'))
    for g in state['optimizers'][0]['param_groups']:
        g['fused'] = None
    resumed = make_trainer(tiny_data, tmp_path / 'b', 4)
    resumed.load_state_dict(state)
    assert resumed.optimizers[0].param_groups[0]['fused'] is True
    moments = resumed.optimizers[0].state_dict()['state']
    for key, value in state['optimizers'][0]['state'].items():
        torch.testing.assert_close(moments[key]['exp_avg'],
                                   value['exp_avg'])


@pytest.mark.parametrize('name,kw', [('metar', {}), ('moemeta', {}),
                                     ('moemeta', dict(aggregator=None))])
def test_mixed_precision_trains(tiny_data, tmp_path, name, kw):
    # bfloat16 autocast: the aggregator leaves its hand-written kernels for
    # the autograd path and the experts run in their parameters' dtype.

    torch.manual_seed(0)
    model = build_model(name, tiny_data, embedding_dim=8, **kw)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = MetaTrainer(MetaLearner(model), EpisodeSampler(tiny_data, 2, 3,
                                                             8),
                          str(tmp_path), amp=True, max_steps=3,
                          eval_every=10, progress=False)
    trainer.fit()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert any(not torch.equal(before[k], v)
               for k, v in model.named_parameters())


def test_keep_eval_mode_turns_dropout_off_after_first_validation(tiny_data,
                                                                 tmp_path):
    modes = {}
    trainers = {}
    for keep in (False, True):
        trainer = make_trainer(tiny_data, tmp_path / str(keep), 6,
                               keep_eval_mode=keep)
        step = trainer.train_step
        seen = []

        def recording_step(step=step, seen=seen, trainer=trainer):
            out = step()
            seen.append(trainer.model.training)
            return out

        trainer.train_step = recording_step
        trainer.fit()
        modes[keep], trainers[keep] = seen, trainer
    # eval_every=2: the published quirk trains in eval mode from step 3 on.
    assert modes[False] == [True] * 6
    assert modes[True] == [True, True, False, False, False, False]
    # Identical until the first validation, different afterwards (dropout).
    short = []
    for keep in (False, True):
        short.append(make_trainer(tiny_data, tmp_path / f'short{keep}', 2,
                                  keep_eval_mode=keep))
        short[-1].fit()
    for p, q in zip(short[0].model.parameters(), short[1].model.parameters()):
        assert torch.equal(p, q)
    a = dict(trainers[False].model.named_parameters())
    b = dict(trainers[True].model.named_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a)
