"""longsep: how long an input can a music source separator use?

Public API (imported lazily so that ``import longsep`` stays cheap):

- :class:`longsep.LongsepError` for user-fixable problems,
- :func:`longsep.build_network` to build a separator from the Hydra configs,
- :class:`longsep.Separator` for inference with Wiener filtering.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from longsep.errors import LongsepError

TARGETS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
_RANK = {name: i for i, name in enumerate((*TARGETS, "accompaniment", "residual"))}


def target_rank(name: str) -> tuple[int, str]:
    """Sort key of a target: MUSDB's order (vocals, drums, bass, other), then
    accompaniment, residual, then any other name alphabetically."""
    return (_RANK.get(name, len(_RANK)), name)


def order_targets(names: Iterable[str]) -> list[str]:
    """``names`` once each, in :func:`target_rank` order: the one target order."""
    return sorted(dict.fromkeys(names), key=target_rank)


_LAZY = {
    "build_network": "longsep.models",
    "Separator": "longsep.inference.separator",
}

__all__ = ["TARGETS", "LongsepError", "order_targets", "target_rank", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'longsep' has no attribute {name!r}")
