r"""FusionAdapter: multimodal adapters on a few-shot KG backbone."""
import contextlib
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional,
                    Tuple)

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.modalities import modality_features
from ..nn import ModalityFusion, diversity_loss
from .base import FewShotModel, Local, TaskOutput
from .config import FusionAdapterConfig, MetaRConfig, MoEMetaConfig
from .metar import MetaR
from .moemeta import MoEMeta

#: Backbones :meth:`FusionAdapter.from_config` can wrap, by configuration.
BACKBONES = {MetaRConfig: MetaR, MoEMetaConfig: MoEMeta}

# Records of embed() kept for the diversity loss of the next init_local():
# one per embed() call since the last init_local(), at most this many.
_MAX_RECORDS = 8


class _Record(NamedTuple):
    ids: Tensor  # [n] entity ids of the rows embed() returned
    struct: Tensor
    per_modality: Dict[str, Tensor]
    masks: Dict[str, Tensor]


class FusionAdapter(FewShotModel):
    r"""FusionAdapter from the `"FusionAdapter for Few-Shot Relation Learning
    in Multimodal Knowledge Graphs" <https://arxiv.org/abs/2510.00894>`_
    paper.

    Every entity representation of a few-shot backbone (MetaR, as
    published, or MoEMeta) is fused with its modality features
    :math:`\mathbf{X}_m` (text, image, ...) through one bottleneck
    :class:`~pyg_fewshot.nn.ModalityAdapter` per modality,

    .. math::
        \mathbf{E} = \mathbf{E}_S + \sum_{m} \mathbf{M}_m \odot
        \mathrm{Adapter}_m(\mathbf{X}_m),

    where :math:`\mathbf{E}_S` is the backbone's entity representation (the
    embedding table for MetaR; the neighbour-aggregated embedding for
    MoEMeta) and :math:`\mathbf{M}_m` masks entities that lack modality
    :math:`m` (they keep :math:`\mathbf{E}_S`). :math:`\mathbf{E}` is used
    everywhere the backbone uses entity embeddings; relation meta, inner
    loop and scoring are the backbone's. The outer objective adds the
    diversity loss (:func:`~pyg_fewshot.nn.diversity_loss`) of the support
    entities,

    .. math::
        \mathcal{L} = \mathcal{L}_{\mathcal{Q}} + \lambda \sum_m
        \frac{1}{|\mathcal{S}_m|} \sum_{v \in \mathcal{S}_m}
        \mathrm{ReLU}\left(\cos(\mathrm{Adapter}_m(\mathbf{x}_{m,v}),
        \mathbf{e}_{S,v}) - \gamma\right),

    with :math:`\mathcal{S}_m` the support heads and tails of the
    meta-batch (each occurrence counted) that have modality :math:`m`.

    **How the diversity loss reaches the engine.** The engine embeds an
    episode with :meth:`embed` and then calls :meth:`init_local` with the
    support ids and rows. In training mode (and :math:`\lambda > 0`),
    :meth:`embed` keeps the structural and per-modality parts of the rows it
    returns, by entity id; :meth:`init_local` looks the support ids up among
    them and returns :math:`\lambda \mathcal{L}_{\mathrm{div}}` as the
    ``'diversity'`` auxiliary loss beside the backbone's. Nothing is kept in
    eval mode.

    **Meta-test** (:meth:`task_scope`, called by
    :func:`~pyg_fewshot.evaluation.evaluate` for each dev/test relation):
    starting from the meta-trained state, only the adapters are tuned on the
    relation's support set, ``tta_steps`` steps of a fresh
    :class:`torch.optim.Adam` (``tta_lr``) on the support loss after the
    inner loop of the run's :class:`~pyg_fewshot.meta.MetaLearner` (passed
    by the evaluator, so training and ``pyg-fewshot evaluate`` tune alike),
    plus
    :math:`\lambda \mathcal{L}_{\mathrm{div}}`. Tuning runs on clones of the
    adapter parameters through :func:`torch.func.functional_call`, so the
    module's parameters and optimiser state are never touched: nothing
    carries over between relations, and the parameters are identical after
    evaluation. Queries are ranked with the tuned adapters in eval mode (no
    dropout); the published code leaves dropout on and reuses one optimiser
    across relations, which this class does not copy. Dropout during the
    tuning steps (``tta_dropout``) draws from a generator seeded by the
    support set, so a relation's metrics do not depend on which relations
    were evaluated before it.

    Build it with :meth:`from_config`, which reads the modalities from
    ``data['entity'].x_<name>`` / ``mask_<name>`` (see
    :func:`~pyg_fewshot.data.modalities.attach_modalities` and
    :func:`~pyg_fewshot.data.text.text_features`).

    Args:
        backbone (FewShotModel): The wrapped model (:class:`MetaR` or
            :class:`MoEMeta`); its :meth:`embed` gives :math:`\mathbf{E}_S`
            and its :meth:`init_local` / :meth:`project` are reused.
        features (Mapping[str, torch.Tensor]): ``{name: [N, D_m]}`` modality
            features by entity id (kept as non-persistent buffers: they come
            from the data, not from checkpoints).
        masks (Mapping[str, torch.Tensor], optional): ``{name: [N]}`` bool
            availability; a modality without a mask is present everywhere.
            (default: :obj:`None`)
        adapter_hidden (int, optional): Adapter bottleneck :math:`m`.
            (default: :obj:`50`)
        adapter_dropout (float, optional): Dropout inside the adapters.
            (default: :obj:`0.5`)
        fusion (str, optional): ``'sum'`` (the paper) or ``'weighted'`` (a
            learned scalar per modality), see
            :class:`~pyg_fewshot.nn.ModalityFusion`. (default: :obj:`'sum'`)
        diversity_weight (float, optional): :math:`\lambda`.
            (default: :obj:`1.0`)
        diversity_gamma (float, optional): :math:`\gamma`.
            (default: :obj:`0.0`)
        diversity_pairwise (bool, optional): Add modality-vs-modality terms.
            (default: :obj:`False`)
        tta_steps (int, optional): Adapter-tuning steps per dev/test
            relation :math:`T` (``0`` ranks with the meta-trained adapters).
            (default: :obj:`10`)
        tta_lr (float, optional): Adam learning rate of that tuning.
            (default: :obj:`1e-4`)
        tta_dropout (bool, optional): Adapters in train mode (dropout on)
            during the tuning steps; always off when ranking.
            (default: :obj:`True`)
        tta_seed (int, optional): Base seed of the tuning's dropout.
            (default: :obj:`0`)
        config (FusionAdapterConfig, optional): The configuration it was
            built from (kept for checkpoints). (default: :obj:`None`)

    Shapes:
        - **embed:** ``[*]`` entity ids → ``[*, d]``
        - **init_local:** ``[B, K, d]`` heads and tails → the backbone's
          :class:`~pyg_fewshot.models.TaskOutput`, plus the diversity loss
        - **score:** ``[B, *, d]`` heads and tails → ``[B, *]``
    """
    model_name = 'fusionadapter'

    def __init__(self, backbone: FewShotModel,
                 features: Mapping[str, Tensor],
                 masks: Optional[Mapping[str, Tensor]] = None,
                 adapter_hidden: int = 50, adapter_dropout: float = 0.5,
                 fusion: str = 'sum', diversity_weight: float = 1.0,
                 diversity_gamma: float = 0.0,
                 diversity_pairwise: bool = False, tta_steps: int = 10,
                 tta_lr: float = 1e-4, tta_dropout: bool = True,
                 tta_seed: int = 0,
                 config: Optional[FusionAdapterConfig] = None) -> None:
        super().__init__()
        if not isinstance(backbone, FewShotModel):
            raise TypeError(f"'backbone' must be a FewShotModel (got "
                            f'{type(backbone).__name__})')
        if isinstance(backbone, FusionAdapter):
            raise TypeError('FusionAdapter cannot wrap another FusionAdapter')
        if len(features) == 0:
            raise ValueError(
                "FusionAdapter needs at least one modality: attach "
                "data['entity'].x_<name> features (see "
                'pyg_fewshot.data.modalities.attach_modalities and '
                'pyg_fewshot.data.text.text_features)')
        if tta_steps < 0:
            raise ValueError(f"'tta_steps' must be >= 0 (got {tta_steps})")
        masks = dict(masks or {})
        num_entities = backbone.num_entities
        dim = backbone.encoder.embedding_dim
        names = list(features)
        dims = []
        for name in names:
            x = features[name]
            if x.dim() != 2 or x.size(0) != num_entities:
                raise ValueError(
                    f"Modality '{name}' has features of shape "
                    f'{tuple(x.shape)}, expected ({num_entities}, D)')
            dims.append(int(x.size(1)))
            mask = masks.get(name)
            if mask is None:
                mask = torch.ones(num_entities, dtype=torch.bool)
            elif tuple(mask.shape) != (num_entities, ):
                raise ValueError(f"Mask of modality '{name}' has shape "
                                 f'{tuple(mask.shape)}, expected '
                                 f'({num_entities},)')
            # Not persistent: features come from the data (they can be
            # hundreds of MB), and a checkpoint holds only what is learned.
            self.register_buffer(f'x_{name}', x.detach().float(),
                                 persistent=False)
            self.register_buffer(f'mask_{name}',
                                 mask.detach().bool().to(x.device),
                                 persistent=False)
        self.backbone = backbone
        self.modalities: List[str] = names
        self.modality_dims: List[int] = dims
        self.adapt_keys = tuple(backbone.adapt_keys)
        self.fusion = ModalityFusion(dict(zip(names, dims)), dim,
                                     hidden_channels=adapter_hidden,
                                     dropout=adapter_dropout, fusion=fusion)
        self.diversity_weight = float(diversity_weight)
        self.diversity_gamma = float(diversity_gamma)
        self.diversity_pairwise = bool(diversity_pairwise)
        self.tta_steps = int(tta_steps)
        self.tta_lr = float(tta_lr)
        self.tta_dropout = bool(tta_dropout)
        self.tta_seed = int(tta_seed)
        self.config = config
        # Adapter parameters in force while ranking inside task_scope (the
        # tuned clones); None means the module's own parameters.
        self._tuned: Optional[Dict[str, Tensor]] = None
        self._records: List[_Record] = []

    @property
    def default_inner_lr(self) -> float:  # type: ignore[override]
        return self.backbone.default_inner_lr

    @property
    def num_entities(self) -> Optional[int]:
        return self.backbone.num_entities

    @classmethod
    def from_config(cls, config: FusionAdapterConfig,
                    data: HeteroData) -> 'FusionAdapter':
        r"""Builds the model for a graph from
        :func:`~pyg_fewshot.data.build_fewshot_data` with modality features
        attached (``data['entity'].x_<name>`` and optionally
        ``mask_<name>`` for each modality, see
        :func:`~pyg_fewshot.data.modalities.attach_modalities` and
        :func:`~pyg_fewshot.data.text.text_features`): the backbone from
        ``config.backbone``, then the adapters."""
        model_cls = BACKBONES.get(type(config.backbone))
        if model_cls is None:
            raise ValueError(f"Unknown backbone configuration "
                             f"{type(config.backbone).__name__}: expected "
                             f"MetaRConfig or MoEMetaConfig")
        features, masks = modality_features(data, config.modalities)
        backbone = model_cls.from_config(config.backbone, data)
        return cls(backbone, features, masks,
                   adapter_hidden=config.adapter_hidden,
                   adapter_dropout=config.adapter_dropout,
                   fusion=config.fusion,
                   diversity_weight=config.diversity_weight,
                   diversity_gamma=config.diversity_gamma,
                   diversity_pairwise=config.diversity_pairwise,
                   tta_steps=config.tta_steps, tta_lr=config.tta_lr,
                   tta_dropout=config.tta_dropout, tta_seed=config.tta_seed,
                   config=config)

    def reset_parameters(self) -> None:
        self.backbone.reset_parameters()
        self.fusion.reset_parameters()

    def sparse_parameters(self) -> Tuple[torch.nn.Parameter, ...]:
        return self.backbone.sparse_parameters()

    def adapter_parameters(self) -> Dict[str, torch.nn.Parameter]:
        r"""The parameters tuned at meta-test time (adapters and, with
        ``fusion='weighted'``, the modality weights), by name inside
        :attr:`fusion`."""
        return dict(self.fusion.named_parameters())

    def set_modality_mask(self, name: str, mask: Tensor) -> None:
        r"""Replaces the availability mask of modality ``name`` (*e.g.* all
        :obj:`False` to evaluate a trained model without it)."""
        if name not in self.modalities:
            raise KeyError(f"No modality '{name}' (has {self.modalities})")
        old = getattr(self, f'mask_{name}')
        if mask.shape != old.shape:
            raise ValueError(f'Mask has shape {tuple(mask.shape)}, expected '
                             f'{tuple(old.shape)}')
        setattr(self, f'mask_{name}', mask.to(old.device, torch.bool))

    # Entity side -----------------------------------------------------------
    def _fuse(self, index: Tensor, struct: Tensor,
              params: Optional[Dict[str, Tensor]]
              ) -> Tuple[Tensor, Dict[str, Tensor], Dict[str, Tensor]]:
        # ``index`` [n], ``struct`` [n, d] -> fused [n, d], per-modality
        # adapter outputs and masks of these rows.
        feats = {m: getattr(self, f'x_{m}')[index] for m in self.modalities}
        masks = {m: getattr(self, f'mask_{m}')[index]
                 for m in self.modalities}
        if params is None:
            fused, per = self.fusion(struct, feats, masks)
        else:
            fused, per = torch.func.functional_call(self.fusion, params,
                                                    (struct, feats, masks))
        return fused, per, masks

    def embed(self, index: Tensor) -> Tensor:
        struct = self.backbone.embed(index)
        d = struct.size(-1)
        flat = struct.reshape(-1, d)
        ids = index.reshape(-1)
        fused, per, masks = self._fuse(ids, flat, self._tuned)
        if (self.training and self.diversity_weight > 0
                and self._tuned is None):
            self._records.append(_Record(ids, flat, per, masks))
            del self._records[:-_MAX_RECORDS]
        return fused.view(*index.shape, d)

    # Task side -------------------------------------------------------------
    def _diversity(self, struct: Tensor, per: Dict[str, Tensor],
                   masks: Dict[str, Tensor]) -> Tensor:
        return diversity_loss(per, struct, self.diversity_gamma, masks,
                              pairwise=self.diversity_pairwise)

    def support_diversity(self, support: Tensor) -> Tensor:
        r"""The diversity loss :math:`\mathcal{L}_{\mathrm{div}}` (without
        :math:`\lambda`) of the support heads and tails ``support``
        (``[B, K, 2]`` ids, embedded by :meth:`embed` in training mode since
        the previous call), consuming the kept records."""
        records, self._records = self._records, []
        if not records:
            raise RuntimeError(
                'FusionAdapter.init_local() in training mode needs the '
                'support entities to have been embedded by embed() (in '
                'training mode, since the last init_local()) to compute the '
                "diversity loss; set 'diversity_weight=0' to disable it")
        query = torch.cat([support[..., 0].reshape(-1),
                           support[..., 1].reshape(-1)])
        ids = torch.cat([r.ids for r in records])
        N = self.num_entities
        # The latest row of each id (an id embedded twice keeps its last
        # representation, the one the engine went on with).
        last = torch.full((N, ), -1, dtype=torch.long, device=ids.device)
        last.scatter_reduce_(
            0, ids, torch.arange(ids.numel(), device=ids.device), 'amax')
        idx = last[query]
        if bool((idx < 0).any()):
            raise RuntimeError(
                f'{int((idx < 0).sum())} of {idx.numel()} support entities '
                'passed to FusionAdapter.init_local() were not embedded by '
                'embed() since the last init_local(); the diversity loss '
                "needs them (or set 'diversity_weight=0')")
        struct = torch.cat([r.struct for r in records])[idx]
        per = {m: torch.cat([r.per_modality[m] for r in records])[idx]
               for m in records[0].per_modality}
        masks = {m: torch.cat([r.masks[m] for r in records])[idx]
                 for m in records[0].masks}
        return self._diversity(struct, per, masks)

    def init_local(self, support: Tensor, sup_h: Tensor,
                   sup_t: Tensor) -> TaskOutput:
        out = self.backbone.init_local(support, sup_h, sup_t)
        if self.training and self.diversity_weight > 0 and self._tuned is None:
            aux = dict(out.aux_losses)
            aux['diversity'] = (self.diversity_weight *
                                self.support_diversity(support))
            return TaskOutput(out.local, aux, out.routing)
        self._records = []
        return out

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        return self.backbone.project(h, t, local)

    def score_tails(self, h: Tensor, tails: Tensor, local: Local) -> Tensor:
        return self.backbone.score_tails(h, tails, local)

    # Test time --------------------------------------------------------------
    def support_objective(self, learner: Any, support: Tensor,
                          sup_h: Tensor, sup_t: Tensor,
                          sup_neg: Tensor) -> Tensor:
        r"""The support loss after the inner loop, as ``learner`` (a
        :class:`~pyg_fewshot.meta.MetaLearner`) computes it in meta-training:
        the backbone's local parameters for ``support`` (``[B, K, 2]`` ids;
        ``[B, K, d]`` heads, tails and negative tails), ``learner.adapt``,
        ``learner.support_loss``."""
        local = self.backbone.init_local(support, sup_h, sup_t).local
        local = learner.adapt(local, sup_h, sup_t, sup_neg)
        return learner.support_loss(local, sup_h, sup_t, sup_neg)

    def _tta_generator_seed(self, support: Tensor, support_neg: Tensor) -> int:
        # Python hashes tuples of ints deterministically (no salting), so the
        # seed depends only on the support set and tta_seed.
        key = (self.tta_seed, tuple(support.reshape(-1).tolist()),
               tuple(support_neg.reshape(-1).tolist()))
        return hash(key) & ((1 << 63) - 1)

    def tune_adapters(self, support: Tensor, support_neg: Tensor,
                      learner: Any) -> Dict[str, Tensor]:
        r"""Tunes clones of the adapter parameters on one relation's support
        set and returns them (detached); the module is left unchanged.

        ``tta_steps`` steps of a fresh :class:`torch.optim.Adam`
        (``tta_lr``) minimise :meth:`support_objective` under ``learner``
        plus :math:`\lambda \mathcal{L}_{\mathrm{div}}` of the support heads
        and tails. The backbone is frozen and in eval mode; gradients are
        taken with :func:`torch.autograd.grad` with respect to the clones
        only, so no ``.grad`` of the model is written.

        Args:
            support (torch.Tensor): ``[K, 2]`` (head, tail) ids.
            support_neg (torch.Tensor): ``[K]`` negative tail ids.
            learner (MetaLearner): The run's inner loop and support loss.
        """
        params = {k: p.detach().clone().requires_grad_(True)
                  for k, p in self.fusion.named_parameters()}
        if self.tta_steps == 0:
            return {k: v.detach() for k, v in params.items()}
        K = support.size(0)
        ids = torch.cat([support[:, 0], support[:, 1],
                         support_neg.reshape(-1)])
        uniq, inv = torch.unique(ids, return_inverse=True)
        device = uniq.device
        fork = [device.index or 0] if device.type == 'cuda' else []
        modes = (self.backbone.training, self.fusion.training)
        opt = torch.optim.Adam(list(params.values()), lr=self.tta_lr)
        try:
            self.backbone.eval()
            self.fusion.train(self.tta_dropout)
            with torch.enable_grad(), torch.random.fork_rng(devices=fork):
                torch.manual_seed(self._tta_generator_seed(support,
                                                           support_neg))
                with torch.no_grad():  # the backbone is frozen
                    struct = self.backbone.embed(uniq)
                for _ in range(self.tta_steps):
                    fused, per, masks = self._fuse(uniq, struct, params)
                    x = fused[inv]
                    sup_h = x[:K].unsqueeze(0)
                    sup_t = x[K:2 * K].unsqueeze(0)
                    neg = x[2 * K:].unsqueeze(0)
                    loss = self.support_objective(learner,
                                                  support.unsqueeze(0),
                                                  sup_h, sup_t, neg)
                    if self.diversity_weight > 0:
                        rows = inv[:2 * K]
                        loss = loss + self.diversity_weight * self._diversity(
                            struct[rows], {m: v[rows]
                                           for m, v in per.items()},
                            {m: v[rows] for m, v in masks.items()})
                    grads = torch.autograd.grad(loss, list(params.values()),
                                                allow_unused=True)
                    for p, g in zip(params.values(), grads):
                        p.grad = torch.zeros_like(p) if g is None else g
                    opt.step()
        finally:
            self.backbone.train(modes[0])
            self.fusion.train(modes[1])
        return {k: v.detach() for k, v in params.items()}

    @contextlib.contextmanager
    def _scope(self, support: Tensor, support_neg: Tensor,
               learner: Any) -> Iterator[None]:
        snapshot = {k: p.detach().clone()
                    for k, p in self.fusion.named_parameters()}
        fusion_mode = self.fusion.training
        previous = self._tuned
        self._records = []
        try:
            self._tuned = self.tune_adapters(support, support_neg, learner)
            self.fusion.eval()  # rank without dropout
            yield
        finally:
            self._tuned = previous
            self.fusion.train(fusion_mode)
            self._records = []
            # Tuning never writes to the module's parameters (it runs on
            # clones); restoring the snapshot also undoes anything done to
            # them inside the scope.
            with torch.no_grad():
                for k, p in self.fusion.named_parameters():
                    p.copy_(snapshot[k])

    def task_scope(self, support: Tensor, support_neg: Tensor,
                   learner: Any = None
                   ) -> 'contextlib.AbstractContextManager[None]':
        r"""Tunes the adapters on one dev/test relation's support set
        (``[K, 2]`` ids, negative tails ``[K]``) with ``learner``'s inner
        loop and support loss (a :class:`~pyg_fewshot.meta.MetaLearner`;
        :func:`~pyg_fewshot.evaluation.evaluate` passes the run's) on entry,
        and ranks with them in eval mode inside the scope; on exit the
        meta-trained adapters are back in force, bit for bit (see
        :meth:`tune_adapters`)."""
        if learner is None:
            raise TypeError('FusionAdapter.task_scope() tunes the adapters '
                            "with the run's inner loop: pass 'learner' (a "
                            'MetaLearner of this model)')
        return self._scope(support, support_neg, learner)
