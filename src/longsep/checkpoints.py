"""Model store: save / load separators without pickle.

A model store is a directory with, per target, ``<target>.safetensors`` (the
separator's state dict) and ``<target>.yaml`` (everything needed to rebuild it:
the separator config with its ``_target_``, the STFT, ``seq_len``, rate, channels
and where it came from). Several targets trained in separate runs can share one
store. Lightning checkpoints are read with ``torch.load(weights_only=True)``.
Only ``_target_`` entries inside the ``longsep.`` package are instantiated, so a
store received from someone else cannot run arbitrary code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from torch import nn

from longsep.errors import LongsepError
from longsep.spectral import STFTConfig

log = logging.getLogger(__name__)

STORE_VERSION = 1


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


def check_targets(node: Any, source: str) -> None:
    """Refuse any ``_target_`` outside the ``longsep`` package (no arbitrary code)."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith("longsep."):
            raise LongsepError(f"{source}: refusing to build {target!r} (only longsep.* allowed)")
        for value in node.values():
            check_targets(value, source)
    elif isinstance(node, list):
        for value in node:
            check_targets(value, source)


def build_from_entry(entry: StoreEntry, source: str) -> nn.Module:
    """Instantiate the (untrained) separator described by ``entry``."""
    check_targets(entry.separator, source)
    try:
        return instantiate(entry.separator, _convert_="all")
    except Exception as exc:  # hydra wraps constructor errors in many types
        raise LongsepError(f"{source}: cannot build the separator: {exc}") from exc


def _atomic_write_bytes(path: Path, writer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_store(store_dir: str | Path, separator: nn.Module, entry: StoreEntry) -> Path:
    """Write ``<target>.safetensors`` + ``<target>.yaml`` into ``store_dir`` atomically."""
    store = Path(store_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in separator.state_dict().items()}
    _atomic_write_bytes(store / f"{entry.target}.safetensors", lambda p: save_file(state, str(p)))
    text = yaml.safe_dump(entry.to_dict(), sort_keys=False)
    _atomic_write_bytes(store / f"{entry.target}.yaml", lambda p: p.write_text(text))
    log.info("exported %s to %s", entry.target, store)
    return store


def store_targets(store_dir: str | Path) -> list[str]:
    """Targets available in a model store directory."""
    store = Path(store_dir)
    found = (p.stem for p in store.glob("*.yaml"))
    return sorted(t for t in found if (store / f"{t}.safetensors").exists())


def load_store(store_dir: str | Path, target: str) -> tuple[nn.Module, StoreEntry]:
    """Rebuild the separator of ``target`` from a model store (eval mode, CPU)."""
    store = Path(store_dir)
    meta, weights = store / f"{target}.yaml", store / f"{target}.safetensors"
    if not meta.exists() or not weights.exists():
        have = store_targets(store) if store.is_dir() else []
        raise LongsepError(
            f"model store {store} has no target {target!r} (has: {', '.join(have) or 'none'})"
        )
    try:
        entry = StoreEntry.from_dict(yaml.safe_load(meta.read_text()), str(meta))
        state = load_file(str(weights))
    except (OSError, yaml.YAMLError, RuntimeError) as exc:
        raise LongsepError(f"cannot read model {meta}: {exc}") from exc
    model = build_from_entry(entry, str(meta))
    _load_state(model, state, str(weights))
    return model.eval(), entry


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise LongsepError(f"{source}: weights do not match the model: {first}") from exc


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise LongsepError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise LongsepError(f"cannot read checkpoint {path}: {exc}") from exc


def entry_from_checkpoint(ckpt: dict[str, Any], source: str) -> StoreEntry:
    """The store entry described by a longsep Lightning checkpoint."""
    info = ckpt.get("longsep")
    if not info or "config" not in info:
        raise LongsepError(f"{source} is not a longsep training checkpoint")
    cfg = info["config"]
    return StoreEntry(
        target=info["target"],
        separator=cfg["separator"],
        stft=STFTConfig(**info["stft"]),
        seq_len=cfg.get("seq_len"),
        nb_channels=int(cfg.get("nb_channels", 2)),
        info={"checkpoint": str(source), "global_step": ckpt.get("global_step")},
    )


def load_checkpoint(path: str | Path) -> tuple[nn.Module, StoreEntry]:
    """Rebuild the separator stored in a longsep Lightning checkpoint."""
    ckpt = read_checkpoint(path)
    entry = entry_from_checkpoint(ckpt, str(path))
    model = build_from_entry(entry, str(path))
    prefix = "separator."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    _load_state(model, state, str(path))
    return model.eval(), entry
