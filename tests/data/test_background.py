r"""Background relations as extra train tasks (:class:`BackgroundTasks`) on a
tiny hand-made KG whose every relation exercises one rule."""
import json
import os

import pytest
import torch

from pyg_fewshot.data import (BackgroundTasks, EpisodeSampler,
                              build_fewshot_data, candidates, is_true_triple,
                              split_relations, task_triples, validate)
from pyg_fewshot.data.background import (entity_types, has_typed_names,
                                         typed_candidates)

P = [f'concept:person:p{i}' for i in range(12)]
C = [f'concept:city:c{i}' for i in range(12)]
S = [f'concept:sport:s{i}' for i in range(5)]
TM = [f'concept:team:t{i}' for i in range(12)]
NUM = ['1990', '1991', '1992']  # no type: MetaR's 'num' type
EARTH = ['concept:planet:earth']
NAMES = P + C + S + TM + NUM + EARTH
ID = {n: i for i, n in enumerate(NAMES)}


def _ids(names):
    return sorted(ID[n] for n in names)


# Background relations in id order, with what each one tests.
BACKGROUND = {
    # One tail (c0) that 'livesin' (a later id) also has: the observed rule
    # widens it to livesin's tails; MetaR's loop would stop at itself.
    'capitalof': [(P[i], C[0]) for i in range(12)],
    'livesin': [(P[i], C[i]) for i in range(12)],
    # 5 candidates under both rules: skipped.
    'plays': [(P[i], S[i % 5]) for i in range(12)],
    # Tails of two types (city and untyped numbers); 11 triples, 11 tails.
    'bornin': [(P[i], C[i]) for i in range(8)] +
    [(P[8 + i], NUM[i]) for i in range(3)],
    # 10 triples: skipped (MetaR skips <= 10).
    'visited': [(P[i], C[(i + 1) % 12]) for i in range(10)],
    # One tail (t0) shared with the train task 'worksfor' and with the
    # background 'memberof': train tasks come first.
    'mayorof': [(P[i], TM[0]) for i in range(12)],
    'memberof': [(P[i], TM[i]) for i in range(12)],
    # One tail (s0): widened by 'plays' to 5, still too few.
    'orbits': [(P[i], S[0]) for i in range(12)],
    # One tail no other relation has: stays single, skipped.
    'on': [(C[i], EARTH[0]) for i in range(12)],
    # Named like a dev relation: never added (dev stays dev).
    'coaches': [(TM[i], P[i]) for i in range(12)],
}
TRAIN = {'worksfor': [(P[i], TM[i]) for i in range(12)]}
DEV = {'coaches': [(TM[i], P[i]) for i in range(4)]}
TEST = {'fan': [(P[i], TM[(i + 1) % 12]) for i in range(4)]}
CANDIDATES = {'worksfor': TM + S, 'coaches': P, 'fan': TM}

TYPED_TASKS = {
    'capitalof': C, 'livesin': C, 'bornin': C + NUM, 'mayorof': TM,
    'memberof': TM,
}
OBSERVED_TASKS = {
    'capitalof': C, 'livesin': C, 'bornin': C[:8] + NUM,
    'mayorof': TM + S, 'memberof': TM,
}


def _pairs(triples):
    return torch.tensor([[ID[h], ID[t]] for h, t in triples])


def make_kg(names=True):
    rel_names = list(BACKGROUND)
    bg = torch.tensor([[ID[h], r, ID[t]]
                       for r, name in enumerate(rel_names)
                       for h, t in BACKGROUND[name]])
    tasks = {split: [(name, _pairs(trip)) for name, trip in spec.items()]
             for split, spec in (('train', TRAIN), ('dev', DEV),
                                 ('test', TEST))}
    # One extra known true triple of the train task, one of the test task.
    extra = torch.tensor([[0, ID[P[0]], ID[TM[5]]],
                          [2, ID[P[5]], ID[TM[0]]]])
    return build_fewshot_data(
        len(NAMES), bg, rel_names, tasks,
        {k: torch.tensor(_ids(v)) for k, v in CANDIDATES.items()},
        extra_true_triples=extra, entity_names=NAMES if names else None)


def _added(data):
    return {data.task_relation_names[r]: r for r in data.bg_task_rel.tolist()}


