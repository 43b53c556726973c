import dataclasses

import pytest
import torch

from pyg_fewshot.data import (BackgroundTasks, DataConfig, EpisodeConfig,
                              FewShotDataError, check_shots, load_data,
                              load_dataset)
from pyg_fewshot.data import config as config_module
from pyg_fewshot.data.hetero import build_fewshot_data


def test_defaults_and_round_trip():
    assert dataclasses.asdict(DataConfig()) == {
        'dataset': 'umls-one', 'root': None, 'pretrain': False,
        'background_tasks': False, 'text': None, 'text_model': None,
        'modality_dir': None}
    assert dataclasses.asdict(EpisodeConfig()) == {
        'shots': 1, 'num_queries': 3, 'batch_size': 1024}
    for config in (DataConfig('/data/nell-one', root='/tmp/x', pretrain=True,
                              background_tasks=True, text=False,
                              text_model='m', modality_dir='/m'),
                   EpisodeConfig(shots=5, num_queries=2, batch_size=64)):
        again = type(config)(**dataclasses.asdict(config))
        assert again == config


@pytest.mark.parametrize('kwargs, match', [
    ({'shots': 0}, r"^EpisodeConfig: 'shots' must be positive \(got 0\)$"),
    ({'num_queries': -1}, "'num_queries' must be positive"),
    ({'batch_size': 0}, "'batch_size' must be positive"),
    ({'shots': 1.5}, r"'shots' must be int \(got 1\.5\)"),
    ({'batch_size': True}, "'batch_size' must be int"),
])
def test_episode_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpisodeConfig(**kwargs)


@pytest.mark.parametrize('kwargs, match', [
    ({'pretrain': 'false'}, r"^DataConfig: 'pretrain' must be bool "
                            r"\(got 'false'\)$"),
    ({'background_tasks': 1}, "'background_tasks' must be bool"),
    ({'text': 'yes'}, "'text' must be None or bool"),
    ({'root': 3}, "'root' must be None or str"),
    ({'dataset': None}, "'dataset' must be str"),
    ({'dataset': ' '}, "'dataset' must not be empty"),
])
def test_data_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        DataConfig(**kwargs)
    assert '\n' not in str(info.value)


def test_check_shots_rule(tiny_data):
    # tiny_data: train/dev relations of 12 triples, test1 of 6.
    EpisodeConfig(shots=5).check(tiny_data)  # 6 >= 5 + 1
    with pytest.raises(FewShotDataError) as info:
        EpisodeConfig(shots=6).check(tiny_data)
    assert str(info.value) == (
        "1 task relation(s) have fewer than 7 triples, too few for 6-shot "
        "episodes (K support + 1 query): 'test1' (test, 6 triple(s))")
    # The splits checked are the ones asked for.
    EpisodeConfig(shots=6).check(tiny_data, ('train', 'dev'))
    with pytest.raises(FewShotDataError, match='too few for 6-shot'):
        check_shots(tiny_data, 6, ('test', ))
    with pytest.raises(FewShotDataError,
                       match=r"^7 task relation\(s\) have fewer than 13"):
        EpisodeConfig(shots=12).check(tiny_data)


def test_check_empty_split():
    trip = torch.tensor([[0, 1], [1, 2], [2, 3]])
    tasks = {'train': [('a', trip)], 'dev': [], 'test': [('b', trip)]}
    data = build_fewshot_data(4, torch.tensor([[0, 0, 1]]), ['bg'], tasks,
                              {'a': torch.arange(4), 'b': torch.arange(4)})
    with pytest.raises(FewShotDataError) as info:
        EpisodeConfig().check(data)
    assert str(info.value) == (
        'The dev split has no task relations (dev_tasks.json is empty); at '
        'least one is needed to pick the best checkpoint on')
    with pytest.raises(FewShotDataError, match='needed to evaluate$'):
        EpisodeConfig().check(data, ('dev', ), use='to evaluate')
    EpisodeConfig(shots=2).check(data, ('train', 'test'))
    # Empty splits are reported before short relations.
    with pytest.raises(FewShotDataError, match='The dev split'):
        EpisodeConfig(shots=3).check(data)


def cli_load(name, root, pretrain, dim, background_tasks):
    # What cli/main.py did before load_data (_load_data, then
    # BackgroundTasks in _train).
    dataset = load_dataset(name, root=root)
    data = dataset[0]
    if pretrain:
        ent, rel = dataset.pretrained_embeddings(dim=dim)
        scale = 1.0 / ent.norm(dim=1).mean().clamp(min=1e-12)
        data['entity'].emb = ent * scale
        data.relation_emb = rel * scale
    if background_tasks:
        data = BackgroundTasks()(data)
    return dataset, data


def assert_same_data(a, b):
    assert sorted(a.keys()) == sorted(b.keys())
    for store_a, store_b in zip(a.stores, b.stores):
        assert sorted(store_a.keys()) == sorted(store_b.keys())
        for key, value in store_a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, store_b[key]), key
            else:
                assert value == store_b[key], key


@pytest.mark.parametrize('pretrain, background_tasks',
                         [(False, False), (True, False), (True, True)])
def test_load_data_is_the_cli(tmp_path, pretrain, background_tasks):
    root = str(tmp_path / 'umls')
    config = DataConfig(root=root, pretrain=pretrain,
                        background_tasks=background_tasks)
    dataset, data = load_data(config, embedding_dim=8)
    assert dataset.processed_dir.startswith(root)
    _, want = cli_load('umls-one', root, pretrain, 8, background_tasks)
    assert_same_data(data, want)
    assert ('emb' in data['entity']) == pretrain
    if pretrain:
        assert data['entity'].emb.shape == (data['entity'].num_nodes, 8)
        norm = data['entity'].emb.norm(dim=1).mean()
        assert float(norm) == pytest.approx(1.0)
    assert ('bg_task_rel' in data) == background_tasks
    assert 'x_text' not in data['entity']


def test_load_data_modalities(tmp_path, monkeypatch):
    import numpy as np
    root = str(tmp_path / 'umls')
    n = load_dataset('umls-one', root=root)[0]['entity'].num_nodes
    folder = tmp_path / 'modalities'
    folder.mkdir()
    np.save(folder / 'x_image.npy', np.ones((n, 5), dtype=np.float32))
    calls = []

    def fake_text(data, cache_dir, model=None):
        calls.append((cache_dir, model))
        data['entity'].x_text = torch.zeros(n, 3)

    monkeypatch.setattr(config_module, 'text_features', fake_text)
    _, data = load_data(DataConfig(root=root, modality_dir=str(folder)))
    assert data['entity'].x_image.shape == (n, 5) and calls == []
    # text=None: the caller's default decides; an explicit value wins.
    dataset, data = load_data(DataConfig(root=root, text_model='m'),
                              text=True)
    assert calls == [(dataset.processed_dir, 'm')]
    assert data['entity'].x_text.shape == (n, 3)
    load_data(DataConfig(root=root, text=False), text=True)
    load_data(DataConfig(root=root, text=True))
    assert len(calls) == 2
