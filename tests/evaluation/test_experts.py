import math

import pytest
import torch

from pyg_fewshot.evaluation.experts import (expert_activations,
                                            load_statistics,
                                            relation_specificity)
from pyg_fewshot.data.hetero import split_relations, task_triples
from pyg_fewshot.models import build_model

MOE = {'num_experts': 4, 'top_k': 2, 'hidden_channels': 8,
       'gate_hidden_channels': 8}


def test_exact_collapse_is_detected():
    # Every pair routed to the same 5 of 32 experts: the perplexity equals
    # top_k up to rounding, which must still count as collapse.
    load = torch.zeros(32, dtype=torch.double)
    load[[6, 13, 21, 23, 26]] = 0.2
    stats = load_statistics(load, top_k=5)
    assert stats['effective_experts'] == pytest.approx(5.0)
    assert stats['normalized_entropy'] == pytest.approx(
        math.log(5) / math.log(32))
    assert stats['experts_used'] == 5
    assert stats['collapsed']


def test_near_collapse_and_balance():
    load = torch.full((32, ), 1e-4, dtype=torch.double)
    load[:5] = (1 - 27e-4) / 5
    near = load_statistics(load, top_k=5)
    assert near['experts_used'] == 32
    assert near['effective_experts'] < 7.5
    assert near['collapsed']

    balanced = load_statistics(torch.full((32, ), 1 / 32), top_k=5)
    assert balanced['normalized_entropy'] == pytest.approx(1.0)
    assert balanced['effective_experts'] == pytest.approx(32.0)
    assert not balanced['collapsed']
    # Two disjoint fixed sets of 5 are 10 effective experts: not collapse
    # at the default tolerance (1.5 sets), collapse at 2.
    two = torch.zeros(32)
    two[:10] = 0.1
    assert not load_statistics(two, top_k=5)['collapsed']
    assert load_statistics(two, top_k=5, tolerance=2.0)['collapsed']


def test_relation_specificity_bounds():
    pairs = torch.tensor([10., 30.])
    # Both relations use experts {0, 1}: the relation tells nothing.
    alike = torch.tensor([[1., 1., 0., 0.], [1., 1., 0., 0.]])
    assert relation_specificity(alike, pairs) == pytest.approx(0.0)
    # Disjoint experts: H(E | R) = log 2, so I / H(E) = 1 - log 2 / H(E).
    apart = torch.tensor([[1., 1., 0., 0.], [0., 0., 1., 1.]])
    p = torch.tensor([0.125, 0.125, 0.375, 0.375], dtype=torch.double)
    h_e = float(-(p * p.log()).sum())
    assert relation_specificity(apart, pairs) == pytest.approx(
        1 - math.log(2) / h_e)


def test_expert_activations_reports_pairs_and_specificity(tiny_data):
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta_kwargs=MOE)
    model.train()
    out = expert_activations(model, tiny_data)
    assert model.training  # the mode is restored
    R = len(out['relations'])
    assert out['activation'].shape == (R, 4)
    assert out['pairs'].shape == (R, )
    # Each pair uses top_k experts.
    assert torch.allclose(out['activation'].sum(1),
                          torch.full((R, ), 2.0, dtype=torch.double))
    stats = out['statistics']
    assert 0.0 <= stats['relation_specificity'] <= 1.0
    assert stats['effective_experts'] <= 4.0 + 1e-9


def test_expert_activations_are_the_routing_of_init_local(tiny_data):
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta_kwargs=MOE).eval()
    out = expert_activations(model, tiny_data, splits=('dev', ), shots=3)
    rel = int(split_relations(tiny_data, 'dev')[0])
    trip = task_triples(tiny_data, rel)[:3]
    routing = model.init_local(trip.unsqueeze(0),
                               model.embed(trip[:, 0]).unsqueeze(0),
                               model.embed(trip[:, 1]).unsqueeze(0)).routing
    onehot = torch.zeros(3, 4, dtype=torch.double)
    onehot.scatter_(1, routing.experts, 1.0)
    assert out['relations'] == [tiny_data.task_relation_names[rel]]
    assert out['pairs'].tolist() == [3.0]
    torch.testing.assert_close(out['activation'][0], onehot.mean(0))
    torch.testing.assert_close(out['gate'][0], routing.probs.double().mean(0))