def test_entity_types_follow_metar():
    types, table = entity_types(['concept:city:a', 'concept:city:b', '7',
                                 'x:y', 'concept:sport:c', 'a:b:c:d'])
    assert table == ['city', 'num', 'sport']
    assert types.tolist() == [0, 0, 1, 1, 2, 1]
    assert has_typed_names(NAMES)
    assert not has_typed_names(['a', 'b', 'concept:city:c'])
    assert not has_typed_names(None)


def test_typed_candidates_concatenate_the_types_of_the_tails():
    types = torch.tensor([0, 1, 0, 2, 1])
    # Relation 0 has tails of types 0 and 2; relation 1 none; 2 type 1.
    ptr, idx = typed_candidates(torch.tensor([0, 0, 2]),
                                torch.tensor([2, 3, 4]), types, 3)
    assert ptr.tolist() == [0, 3, 3, 5]
    assert idx.tolist() == [0, 2, 3, 1, 4]


@pytest.mark.parametrize('names,rule', [(True, 'typed'),
                                        (False, 'observed')])
def test_which_relations_become_tasks_and_their_candidates(names, rule):
    data = make_kg(names)
    transform = BackgroundTasks()
    assert transform.rule(data) == rule
    out = transform(data)
    validate(out)
    expected = TYPED_TASKS if rule == 'typed' else OBSERVED_TASKS
    added = _added(out)
    # In background id order, after the test relation.
    assert list(added) == list(expected)
    assert list(added.values()) == list(range(3, 3 + len(expected)))
    assert split_relations(out, 'train').tolist() == [0] + list(
        added.values())
    for name, rel in added.items():
        assert candidates(out, rel).tolist() == _ids(expected[name]), name
        # The task's triples are the relation's edges in input order.
        assert task_triples(out, rel).tolist() == _pairs(
            BACKGROUND[name]).tolist()
    # The input is not modified.
    assert len(data.task_relation_names) == 3 and 'bg_task_rel' not in data


def test_forced_rules_and_thresholds():
    data = make_kg(names=True)
    observed = BackgroundTasks(candidates='observed')(data)
    assert list(_added(observed)) == list(OBSERVED_TASKS)
    # Lower thresholds let 'visited' (10 triples) and 'plays' (5
    # candidates) in; 'on' has a single candidate.
    loose = BackgroundTasks(min_triples=9, min_candidates=4)(data)
    assert list(_added(loose)) == ['capitalof', 'livesin', 'plays', 'bornin',
                                   'visited', 'mayorof', 'memberof', 'orbits']
    with pytest.raises(ValueError, match='needs'):
        BackgroundTasks(candidates='typed')(make_kg(names=False))
    with pytest.raises(ValueError, match='Unknown candidate rule'):
        BackgroundTasks(candidates='nope')


def test_filter_extends_to_the_background_triples():
    data = make_kg()
    out = BackgroundTasks()(data)
    assert bool((out.true_keys.diff() > 0).all())  # still sorted, unique
    assert out.true_keys[:data.true_keys.numel()].tolist() == (
        data.true_keys.tolist())
    added = _added(out)
    assert out.true_keys.numel() == data.true_keys.numel() + sum(
        len(BACKGROUND[n]) for n in added)
    for name, rel in added.items():
        trip = _pairs(BACKGROUND[name])
        r = torch.full((trip.size(0), ), rel)
        assert is_true_triple(out, r, trip[:, 0], trip[:, 1]).all()
    # A fact of another background relation is not a fact of this one.
    rel = added['livesin']
    assert not is_true_triple(out, torch.tensor(rel), torch.tensor(ID[P[1]]),
                              torch.tensor(ID[C[0]]))
    # The known extra triples keep their relation.
    assert is_true_triple(out, torch.tensor(0), torch.tensor(ID[P[0]]),
                          torch.tensor(ID[TM[5]]))


