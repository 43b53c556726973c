import gzip
import json
import os

import numpy as np
import pytest
import torch

from pyg_fewshot.data.hetero import (
    build_fewshot_data,
    candidates,
    is_true_triple,
    summary,
    task_triples,
)
from pyg_fewshot.data.io import (
    FewShotDataError,
    MissingRawFilesError,
    check_shots,
    read_e1rel_e2,
    read_fewshot_folder,
    read_path_graph,
    validate,
)


@pytest.fixture(autouse=True)
def _names(layout):
    global ENTITIES, PATH_GRAPH, TRAIN, CANDIDATES, ids
    ENTITIES, PATH_GRAPH = layout.ENTITIES, layout.PATH_GRAPH
    TRAIN, CANDIDATES, ids = layout.TRAIN, layout.CANDIDATES, layout.ids


def test_reads_tiny_folder(tiny_folder):
    data, report = read_fewshot_folder(tiny_folder)
    assert summary(data) == {
        'num_entities': 10,
        'num_background_relations': 2,
        'num_background_triples': 6,
        'num_train_relations': 2,
        'num_train_triples': 7,
        'num_dev_relations': 1,
        'num_dev_triples': 3,
        'num_test_relations': 1,
        'num_test_triples': 3,
    }
    assert data['entity'].names == ENTITIES
    # Without relation2ids: order of first appearance in path_graph.
    assert data.relation_names == ['friend', 'near']
    assert data.bg_edge_type.tolist() == [0, 0, 1, 1, 0, 1]
    assert data.bg_edge_index.t().tolist() == [
        ids([h, t]) for h, _, t in PATH_GRAPH
    ]
    assert data.task_relation_names == ['likes', 'knows', 'hates', 'fears']
    assert data.train_rel.tolist() == [0, 1]
    assert data.dev_rel.tolist() == [2]
    assert data.test_rel.tolist() == [3]
    # File order of the triples is kept.
    assert task_triples(data, 1).tolist() == [
        ids([h, t]) for h, _, t in TRAIN['knows']
    ]
    assert candidates(data, 0).tolist() == ids(CANDIDATES['likes'])
    # e1rel_e2 adds (n0, likes, n7); the 'n3owns' key is ignored.
    assert bool(is_true_triple(data, torch.tensor(0), torch.tensor(0),
                               torch.tensor(7)))
    assert not bool(
        is_true_triple(data, torch.tensor(0), torch.tensor(0),
                       torch.tensor(9)))
    assert report['num_e1rel_e2_keys_ignored'] == 1
    assert report['relation_ids_from'].startswith('path_graph')
    assert report['embedding_file'] is None
    assert 'emb' not in data['entity']
    validate(data, shots=2)


def test_relation2ids_fixes_relation_ids(make_folder):
    folder = make_folder({
        'relation2ids': {'near': 0, 'near_inv': 1, 'friend': 2,
                         'friend_inv': 3}
    })
    data, report = read_fewshot_folder(folder)
    assert data.relation_names == ['near', 'friend']
    assert data.bg_edge_type.tolist() == [1, 1, 0, 0, 1, 0]
    assert report['relation_ids_from'] == 'relation2ids'
    # The builder's inverse of relation r is r + R.
    assert set(data.nbr_rel.tolist()) == {0, 1, 2, 3}


def test_relation2ids_missing_relation(make_folder):
    folder = make_folder({'relation2ids': {'near': 0, 'near_inv': 1}})
    with pytest.raises(FewShotDataError, match=r"path_graph, line 1: "
                       r"relation 'friend' is not in relation2ids"):
        read_fewshot_folder(folder)


def test_gzip_files_read_the_same(tiny_folder, make_folder, tmp_path):
    plain, _ = read_fewshot_folder(tiny_folder)
    folder = make_folder(name='gz')
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        with open(path, 'rb') as f, gzip.open(path + '.gz', 'wb') as g:
            g.write(f.read())
        os.remove(path)
    packed, _ = read_fewshot_folder(folder)
    for key in ('bg_edge_index', 'task_triples', 'cand_idx', 'true_keys'):
        assert torch.equal(plain[key], packed[key])


@pytest.mark.parametrize('fmt', ['ent2vec.txt', 'ent2vec.npy',
                                 'entity2vec.TransE'])
