"""Figures: spectrograms of mixture / target / estimate, and study plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def db(mag: np.ndarray, floor: float = -80.0) -> np.ndarray:
    """Magnitude to dB relative to its maximum, floored at ``floor``."""
    ref = max(float(np.max(mag)), 1e-12)
    return np.maximum(20 * np.log10(np.maximum(mag, 1e-12) / ref), floor)


def spectrogram_figure(
    spectrograms: dict[str, np.ndarray], sample_rate: int, hop_length: int, title: str = ""
) -> Figure:
    """One panel per named magnitude spectrogram ``(bins, frames)``, shared dB scale."""
    fig, axes = plt.subplots(len(spectrograms), 1, figsize=(8, 2.2 * len(spectrograms)))
    axes = np.atleast_1d(axes)
    for ax, (name, mag) in zip(axes, spectrograms.items(), strict=True):
        seconds = mag.shape[-1] * hop_length / sample_rate
        image = ax.imshow(
            db(mag),
            origin="lower",
            aspect="auto",
            extent=(0, seconds, 0, sample_rate / 2000),
            cmap="magma",
            vmin=-80,
            vmax=0,
        )
        ax.set_ylabel("frequency (kHz)")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="level (dB)")
    if title:
        fig.suptitle(title)
    return fig
