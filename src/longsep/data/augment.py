"""Open-Unmix style source augmentation, each step switchable from the config.

All functions take and return float32 ``(channels, samples)`` numpy arrays and draw
from an explicit ``numpy.random.Generator`` so that a chunk is reproducible from its
seed (and a resumed run sees the same data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from longsep.errors import LongsepError


def random_gain(audio: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Scale by one gain drawn uniformly from ``[low, high)``."""
    return audio * np.float32(rng.uniform(low, high))


def random_channel_swap(audio: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Swap left and right of a stereo signal with probability ``p``."""
    if audio.shape[0] == 2 and rng.random() < p:
        return audio[::-1].copy()
    return audio


EQ_LOWEST = 2.0**-8  # the lowest EQ anchor, as a fraction of Nyquist (86 Hz at 44.1 kHz)


def eq_curve(n_bins: int, rng: np.random.Generator, max_db: float, bands: int = 8) -> np.ndarray:
    """A random smooth gain curve over ``n_bins`` rfft bins (0 Hz to Nyquist), as amplitude
    factors: ``bands`` anchors spaced evenly in log frequency from :data:`EQ_LOWEST` of Nyquist
    to Nyquist, each at a level drawn uniformly from ``[-max_db, max_db]`` dB, joined by
    straight lines in dB over log frequency (flat below the lowest anchor)."""
    anchors = np.linspace(np.log2(EQ_LOWEST), 0.0, bands)
    levels = rng.uniform(-max_db, max_db, bands)
    freqs = np.linspace(0.0, 1.0, n_bins)
    log_freqs = np.log2(np.maximum(freqs, EQ_LOWEST))
    return (10.0 ** (np.interp(log_freqs, anchors, levels) / 20.0)).astype(np.float32)


def random_eq(
    audio: np.ndarray, rng: np.random.Generator, max_db: float, bands: int = 8
) -> np.ndarray:
    """Filter ``audio`` (every channel alike) with a random smooth EQ (:func:`eq_curve`): a
    timbre augmentation, so that a model learns a source by more than one spectral envelope
    (a SoundFont's samples, a recording's microphones)."""
    spectrum = scipy.fft.rfft(audio.astype(np.float32, copy=False), axis=-1)  # complex64
    spectrum *= eq_curve(spectrum.shape[-1], rng, max_db, bands)
    return scipy.fft.irfft(spectrum, n=audio.shape[-1], axis=-1).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Augment:
    """Per-source augmentation: ``gain`` range (or None), stereo channel swap, and a random
    smooth EQ of up to ``eq_db`` dB over ``eq_bands`` log-spaced anchors (None: off)."""

    gain: Sequence[float] | None = (0.25, 1.25)
    channel_swap: bool = True
    eq_db: float | None = None
    eq_bands: int = 8

    def __post_init__(self) -> None:
        if self.gain is not None and (len(self.gain) != 2 or self.gain[0] > self.gain[1]):
            raise LongsepError(f"data.augment.gain={list(self.gain)} must be [low, high]")
        if self.eq_db is not None and not (isinstance(self.eq_db, int | float) and self.eq_db >= 0):
            raise LongsepError(f"data.augment.eq_db={self.eq_db!r} must be >= 0 dB (or null)")
        if not isinstance(self.eq_bands, int) or self.eq_bands < 2:
            raise LongsepError(f"data.augment.eq_bands={self.eq_bands} must be at least 2")

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.eq_db:
            audio = random_eq(audio, rng, self.eq_db, self.eq_bands)
        if self.gain is not None:
            audio = random_gain(audio, rng, *self.gain)
        if self.channel_swap:
            audio = random_channel_swap(audio, rng)
        return audio
