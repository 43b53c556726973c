import json
import os

import pytest
import torch

import pyg_fewshot.data.pretrain as pretrain_mod
from pyg_fewshot.data.pretrain import (
    cache_paths,
    link_prediction_metrics,
    load_or_pretrain,
    pretrain_params,
    pretrain_transe,
    split_holdout,
)
from pyg_fewshot.data.synthetic import make_synthetic

SMALL = dict(dim=8, batch_size=256, progress=False)


@pytest.fixture(scope='module')
def data():
    return make_synthetic(num_entities=150, num_background_triples=1500,
                          seed=0)


def scripted(monkeypatch, values):
    """Held-out MRRs returned in this order, one per evaluation."""
    seq = iter(values)
    calls = []

    def fake(ent, rel, triples, known, p_norm=1.0, batch_size=256,
             _filter=None):
        calls.append(ent.clone())
        return {'mrr': next(seq), 'hits@1': 0.0, 'hits@10': 0.0,
                'mean_rank': 1.0, 'num_triples': triples[0].numel()}

    monkeypatch.setattr(pretrain_mod, 'link_prediction_metrics', fake)
    return calls


def test_stops_when_heldout_mrr_stops_improving(data, monkeypatch):
    calls = scripted(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    ent, rel, hist = pretrain_transe(data, epochs=20, holdout=0.1,
                                     eval_every=1, patience=2,
                                     return_history=True, **SMALL)
    # Best at epoch 2; epochs 3 and 4 do not beat it -> stop after 4.
    assert hist['stopped_early'] and hist['epochs_run'] == 4
    assert hist['best_epoch'] == 2 and hist['kept_epoch'] == 2
    assert hist['best_mrr'] == 0.3 and len(calls) == 4
    assert [c['epoch'] for c in hist['curve']] == [1, 2, 3, 4]
    assert [c['mrr'] for c in hist['curve']] == [0.1, 0.3, 0.2, 0.25]
    assert all(c['loss'] > 0 for c in hist['curve'])
    # The best evaluation's vectors are the ones returned ...
    assert torch.equal(ent, calls[1])
    monkeypatch.undo()
    # ... and equal those of a run of exactly that many epochs.
    ref, ref_rel = pretrain_transe(data, epochs=2, holdout=0.1,
                                   restore_best=False, **SMALL)
    assert torch.equal(ent, ref) and torch.equal(rel, ref_rel)
    last, _ = pretrain_transe(data, epochs=4, holdout=0.1,
                              restore_best=False, **SMALL)
    assert not torch.equal(ent, last)


def test_eval_every_patience_and_restore_best(data, monkeypatch):
    scripted(monkeypatch, [0.5, 0.4, 0.3, 0.2])
    _, _, hist = pretrain_transe(data, epochs=7, holdout=0.1, eval_every=3,
                                 patience=None, return_history=True, **SMALL)
    # Evaluated at 3, 6 and the last epoch; no patience: all epochs run.
    assert [c['epoch'] for c in hist['curve'] if 'mrr' in c] == [3, 6, 7]
    assert not hist['stopped_early'] and hist['epochs_run'] == 7
    assert hist['best_epoch'] == 3 and hist['kept_epoch'] == 3
    scripted(monkeypatch, [0.5, 0.4, 0.3])
    ent, _, hist = pretrain_transe(data, epochs=7, holdout=0.1,
                                   eval_every=3, restore_best=False,
                                   patience=None, return_history=True,
                                   **SMALL)
    assert hist['best_epoch'] == 3 and hist['kept_epoch'] == 7
    monkeypatch.undo()
    ref, _ = pretrain_transe(data, epochs=7, holdout=0.1, restore_best=False,
                             patience=None, **SMALL)
    assert torch.equal(ent, ref)


def test_no_holdout_is_the_plain_run(data):
    plain = pretrain_transe(data, epochs=3, holdout=0.0, **SMALL)
    ent, rel, hist = pretrain_transe(data, epochs=3, holdout=0.0,
                                     patience=1, eval_every=2,
                                     return_history=True, **SMALL)
    assert torch.equal(plain[0], ent) and torch.equal(plain[1], rel)
    assert hist['num_holdout_triples'] == 0 and hist['best_mrr'] is None
    assert hist['kept_epoch'] == 3 and hist['num_train_triples'] == 1500
    assert all('mrr' not in c for c in hist['curve'])


def test_real_heldout_mrr_improves_with_training(data):
    _, _, hist = pretrain_transe(data, dim=16, epochs=30, lr=0.02,
                                 batch_size=128, holdout=0.05, eval_every=10,
                                 patience=None, progress=False,
                                 return_history=True)
    mrrs = [c['mrr'] for c in hist['curve'] if 'mrr' in c]
    assert len(mrrs) == 3 and all(0 < m <= 1 for m in mrrs)
    assert hist['num_holdout_triples'] == 75
    assert hist['num_train_triples'] == 1425
    untrained, rel0, hist0 = pretrain_transe(
        data, dim=16, epochs=0, holdout=0.05, progress=False,
        return_history=True)
    h, t = data.bg_edge_index
    _, held = split_holdout(data, 0.05)
    base = link_prediction_metrics(
        untrained, rel0, (h[held], data.bg_edge_type[held], t[held]),
        (h, data.bg_edge_type, t))
    assert max(mrrs) > base['mrr']
    # Zero epochs: the initial vectors are evaluated once.
    assert [c['epoch'] for c in hist0['curve']] == [0]
    assert hist0['best_mrr'] == pytest.approx(base['mrr'])
    assert hist0['kept_epoch'] == 0 and hist0['epochs_run'] == 0


def test_split_holdout(data):
    train, held = split_holdout(data, 0.1, max_count=100, seed=3)
    assert held.numel() == 100 and train.numel() == 1400
    assert torch.equal(torch.sort(torch.cat([train, held]))[0],
                       torch.arange(1500))
    again = split_holdout(data, 0.1, max_count=100, seed=3)[1]
    assert torch.equal(held, again)
    assert not torch.equal(held, split_holdout(data, 0.1, 100, seed=4)[1])
    # Every held-out entity and relation keeps a training triple.
    h, t = data.bg_edge_index
    seen = set(h[train].tolist()) | set(t[train].tolist())
    assert set(h[held].tolist()) <= seen and set(t[held].tolist()) <= seen
    assert set(data.bg_edge_type[held].tolist()) <= set(
        data.bg_edge_type[train].tolist())
    assert split_holdout(data, 0.0)[1].numel() == 0
    with pytest.raises(ValueError, match='holdout'):
        split_holdout(data, 1.0)


def test_link_prediction_metrics_filtered_brute_force():
    torch.manual_seed(0)
    ent, rel = torch.randn(12, 4), torch.randn(3, 4)
    known = (torch.tensor([0, 0, 0, 1, 2]), torch.tensor([1, 1, 1, 0, 2]),
             torch.tensor([5, 6, 7, 3, 2]))
    triples = tuple(x[[0, 3, 4]] for x in known)
    res = link_prediction_metrics(ent, rel, triples, known, batch_size=2)
    ranks = []
    for h, r, t in zip(*triples):
        d = (ent[h] + rel[r] - ent).abs().sum(-1)
        others = [e for e in range(12) if e != t and not any(
            known[0][i] == h and known[1][i] == r and known[2][i] == e
            for i in range(5))]
        ranks.append(1 + sum(float(d[e] < d[t]) for e in others))
    assert res['num_triples'] == 3
    assert res['mrr'] == pytest.approx(sum(1 / r for r in ranks) / 3)
    assert res['hits@1'] == pytest.approx(sum(r == 1 for r in ranks) / 3)


def test_cache_key_covers_every_setting(data, tmp_path, monkeypatch):
    cache = str(tmp_path)
    base = dict(dim=8, epochs=3, batch_size=256, holdout=0.1, eval_every=1,
                patience=2)
    ent, rel, hist = load_or_pretrain(data, cache, progress=False,
                                      return_history=True, **base)
    pt, js = cache_paths(data, cache, **base)
    assert os.path.isfile(pt) and os.path.isfile(js)
    with open(js) as f:
        record = json.load(f)
    assert record['curve'] == hist['curve'] and len(record['curve']) == 3
    assert record['params'] == pretrain_params(**base)

    def boom(*args, **kwargs):
        raise AssertionError('trained again')

    monkeypatch.setattr(pretrain_mod, 'pretrain_transe', boom)
    ent2, rel2, hist2 = load_or_pretrain(data, cache, progress=False,
                                         return_history=True, **base)
    assert torch.equal(ent, ent2) and hist2['curve'] == hist['curve']
    for change in ({'holdout': 0.2}, {'max_holdout': 10},
                   {'holdout_seed': 1}, {'eval_every': 2},
                   {'patience': None}, {'patience': 3},
                   {'restore_best': False}, {'epochs': 4}, {'lr': 0.02},
                   {'margin': 2.0}, {'p_norm': 2.0}, {'seed': 1},
                   {'dim': 9}, {'batch_size': 128}):
        args = dict(base, **change)
        assert cache_paths(data, cache, **args)[0] != pt, change
        with pytest.raises(AssertionError, match='trained again'):
            load_or_pretrain(data, cache, progress=False, **args)
    # Without a held-out slice the evaluation settings change nothing.
    plain = dict(dim=8, epochs=3, holdout=0.0)
    assert cache_paths(data, cache, **plain) == cache_paths(
        data, cache, eval_every=7, patience=2, restore_best=False,
        holdout_seed=5, **plain)


def test_defaults_and_early_stopped_setting(data, monkeypatch):
    # EARLY_STOPPED_PRETRAIN early-stops on a held-out slice; the default is
    # a fixed number of epochs on every triple.
    scripted(monkeypatch, [0.3, 0.2, 0.2, 0.2, 0.9])
    ent, _, hist = pretrain_transe(data, return_history=True, **SMALL,
                                   **pretrain_mod.EARLY_STOPPED_PRETRAIN)
    assert hist['stopped_early'] and hist['epochs_run'] == 4
    assert hist['kept_epoch'] == 1 and hist['num_holdout_triples'] == 15
    monkeypatch.undo()
    _, _, hist = pretrain_transe(data, return_history=True, **SMALL)
    assert hist['epochs_run'] == 20 and hist['num_holdout_triples'] == 0
    assert hist['best_mrr'] is None
