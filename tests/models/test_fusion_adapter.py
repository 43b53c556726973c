import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pyg_fewshot.data.modalities import modality_features, set_modality
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models import (FusionAdapterConfig, MetaR, MetaRConfig,
                                MoEMetaConfig, build_model)
from pyg_fewshot.models.fusion_adapter import FusionAdapter
from pyg_fewshot.nn import EntityEncoder, MLPRelationMeta

METAR = dict(embedding_dim=8, hidden_channels=(16, ))
MOE = {'num_experts': 4, 'top_k': 2, 'hidden_channels': 8,
       'gate_hidden_channels': 8}


@pytest.fixture
def mm_data(tiny_data):
    g = torch.Generator().manual_seed(0)
    n = tiny_data['entity'].num_nodes
    set_modality(tiny_data, 'text', torch.randn(n, 5, generator=g))
    image_mask = torch.rand(n, generator=g) > 0.4
    set_modality(tiny_data, 'image', torch.randn(n, 7, generator=g),
                 image_mask)
    return tiny_data


def make(data, backbone=None, dropout=None, **kwargs):
    r"""A small FusionAdapter over MetaR (or ``backbone``); ``dropout`` is
    the MetaR relation-meta dropout."""
    torch.manual_seed(0)
    if backbone is None:
        metar = dict(METAR)
        if dropout is not None:
            metar['dropout'] = dropout
        backbone = MetaRConfig(**metar)
    kwargs.setdefault('adapter_hidden', 6)
    return build_model('fusionadapter', data, backbone=backbone, **kwargs)


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def diversity_by_hand(model, ids, gamma):
    r"""The diversity loss of the entities ``ids`` (each occurrence counted)
    from their structural embeddings and adapters, one term at a time."""
    with torch.no_grad():
        es = model.backbone.encoder.entity.weight[ids]
        want = 0.0
        for name in model.modalities:
            adapted = model.fusion.adapters[name](
                getattr(model, f'x_{name}')[ids])
            present = getattr(model, f'mask_{name}')[ids]
            terms = [max(F.cosine_similarity(adapted[i], es[i], dim=0).item()
                         - gamma, 0.0)
                     for i in range(ids.numel()) if present[i]]
            if terms:
                want += sum(terms) / len(terms)
    return want


def test_embed_is_structure_plus_masked_adapters(mm_data):
    model = make(mm_data).eval()
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])
    out = model.embed(idx)
    assert out.shape == (2, 3, 8)
    expected = model.backbone.embed(idx)
    for name in ('text', 'image'):
        x = getattr(model, f'x_{name}')[idx]
        m = getattr(model, f'mask_{name}')[idx].unsqueeze(-1)
        expected = expected + m * model.fusion.adapters[name](x)
    assert torch.allclose(out, expected, atol=1e-6)
    # MetaR-backed: the backbone's relation meta and scoring are reused.
    assert isinstance(model.backbone, MetaR)
    assert model.adapt_keys == ('rel', )
    assert isinstance(model.config, FusionAdapterConfig)
    assert model.config.backbone == MetaRConfig(**METAR)
    assert model.config.modalities is None  # every modality of the data
    assert model.modalities == ['image', 'text']
    assert model.modality_dims == [7, 5]


def test_composition_by_hand_equals_from_config(mm_data):
    built = make(mm_data)
    torch.manual_seed(0)
    features, masks = modality_features(mm_data)
    backbone = MetaR(EntityEncoder(40, 8),
                     MLPRelationMeta(16, 8, hidden_channels=(16, )))
    composed = FusionAdapter(backbone, features, masks, adapter_hidden=6)
    a, b = built.state_dict(), composed.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    idx = torch.arange(40)
    assert torch.equal(built.eval().embed(idx), composed.eval().embed(idx))


