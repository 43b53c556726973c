import pytest
import torch

from pyg_fewshot.data.dataset import bundled_dir
from pyg_fewshot.data.hetero import build_fewshot_data
from pyg_fewshot.data.io import read_fewshot_folder
from pyg_fewshot.data.stats import (
    category_counts,
    graph_statistics,
    relation_categories,
)

# (head, tail) pairs with known tph / hpt.
ONE_ONE = [[0, 1], [2, 3], [4, 5]]  # tph 1, hpt 1
ONE_N = [[0, 1], [0, 2], [0, 3], [4, 5]]  # tph 4/2 = 2, hpt 1
N_ONE = [[1, 0], [2, 0], [3, 0], [5, 4]]  # tph 1, hpt 2
N_N = [[0, 1], [0, 2], [3, 1], [3, 2]]  # tph 2, hpt 2


def data_with(bg_rel_pairs, task_pairs):
    bg = []
    for r, pairs in enumerate(bg_rel_pairs):
        bg += [[h, r, t] for h, t in pairs]
    names = list(task_pairs)
    tasks = {'train': [(n, torch.tensor(task_pairs[n])) for n in names[:2]],
             'test': [(n, torch.tensor(task_pairs[n])) for n in names[2:]]}
    every = torch.arange(8)
    return build_fewshot_data(8, torch.tensor(bg), ['b11', 'b1n', 'bn1',
                                                   'bnn'][:len(bg_rel_pairs)],
                              tasks, {n: every for n in names})


def test_relation_categories_known_cases():
    data = data_with([ONE_ONE, ONE_N, N_ONE, N_N],
                     {'t11': ONE_ONE, 't1n': ONE_N, 'tn1': N_ONE,
                      'tnn': N_N})
    cats = relation_categories(data)
    want = {'b11': '1-1', 'b1n': '1-N', 'bn1': 'N-1', 'bnn': 'N-N',
            't11': '1-1', 't1n': '1-N', 'tn1': 'N-1', 'tnn': 'N-N'}
    assert {k: v['category'] for k, v in cats.items()} == want
    assert cats['b1n']['tph'] == 2.0 and cats['b1n']['hpt'] == 1.0
    assert cats['tn1']['tph'] == 1.0 and cats['tn1']['hpt'] == 2.0
    assert cats['bnn']['num_triples'] == 4
    assert cats['t11']['split'] == 'train'
    assert cats['tnn']['split'] == 'test'
    assert cats['bnn']['split'] == 'background'
    assert category_counts(cats, 'background') == {
        '1-1': 1, '1-N': 1, 'N-1': 1, 'N-N': 1}
    assert set(relation_categories(data, include='tasks')) == {
        't11', 't1n', 'tn1', 'tnn'}
    assert set(relation_categories(data, include='background')) == {
        'b11', 'b1n', 'bn1', 'bnn'}
    # The threshold decides: tph 2 is "1" under a threshold of 2.5.
    high = relation_categories(data, threshold=2.5)
    assert all(v['category'] == '1-1' for v in high.values())
    with pytest.raises(ValueError):
        relation_categories(data, include='nope')


def test_duplicates_do_not_change_ratios():
    data = data_with([ONE_N + ONE_N], {'a': N_ONE, 'b': N_N, 'c': ONE_ONE})
    cats = relation_categories(data)
    assert cats['b11']['category'] == '1-N'
    assert cats['b11']['num_triples'] == 4


def test_name_clash_between_background_and_task():
    bg = torch.tensor([[0, 0, 1]])
    data = build_fewshot_data(3, bg, ['r'], {'train': [('r', torch.tensor(
        [[1, 2]]))]}, {'r': torch.arange(3)})
    cats = relation_categories(data)
    assert set(cats) == {'r', 'r (background)'}


def test_graph_statistics_values():
    # Entities 6 and 7 have no background edge; one self loop; one duplicate.
    bg = torch.tensor([[0, 0, 1], [0, 0, 2], [1, 1, 1], [0, 0, 1]])
    tasks = {'train': [('t', torch.tensor([[0, 6], [2, 3]]))],
             'dev': [('d', torch.tensor([[1, 2], [3, 4], [4, 5]]))]}
    data = build_fewshot_data(8, bg, ['a', 'b'], tasks,
                              {'t': torch.arange(8),
                               'd': torch.tensor([2, 4, 5])})
    s = graph_statistics(data)
    assert s['num_entities'] == 8
    assert s['num_background_triples'] == 4
    # degrees: 0:3, 1:4 (self loop counts in and out), 2:1, others 0
    assert s['degree_max'] == 4
    assert s['degree_min'] == 0
    assert s['degree_mean'] == pytest.approx(8 / 8)
    assert s['out_degree_max'] == 3
    assert s['in_degree_max'] == 3
    assert s['num_isolated_entities'] == 5
    assert s['num_self_loops'] == 1
    assert s['num_duplicate_background_triples'] == 1
    assert s['density'] == pytest.approx(4 / 64)
    assert s['relation_triples_max'] == 3
    assert s['train_triples_per_relation_mean'] == 2
    assert s['dev_candidates_per_relation_max'] == 3
    assert s['test_triples_per_relation_max'] == 0
    assert s['num_task_entities'] == 7
    assert s['num_task_entities_isolated'] == 4  # 3, 4, 5, 6
    assert s['num_true_triples'] == 5
    assert sum(s['categories_background'].values()) == 2


def test_graph_statistics_on_bundled_umls():
    data, _ = read_fewshot_folder(bundled_dir())
    s = graph_statistics(data)
    assert s['num_entities'] == 135
    assert s['num_isolated_entities'] == 0
    assert s['degree_mean'] == pytest.approx(2 * 2996 / 135)
    assert sum(s['categories_train'].values()) == 10
    assert sum(s['categories_background'].values()) == 5
    assert s['degree_p99'] <= s['degree_max']