def test_expert_activations_need_a_routing_model(tiny_data):
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta='mlp',
                        relation_meta_kwargs={'hidden_channels': (8, )})
    with pytest.raises(ValueError, match="relation_meta='moe'"):
        expert_activations(model, tiny_data)
    metar = build_model('metar', tiny_data, embedding_dim=8,
                        hidden_channels=(8, ))
    with pytest.raises(ValueError, match='routes pairs to experts'):
        expert_activations(metar, tiny_data)
    moe = build_model('moemeta', tiny_data, embedding_dim=8,
                      relation_meta_kwargs=MOE)
    with pytest.raises(ValueError, match='no task relations'):
        expert_activations(moe, tiny_data, splits=())


# The expert-activation figure ------------------------------------------------


def figure_texts(fig):
    r"""Every text drawn on a figure (titles, labels, annotations)."""
    from matplotlib.text import Text
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def statistics_lines(stats):
    return [f"effective experts {stats['effective_experts']:.2f}",
            f"experts used {stats['experts_used']}/{stats['num_experts']}",
            f"largest share {stats['max_share']:.3f}",
            f"normalised entropy {stats['normalized_entropy']:.3f}",
            f"collapsed: {'yes' if stats['collapsed'] else 'no'}"]


def test_heatmap_shows_the_statistics_and_names_the_run(tiny_data, tmp_path):
    pytest.importorskip('matplotlib')
    import matplotlib
    matplotlib.use('Agg')
    from pyg_fewshot.evaluation.experts import plot_activation_heatmap
    from pyg_fewshot.pipeline import RunConfig
    torch.manual_seed(0)
    model = build_model('moemeta', tiny_data, embedding_dim=8,
                        relation_meta_kwargs=MOE)
    analysis = expert_activations(model, tiny_data)
    config = RunConfig().override([
        'model.name=moemeta', 'data.dataset=/somewhere/tiny-kg',
        'episodes.shots=3', 'seed=7'])
    path = str(tmp_path / 'experts.png')
    fig = plot_activation_heatmap(analysis, path, config=config)
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    title = fig.get_suptitle()
    assert title == (f'Expert activation: moemeta on tiny-kg, 3-shot, '
                     f'seed 7, config {config.config_hash()}')
    # The statistics are drawn on the figure, not only printed.
    text = '\n'.join(figure_texts(fig))
    for line in statistics_lines(analysis['statistics']):
        assert line in text, line
    # The configuration's dict (results.json's) names the same run.
    fig = plot_activation_heatmap(analysis, path, title='Run A',
                                  config=config.to_dict())
    assert fig.get_suptitle() == title.replace('Expert activation', 'Run A')

    # Collapsed routing says so.
    collapsed = dict(analysis, statistics=load_statistics(
        torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.double), top_k=2))
    fig = plot_activation_heatmap(collapsed, path)
    text = '\n'.join(figure_texts(fig))
    assert 'collapsed: yes' in text and 'experts used 2/4' in text
    assert fig.get_suptitle() == 'Expert activation'  # the old call


def test_experts_command_draws_the_run_and_its_statistics(tmp_path,
                                                          monkeypatch,
                                                          capsys):
    pytest.importorskip('matplotlib')
    import matplotlib
    matplotlib.use('Agg')
    import json
    import os
    import sys

    from pyg_fewshot.cli.main import main
    from pyg_fewshot.evaluation import experts
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                    'reliability'))
    from _cli import write_dataset

    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    data = write_dataset(tmp_path / 'kg')
    out = str(tmp_path / 'run')
    assert main(['train', '--model', 'moemeta', '--dataset', data,
                 '--output', out, '--max-steps', '2', '--eval-every', '1',
                 '--batch-size', '4', '--dim', '8', '--seed', '5', '--quiet',
                 '--set', 'model.relation_meta_kwargs.num_experts=4',
                 '--set', 'model.relation_meta_kwargs.top_k=2']) == 0
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    figures = []
    plot = experts.plot_activation_heatmap

    def keep(*args, **kwargs):
        figures.append(plot(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(experts, 'plot_activation_heatmap', keep)
    capsys.readouterr()
    assert main(['experts', '--checkpoint', out]) == 0
    printed = capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, 'experts.png'))
    with open(os.path.join(out, 'experts.json')) as f:
        stats = json.load(f)['statistics']
    fig, = figures
    # The run's own configuration hash (that of results.json).
    assert fig.get_suptitle() == (
        f"Expert activation: moemeta on kg, 1-shot, seed 5, config "
        f"{res['config_hash']}")
    text = '\n'.join(figure_texts(fig))
    for line in statistics_lines(stats):
        assert line in text, line
    assert f"{stats['effective_experts']:.1f} effective experts" in printed
