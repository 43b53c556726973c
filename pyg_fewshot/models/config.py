r"""Typed configurations of the assembled models.

Each model has one dataclass of plain values; :meth:`from_config` of the
model builds it for a graph. The options of a layer are not repeated here:
they travel as that layer's ``*_kwargs`` dict (the way PyG passes
``aggr_kwargs`` / ``act_kwargs`` to its resolvers) and are documented and
checked by the layer itself.
"""
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union


def _check(config: Any, positive: Tuple[str, ...] = (),
           non_negative: Tuple[str, ...] = (),
           rates: Tuple[str, ...] = (),
           choices: Optional[Dict[str, Tuple[Any, ...]]] = None) -> None:
    # Out-of-range values fail here with the field's name rather than deep
    # inside torch (a negative size in torch.empty, a rate of 2 in dropout).
    cls = type(config).__name__

    def fail(name: str, what: str) -> None:
        raise ValueError(f"{cls}: '{name}' must be {what} (got "
                         f'{getattr(config, name)!r})')

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for name in positive:
        value = getattr(config, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(number(v) and v > 0 for v in values):
            fail(name, 'positive')
    for name in non_negative:
        if not (number(getattr(config, name)) and getattr(config, name) >= 0):
            fail(name, 'a non-negative number')
    for name in rates:
        if not (number(getattr(config, name))
                and 0 <= getattr(config, name) < 1):
            fail(name, 'in [0, 1)')
    for name, allowed in (choices or {}).items():
        if getattr(config, name) not in allowed:
            fail(name, 'one of ' + ', '.join(repr(a) for a in allowed))


@dataclass
class MetaRConfig:
    r"""Configuration of :class:`~pyg_fewshot.models.MetaR`.

    Args:
        embedding_dim (int): Embedding size :math:`d` (that of the
            pretrained vectors when they are used). (default: :obj:`100`)
        hidden_channels (Tuple[int, ...]): Hidden sizes of the relation-meta
            MLP. (default: :obj:`(500, 200)`)
        dropout (float): Dropout of the relation-meta MLP.
            (default: :obj:`0.5`)
        sparse (bool): Sparse gradients for the entity table.
            (default: :obj:`True`)
        pretrained (bool): Start from the data's pretrained entity vectors
            when it has them. (default: :obj:`True`)
    """
    name: ClassVar[str] = 'metar'
    embedding_dim: int = 100
    hidden_channels: Tuple[int, ...] = (500, 200)
    dropout: float = 0.5
    sparse: bool = True
    pretrained: bool = True

    def __post_init__(self) -> None:
        _check(self, positive=('embedding_dim', 'hidden_channels'),
               rates=('dropout', ))


@dataclass
class MoEMetaConfig:
    r"""Configuration of :class:`~pyg_fewshot.models.MoEMeta`.

    The paper's ablations are compositions: ``aggregator=None`` (no
    neighbour aggregation), ``relation_meta='mlp'`` (MetaR's relation meta
    instead of the mixture of experts), ``projection=None`` (no projection
    vectors; with the learner's ``inner_steps=0``, no local adaptation).

    Args:
        embedding_dim (int): Embedding size :math:`d`. (default: :obj:`100`)
        aggregator (str, optional): Neighbour aggregator, ``'attentive'``
            (:class:`~pyg_fewshot.nn.AttentiveNeighborAggregator`, or the
            name of any subclass of it), or :obj:`None` for none.
            (default: :obj:`'attentive'`)
        aggregator_kwargs (Dict[str, Any]): Arguments of the aggregator
            (``max_neighbors``, ``residual_scale``, ``attention``, ``gate``,
            ``act``, ``mix``, ``init``, ``update_dropout``, ``dropout``).
            (default: :obj:`{}`)
        relation_init (str): Initial background relation vectors of the
            aggregator, ``'pretrained'`` (the data's, else Xavier) or
            ``'translation'`` (each relation's mean translation), see
            :class:`~pyg_fewshot.nn.NeighborEncoder`.
            (default: :obj:`'pretrained'`)
        relation_meta (str): ``'moe'``
            (:class:`~pyg_fewshot.nn.SparseMoERelationMeta`) or ``'mlp'``
            (:class:`~pyg_fewshot.nn.MLPRelationMeta`). (default: :obj:`'moe'`)
        relation_meta_kwargs (Dict[str, Any]): Arguments of the relation
            meta (for the mixture: ``num_experts``, ``top_k``,
            ``hidden_channels``, ``gate_hidden_channels``, ``renormalize``,
            ``scale_by_k``, ``noisy_gating``, ``load_balance``).
            (default: :obj:`{}`)
        projection (str, optional): ``'transd'`` or ``'paper'``
            (:class:`~pyg_fewshot.nn.ProjectionAdapter`), or :obj:`None`:
            no projection vectors, the inner loop adapts the relation meta
            alone. (default: :obj:`'transd'`)
        projection_kwargs (Dict[str, Any]): Further arguments of the
            projection (``init``, ``init_bound``). (default: :obj:`{}`)
        sparse (bool): Sparse gradients for the entity table.
            (default: :obj:`True`)
        pretrained (bool): Start from the data's pretrained vectors when it
            has them. (default: :obj:`True`)
    """
    name: ClassVar[str] = 'moemeta'
    embedding_dim: int = 100
    aggregator: Optional[str] = 'attentive'
    aggregator_kwargs: Dict[str, Any] = field(default_factory=dict)
    relation_init: str = 'pretrained'
    relation_meta: str = 'moe'
    relation_meta_kwargs: Dict[str, Any] = field(default_factory=dict)
    projection: Optional[str] = 'transd'
    projection_kwargs: Dict[str, Any] = field(default_factory=dict)
    sparse: bool = True
    pretrained: bool = True

    def __post_init__(self) -> None:
        _check(self, positive=('embedding_dim', ),
               choices={'relation_init': ('pretrained', 'translation'),
                        'relation_meta': ('moe', 'mlp'),
                        'projection': ('transd', 'paper', None)})
        # The layers' own arguments, checked by name before any data is
        # loaded (their values are checked by the layers when built).
        from .. import nn
        layers = [('relation_meta_kwargs', {
            'moe': nn.SparseMoERelationMeta,
            'mlp': nn.MLPRelationMeta}[self.relation_meta],
            ('in_channels', 'out_channels'))]
        if self.projection is not None:
            layers.append(('projection_kwargs', nn.ProjectionAdapter,
                           ('embedding_dim', 'mode')))
        if self.aggregator == 'attentive':
            layers.append(('aggregator_kwargs',
                           nn.AttentiveNeighborAggregator,
                           ('embedding_dim', )))
        for name, layer, given in layers:
            known = [p for p in inspect.signature(layer).parameters
                     if p not in given]
            unknown = sorted(set(getattr(self, name)) - set(known))
            if unknown:
                raise ValueError(
                    f"MoEMetaConfig: {name} has no "
                    f"{', '.join(repr(k) for k in unknown)} "
                    f"({layer.__name__} takes {', '.join(known)})")


BackboneConfig = Union[MetaRConfig, MoEMetaConfig]


@dataclass
class FusionAdapterConfig:
    r"""Configuration of :class:`~pyg_fewshot.models.FusionAdapter`.

    Test-time tuning runs the learner of the run (its inner loop and
    support loss), so the inner-loop settings live in the learner's
    configuration only.

    Args:
        backbone (MetaRConfig or MoEMetaConfig): The wrapped model.
            (default: :class:`MetaRConfig`, as published)
        modalities (List[str], optional): Modalities to fuse; :obj:`None`
            uses every ``x_<name>`` of the data. (default: :obj:`None`)
        adapter_hidden (int): Adapter bottleneck. (default: :obj:`50`)
        adapter_dropout (float): Dropout inside the adapters.
            (default: :obj:`0.5`)
        fusion (str): ``'sum'`` or ``'weighted'``. (default: :obj:`'sum'`)
        diversity_weight (float): :math:`\lambda`. (default: :obj:`1.0`)
        diversity_gamma (float): :math:`\gamma`. (default: :obj:`0.0`)
        diversity_pairwise (bool): Modality-vs-modality terms.
            (default: :obj:`False`)
        tta_steps (int): Adapter-tuning steps per dev/test relation.
            (default: :obj:`10`)
        tta_lr (float): Adam learning rate of that tuning.
            (default: :obj:`1e-4`)
        tta_dropout (bool): Adapter dropout during tuning.
            (default: :obj:`True`)
        tta_seed (int): Base seed of the tuning's dropout.
            (default: :obj:`0`)
    """
    name: ClassVar[str] = 'fusionadapter'
    backbone: BackboneConfig = field(default_factory=MetaRConfig)
    modalities: Optional[List[str]] = None
    adapter_hidden: int = 50
    adapter_dropout: float = 0.5
    fusion: str = 'sum'
    diversity_weight: float = 1.0
    diversity_gamma: float = 0.0
    diversity_pairwise: bool = False
    tta_steps: int = 10
    tta_lr: float = 1e-4
    tta_dropout: bool = True
    tta_seed: int = 0

    def __post_init__(self) -> None:
        _check(self, positive=('adapter_hidden', 'tta_lr'),
               non_negative=('diversity_weight', 'diversity_gamma',
                             'tta_steps', 'tta_seed'),
               rates=('adapter_dropout', ),
               choices={'fusion': ('sum', 'weighted')})


ModelConfig = Union[MetaRConfig, MoEMetaConfig, FusionAdapterConfig]

#: Model name → its configuration class.
MODEL_CONFIGS: Dict[str, type] = {
    cls.name: cls for cls in (MetaRConfig, MoEMetaConfig, FusionAdapterConfig)
}


def model_config(name: str, **kwargs: Any) -> ModelConfig:
    r"""The configuration of model ``name`` (``'metar'``, ``'moemeta'``,
    ``'fusionadapter'``; case, ``-`` and ``_`` ignored) with ``kwargs``
    set."""
    key = str(name).lower().replace('-', '').replace('_', '')
    if key not in MODEL_CONFIGS:
        raise ValueError(f"Unknown model '{name}': expected one of "
                         f'{sorted(MODEL_CONFIGS)}')
    return MODEL_CONFIGS[key](**kwargs)