def test_dev_and_test_stay_exactly_as_they_are():
    data = make_kg()
    out = BackgroundTasks()(data)
    T = len(data.task_relation_names)
    for split in ('dev', 'test'):
        assert torch.equal(out[f'{split}_rel'], data[f'{split}_rel'])
        for rel in data[f'{split}_rel'].tolist():
            assert out.task_relation_names[rel] == data.task_relation_names[
                rel]
            assert torch.equal(task_triples(out, rel),
                               task_triples(data, rel))
            assert torch.equal(candidates(out, rel), candidates(data, rel))
    for key in ('task_ptr', 'cand_ptr'):
        assert torch.equal(out[key][:T + 1], data[key])
    n = data.task_triples.size(0)
    assert torch.equal(out.task_triples[:n], data.task_triples)
    # Every key of a dev/test relation is unchanged.
    N = len(NAMES)
    rel_of = out.true_keys // (N * N)
    for rel in torch.cat([data.dev_rel, data.test_rel]).tolist():
        assert torch.equal(out.true_keys[rel_of == rel],
                           data.true_keys[data.true_keys // (N * N) == rel])
    # The background graph itself is untouched.
    assert torch.equal(out.bg_edge_index, data.bg_edge_index)
    assert torch.equal(out.nbr_ptr, data.nbr_ptr)


def test_applying_twice_adds_nothing():
    once = BackgroundTasks()(make_kg())
    twice = BackgroundTasks()(once)
    assert twice.task_relation_names == once.task_relation_names
    assert torch.equal(twice.bg_task_rel, once.bg_task_rel)
    assert torch.equal(twice.true_keys, once.true_keys)


def test_sampler_draws_from_the_new_tasks():
    data = make_kg()
    out = BackgroundTasks()(data)
    sampler = EpisodeSampler(out, shots=2, num_queries=3, batch_size=600,
                             seed=0)
    ep = sampler.sample()
    drawn = set(ep.rel.tolist())
    assert drawn == set(out.train_rel.tolist())  # uniform over 6 relations
    for b in range(ep.rel.numel()):
        rel = int(ep.rel[b])
        cand = set(candidates(out, rel).tolist())
        trip = {tuple(x) for x in task_triples(out, rel).tolist()}
        pos = torch.cat([ep.support[b], ep.query[b]])
        neg = torch.cat([ep.support_neg[b], ep.query_neg[b]])
        assert {tuple(x) for x in pos.tolist()} <= trip
        assert set(neg.tolist()) <= cand
        # Negatives are never a known fact of (head, relation).
        assert not is_true_triple(out, torch.tensor(rel), pos[:, 0],
                                  neg).any()


def test_models_train_on_the_extended_tasks():
    from pyg_fewshot.meta import MetaLearner
    from pyg_fewshot.models import build_model
    out = BackgroundTasks()(make_kg())
    ep = EpisodeSampler(out, 1, 2, 16, seed=0).sample()
    for name in ('metar', 'moemeta'):
        torch.manual_seed(0)
        model = build_model(name, out, embedding_dim=8)
        loss, _ = MetaLearner(model).loss(ep)
        loss.backward()
        assert torch.isfinite(loss)


def test_cli_trains_with_background_tasks_and_evaluates(tmp_path, monkeypatch,
                                                       capsys):
    import pyg_fewshot.pipeline.runner as run_module
    from pyg_fewshot.cli.main import build_parser, main
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    seen = []

    def sampler(data, *args, **kwargs):
        seen.append(data.train_rel.numel())
        return EpisodeSampler(data, *args, **kwargs)

    monkeypatch.setattr(run_module, 'EpisodeSampler', sampler)
    assert not build_parser().parse_args(
        ['train', '--model', 'metar']).background_tasks
    out = str(tmp_path / 'run')
    main(['train', '--model', 'metar', '--output', out, '--max-steps', '2',
          '--eval-every', '2', '--batch-size', '8', '--dim', '8', '--quiet',
          '--background-tasks'])
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    # 10 train relations and the 5 background relations of UMLS-One; dev
    # and test as without background tasks.
    assert seen == [15]
    assert res['test']['num_queries'] == 295
    assert res['config']['data']['background_tasks'] is True
    state = torch.load(os.path.join(out, 'best.pt'), weights_only=False)
    assert state['metadata']['run_config']['data']['background_tasks'] is True
    # A run with background tasks resumes only with them.
    assert state['config']['data.background_tasks'] is True
    capsys.readouterr()
    main(['evaluate', '--checkpoint', out, '--split', 'test'])
    assert f"MRR {res['test']['mrr']:.4f}" in capsys.readouterr().out