def test_missing_modality_masks(mm_data):
    model = make(mm_data).eval()
    missing = ~model.mask_image
    assert missing.any()
    # Entities without an image never see their (undefined) image features.
    model.x_image[missing] = float('nan')
    idx = torch.arange(mm_data['entity'].num_nodes)
    out = model.embed(idx)
    assert torch.isfinite(out).all()
    # No modality at all: exactly the backbone's embedding.
    for name in model.modalities:
        model.set_modality_mask(name, torch.zeros_like(model.mask_text))
    assert torch.equal(model.embed(idx), model.backbone.embed(idx))


def test_diversity_loss_in_init_local_matches_hand_computation(mm_data):
    gamma, lam = 0.05, 0.7
    model = make(mm_data, adapter_dropout=0.0, diversity_gamma=gamma,
                 diversity_weight=lam, dropout=0.0).train()
    learner = MetaLearner(model)
    ep = EpisodeSampler(mm_data, 2, 3, 6, seed=1).sample()
    sup_h, sup_t, *_ = learner.embed_episode(ep)
    out = model.init_local(ep.support, sup_h, sup_t)
    assert set(out.aux_losses) == {'diversity'}
    aux = out.aux_losses['diversity']

    ids = torch.cat([ep.support[..., 0].reshape(-1),
                     ep.support[..., 1].reshape(-1)])
    want = diversity_by_hand(model, ids, gamma)
    assert want > 0
    assert aux.item() == pytest.approx(lam * want, rel=1e-5)
    assert out.aux_loss.item() == pytest.approx(lam * want, rel=1e-5)

    # The loss trains the adapters (and the structural embeddings).
    aux.backward()
    assert model.fusion.adapters['text'].lin1.weight.grad.abs().sum() > 0
    assert model.backbone.encoder.entity.weight.grad is not None


def test_support_diversity_uses_the_latest_row_of_each_id(mm_data):
    # The records are kept by entity id: an entity embedded twice since the
    # last init_local() counts with its latest representation (here: its
    # latest modality mask).
    model = make(mm_data, adapter_dropout=0.0).train()
    support = torch.tensor([[[0, 3], [5, 8]], [[3, 11], [2, 0]]])
    ids = torch.cat([support[..., 0].reshape(-1),
                     support[..., 1].reshape(-1)])
    uniq = ids.unique()
    text = model.mask_text.clone()
    full = diversity_by_hand(model, ids, 0.0)
    model.set_modality_mask('text', torch.zeros_like(text))
    image_only = diversity_by_hand(model, ids, 0.0)
    assert image_only < full

    model.embed(uniq)  # text masked off
    model.set_modality_mask('text', text)
    model.embed(uniq.flip(0).view(2, -1))  # text back: these rows count
    got = model.support_diversity(support)
    assert got.item() == pytest.approx(full, rel=1e-5)
    # The records were consumed.
    with pytest.raises(RuntimeError, match='embed'):
        model.support_diversity(support)

    model.embed(uniq)
    model.set_modality_mask('text', torch.zeros_like(text))
    model.embed(uniq)
    assert model.support_diversity(support).item() == pytest.approx(
        image_only, rel=1e-5)


def test_outer_loss_adds_diversity_and_lambda_zero(mm_data):
    model = make(mm_data)
    learner = MetaLearner(model)
    ep = EpisodeSampler(mm_data, 1, 3, 8).sample()
    loss, logs = learner.loss(ep)
    assert logs['aux_loss'] > 0
    assert logs['aux/diversity'] == logs['aux_loss']
    assert loss.item() == pytest.approx(
        (logs['query_loss'] + logs['aux_loss']).item(), rel=1e-6)
    assert model._records == []  # consumed by init_local

    model0 = make(mm_data, diversity_weight=0.0)
    _, logs0 = MetaLearner(model0).loss(ep)
    assert logs0['aux_loss'] == 0 and model0._records == []
    assert 'aux/diversity' not in logs0


