import contextlib

import pytest
import torch

from pyg_fewshot.data.hetero import task_triples
from pyg_fewshot.evaluation import chance_level, evaluate
from pyg_fewshot.meta import MetaLearner
from pyg_fewshot.models import FewShotModel, TaskOutput, build_model


class ConstantModel(FewShotModel):
    """Scores every (head, tail) pair the same."""
    model_name = 'constant'

    def __init__(self, num_entities, dim=4):
        super().__init__()
        self.emb = torch.nn.Parameter(torch.zeros(num_entities, dim))

    def embed(self, index):
        return self.emb[index]

    def init_local(self, support, sup_h, sup_t):
        assert support.shape == sup_h.shape[:2] + (2, )
        return TaskOutput({'rel': sup_h.new_zeros(sup_h.size(0),
                                                  sup_h.size(-1))}, {})

    def project(self, h, t, local):
        return h, t


class OracleModel(ConstantModel):
    """Puts each entity on a circle so that the planted offset relation
    (tail = head + k mod N) is recovered from a single support pair."""
    def __init__(self, num_entities):
        super().__init__(num_entities, 2)
        angle = torch.arange(num_entities) * 2 * torch.pi / num_entities
        self.emb.data = torch.stack([angle.cos(), angle.sin()], 1)
        self.n = num_entities

    def init_local(self, support, sup_h, sup_t):
        # Rotation angle of the relation from its first support pair.
        h, t = sup_h[:, 0], sup_t[:, 0]
        ang = torch.atan2(t[:, 1], t[:, 0]) - torch.atan2(h[:, 1], h[:, 0])
        return TaskOutput({'rel': torch.stack([ang.cos(), ang.sin()], 1)},
                          {})

    def project(self, h, t, local):
        c, s = local['rel'][:, 0], local['rel'][:, 1]
        shape = (h.size(0), ) + (1, ) * (h.dim() - 2)
        c, s = c.view(shape), s.view(shape)
        rot = torch.stack([c * h[..., 0] - s * h[..., 1],
                           s * h[..., 0] + c * h[..., 1]], -1)
        return rot, t


@pytest.mark.parametrize('candidate_set', ['relation', 'all'])
def test_constant_model_gets_exactly_chance(tiny_data, candidate_set):
    model = ConstantModel(tiny_data['entity'].num_nodes)
    res = evaluate(model, tiny_data, 'test', shots=2, ties_policy='expected',
                   candidate_set=candidate_set)
    chance = chance_level(tiny_data, 'test', 2, candidate_set)
    for key in ('mrr', 'hits@1', 'hits@5', 'hits@10'):
        assert res[key] == pytest.approx(chance[key], abs=1e-12)
    assert res['num_queries'] == chance['num_queries']
    # Filtered: each query competes with the non-true candidates only. All
    # tails of a planted offset relation are distinct, so C' = N - 1 + 1.
    n = tiny_data['entity'].num_nodes
    h = torch.arange(1, n + 1, dtype=torch.double)
    assert chance['mrr'] == pytest.approx(float((1 / h).sum() / n))
    # The mean tie policy puts a constant model at the middle rank.
    mean = evaluate(model, tiny_data, 'test', shots=2)
    assert mean['mean_rank'] == pytest.approx((n + 1) / 2)


def test_oracle_is_perfect_and_tables_add_up(tiny_data):
    model = OracleModel(tiny_data['entity'].num_nodes)
    res = evaluate(model, tiny_data, 'test', shots=1,
                   learner=MetaLearner(model, inner_steps=0))
    assert res['mrr'] == pytest.approx(1.0)
    assert res['hits@1'] == pytest.approx(1.0)
    sizes = [task_triples(tiny_data, int(r)).size(0) - 1
             for r in tiny_data.test_rel]
    assert res['num_queries'] == sum(sizes)
    assert set(res['per_relation']) == {'test0', 'test1'}
    assert [r['num_queries'] for r in res['per_relation'].values()] == sizes


def test_filtering_removes_other_true_tails(tiny_data):
    # Add a second true tail for the first query's (head, relation): with
    # the optimistic policy the constant model's rank cannot count it.
    model = ConstantModel(tiny_data['entity'].num_nodes)
    a = evaluate(model, tiny_data, 'test', 1, ties_policy='pessimistic')
    rel = int(tiny_data.test_rel[0])
    h, t = task_triples(tiny_data, rel)[1].tolist()
    from pyg_fewshot.data.hetero import triple_key
    extra = triple_key(torch.tensor(rel), torch.tensor(h),
                       torch.tensor((t + 1) % 40), 40)
    tiny_data.true_keys = torch.unique(
        torch.cat([tiny_data.true_keys, extra.view(1)]))
    b = evaluate(model, tiny_data, 'test', 1, ties_policy='pessimistic')
    assert b['mean_rank'] < a['mean_rank']


