"""Where the Hydra configs live and the OmegaConf resolvers they use.

Importing this module registers the resolvers (idempotently), so any code that
composes ``conf/`` only has to ``import longsep.config`` first:

- ``${nb_bins:${stft.n_fft}}``: STFT bins, ``n_fft // 2 + 1``;
- ``${max_bin:${stft.n_fft},${stft.sample_rate},${bandwidth}}``: bins at or below
  ``bandwidth`` Hz (all bins for ``null``), Open-Unmix's ``max_bin``;
- ``${seconds_to_frames:${seq_len},${stft}}``: STFT frames of ``seq_len`` seconds;
- ``${reach_frames:${reach},${stft}}``: frames of ``reach`` seconds (None for null);
- ``${longsep_root:}``: ``$LONGSEP_ROOT`` or the working directory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import yaml
from omegaconf import OmegaConf

from longsep.errors import LongsepError
from longsep.spectral import STFTConfig, bandwidth_to_max_bin

CONF_DIR: Path = Path(__file__).resolve().parent / "conf"  # shipped inside the package


def conf_dir() -> Path:
    """The Hydra configs shipped with the package (``longsep/conf``)."""
    if not (CONF_DIR / "separator").is_dir():
        raise LongsepError(
            f"Hydra configs not found at {CONF_DIR}: the installation is incomplete, "
            "reinstall longsep"
        )
    return CONF_DIR


def root_dir() -> str:
    """Where ``data/``, ``runs/`` and ``.cache/`` go: ``$LONGSEP_ROOT``, else the working
    directory (read when a config is resolved, in any process: sweeps and launchers too)."""
    return os.path.abspath(os.environ.get("LONGSEP_ROOT") or os.getcwd())


@functools.cache
def group_defaults(group: str) -> dict[str, Any]:
    """The values of ``conf/<group>/default.yaml``: the one declaration of a settings group
    that several commands compose (``inference``, ``evaluation``)."""
    path = conf_dir() / group / "default.yaml"
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise LongsepError(f"{path} is not a mapping of settings")
    return values


class GroupOptions:
    """Base of a frozen dataclass whose fields are the keys of ``conf/<GROUP>/default.yaml``
    and whose defaults are that file's values (declared once, there)."""

    GROUP: ClassVar[str]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def of(cls, values: Any = None, **changes: Any) -> Any:
        """The defaults, then ``values`` (an object of this class, or a mapping such as a
        command's config, whose other keys are ignored), then ``changes`` (each must be a
        setting of the group: a one-line error otherwise)."""
        names = cls.names()
        if isinstance(values, cls):
            base = dataclasses.asdict(values)  # type: ignore[call-overload]
        else:
            base = dict(group_defaults(cls.GROUP))
            if set(base) != set(names):
                raise LongsepError(f"conf/{cls.GROUP}/default.yaml must set {', '.join(names)}")
            base.update({k: v for k, v in (values or {}).items() if k in names})
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise LongsepError(
                f"{unknown[0]} is not one of the {cls.GROUP} settings ({', '.join(names)})"
            )
        return cls(**{**base, **changes})

    def settings(self) -> dict[str, Any]:
        """The settings as a plain dict (for records)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def nb_bins(n_fft: int) -> int:
    """Number of one-sided STFT bins for ``n_fft``."""
    return int(n_fft) // 2 + 1


def max_bin(n_fft: int, sample_rate: float, bandwidth: float | None) -> int:
    """Bins the network sees: those at or below ``bandwidth`` Hz (all if None)."""
    return bandwidth_to_max_bin(float(sample_rate), int(n_fft), bandwidth)


def seconds_to_frames(seconds: float, stft: Any) -> int:
    """STFT frames of ``seconds`` of audio under the ``stft`` config node."""
    config = OmegaConf.to_container(stft, resolve=True) if OmegaConf.is_config(stft) else stft
    return STFTConfig(**config).seconds_to_frames(float(seconds))


def reach_frames(seconds: float | None, stft: Any) -> int | None:
    """Frames of a ``reach`` of ``seconds`` (hops, rounded; None for null: no limit)."""
    if seconds is None:
        return None
    config = OmegaConf.to_container(stft, resolve=True) if OmegaConf.is_config(stft) else stft
    value = float(seconds)
    if not value > 0:
        raise LongsepError(f"reach={seconds}: give a positive number of seconds, or null")
    stft_config = STFTConfig(**config)
    return max(1, round(value * stft_config.sample_rate / stft_config.hop_length))


_RESOLVERS = {
    "longsep_root": root_dir,
    "nb_bins": nb_bins,
    "max_bin": max_bin,
    "seconds_to_frames": seconds_to_frames,
    "reach_frames": reach_frames,
}


def register_resolvers() -> None:
    """Register the resolvers above with OmegaConf (safe to call more than once)."""
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
