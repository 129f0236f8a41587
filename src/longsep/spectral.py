"""STFT front end: the one place that knows n_fft, hop and window.

Shapes: audio ``(..., samples)`` maps to a complex spectrogram
``(..., bins, frames)`` with ``bins = n_fft // 2 + 1`` and, centred,
``frames = samples // hop_length + 1``. For the usual batch audio
``(batch, channels, samples)`` that is ``(batch, channels, bins, frames)``.
Defaults follow Open-Unmix: n_fft 4096, hop 1024, periodic Hann, centred,
reflect padding (zero padding for signals too short to reflect).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class STFTConfig:
    """Transform parameters, stored with every model so it can be rebuilt."""

    n_fft: int = 4096
    hop_length: int = 1024
    center: bool = True
    sample_rate: int = SAMPLE_RATE

    @property
    def nb_bins(self) -> int:
        return self.n_fft // 2 + 1

    def frames(self, samples: int) -> int:
        """Number of STFT frames for a signal of ``samples`` samples."""
        if self.center:
            return samples // self.hop_length + 1
        return max(0, (samples - self.n_fft) // self.hop_length + 1)

    def seconds_to_frames(self, seconds: float) -> int:
        return self.frames(round(seconds * self.sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)


def bandwidth_to_max_bin(sample_rate: float, n_fft: int, bandwidth: float | None) -> int:
    """Index of the highest STFT bin at or below ``bandwidth`` Hz (all bins if None)."""
    nb_bins = n_fft // 2 + 1
    if bandwidth is None:
        return nb_bins
    freqs = torch.linspace(0, sample_rate / 2, nb_bins)
    return int(torch.nonzero(freqs <= bandwidth).max().item()) + 1


class STFT(nn.Module):
    """Complex STFT of ``(..., samples)`` audio to ``(..., bins, frames)``."""

    def __init__(self, n_fft: int = 4096, hop_length: int = 1024, center: bool = True) -> None:
        super().__init__()
        self.config = STFTConfig(n_fft=n_fft, hop_length=hop_length, center=center)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        shape = audio.shape
        flat = audio.reshape(-1, shape[-1])
        # reflect padding needs more than n_fft // 2 samples; pad with zeros otherwise
        pad_mode = "reflect" if shape[-1] > self.config.n_fft // 2 else "constant"
        spec = torch.stft(
            flat,
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            window=self.window.to(flat.dtype),
            center=self.config.center,
            pad_mode=pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.reshape(*shape[:-1], *spec.shape[-2:])


class ISTFT(nn.Module):
    """Inverse of :class:`STFT`: ``(..., bins, frames)`` to ``(..., length)`` audio."""

    def __init__(self, n_fft: int = 4096, hop_length: int = 1024, center: bool = True) -> None:
        super().__init__()
        self.config = STFTConfig(n_fft=n_fft, hop_length=hop_length, center=center)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, spec: Tensor, length: int | None = None) -> Tensor:
        shape = spec.shape
        flat = spec.reshape(-1, *shape[-2:])
        audio = torch.istft(
            flat,
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            window=self.window.to(flat.real.dtype),
            center=self.config.center,
            normalized=False,
            onesided=True,
            length=length,
        )
        return audio.reshape(*shape[:-2], audio.shape[-1])


def magnitude(spec: Tensor, power: float = 1.0) -> Tensor:
    """``|spec| ** power`` of a complex spectrogram."""
    mag = spec.abs()
    return mag if power == 1.0 else mag.pow(power)


def make_transforms(config: STFTConfig | None = None) -> tuple[STFT, ISTFT]:
    """The matching (STFT, ISTFT) pair for ``config`` (defaults if None)."""
    config = config or STFTConfig()
    return (
        STFT(config.n_fft, config.hop_length, config.center),
        ISTFT(config.n_fft, config.hop_length, config.center),
    )
