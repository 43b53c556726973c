r"""FusionAdapter: multimodal adapters on a few-shot KG backbone."""
import contextlib
from typing import (Any, Dict, Iterator, List, Mapping, Optional, Sequence,
                    Tuple)

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.modalities import modality_features
from ..nn import ModalityFusion, diversity_loss
from .base import FewShotModel, Local
from .metar import MetaR
from .moemeta import MoEMeta

#: Backbones :meth:`FusionAdapter.from_data` can wrap.
BACKBONES = {'metar': MetaR, 'moemeta': MoEMeta}

# Constructor arguments of FusionAdapter itself; every other keyword of
# ``from_data`` goes to the backbone.
_FUSION_KEYS = ('adapter_hidden', 'adapter_dropout', 'fusion',
                'diversity_weight', 'diversity_gamma', 'diversity_pairwise',
                'tta_steps', 'tta_lr', 'tta_dropout', 'tta_seed',
                'inner_steps', 'inner_lr', 'margin')
# Config entries derived from the data (checked, not passed on).
_DERIVED_KEYS = ('num_entities', 'num_relations')

# Records of embed() kept for the diversity loss of the next init_local():
# one per embed() call since the last init_local(), at most this many.
_MAX_RECORDS = 8


class _Record:
    __slots__ = ('fused', 'struct', 'per_modality', 'masks')

    def __init__(self, fused: Tensor, struct: Tensor,
                 per_modality: Dict[str, Tensor],
                 masks: Dict[str, Tensor]) -> None:
        self.fused = fused  # detached, only used to locate rows
        self.struct = struct
        self.per_modality = per_modality
        self.masks = masks


def _row_keys(x: Tensor) -> Tensor:
    # An int64 made of the leading bytes of each row (its first two values
    # in float32): copies of a row have identical bits, so equal rows have
    # equal keys; the few collisions of different rows are caught by the
    # full-row check in _match_rows.
    b = x.detach().reshape(x.size(0), -1)[:, :8].contiguous().view(
        torch.uint8)
    if b.size(1) < 8:
        b = torch.cat([b, b.new_zeros(b.size(0), 8 - b.size(1))], dim=1)
    return b[:, :8].contiguous().view(torch.int64).view(-1)


