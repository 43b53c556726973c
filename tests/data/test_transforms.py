import pytest
import torch

from pyg_fewshot.data import ScaleEmbeddings


def cli_scaled(ent, rel):
    # The CLI's expression before the transform (cli/main.py, _load_data).
    scale = 1.0 / ent.norm(dim=1).mean().clamp(min=1e-12)
    return ent * scale, rel * scale


def test_scale_embeddings_is_the_cli_rescaling(tiny_data):
    g = torch.Generator().manual_seed(0)
    ent = torch.randn(40, 16, generator=g)
    ent = ent / ent.abs().sum(-1, keepdim=True)  # TransE's L1 unit rows
    rel = torch.randn(3, 16, generator=g)
    tiny_data['entity'].emb, tiny_data.relation_emb = ent, rel

    out = ScaleEmbeddings()(tiny_data)
    want_ent, want_rel = cli_scaled(ent, rel)
    assert torch.equal(out['entity'].emb, want_ent)
    assert torch.equal(out.relation_emb, want_rel)
    assert float(out['entity'].emb.norm(dim=1).mean()) == pytest.approx(1.0)
    # h + r - t only changes in length.
    h, r, t = out['entity'].emb[0], out.relation_emb[1], out['entity'].emb[2]
    s = float(want_ent[0, 0] / ent[0, 0])
    assert torch.allclose(h + r - t, s * (ent[0] + rel[1] - ent[2]))
    # A shallow copy: the input keeps its vectors.
    assert tiny_data['entity'].emb is ent and tiny_data.relation_emb is rel
    assert out.task_triples is tiny_data.task_triples
    # Applying it again changes (almost) nothing.
    again = ScaleEmbeddings()(out)
    assert torch.allclose(again['entity'].emb, out['entity'].emb)


def test_scale_embeddings_without_relation_vectors_or_any(tiny_data):
    tiny_data['entity'].emb = torch.full((40, 4), 2.0)
    out = ScaleEmbeddings()(tiny_data)
    assert torch.allclose(out['entity'].emb, torch.full((40, 4), 0.5))
    assert 'relation_emb' not in out
    # All-zero vectors stay zero instead of becoming NaN.
    tiny_data['entity'].emb = torch.zeros(40, 4)
    assert torch.equal(ScaleEmbeddings()(tiny_data)['entity'].emb,
                       torch.zeros(40, 4))
    del tiny_data['entity'].emb
    with pytest.raises(ValueError, match=r"data\['entity'\]\.emb"):
        ScaleEmbeddings()(tiny_data)
    assert repr(ScaleEmbeddings()) == 'ScaleEmbeddings()'