def test_entity_vectors(make_folder, fmt):
    vec = np.arange(30, dtype=np.float32).reshape(10, 3) / 7
    folder = make_folder()
    path = os.path.join(folder, fmt)
    if fmt.endswith('.npy'):
        np.save(path, vec)
    else:
        np.savetxt(path, vec, delimiter='\t' if 'TransE' in fmt else ' ')
    data, report = read_fewshot_folder(folder)
    assert report['embedding_file'] == fmt
    assert torch.allclose(data['entity'].emb, torch.from_numpy(vec))
    data, _ = read_fewshot_folder(folder, load_embeddings=False)
    assert 'emb' not in data['entity']


def test_entity_vectors_wrong_rows(make_folder):
    folder = make_folder({'ent2vec.txt': '0.1 0.2\n0.3 0.4\n'})
    with pytest.raises(FewShotDataError,
                       match=r'ent2vec.txt: 2 rows, but ent2ids has 10'):
        read_fewshot_folder(folder)


def test_missing_files_are_named(make_folder):
    folder = make_folder({'path_graph': None, 'e1rel_e2.json': None})
    with pytest.raises(MissingRawFilesError) as info:
        read_fewshot_folder(folder)
    msg = str(info.value)
    assert 'misses 2 file(s)' in msg
    assert os.path.join(folder, 'path_graph') in msg
    assert os.path.join(folder, 'e1rel_e2.json') in msg
    assert 'train_tasks.json' not in msg
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ValueError)


def test_missing_folder(tmp_path):
    with pytest.raises(MissingRawFilesError, match='does not exist'):
        read_fewshot_folder(str(tmp_path / 'nowhere'))


def test_malformed_json_names_file_and_line(make_folder):
    folder = make_folder(
        {'train_tasks.json': '{"likes": [["n0", "likes", "n1"],\n  ]}'})
    with pytest.raises(FewShotDataError,
                       match=r'train_tasks.json: malformed JSON at line 2'):
        read_fewshot_folder(folder)


def test_duplicate_task_key(make_folder):
    text = ('{"likes": [["n0", "likes", "n1"]], '
            '"likes": [["n2", "likes", "n3"]]}')
    folder = make_folder({'train_tasks.json': text})
    with pytest.raises(FewShotDataError, match="duplicate key 'likes'"):
        read_fewshot_folder(folder)


def test_unknown_entity_in_path_graph(make_folder):
    lines = 'n0\tfriend\tn1\nn1\tfriend\tn2\nn2\tnear\tghost\n'
    folder = make_folder({'path_graph': lines})
    with pytest.raises(FewShotDataError,
                       match=r"path_graph, line 3: tail entity 'ghost' is "
                       r"not in ent2ids"):
        read_fewshot_folder(folder)


def test_unknown_entity_in_task(make_folder):
    train = dict(TRAIN, knows=TRAIN['knows'] + [['ghost', 'knows', 'n1']])
    folder = make_folder({'train_tasks.json': train})
    with pytest.raises(FewShotDataError,
                       match=r"train_tasks.json: key 'knows', triple #4 .*"
                       r"head entity 'ghost' is not in ent2ids"):
        read_fewshot_folder(folder)


def test_task_triple_relation_must_match_key(make_folder):
    train = dict(TRAIN, likes=[['n0', 'knows', 'n1']])
    folder = make_folder({'train_tasks.json': train})
    with pytest.raises(FewShotDataError, match="differs from the key"):
        read_fewshot_folder(folder)


def test_too_few_triples_names_relation(tiny_folder):
    with pytest.raises(FewShotDataError,
                       match=r"task relation 'likes' has 3 triple\(s\), "
                       r"fewer than the 4 required"):
        read_fewshot_folder(tiny_folder, min_triples=4)
    read_fewshot_folder(tiny_folder, min_triples=3)


def test_empty_candidate_set(make_folder):
    folder = make_folder({'rel2candidates.json': dict(CANDIDATES, hates=[])})
    with pytest.raises(FewShotDataError,
                       match=r"rel2candidates.json: key 'hates': empty "
                       r"candidate set"):
        read_fewshot_folder(folder)