def test_init_local_needs_rows_from_embed_in_training(mm_data):
    model = make(mm_data).train()
    x = torch.randn(2, 1, 8)
    support = torch.tensor([[[1, 2]], [[3, 4]]])
    with pytest.raises(RuntimeError, match='embed'):
        model.init_local(support, x, x)
    model.embed(torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match='2 of 4 support entities'):
        model.init_local(support, x, x)
    # Ids embedded since the last init_local(): the rows passed in do not
    # matter, the records are found by id.
    model.embed(torch.tensor([1, 2, 3, 4]))
    out = model.init_local(support, x, x)
    assert out.aux_losses['diversity'] > 0
    model.eval()
    out = model.init_local(support, x, x)  # no diversity loss in eval mode
    assert out.aux_losses == {}


def tuned_adapters(model, learner, support, neg):
    return model.tune_adapters(support, neg, learner)


def test_tuning_uses_the_learner_it_is_given(mm_data):
    model = make(mm_data, tta_lr=1e-2).eval()
    support = torch.tensor([[0, 13], [5, 18]])
    neg = torch.tensor([7, 9])
    frozen = MetaLearner(model, inner_lr=0.0)
    stepped = MetaLearner(model, inner_lr=5.0)
    a = tuned_adapters(model, frozen, support, neg)
    b = tuned_adapters(model, stepped, support, neg)
    assert set(a) == set(model.adapter_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # Deterministic for a learner, and a learner without inner steps tunes
    # as one with a zero step does (the inner loop is the learner's).
    again = tuned_adapters(model, stepped, support, neg)
    no_steps = tuned_adapters(model, MetaLearner(model, inner_steps=0),
                              support, neg)
    for k in a:
        assert torch.equal(b[k], again[k]), k
        assert torch.equal(a[k], no_steps[k]), k
    # The support loss is the learner's too (its margin).
    wide = tuned_adapters(model, MetaLearner(model, inner_lr=0.0, margin=3.0),
                          support, neg)
    assert any(not torch.equal(a[k], wide[k]) for k in a)
    # The objective is the learner's support loss after its inner loop.
    h = model.embed(support[:, 0]).unsqueeze(0)
    t = model.embed(support[:, 1]).unsqueeze(0)
    n = model.embed(neg).unsqueeze(0)
    local = model.init_local(support.unsqueeze(0), h, t).local
    assert model.support_objective(frozen, support.unsqueeze(0), h, t,
                                   n).item() == pytest.approx(
        frozen.support_loss(local, h, t, n).item(), rel=1e-6)
    with pytest.raises(TypeError, match='learner'):
        model.task_scope(support, neg)


def test_adapter_tuning_changes_no_backbone_parameter(mm_data):
    model = make(mm_data, tta_lr=1e-2).eval()
    learner = MetaLearner(model)
    before = params(model)
    support = torch.tensor([[0, 13], [5, 18]])
    neg = torch.tensor([7, 9])
    idx = torch.arange(40)
    outside = model.embed(idx)
    with torch.no_grad():
        with model.task_scope(support, neg, learner):
            assert not model.fusion.training  # ranking: dropout off
            inside = model.embed(idx)
            assert torch.equal(inside, model.embed(idx))
            for k, v in model.named_parameters():
                assert torch.equal(v, before[k]), k  # clones were tuned
    # The adapters were tuned ...
    assert not torch.allclose(inside, outside)
    tuned = model.tune_adapters(support, neg, learner)
    assert any(not torch.equal(tuned[k], v)
               for k, v in model.adapter_parameters().items())
    # ... nothing else, and nothing carried over.
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
        assert v.grad is None
    assert torch.equal(model.embed(idx), outside)
    # The backbone's view of the entities does not move inside the scope.
    with torch.no_grad(), model.task_scope(support, neg, learner):
        assert torch.equal(model.backbone.embed(idx),
                           model.backbone.embed(idx))


def test_relation_state_isolation(mm_data):
    model = make(mm_data, tta_lr=1e-2)
    learner = MetaLearner(model)
    sampler = EpisodeSampler(mm_data, 2, 3, 16)
    trainer = MetaTrainer(learner, sampler, '/tmp/unused', max_steps=1,
                          progress=False)
    trainer.train_step()  # moves every parameter off its initial value
    model.train()
    before = params(model)
    a, b = (int(r) for r in mm_data.test_rel)
    both = evaluate(model, mm_data, 'test', 2, learner,
                    relations=torch.tensor([a, b]))
    alone = evaluate(model, mm_data, 'test', 2, learner,
                     relations=torch.tensor([b]))
    name_b = mm_data.task_relation_names[b]
    assert both['per_relation'][name_b] == alone['per_relation'][name_b]
    assert model.training  # evaluate() restored the mode
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
    # Tuning matters (else the test above would be vacuous).
    model.tta_steps = 0
    untuned = evaluate(model, mm_data, 'test', 2, learner,
                       relations=torch.tensor([b]))
    assert untuned['per_relation'][name_b] != alone['per_relation'][name_b]


def test_checkpoint_roundtrip_and_errors(mm_data):
    model = make(mm_data)
    state = model.state_dict()
    assert not any(k.startswith(('x_', 'mask_')) for k in state)
    backbone = dataclasses.replace(model.config.backbone, pretrained=False)
    clone = build_model(dataclasses.replace(model.config, backbone=backbone),
                        mm_data)
    clone.load_state_dict(state)
    idx = torch.arange(10)
    assert torch.equal(clone.eval().embed(idx), model.eval().embed(idx))

    # Features of other sizes than the checkpoint's adapters: refused.
    other = mm_data.clone()
    set_modality(other, 'text', torch.randn(40, 3))
    with pytest.raises(RuntimeError, match='size mismatch'):
        build_model(model.config, other).load_state_dict(state)
    with pytest.raises(ValueError, match='backbone'):
        build_model('fusionadapter', mm_data, backbone='transe')
    text_only = make(mm_data, modalities=['text'])
    assert list(text_only.fusion.adapters) == ['text']
    with pytest.raises(ValueError, match=r'shape \(39, 5\)'):
        FusionAdapter(model.backbone, {'text': torch.zeros(39, 5)})
    with pytest.raises(ValueError, match='tta_steps'):
        FusionAdapter(model.backbone, {'text': torch.zeros(40, 5)},
                      tta_steps=-1)
    with pytest.raises(TypeError, match='another FusionAdapter'):
        FusionAdapter(model, {'text': torch.zeros(40, 5)})
    del mm_data['entity'].x_text, mm_data['entity'].x_image
    with pytest.raises(ValueError, match='at least one modality'):
        make(mm_data)
    with pytest.raises(TypeError, match='FewShotModel'):
        FusionAdapter(torch.nn.Linear(2, 2), {'text': torch.zeros(40, 2)})


def test_moemeta_backbone(mm_data):
    model = make(mm_data, backbone=MoEMetaConfig(
        embedding_dim=8, relation_meta_kwargs=dict(MOE, load_balance=0.1)))
    assert model.adapt_keys == ('rel', 'p_h', 'p_r', 'p_t')
    assert model.default_inner_lr == model.backbone.default_inner_lr == 0.05
    learner = MetaLearner(model)
    ep = EpisodeSampler(mm_data, 2, 3, 8).sample()
    loss, logs = learner.loss(ep)
    loss.backward()
    assert torch.isfinite(loss) and logs['aux_loss'] > 0
    # The backbone's auxiliary loss and routing pass through.
    assert logs['aux/load_balance'] > 0 and logs['aux/diversity'] > 0
    assert logs['aux_loss'].item() == pytest.approx(
        (logs['aux/load_balance'] + logs['aux/diversity']).item(), rel=1e-6)
    assert 'routing/max_share' in logs
    assert model.fusion.adapters['image'].lin2.weight.grad is not None
    before = params(model)
    res = evaluate(model, mm_data, 'test', 2, learner)
    assert 0 < res['mrr'] <= 1
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
