"""The model store's format, shared by :mod:`longsep.store` and
:mod:`longsep.store_openunmix`: the description of a target (:class:`StoreEntry`, the
``<target>.yaml``), the order of targets and the one-line reasons a file is refused."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longsep.errors import LongsepError, one_line
from longsep.spectral import STFTConfig

STORE_VERSION = 1
PathLike = str | Path


@dataclass
class StoreEntry:
    """Metadata of one target in a model store."""

    target: str
    separator: dict[str, Any]
    stft: STFTConfig
    seq_len: float | None = None
    nb_channels: int = 2
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STORE_VERSION,
            "target": self.target,
            "separator": self.separator,
            "stft": self.stft.to_dict(),
            "seq_len": self.seq_len,
            "nb_channels": self.nb_channels,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> StoreEntry:
        try:
            return cls(
                target=data["target"],
                separator=data["separator"],
                stft=STFTConfig(**data["stft"]),
                seq_len=data.get("seq_len"),
                nb_channels=int(data.get("nb_channels", 2)),
                info=data.get("info") or {},
            )
        except (KeyError, TypeError) as exc:
            raise LongsepError(f"{source} is not a longsep model description: {exc}") from exc


def refusal(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line of our own (torch's
    message ends in advice to load it unsafely)."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds pickled Python objects, which longsep never loads (no code runs)"
    return one_line(exc)
