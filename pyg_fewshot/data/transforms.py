r"""Transforms of few-shot KGs (:class:`~torch_geometric.data.HeteroData` of
the schema of :mod:`pyg_fewshot.data.hetero`)."""
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from .hetero import ENTITY


class ScaleEmbeddings(BaseTransform):
    r"""Rescales pretrained entity vectors ``data['entity'].emb`` and, if
    present, relation vectors ``data.relation_emb`` by one global factor
    that gives the entity vectors a mean :math:`L_2` row norm of 1,

    .. math::
        s = \left(\frac{1}{N} \sum_{i=1}^{N}
        \|\mathbf{e}_i\|_2\right)^{-1},
        \qquad \mathbf{e}_i \leftarrow s\,\mathbf{e}_i,
        \qquad \mathbf{r}_j \leftarrow s\,\mathbf{r}_j.

    One factor for both tables keeps TransE's geometry
    (:math:`\mathbf{h} + \mathbf{r} = \mathbf{t}`) exactly, and puts the
    vectors on the scale that the margin (1) and learning rate
    (:math:`10^{-3}`) of the meta-learners assume; the
    :math:`L_1`-normalised vectors of
    :func:`~pyg_fewshot.data.pretrain.pretrain_transe` are much shorter.

    .. code-block:: python

        from pyg_fewshot.data import ScaleEmbeddings, load_dataset

        dataset = load_dataset('umls-one')
        data = dataset[0]
        data['entity'].emb, data.relation_emb = \
            dataset.pretrained_embeddings(dim=100)
        data = ScaleEmbeddings()(data)
    """
    def forward(self, data: HeteroData) -> HeteroData:
        store = data[ENTITY]
        if 'emb' not in store:
            raise ValueError(f"{self.__class__.__name__} needs pretrained "
                             f"entity vectors in data['{ENTITY}'].emb")
        ent = store.emb
        # clamp: all-zero vectors stay zero instead of becoming NaN.
        scale = 1.0 / ent.norm(dim=1).mean().clamp(min=1e-12)
        store.emb = ent * scale
        if 'relation_emb' in data:
            data.relation_emb = data.relation_emb * scale
        return data


__all__ = ['ScaleEmbeddings']
