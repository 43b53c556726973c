import ast
import os

import networkx as nx
import pytest
import torch

import pyg_fewshot.data as data_pkg
from pyg_fewshot.data.hetero import candidates, summary, task_triples
from pyg_fewshot.data.io import FewShotDataError, validate
from pyg_fewshot.data.networkx import from_networkx, to_networkx
from pyg_fewshot.data.synthetic import make_synthetic


def small_graph():
    G = nx.MultiDiGraph()
    G.add_nodes_from(['a', 'b', 'c', 'd', 'e'])
    edges = [
        ('a', 'b', 'friend'), ('b', 'c', 'friend'), ('c', 'd', 'near'),
        ('a', 'c', 'likes'), ('b', 'd', 'likes'), ('c', 'e', 'likes'),
        ('d', 'a', 'fears'), ('e', 'b', 'fears'),
        ('a', 'e', 'hates'), ('b', 'a', 'hates'),
        ('a', 'b', 'friend'),  # exact duplicate: dropped
        ('a', 'c', 'likes'),  # exact duplicate: dropped
    ]
    for u, v, r in edges:
        G.add_edge(u, v, relation=r)
    return G


SPLIT = {'train': ['likes'], 'dev': ['hates'], 'test': ['fears']}


def test_from_networkx_basic():
    data = from_networkx(small_graph(), SPLIT)
    assert data['entity'].names == ['a', 'b', 'c', 'd', 'e']
    assert data.relation_names == ['friend', 'near']
    assert data.bg_edge_index.t().tolist() == [[0, 1], [1, 2], [2, 3]]
    assert data.task_relation_names == ['likes', 'hates', 'fears']
    assert task_triples(data, 0).tolist() == [[0, 2], [1, 3], [2, 4]]
    assert torch.equal(candidates(data, 0), torch.arange(5))
    validate(data, shots=1)


def test_task_relations_as_callable():
    def split_of(rel):
        return {'likes': 'train', 'hates': 'dev', 'fears': 'test'}.get(rel)

    a = from_networkx(small_graph(), split_of)
    b = from_networkx(small_graph(), SPLIT)
    for key in ('bg_edge_index', 'task_triples', 'cand_idx', 'true_keys'):
        assert torch.equal(a[key], b[key])
    with pytest.raises(FewShotDataError, match="returned 'valid'"):
        from_networkx(small_graph(), lambda r: 'valid')


def test_candidate_options():
    G = small_graph()
    tails = from_networkx(G, SPLIT, candidates='tails')
    assert candidates(tails, 0).tolist() == [2, 3, 4]
    given = {'likes': ['c', 'd', 'e', 'a'], 'hates': ['e', 'a'],
             'fears': ['a', 'b']}
    data = from_networkx(G, SPLIT, candidates=given)
    assert candidates(data, 0).tolist() == [2, 3, 4, 0]
    data = from_networkx(G, SPLIT, candidates=lambda rel: given[rel])
    assert candidates(data, 2).tolist() == [0, 1]
    with pytest.raises(FewShotDataError,
                       match=r"true tail 'e' of task triple \('c', likes, "
                       r"'e'\)"):
        from_networkx(G, SPLIT, candidates=dict(given, likes=['c', 'd']))
    with pytest.raises(FewShotDataError, match="'zz' of relation 'hates'"):
        from_networkx(G, SPLIT, candidates=dict(given, hates=['zz']))
    with pytest.raises(FewShotDataError, match='Empty candidate set'):
        from_networkx(G, SPLIT, candidates=dict(given, hates=[]))
    with pytest.raises(ValueError, match='Unknown candidates'):
        from_networkx(G, SPLIT, candidates='types')