def test_missing_candidate_key(make_folder):
    cands = {k: v for k, v in CANDIDATES.items() if k != 'fears'}
    folder = make_folder({'rel2candidates.json': cands})
    with pytest.raises(FewShotDataError,
                       match=r"no key for task relation 'fears'"):
        read_fewshot_folder(folder)


def test_true_tail_missing_from_candidates(make_folder):
    cands = dict(CANDIDATES, fears=['n0', 'n1', 'n3'])
    folder = make_folder({'rel2candidates.json': cands})
    with pytest.raises(FewShotDataError,
                       match=r"true tail 'n2' of the task triple #2 \(n7, "
                       r"fears, n2\) in test_tasks.json is not among the "
                       r"candidates of relation 'fears'"):
        read_fewshot_folder(folder)


def test_relation_in_two_splits(make_folder):
    test = {'likes': [['n9', 'likes', 'n1'], ['n8', 'likes', 'n3']]}
    cands = dict(CANDIDATES)
    folder = make_folder({'test_tasks.json': test,
                          'rel2candidates.json': cands})
    with pytest.raises(FewShotDataError,
                       match=r"'likes' is in both train_tasks.json and "
                       r"test_tasks.json"):
        read_fewshot_folder(folder)


def test_ent2ids_must_be_a_permutation(make_folder):
    ent2ids = {e: i for i, e in enumerate(ENTITIES)}
    ent2ids['n9'] = 3
    with pytest.raises(FewShotDataError, match='id 3 is used by several'):
        read_fewshot_folder(make_folder({'ent2ids': ent2ids}, name='a'))
    ent2ids['n9'] = 'nine'
    with pytest.raises(FewShotDataError, match="key 'n9'.*not an integer"):
        read_fewshot_folder(make_folder({'ent2ids': ent2ids}, name='b'))
    ent2ids['n9'] = 10
    with pytest.raises(FewShotDataError, match="key 'n9'.*out of range"):
        read_fewshot_folder(make_folder({'ent2ids': ent2ids}, name='c'))


def test_ent2ids_any_order(make_folder):
    ent2ids = {e: 9 - i for i, e in enumerate(ENTITIES)}
    data, _ = read_fewshot_folder(make_folder({'ent2ids': ent2ids}))
    assert data['entity'].names == ENTITIES[::-1]
    assert data.bg_edge_index[:, 0].tolist() == [9, 8]


def test_path_graph_bad_line(make_folder):
    lines = 'n0\tfriend\tn1\nn1 friend n2\n'
    folder = make_folder({'path_graph': lines})
    with pytest.raises(FewShotDataError,
                       match=r'path_graph, line 2: expected 3 tab-separated'):
        read_fewshot_folder(folder)


def test_path_graph_blank_lines_and_no_final_newline(make_folder):
    lines = 'n0\tfriend\tn1\n\nn1\tfriend\tn2\n\n\nn2\tnear\tn3'
    data, _ = read_fewshot_folder(make_folder({'path_graph': lines}))
    assert data.bg_edge_index.size(1) == 3


@pytest.mark.parametrize('chunk', [1, 7, 13, 1 << 20])
def test_path_graph_chunking(tmp_path, chunk):
    ent2id = {e: i for i, e in enumerate(ENTITIES)}
    rng = np.random.default_rng(0)
    rows = [(f'n{rng.integers(10)}', f'r{rng.integers(4)}',
             f'n{rng.integers(10)}') for _ in range(200)]
    path = tmp_path / 'path_graph'
    path.write_text(''.join(f'{h}\t{r}\t{t}\n' for h, r, t in rows))
    triples, names = read_path_graph(str(path), ent2id, chunk_chars=chunk)
    assert names == list(dict.fromkeys(r for _, r, _ in rows))
    assert triples.tolist() == [[ent2id[h], names.index(r), ent2id[t]]
                                for h, r, t in rows]
    # An error deep in the file names the right line at any chunk size.
    rows[150] = ('n1', 'r0', 'ghost')
    path.write_text(''.join(f'{h}\t{r}\t{t}\n' for h, r, t in rows))
    with pytest.raises(FewShotDataError, match='line 151: tail'):
        read_path_graph(str(path), ent2id, chunk_chars=chunk)


