r"""Assembled few-shot models and their configurations."""
from typing import Any, Dict, Type, Union

from torch_geometric.data import HeteroData

from .base import FewShotModel, TaskOutput
from .config import (FusionAdapterConfig, MetaRConfig, ModelConfig,
                     MoEMetaConfig, model_config)
from .metar import MetaR
from .moemeta import MoEMeta
from .fusion_adapter import FusionAdapter

MODELS: Dict[str, Type[FewShotModel]] = {
    'metar': MetaR,
    'moemeta': MoEMeta,
    'fusionadapter': FusionAdapter,
}


def build_model(config: Union[ModelConfig, str], data: HeteroData,
                **kwargs: Any) -> FewShotModel:
    r"""Builds a model for ``data`` from its configuration (a
    :class:`MetaRConfig`, :class:`MoEMetaConfig` or
    :class:`FusionAdapterConfig`), or from a model name and configuration
    values (``build_model('moemeta', data, embedding_dim=50)``)."""
    if isinstance(config, str):
        config = model_config(config, **kwargs)
    elif kwargs:
        raise TypeError('build_model() takes keyword values only with a '
                        'model name')
    return MODELS[config.name].from_config(config, data)


__all__ = ['FewShotModel', 'TaskOutput', 'MetaR', 'MoEMeta', 'FusionAdapter',
           'MODELS', 'build_model', 'MetaRConfig', 'MoEMetaConfig',
           'FusionAdapterConfig', 'ModelConfig', 'model_config']
