"""End-to-end: meta-training learns the structure planted in a synthetic
graph (unseen test relations are translations the background reveals)."""
import pytest
import torch

from pyg_fewshot.data import EpisodeSampler
from pyg_fewshot.data.pretrain import pretrain_transe
from pyg_fewshot.data.synthetic import make_synthetic
from pyg_fewshot.evaluation import chance_level, evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import build_model


@pytest.fixture(scope='module')
def planted():
    data = make_synthetic(num_entities=200, num_background_relations=6,
                          num_background_triples=3000,
                          num_train_relations=10, num_dev_relations=2,
                          num_test_relations=3, triples_per_relation=30,
                          num_clusters=10, noise=0.0,
                          category_probs=(0, 0, 0, 1), seed=0)
    torch.manual_seed(0)
    ent, rel = pretrain_transe(data, dim=16, epochs=30, batch_size=1024,
                               lr=0.1, progress=False)
    data['entity'].emb, data.relation_emb = ent, rel
    return data


@pytest.mark.parametrize('name,kwargs,factor', [
    ('moemeta', dict(relation_meta_kwargs=dict(
        num_experts=8, top_k=2, hidden_channels=32, gate_hidden_channels=32)),
     3.0),
    ('metar', dict(hidden_channels=(64, )), 2.0),
])
def test_meta_training_learns_planted_structure(planted, tmp_path, name,
                                                kwargs, factor):
    torch.manual_seed(0)
    # The size of the pretrained vectors.
    model = build_model(name, planted, embedding_dim=16, **kwargs)
    assert torch.equal(model.encoder.entity.weight.detach(),
                       planted['entity'].emb)
    learner = MetaLearner(model)
    before = evaluate(model, planted, 'test', 3, learner)['mrr']
    trainer = MetaTrainer(learner, EpisodeSampler(planted, 3, 3, 64, seed=0),
                          str(tmp_path), lr=5e-3, max_steps=300,
                          eval_every=300, progress=False)
    trainer.fit()
    after = evaluate(model, planted, 'test', 3, learner)['mrr']
    chance = chance_level(planted, 'test', 3)['mrr']
    assert after > factor * chance
    assert after > before
