import pytest
import torch
import torch.nn.functional as F

from pyg_fewshot.data.modalities import set_modality
from pyg_fewshot.data.sampler import EpisodeSampler
from pyg_fewshot.evaluation import evaluate
from pyg_fewshot.meta import MetaLearner, MetaTrainer
from pyg_fewshot.models.fusion_adapter import FusionAdapter

SMALL = dict(embedding_dim=8, hidden_channels=[16], adapter_hidden=6)


@pytest.fixture
def mm_data(tiny_data):
    g = torch.Generator().manual_seed(0)
    n = tiny_data['entity'].num_nodes
    set_modality(tiny_data, 'text', torch.randn(n, 5, generator=g))
    image_mask = torch.rand(n, generator=g) > 0.4
    set_modality(tiny_data, 'image', torch.randn(n, 7, generator=g),
                 image_mask)
    return tiny_data


def make(data, **kwargs):
    torch.manual_seed(0)
    small = dict(SMALL)
    if kwargs.get('backbone') == 'moemeta':
        small.pop('hidden_channels')  # MetaR's relation-meta MLP only
    return FusionAdapter.from_data(data, **{**small, **kwargs})


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


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
    assert model.adapt_keys == ('rel', )
    assert model.config['backbone'] == 'metar'
    assert model.config['modalities'] == ['image', 'text']
    assert model.config['modality_dims'] == [7, 5]


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
    _, aux = model.init_local(sup_h, sup_t)

    ids = torch.cat([ep.support[..., 0].reshape(-1),
                     ep.support[..., 1].reshape(-1)])
    with torch.no_grad():
        es = model.backbone.entity.weight[ids]
        want = 0.0
        for name in ('image', 'text'):
            adapted = model.fusion.adapters[name](
                getattr(model, f'x_{name}')[ids])
            present = getattr(model, f'mask_{name}')[ids]
            terms = [max(F.cosine_similarity(adapted[i], es[i], dim=0).item()
                         - gamma, 0.0)
                     for i in range(ids.numel()) if present[i]]
            want += sum(terms) / len(terms)
    assert aux.item() == pytest.approx(lam * want, rel=1e-5)

    # The loss trains the adapters (and the structural embeddings).
    aux.backward()
    assert model.fusion.adapters['text'].lin1.weight.grad.abs().sum() > 0
    assert model.backbone.entity.weight.grad is not None


def test_outer_loss_adds_diversity_and_lambda_zero(mm_data):
    model = make(mm_data)
    learner = MetaLearner(model)
    ep = EpisodeSampler(mm_data, 1, 3, 8).sample()
    loss, logs = learner.loss(ep)
    assert logs['aux_loss'] > 0
    assert loss.item() == pytest.approx(
        (logs['query_loss'] + logs['aux_loss']).item(), rel=1e-6)
    assert model._records == []  # consumed by init_local

    model0 = make(mm_data, diversity_weight=0.0)
    _, logs0 = MetaLearner(model0).loss(ep)
    assert logs0['aux_loss'] == 0 and model0._records == []


def test_init_local_needs_rows_from_embed_in_training(mm_data):
    model = make(mm_data).train()
    x = torch.randn(2, 1, 8)
    with pytest.raises(RuntimeError, match='embed'):
        model.init_local(x, x)
    model.embed(torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match='not produced by embed'):
        model.init_local(x, x)
    model.eval()
    model.init_local(x, x)  # no diversity loss in eval mode


def test_support_objective_matches_meta_learner(mm_data):
    model = make(mm_data).eval()
    learner = MetaLearner(model, inner_steps=2, inner_lr=0.5, margin=0.7)
    model.inner_steps, model.inner_lr, model.margin = 2, 0.5, 0.7
    h, t, n = (model.embed(torch.randint(0, 40, (1, 3))) for _ in range(3))
    local, _ = model.backbone.init_local(h, t)
    want = learner.support_loss(learner.adapt(local, h, t, n), h, t, n)
    assert model.support_objective(h, t, n).item() == pytest.approx(
        want.item(), rel=1e-6)
    model.tta_learner = learner
    assert model.support_objective(h, t, n).item() == pytest.approx(
        want.item(), rel=1e-6)


def test_adapter_tuning_changes_no_backbone_parameter(mm_data):
    model = make(mm_data, tta_lr=1e-2).eval()
    before = params(model)
    support = torch.tensor([[0, 13], [5, 18]])
    neg = torch.tensor([7, 9])
    idx = torch.arange(40)
    outside = model.embed(idx)
    with torch.no_grad():
        with model.task_scope(support, neg):
            assert not model.fusion.training  # ranking: dropout off
            inside = model.embed(idx)
            assert torch.equal(inside, model.embed(idx))
            for k, v in model.named_parameters():
                assert torch.equal(v, before[k]), k  # clones were tuned
    # The adapters were tuned ...
    assert not torch.allclose(inside, outside)
    tuned = model.tune_adapters(support, neg)
    assert any(not torch.equal(tuned[k], v)
               for k, v in model.adapter_parameters().items())
    # ... nothing else, and nothing carried over.
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
        assert v.grad is None
    assert torch.equal(model.embed(idx), outside)
    # The backbone's view of the entities does not move inside the scope.
    with torch.no_grad(), model.task_scope(support, neg):
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
    clone = FusionAdapter.from_data(mm_data,
                                    **{**model.config, 'pretrained': False})
    clone.load_state_dict(state)
    idx = torch.arange(10)
    assert torch.equal(clone.eval().embed(idx), model.eval().embed(idx))

    with pytest.raises(ValueError, match='feature sizes'):
        FusionAdapter.from_data(mm_data, modality_dims=[3, 5])
    with pytest.raises(ValueError, match='backbone'):
        FusionAdapter.from_data(mm_data, backbone='transe')
    text_only = FusionAdapter.from_data(mm_data, modalities=['text'],
                                        **SMALL)
    assert list(text_only.fusion.adapters) == ['text']
    del mm_data['entity'].x_text, mm_data['entity'].x_image
    with pytest.raises(ValueError, match='at least one modality'):
        FusionAdapter.from_data(mm_data)
    with pytest.raises(TypeError, match='FewShotModel'):
        FusionAdapter(torch.nn.Linear(2, 2), {'text': torch.zeros(40, 2)})


def test_moemeta_backbone(mm_data):
    model = make(mm_data, backbone='moemeta', num_experts=4, top_k=2,
                 expert_hidden=8)
    assert model.adapt_keys == ('rel', 'p_h', 'p_r', 'p_t')
    learner = MetaLearner(model)
    ep = EpisodeSampler(mm_data, 2, 3, 8).sample()
    loss, logs = learner.loss(ep)
    loss.backward()
    assert torch.isfinite(loss) and logs['aux_loss'] > 0
    assert model.fusion.adapters['image'].lin2.weight.grad is not None
    before = params(model)
    res = evaluate(model, mm_data, 'test', 2, learner)
    assert 0 < res['mrr'] <= 1
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