def _match_rows(table: Tensor, query: Tensor) -> Tensor:
    r"""For each row of ``query`` (``[S, d]``), the index of a bitwise-equal
    row of ``table`` (``[U, d]``), or ``-1``."""
    U = table.size(0)
    if U == 0:
        return torch.full((query.size(0), ), -1, dtype=torch.long,
                          device=query.device)
    keys, perm = torch.sort(_row_keys(table))
    qk = _row_keys(query)
    pos = torch.searchsorted(keys, qk).clamp_(max=U - 1)
    idx = perm[pos]
    ok = (keys[pos] == qk) & (table[idx] == query).all(dim=1)
    if bool(ok.all()):
        return idx
    # Key collision (two different rows sharing their leading values) or a
    # row not produced by embed(): exact matching on whole rows.
    _, inv = torch.unique(torch.cat([table, query]), dim=0,
                          return_inverse=True)
    rep = torch.full((int(inv.max()) + 1, ), -1, dtype=torch.long,
                     device=query.device)
    rep.scatter_(0, inv[:U], torch.arange(U, device=query.device))
    return rep[inv[U:]]


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
    support rows only. In training mode (and :math:`\lambda > 0`),
    :meth:`embed` keeps the structural and per-modality parts of the rows it
    returns; :meth:`init_local` locates each support row among them (the
    support tensors are copies of those rows, so they match bitwise) and
    returns :math:`\lambda \mathcal{L}_{\mathrm{div}}` plus the backbone's
    auxiliary loss. Nothing is kept in eval mode.

    **Meta-test** (:meth:`task_scope`, called by
    :func:`~pyg_fewshot.evaluation.evaluate` for each dev/test relation):
    starting from the meta-trained state, only the adapters are tuned on the
    relation's support set, ``tta_steps`` steps of a fresh
    :class:`torch.optim.Adam` (``tta_lr``) on the support margin loss, with
    the backbone's relation meta and first-order inner step exactly as
    :class:`~pyg_fewshot.meta.MetaLearner` computes it, plus
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

    Build it with :meth:`from_data`, which reads the modalities from
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
        inner_steps (int, optional): Inner steps of the support objective
            used in tuning (set them like the
            :class:`~pyg_fewshot.meta.MetaLearner`'s, or set
            :attr:`tta_learner`). (default: :obj:`1`)
        inner_lr (float, optional): Inner step size :math:`\beta`.
            (default: :obj:`5.0`)
        margin (float, optional): Margin of the ranking loss.
            (default: :obj:`1.0`)

    Attributes:
        tta_learner: Optional :class:`~pyg_fewshot.meta.MetaLearner` (or any
            object with ``adapt`` and ``support_loss``) whose inner loop and
            support loss the tuning uses instead of ``inner_steps``,
            ``inner_lr`` and ``margin``.

    Shapes:
        - **embed:** ``[*]`` entity ids → ``[*, d]``
        - **init_local:** ``[B, K, d]`` heads and tails → the backbone's
          local dict and a scalar auxiliary loss
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
                 tta_seed: int = 0, inner_steps: int = 1,
                 inner_lr: float = 5.0, margin: float = 1.0) -> None:
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
        if tta_steps < 0 or inner_steps < 0:
            raise ValueError(f"'tta_steps' and 'inner_steps' must be >= 0 "
                             f'(got {tta_steps}, {inner_steps})')
        masks = dict(masks or {})
        num_entities = int(backbone.config['num_entities'])
        dim = int(backbone.config['embedding_dim'])
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
        self.inner_steps = int(inner_steps)
        self.inner_lr = float(inner_lr)
        self.margin = float(margin)
        self.tta_learner: Any = None
        self.config = dict(backbone.config)
        self.config.update(
            backbone=backbone.model_name, modalities=list(names),
            modality_dims=dims, adapter_hidden=adapter_hidden,
            adapter_dropout=adapter_dropout, fusion=fusion,
            diversity_weight=self.diversity_weight,
            diversity_gamma=self.diversity_gamma,
            diversity_pairwise=self.diversity_pairwise,
            tta_steps=self.tta_steps, tta_lr=self.tta_lr,
            tta_dropout=self.tta_dropout, tta_seed=self.tta_seed,
            inner_steps=self.inner_steps, inner_lr=self.inner_lr,
            margin=self.margin)
        # Adapter parameters in force while ranking inside task_scope (the
        # tuned clones); None means the module's own parameters.
        self._tuned: Optional[Dict[str, Tensor]] = None
        self._records: List[_Record] = []

    @property
    def default_inner_lr(self) -> float:  # type: ignore[override]
        return self.backbone.default_inner_lr

    @classmethod
    def from_data(cls, data: HeteroData, pretrained: bool = True,
                  modalities: Optional[Sequence[str]] = None,
                  backbone: str = 'metar', **kwargs: Any) -> 'FusionAdapter':
        r"""Builds the model for a graph from
        :func:`~pyg_fewshot.data.build_fewshot_data` with modality features
        attached.

        Args:
            data (HeteroData): The graph, with ``data['entity'].x_<name>``
                (and optionally ``mask_<name>``) for each modality.
            pretrained (bool, optional): Start the backbone from
                ``data['entity'].emb`` when present (see
                :meth:`MetaR.from_data`). (default: :obj:`True`)
            modalities (Sequence[str], optional): Modalities to fuse.
                (default: :obj:`None`, every ``x_<name>`` of the data)
            backbone (str, optional): ``'metar'`` (as published) or
                ``'moemeta'``. (default: :obj:`'metar'`)
            **kwargs: FusionAdapter's own arguments (``adapter_hidden``,
                ``diversity_weight``, ``tta_steps``, ...); all others go to
                the backbone's :meth:`from_data` (*e.g.* ``embedding_dim``,
                ``num_experts``). A model's :attr:`config` can be passed back
                as is: entries derived from the data (``num_entities``,
                ``num_relations``, ``modality_dims``) are checked against it.
        """
        key = str(backbone).lower().replace('-', '').replace('_', '')
        if key not in BACKBONES:
            raise ValueError(f"Unknown backbone '{backbone}': expected one "
                             f'of {sorted(BACKBONES)}')
        fusion_kwargs = {k: kwargs.pop(k) for k in _FUSION_KEYS
                         if k in kwargs}
        expected_dims = kwargs.pop('modality_dims', None)
        n = kwargs.pop('num_entities', None)
        if n is not None and int(n) != data['entity'].num_nodes:
            raise ValueError(f"Config has num_entities={n} but the data has "
                             f"{data['entity'].num_nodes} entities")
        for k in _DERIVED_KEYS:
            kwargs.pop(k, None)
        features, masks = modality_features(data, modalities)
        if expected_dims is not None:
            got = [int(x.size(1)) for x in features.values()]
            if list(expected_dims) != got:
                raise ValueError(
                    f'Modality feature sizes {dict(zip(features, got))} '
                    f'differ from the expected {list(expected_dims)} (the '
                    f'checkpoint was trained with other features)')
        bb = BACKBONES[key].from_data(data, pretrained=pretrained, **kwargs)
        return cls(bb, features, masks, **fusion_kwargs)

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
        fused, per, masks = self._fuse(index.reshape(-1), flat, self._tuned)
        if (self.training and self.diversity_weight > 0
                and self._tuned is None):
            self._records.append(_Record(fused.detach(), flat, per, masks))
            del self._records[:-_MAX_RECORDS]
        return fused.view(*index.shape, d)

    # Task side -------------------------------------------------------------
    def _diversity(self, struct: Tensor, per: Dict[str, Tensor],
                   masks: Dict[str, Tensor]) -> Tensor:
        return diversity_loss(per, struct, self.diversity_gamma, masks,
                              pairwise=self.diversity_pairwise)

    def support_diversity(self, sup_h: Tensor, sup_t: Tensor) -> Tensor:
        r"""The diversity loss :math:`\mathcal{L}_{\mathrm{div}}` (without
        :math:`\lambda`) of the support entities ``sup_h``, ``sup_t``
        (``[B, K, d]``, rows returned by :meth:`embed` in training mode since
        the previous call), consuming the kept records."""
        records, self._records = self._records, []
        d = sup_h.size(-1)
        query = torch.cat([sup_h.reshape(-1, d), sup_t.reshape(-1, d)])
        if not records:
            raise RuntimeError(
                'FusionAdapter.init_local() in training mode needs the '
                'support representations to come from embed() (called in '
                'training mode since the last init_local()) to compute the '
                "diversity loss; set 'diversity_weight=0' to disable it")
        table = torch.cat([r.fused for r in records])
        idx = _match_rows(table, query.detach())
        if bool((idx < 0).any()):
            raise RuntimeError(
                f'{int((idx < 0).sum())} of {idx.numel()} support rows passed '
                'to FusionAdapter.init_local() were not produced by embed() '
                'since the last init_local(); the diversity loss needs them '
                "(or set 'diversity_weight=0')")
        struct = torch.cat([r.struct for r in records])[idx]
        per = {m: torch.cat([r.per_modality[m] for r in records])[idx]
               for m in records[0].per_modality}
        masks = {m: torch.cat([r.masks[m] for r in records])[idx]
                 for m in records[0].masks}
        return self._diversity(struct, per, masks)

    def init_local(self, sup_h: Tensor,
                   sup_t: Tensor) -> Tuple[Local, Tensor]:
        local, aux = self.backbone.init_local(sup_h, sup_t)
        if self.training and self.diversity_weight > 0 and self._tuned is None:
            aux = aux + self.diversity_weight * self.support_diversity(
                sup_h, sup_t)
        else:
            self._records = []
        return local, aux

    def project(self, h: Tensor, t: Tensor,
                local: Local) -> Tuple[Tensor, Tensor]:
        return self.backbone.project(h, t, local)

    def score_tails(self, h: Tensor, tails: Tensor, local: Local) -> Tensor:
        return self.backbone.score_tails(h, tails, local)

    # Test time --------------------------------------------------------------
    def _adapt(self, local: Local, sup_h: Tensor, sup_t: Tensor,
               sup_neg: Tensor) -> Local:
        # MetaLearner.adapt, first order: R' = R - beta * grad_R L_S with the
        # gradient a constant (taken on detached inputs by torch.func.grad).
        keys = [k for k in self.adapt_keys if k in local]
        if self.inner_steps == 0 or not keys:
            return local
        sup_h, sup_t, sup_neg = (sup_h.detach(), sup_t.detach(),
                                 sup_neg.detach())

        def loss_fn(adapted: Local, rest: Local) -> Tensor:
            return self._support_margin({**rest, **adapted}, sup_h, sup_t,
                                        sup_neg)

        grad_fn = torch.func.grad(loss_fn)
        for _ in range(self.inner_steps):
            adapted = {k: local[k] for k in keys}
            rest = {k: v.detach() for k, v in local.items() if k not in keys}
            grads = grad_fn({k: v.detach() for k, v in adapted.items()},
                            rest)
            local = {**local, **{k: adapted[k] - self.inner_lr * grads[k]
                                 for k in keys}}
        return local

    def _support_margin(self, local: Local, sup_h: Tensor, sup_t: Tensor,
                        sup_neg: Tensor) -> Tensor:
        # MetaLearner.support_loss: margin loss averaged over the K pairs,
        # summed over tasks.
        pos = self.score(sup_h, sup_t, local)
        neg = self.score(sup_h, sup_neg, local)
        return F.relu(self.margin - pos + neg).mean(dim=-1).sum()

    def support_objective(self, sup_h: Tensor, sup_t: Tensor,
                          sup_neg: Tensor) -> Tensor:
        r"""The support margin loss after the inner loop, as the
        meta-learning engine computes it (relation meta from
        :meth:`init_local` of the backbone, inner adaptation, margin loss),
        for ``[B, K, d]`` support heads, tails and negative tails."""
        local, _ = self.backbone.init_local(sup_h, sup_t)
        learner = self.tta_learner
        if learner is not None:
            local = learner.adapt(local, sup_h, sup_t, sup_neg)
            return learner.support_loss(local, sup_h, sup_t, sup_neg)
        local = self._adapt(local, sup_h, sup_t, sup_neg)
        return self._support_margin(local, sup_h, sup_t, sup_neg)

    def _tta_generator_seed(self, support: Tensor, support_neg: Tensor) -> int:
        # Python hashes tuples of ints deterministically (no salting), so the
        # seed depends only on the support set and tta_seed.
        key = (self.tta_seed, tuple(support.reshape(-1).tolist()),
               tuple(support_neg.reshape(-1).tolist()))
        return hash(key) & ((1 << 63) - 1)

    def tune_adapters(self, support: Tensor,
                      support_neg: Tensor) -> Dict[str, Tensor]:
        r"""Tunes clones of the adapter parameters on one relation's support
        set and returns them (detached); the module is left unchanged.

        ``tta_steps`` steps of a fresh :class:`torch.optim.Adam`
        (``tta_lr``) minimise :meth:`support_objective` plus
        :math:`\lambda \mathcal{L}_{\mathrm{div}}` of the support heads and
        tails. The backbone is frozen and in eval mode; gradients are taken
        with :func:`torch.autograd.grad` with respect to the clones only, so
        no ``.grad`` of the model is written.

        Args:
            support (torch.Tensor): ``[K, 2]`` (head, tail) ids.
            support_neg (torch.Tensor): ``[K]`` negative tail ids.
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
                    loss = self.support_objective(sup_h, sup_t, neg)
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
    def _scope(self, support: Tensor, support_neg: Tensor) -> Iterator[None]:
        snapshot = {k: p.detach().clone()
                    for k, p in self.fusion.named_parameters()}
        fusion_mode = self.fusion.training
        previous = self._tuned
        self._records = []
        try:
            self._tuned = self.tune_adapters(support, support_neg)
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

    def task_scope(self, support: Tensor, support_neg: Tensor
                   ) -> 'contextlib.AbstractContextManager[None]':
        r"""Tunes the adapters on one dev/test relation's support set
        (``[K, 2]`` ids, negative tails ``[K]``) on entry and ranks with them
        in eval mode inside the scope; on exit the meta-trained adapters are
        back in force, bit for bit (see :meth:`tune_adapters`)."""
        return self._scope(support, support_neg)
