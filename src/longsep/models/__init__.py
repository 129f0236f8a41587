"""Separators (UMX, UMXTransformer, AutoTransformer), attention variants and builders.

Every separator maps a mixture magnitude ``(batch, channels, bins, frames)`` to
the target magnitude of the same shape, predicting a mask internally.
"""

from __future__ import annotations

from longsep.models.attention import ATTENTIONS, build_attention
from longsep.models.auto_transformer import AutoTransformer
from longsep.models.build import (
    build_network,
    compose_network,
    instantiate_network,
    is_valid_combination,
    network_config,
    network_from_node,
    valid_combinations,
)
from longsep.models.umx import UMX
from longsep.models.umx_transformer import UMXTransformer

__all__ = [
    "ATTENTIONS",
    "AutoTransformer",
    "UMX",
    "UMXTransformer",
    "build_attention",
    "build_network",
    "compose_network",
    "instantiate_network",
    "is_valid_combination",
    "network_config",
    "network_from_node",
    "valid_combinations",
]