def test_evaluation_is_deterministic_and_restores_mode(tiny_data):
    torch.manual_seed(0)
    model = build_model('metar', tiny_data, embedding_dim=8,
                        hidden_channels=(16, ))
    model.train()
    a = evaluate(model, tiny_data, 'dev', shots=2)
    b = evaluate(model, tiny_data, 'dev', shots=2)
    assert a['mrr'] == b['mrr'] and model.training


def test_too_many_shots_is_a_clear_error(tiny_data):
    model = ConstantModel(tiny_data['entity'].num_nodes)
    # The data layer's one K+1 check, with its error type and wording.
    from pyg_fewshot.data import FewShotDataError
    with pytest.raises(FewShotDataError,
                       match=r'too few for 50-shot episodes'):
        evaluate(model, tiny_data, 'test', shots=50)
    # Only the relations asked for are checked.
    rel = int(tiny_data['test_rel'][0])
    n = int(tiny_data.task_ptr[rel + 1] - tiny_data.task_ptr[rel])
    res = evaluate(model, tiny_data, 'test', shots=n - 1,
                   relations=torch.tensor([rel]))
    assert res['num_relations'] == 1


class ScopedModel(OracleModel):
    """Records the task_scope calls and whether init_local runs inside one."""
    def __init__(self, num_entities):
        super().__init__(num_entities)
        self.scopes, self.inside = [], False
        self.init_calls = []

    @contextlib.contextmanager
    def _scope(self):
        self.inside = True
        try:
            yield
        finally:
            self.inside = False

    def task_scope(self, support, support_neg, learner):
        self.scopes.append((support.clone(), support_neg.clone(), learner))
        return self._scope()

    def init_local(self, support, sup_h, sup_t):
        self.init_calls.append((support.clone(), self.inside))
        return super().init_local(support, sup_h, sup_t)


def test_task_scope_gets_the_support_and_the_run_learner(tiny_data):
    model = ScopedModel(tiny_data['entity'].num_nodes)
    learner = MetaLearner(model, inner_steps=0)
    res = evaluate(model, tiny_data, 'test', shots=2, learner=learner)
    assert res['mrr'] == pytest.approx(1.0)
    rels = tiny_data.test_rel.tolist()
    assert len(model.scopes) == len(rels) == len(model.init_calls)
    for rel, (support, neg, got), (ids, inside) in zip(
            rels, model.scopes, model.init_calls):
        # The relation's first K triples (file order), K negative tails.
        assert torch.equal(support, task_triples(tiny_data, rel)[:2])
        assert neg.shape == (2, )
        assert got is learner
        # init_local gets the same support as [1, K, 2] ids, in the scope.
        assert torch.equal(ids, support.unsqueeze(0)) and inside
    assert not model.inside


def test_degree_baseline_ranks_by_background_degree():
    from pyg_fewshot.data.hetero import build_fewshot_data
    from pyg_fewshot.evaluation import degree_baseline

    # Background degrees (in + out): 0:1, 1:3, 2:2, 3:1, 4:1, 5:0.
    bg = torch.tensor([[0, 0, 1], [2, 0, 1], [3, 0, 1], [2, 0, 4]])
    pairs = torch.tensor
    tasks = {
        'train': [('train0', pairs([[0, 1], [2, 3]]))],
        'dev': [('dev0', pairs([[0, 1], [3, 4]]))],
        # Support (0, 3); queries (5, 1), (5, 4), (2, 5).
        'test': [('test0', pairs([[0, 3], [5, 1], [5, 4], [2, 5]]))],
    }
    cands = {'train0': torch.arange(6), 'dev0': torch.arange(6),
             'test0': torch.tensor([1, 3, 4, 5])}
    data = build_fewshot_data(6, bg, ['bg0'], tasks, cands)
    res = degree_baseline(data, 'test', shots=1)
    # (5, 1): 4 is filtered, 1 (degree 3) beats 3 and 5: rank 1.
    # (5, 4): 1 is filtered, 4 ties with 3 (degree 1), beats 5: rr 3/4.
    # (2, 5): 1, 3 and 4 all have a higher degree than 5: rank 4.
    assert res['num_queries'] == 3
    assert res['mrr'] == pytest.approx((1 + 0.75 + 0.25) / 3)
    assert res['hits@1'] == pytest.approx((1 + 0.5 + 0) / 3)
    # Over all six entities, 0 and 2 join the candidates of (2, 5).
    every = degree_baseline(data, 'test', shots=1, candidate_set='all')
    assert every['mrr'] < res['mrr']
    with pytest.raises(ValueError, match="candidate_set 'some'"):
        degree_baseline(data, 'test', candidate_set='some')
