"""STFT front end: the one place that knows n_fft, hop and window.

Shapes: audio ``(..., samples)`` maps to a complex spectrogram
``(..., bins, frames)`` with ``bins = n_fft // 2 + 1`` and, centred,
``frames = samples // hop_length + 1``. For the usual batch audio
``(batch, channels, samples)`` that is ``(batch, channels, bins, frames)``.
Defaults follow Open-Unmix: n_fft 4096, hop 1024, periodic Hann, centred,
reflect padding (zero padding for signals too short to reflect).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft
import torch
from torch import Tensor, nn

from longsep.errors import LongsepError

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


class BlockSTFT:
    """:class:`STFT` and :class:`ISTFT` of a long signal, a block of frames at a time.

    For bounded-memory analysis and resynthesis of whole songs on CPU: the frames of
    ``[t0, t1)`` (:meth:`ranges`) are :meth:`analyse`-d from numpy ``(..., samples)``
    audio to ``(..., frames, bins)`` complex64, and :class:`OverlapAdd` turns such
    blocks back into audio. Frames, padding and normalisation are those of
    :class:`STFT` / :class:`ISTFT` (equal to float32 rounding); FFTs run on
    ``torch.get_num_threads()`` threads (``scipy.fft``, faster here than torch's CPU FFT).
    """

    def __init__(self, config: STFTConfig, length: int, block_frames: int = 256) -> None:
        self.config, self.length = config, int(length)
        n_fft, hop = config.n_fft, config.hop_length
        self.pad = n_fft // 2 if config.center else 0
        self.reflect = config.center and self.length > n_fft // 2  # as STFT.forward
        self.frames = max(0, (self.length + 2 * self.pad - n_fft) // hop + 1)
        self.block_frames = int(block_frames)
        self.window = torch.hann_window(n_fft)

    def ranges(self) -> Iterator[tuple[int, int]]:
        """``(t0, t1)`` frame ranges covering all frames in order."""
        for t0 in range(0, self.frames, self.block_frames):
            yield t0, min(self.frames, t0 + self.block_frames)

    def _segment(self, audio: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``audio[..., lo:hi]`` of the padded signal (``lo`` in unpadded samples)."""
        if lo >= 0 and hi <= self.length:
            return audio[..., lo:hi]
        index = np.arange(lo, hi)
        if self.reflect:
            index = np.abs(index)
            return audio[..., np.where(index >= self.length, 2 * self.length - 2 - index, index)]
        out = np.zeros((*audio.shape[:-1], hi - lo), dtype=audio.dtype)
        inside = (index >= 0) & (index < self.length)
        out[..., inside] = audio[..., index[inside]]
        return out

    def analyse(self, audio: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """Spectra ``(..., t1 - t0, bins)`` of frames ``[t0, t1)`` of ``(..., samples)``."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        lo = t0 * hop - self.pad
        segment = self._segment(audio, lo, lo + (t1 - t0 - 1) * hop + n_fft)
        segment = torch.from_numpy(np.ascontiguousarray(segment))  # torch: multithreaded
        frames = (segment.unfold(-1, n_fft, hop) * self.window).numpy()
        return scipy.fft.rfft(frames, axis=-1, workers=torch.get_num_threads(), overwrite_x=True)


class OverlapAdd:
    """Audio ``(*shape, length)`` float32 from blocks of spectra, as :class:`ISTFT`."""

    def __init__(self, stft: BlockSTFT, shape: tuple[int, ...]) -> None:
        self.stft = stft
        n_fft, hop = stft.config.n_fft, stft.config.hop_length
        self.parts = -(-n_fft // hop)  # frame pieces of hop samples (the last zero-padded)
        rows = max(stft.frames - 1 + self.parts, -(-(stft.pad + stft.length) // hop))
        self.sum = np.zeros((*shape, rows, hop), dtype=np.float32)
        square = np.zeros(self.parts * hop, dtype=np.float32)
        square[:n_fft] = stft.window.square().numpy()
        self.envelope = np.zeros((rows, hop), dtype=np.float32)
        for r, piece in enumerate(square.reshape(self.parts, hop)):
            self.envelope[r : r + stft.frames] += piece

    def add(self, spectra: np.ndarray, t0: int, t1: int) -> None:
        """Overlap-add the inverse of ``(*shape, t1 - t0, bins)`` spectra of frames
        ``[t0, t1)``."""
        n_fft, hop = self.stft.config.n_fft, self.stft.config.hop_length
        frames = scipy.fft.irfft(spectra, n=n_fft, axis=-1, workers=torch.get_num_threads())
        frames = torch.from_numpy(frames)
        if self.parts * hop == n_fft:
            frames *= self.stft.window
        else:
            padded = frames.new_zeros(*frames.shape[:-1], self.parts * hop)
            torch.mul(frames, self.stft.window, out=padded[..., :n_fft])
            frames = padded
        pieces = frames.view(*frames.shape[:-1], self.parts, hop)
        total = torch.from_numpy(self.sum)
        for r in range(self.parts):
            total[..., t0 + r : t1 + r, :] += pieces[..., r, :]

    def result(self) -> np.ndarray:
        """The audio ``(*shape, length)``: the sum over the window envelope, trimmed."""
        start, length = self.stft.pad, self.stft.length
        envelope = self.envelope.reshape(-1)[start : start + length]
        if length and float(envelope.min()) < 1e-11:
            cfg = self.stft.config
            raise LongsepError(
                f"n_fft={cfg.n_fft}, hop={cfg.hop_length}: the windows leave samples uncovered "
                "(use hop < n_fft)"
            )
        audio = self.sum.reshape(*self.sum.shape[:-2], -1)[..., start : start + length]
        audio /= envelope
        return audio