def test_e1rel_e2_longest_match(tmp_path):
    # 'abc' could be ('ab', 'c') or ('a', 'bc'): the longest relation wins.
    ent2id = {'a': 0, 'ab': 1, 'x': 2}
    path = tmp_path / 'e1rel_e2.json'
    path.write_text(json.dumps({'abc': ['x'], 'xc': ['a'], 'xzz': ['a']}))
    rows, skipped = read_e1rel_e2(str(path), ent2id, ['c', 'bc'])
    assert rows.tolist() == [[1, 0, 2], [0, 2, 0]]
    assert skipped == 1
    # The longest suffix whose head is an entity is taken.
    ent2id = {'ab': 0, 'x': 1}
    path.write_text(json.dumps({'abc': ['x']}))
    rows, _ = read_e1rel_e2(str(path), ent2id, ['c', 'bc'])
    assert rows.tolist() == [[0, 0, 1]]


def test_e1rel_e2_unknown_entities(make_folder):
    # A key whose head is no entity cannot filter any query: it is skipped
    # with a warning (a wrong split of a valid key looks the same).
    folder = make_folder({'e1rel_e2.json': {'ghostlikes': ['n1']}}, name='a')
    with pytest.warns(UserWarning, match=r"ignored 1 key\(s\) .* \(first: "
                      r"'ghostlikes'\)"):
        _, report = read_fewshot_folder(folder)
    assert report['num_e1rel_e2_keys_ignored'] == 1
    folder = make_folder({'e1rel_e2.json': {'n0likes': ['ghost']}}, name='b')
    with pytest.raises(FewShotDataError,
                       match=r"e1rel_e2.json: key 'n0likes': tail 'ghost' is not"):
        read_fewshot_folder(folder)


def test_duplicate_candidates_dropped(make_folder):
    cands = dict(CANDIDATES, likes=['n1', 'n3', 'n1', 'n5', 'n3'])
    data, report = read_fewshot_folder(
        make_folder({'rel2candidates.json': cands}))
    assert candidates(data, 0).tolist() == [1, 3, 5]
    assert report['num_duplicate_candidates_dropped'] == 2


def _built(cands=None, tasks=None):
    tasks = tasks or {
        'train': [('a', torch.tensor([[0, 1], [1, 2], [2, 3]]))],
        'dev': [('b', torch.tensor([[3, 4], [4, 5]]))],
        'test': [('c', torch.tensor([[5, 0]]))],
    }
    every = torch.arange(6)
    cands = cands or {'a': every, 'b': every, 'c': every}
    bg = torch.tensor([[0, 0, 1], [1, 0, 2]])
    return build_fewshot_data(6, bg, ['r'], tasks, cands,
                              entity_names=[f'e{i}' for i in range(6)])


def test_validate_and_check_shots():
    data = _built()
    validate(data)
    validate(data, shots=0)
    with pytest.raises(FewShotDataError, match=r"'c' \(test, 1 triple"):
        check_shots(data, 1)
    with pytest.raises(FewShotDataError,
                       match=r"2 task relation\(s\) have fewer than 3 "
                       r"triples.*'b' \(dev, 2.*'c' \(test, 1"):
        validate(data, shots=2)
    check_shots(data, 2, splits=['train'])


def test_validate_tail_not_candidate():
    every = torch.arange(6)
    data = _built(cands={'a': every, 'b': torch.tensor([0, 1, 2, 3]),
                         'c': every})
    with pytest.raises(FewShotDataError,
                       match=r"\(e3, b, e4\) is not among the candidates of "
                       r"relation 'b'"):
        validate(data)


def test_validate_empty_candidates():
    every = torch.arange(6)
    data = _built(cands={'a': every, 'b': every,
                         'c': torch.empty(0, dtype=torch.long)})
    with pytest.raises(FewShotDataError, match="'c' has an empty candidate"):
        validate(data)


def test_validate_relation_in_two_splits():
    t = torch.tensor([[0, 1], [1, 2]])
    every = torch.arange(6)
    data = _built(tasks={'train': [('a', t)], 'test': [('a', t)]},
                  cands={'a': every})
    with pytest.raises(FewShotDataError,
                       match="'a' is in both the train and the test split"):
        validate(data)
