"""Open-Unmix style source augmentation, each step switchable from the config.

All functions take and return float32 ``(channels, samples)`` numpy arrays and draw
from an explicit ``numpy.random.Generator`` so that a chunk is reproducible from its
seed (and a resumed run sees the same data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from longsep.errors import LongsepError


def random_gain(audio: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Scale by one gain drawn uniformly from ``[low, high)``."""
    return audio * np.float32(rng.uniform(low, high))


def random_channel_swap(audio: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Swap left and right of a stereo signal with probability ``p``."""
    if audio.shape[0] == 2 and rng.random() < p:
        return audio[::-1].copy()
    return audio


@dataclass(frozen=True)
class Augment:
    """Per-source augmentation: ``gain`` range (or None) and stereo channel swap."""

    gain: Sequence[float] | None = (0.25, 1.25)
    channel_swap: bool = True

    def __post_init__(self) -> None:
        if self.gain is not None and (len(self.gain) != 2 or self.gain[0] > self.gain[1]):
            raise LongsepError(f"data.augment.gain={list(self.gain)} must be [low, high]")

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.gain is not None:
            audio = random_gain(audio, rng, *self.gain)
        if self.channel_swap:
            audio = random_channel_swap(audio, rng)
        return audio