def test_from_networkx_errors():
    G = small_graph()
    with pytest.raises(FewShotDataError, match="'likes' is in both"):
        from_networkx(G, {'train': ['likes'], 'test': ['likes']})
    with pytest.raises(FewShotDataError, match="'owns' \\(dev\\) has no edge"):
        from_networkx(G, {'train': ['likes'], 'dev': ['owns']})
    with pytest.raises(FewShotDataError, match='unknown split'):
        from_networkx(G, {'valid': ['likes']})
    with pytest.raises(FewShotDataError, match='No task relation'):
        from_networkx(G, {})
    with pytest.raises(FewShotDataError, match="'hates' has 2 triple"):
        from_networkx(G, SPLIT, min_triples=3)
    G.add_edge('a', 'd')
    with pytest.raises(FewShotDataError,
                       match="Edge \\('a', 'd'\\) has no 'relation'"):
        from_networkx(G, SPLIT)
    with pytest.raises(FewShotDataError, match='directed'):
        from_networkx(nx.Graph([(0, 1)]), SPLIT)


def test_relation_key_and_embeddings():
    G = nx.MultiDiGraph()
    for i in range(4):
        G.add_node(i, vec=[float(i), 1.0])
    G.add_edge(0, 1, rel='r')
    G.add_edge(1, 2, rel='t')
    G.add_edge(2, 3, rel='t')
    data = from_networkx(G, {'train': ['t']}, relation_key='rel',
                         emb_key='vec')
    assert data['entity'].names == ['0', '1', '2', '3']
    assert data['entity'].emb[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert summary(data)['num_train_triples'] == 2


def test_roundtrip_through_networkx():
    data = make_synthetic(num_entities=60, num_background_triples=150,
                          seed=5)
    G = to_networkx(data)
    assert G.number_of_nodes() == 60
    assert G.number_of_edges() == 150
    u, v, attr = next(iter(G.edges(data=True)))
    assert attr['relation'] in data.relation_names
    assert G.nodes['e3']['id'] == 3

    G = to_networkx(data, include_tasks=True)
    split = {
        s: [data.task_relation_names[i] for i in data[f'{s}_rel'].tolist()]
        for s in ('train', 'dev', 'test')
    }
    back = from_networkx(G, split)
    assert back['entity'].names == data['entity'].names
    assert back.task_relation_names == data.task_relation_names
    for key in ('task_triples', 'task_ptr', 'cand_idx', 'cand_ptr',
                'true_keys', 'train_rel', 'dev_rel', 'test_rel'):
        assert torch.equal(back[key], data[key]), key

    def named_bg(d):
        return sorted(
            (h, d.relation_names[r], t) for (h, t), r in zip(
                d.bg_edge_index.t().tolist(), d.bg_edge_type.tolist()))

    assert named_bg(back) == named_bg(data)
    assert back.relation_names == data.relation_names
    for key in ('bg_edge_index', 'bg_edge_type', 'nbr_ptr', 'nbr_ent',
                'nbr_rel'):
        assert torch.equal(back[key], data[key]), key
    # Task edges carry their split.
    splits = {a.get('split') for _, _, a in G.edges(data=True)}
    assert splits == {None, 'train', 'dev', 'test'}


def test_to_networkx_without_names():
    data = make_synthetic(num_entities=30, num_background_triples=40,
                          entity_names=False, seed=1)
    G = to_networkx(data)
    assert sorted(G.nodes) == list(range(30))
    G = to_networkx(make_synthetic(num_entities=30, seed=1), use_names=False)
    assert 0 in G


def test_data_package_does_not_import_networkx_at_module_level():
    r"""``import pyg_fewshot.data`` must not import networkx: no module of
    the package imports it at the top level."""
    folder = os.path.dirname(data_pkg.__file__)
    for name in os.listdir(folder):
        if not name.endswith('.py'):
            continue
        tree = ast.parse(open(os.path.join(folder, name)).read())
        for node in tree.body:  # module level only
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ''] if node.level == 0 else []
            else:
                continue
            assert not any(m.split('.')[0] == 'networkx' for m in mods), name
