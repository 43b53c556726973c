r"""Assembled few-shot models."""
from typing import Any, Dict, Type

from torch_geometric.data import HeteroData

from .base import FewShotModel
from .metar import MetaR
from .moemeta import MoEMeta
from .fusion_adapter import FusionAdapter

MODELS: Dict[str, Type[FewShotModel]] = {
    'metar': MetaR,
    'moemeta': MoEMeta,
    'fusionadapter': FusionAdapter,
}


def build_model(name: str, data: HeteroData, **kwargs: Any) -> FewShotModel:
    r"""Builds the registered model ``name`` for ``data`` with the
    model's keyword arguments (see each model's :meth:`from_data`)."""
    key = name.lower().replace('-', '').replace('_', '')
    if key not in MODELS:
        raise ValueError(f"Unknown model '{name}': expected one of "
                         f'{sorted(MODELS)}')
    return MODELS[key].from_data(data, **kwargs)


__all__ = ['FewShotModel', 'MetaR', 'MoEMeta', 'FusionAdapter', 'MODELS', 'build_model']
