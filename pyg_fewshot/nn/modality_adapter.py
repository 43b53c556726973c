import itertools
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from torch_geometric.nn.resolver import activation_resolver

_FUSIONS = ('sum', 'weighted')


class ModalityAdapter(torch.nn.Module):
    r"""The bottleneck modality adapter from the `"FusionAdapter for
    Few-Shot Relation Learning in Multimodal Knowledge Graphs"
    <https://arxiv.org/abs/2510.00894>`_ paper.

    Maps the features :math:`\mathbf{X}_m` of one modality (text, image,
    ...) into the structural embedding space:

    .. math::
        \mathrm{Adapter}_m(\mathbf{X}_m) = \mathbf{W}_2\,
        \mathrm{Dropout}\left(\sigma\left(\mathbf{W}_1 \mathbf{X}_m +
        \mathbf{b}_1\right)\right) + \mathbf{b}_2

    with :math:`\mathbf{W}_1 \in \mathbb{R}^{m \times D_m}` and
    :math:`\mathbf{W}_2 \in \mathbb{R}^{d \times m}` (no residual, as in the
    paper).

    Args:
        in_channels (int): Feature size :math:`D_m` of the modality.
        out_channels (int): Structural embedding size :math:`d`.
        hidden_channels (int, optional): Bottleneck size :math:`m`.
            (default: :obj:`50`)
        dropout (float, optional): Dropout after the activation, in
            training mode only. (default: :obj:`0.5`)
        act (str or Callable, optional): Activation :math:`\sigma`.
            (default: :obj:`"relu"`)
        act_kwargs (Dict[str, Any], optional): Arguments of :obj:`act`.
            (default: :obj:`None`)

    Shapes:
        - **input:** modality features :math:`(N, D_m)`
        - **output:** adapted features :math:`(N, d)`
    """
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 50,
        dropout: float = 0.5,
        act: Union[str, Callable, None] = 'relu',
        act_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.dropout = dropout
        self.act = activation_resolver(act, **(act_kwargs or {}))
        self.lin1 = torch.nn.Linear(in_channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        r"""Adapts modality features.

        Args:
            x (torch.Tensor): Features :obj:`[N, in_channels]`.
        """
        x = self.act(self.lin1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.lin2(x)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, hidden={self.hidden_channels}, '
                f'dropout={self.dropout})')


class ModalityFusion(torch.nn.Module):
    r"""Fuses structural entity embeddings with adapted multimodal features,
    as in the `"FusionAdapter for Few-Shot Relation Learning in Multimodal
    Knowledge Graphs" <https://arxiv.org/abs/2510.00894>`_ paper.

    .. math::
        \mathbf{E} = \mathbf{E}_S + \sum_{m} w_m \, \mathbf{M}_m \odot
        \mathrm{Adapter}_m(\mathbf{X}_m)

    with one :class:`ModalityAdapter` per modality, :math:`w_m = 1`
    (:obj:`fusion="sum"`, the paper) or a learned scalar per modality
    initialised to one (:obj:`fusion="weighted"`), and
    :math:`\mathbf{M}_m \in \{0, 1\}^N` the per-entity mask of entities
    that have modality :math:`m`: a missing modality contributes exactly
    zero, and its (possibly undefined) input features never reach the
    adapter. A modality absent from the :obj:`features` dictionary is
    treated as missing for every entity.

    Args:
        modalities (Dict[str, int]): Modality name to feature size.
        out_channels (int): Structural embedding size :math:`d`.
        hidden_channels (int, optional): Bottleneck size of every adapter.
            (default: :obj:`50`)
        dropout (float, optional): Dropout inside the adapters.
            (default: :obj:`0.5`)
        fusion (str, optional): :obj:`"sum"` or :obj:`"weighted"`.
            (default: :obj:`"sum"`)
        act (str or Callable, optional): Activation inside the adapters.
            (default: :obj:`"relu"`)

    Shapes:
        - **input:**
          structural embeddings :math:`(N, d)`,
          features :math:`\{m: (N, D_m)\}`,
          masks :math:`\{m: (N)\}` *(optional)*
        - **output:** fused embeddings :math:`(N, d)` and the adapted
          features :math:`\{m: (N, d)\}` (masked)
    """
    def __init__(
        self,
        modalities: Mapping[str, int],
        out_channels: int,
        hidden_channels: int = 50,
        dropout: float = 0.5,
        fusion: str = 'sum',
        act: Union[str, Callable, None] = 'relu',
    ):
        super().__init__()
        if fusion not in _FUSIONS:
            raise ValueError(f"Unknown fusion '{fusion}' (expected one of "
                             f"{_FUSIONS})")
        if len(modalities) == 0:
            raise ValueError("'modalities' must not be empty")
        self.modalities = dict(modalities)
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.fusion = fusion
        self.adapters = torch.nn.ModuleDict({
            name: ModalityAdapter(in_dim, out_channels, hidden_channels,
                                  dropout, act)
            for name, in_dim in self.modalities.items()
        })
        self.weight: Optional[Parameter] = None
        if fusion == 'weighted':
            self.weight = Parameter(torch.empty(len(self.modalities)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for adapter in self.adapters.values():
            adapter.reset_parameters()
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)

    def forward(
        self,
        x_struct: Tensor,
        features: Mapping[str, Tensor],
        masks: Optional[Mapping[str, Tensor]] = None,
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        r"""Fuses the modalities into the structural embeddings.

        Args:
            x_struct (torch.Tensor): Structural embeddings :obj:`[N, d]`.
            features (Mapping[str, torch.Tensor]): Features
                :obj:`[N, D_m]` of each available modality.
            masks (Mapping[str, torch.Tensor], optional): Boolean
                :obj:`[N]` per modality, :obj:`True` where the entity has
                that modality; a modality without a mask is present for
                every entity. (default: :obj:`None`)

        Returns:
            :obj:`(fused, per_modality)`: the fused embeddings
            :obj:`[N, d]` and each modality's masked adapter output
            :obj:`[N, d]` (used by :func:`diversity_loss`).
        """
        out = x_struct
        per_modality: Dict[str, Tensor] = {}
        for i, (name, adapter) in enumerate(self.adapters.items()):
            if name not in features:
                continue
            x = features[name]
            mask = None if masks is None else masks.get(name)
            if mask is not None:
                keep = mask.view(-1, 1)
                # Zero the inputs too: NaN/inf features of missing entities
                # would otherwise poison the weight gradients (NaN * 0).
                x = torch.where(keep, x, x.new_zeros(()))
                y = torch.where(keep, adapter(x), x_struct.new_zeros(()))
            else:
                y = adapter(x)
            per_modality[name] = y
            if self.weight is not None:
                y = self.weight[i] * y
            out = out + y
        return out, per_modality

    def __repr__(self) -> str:
        mods = ', '.join(f'{k}={v}' for k, v in self.modalities.items())
        return (f'{self.__class__.__name__}({{{mods}}}, '
                f'{self.out_channels}, hidden={self.hidden_channels}, '
                f'fusion={self.fusion})')


def _masked_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        return values.mean() if values.numel() > 0 else values.sum()
    m = mask.to(values.dtype)
    # Dividing by a clamped count keeps an all-missing modality at zero
    # without a data-dependent branch.
    return (values * m).sum() / m.sum().clamp(min=1.0)


def diversity_loss(
    per_modality: Mapping[str, Tensor],
    x_struct: Tensor,
    gamma: float = 0.0,
    masks: Optional[Mapping[str, Tensor]] = None,
    pairwise: bool = False,
) -> Tensor:
    r"""The diversity loss of the `"FusionAdapter for Few-Shot Relation
    Learning in Multimodal Knowledge Graphs"
    <https://arxiv.org/abs/2510.00894>`_ paper.

    Pushes each adapted modality away from the structural embedding:

    .. math::
        \mathcal{L}_{\mathrm{div}} = \sum_{m} \frac{1}{|\mathcal{V}_m|}
        \sum_{v \in \mathcal{V}_m} \mathrm{ReLU}\left(\cos\left(
        \mathbf{E}'_{m,v}, \mathbf{E}_{S,v}\right) - \gamma\right)

    where :math:`\mathbf{E}'_m = \mathrm{Adapter}_m(\mathbf{X}_m)` and
    :math:`\mathcal{V}_m` are the entities that have modality :math:`m`
    (all entities without a mask). With :obj:`pairwise=True` the
    modality-vs-modality terms are added:

    .. math::
        \sum_{m < m'} \frac{1}{|\mathcal{V}_m \cap \mathcal{V}_{m'}|}
        \sum_{v \in \mathcal{V}_m \cap \mathcal{V}_{m'}}
        \mathrm{ReLU}\left(\cos\left(\mathbf{E}'_{m,v},
        \mathbf{E}'_{m',v}\right) - \gamma\right)

    A modality with no entity present contributes zero.

    Args:
        per_modality (Mapping[str, torch.Tensor]): Adapted features
            :obj:`[N, d]` per modality, *e.g.* the second output of
            :class:`ModalityFusion`.
        x_struct (torch.Tensor): Structural embeddings :obj:`[N, d]`.
        gamma (float, optional): Margin :math:`\gamma`.
            (default: :obj:`0.0`)
        masks (Mapping[str, torch.Tensor], optional): Boolean :obj:`[N]` per
            modality. (default: :obj:`None`)
        pairwise (bool, optional): Add the modality-vs-modality terms.
            (default: :obj:`False`)

    :rtype: :class:`torch.Tensor` (scalar)
    """
    masks = masks or {}
    loss = x_struct.new_zeros(())
    for name, emb in per_modality.items():
        cos = F.cosine_similarity(emb, x_struct, dim=-1)
        loss = loss + _masked_mean(F.relu(cos - gamma), masks.get(name))
    if pairwise:
        for a, b in itertools.combinations(per_modality.keys(), 2):
            cos = F.cosine_similarity(per_modality[a], per_modality[b],
                                      dim=-1)
            ma, mb = masks.get(a), masks.get(b)
            mask = ma if mb is None else (mb if ma is None else ma & mb)
            loss = loss + _masked_mean(F.relu(cos - gamma), mask)
    return loss
