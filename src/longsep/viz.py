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


def score_boxplot(scores: dict[str, np.ndarray], metric: str = "SDR", title: str = "") -> Figure:
    """Horizontal box plots of per-track scores, one row per method, best median on top.

    ``scores`` maps a method name to its per-track values ``(tracks,)`` in dB (NaN
    ignored); each box is overlaid with the individual tracks, as in the SiSEC figures.
    """
    finite = {name: np.asarray(v, dtype=float) for name, v in scores.items()}
    finite = {name: v[np.isfinite(v)] for name, v in finite.items()}
    order = sorted(finite, key=lambda n: np.median(finite[n]) if finite[n].size else -np.inf)
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.45 * len(order)))
    ax.boxplot(
        [finite[n] for n in order],
        orientation="horizontal",
        tick_labels=order,
        showfliers=False,
        widths=0.6,
        medianprops={"color": "black"},
    )
    for row, name in enumerate(order, start=1):
        jitter = np.random.default_rng(row).uniform(-0.15, 0.15, finite[name].size)
        ax.scatter(finite[name], row + jitter, s=8, alpha=0.5, color="tab:blue", zorder=3)
    ax.set_xlabel(f"{metric} (dB)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def seq_len_figure(
    panels: dict[str, tuple[str, dict[str, dict[float, float]]]],
    ncols: int | None = None,
    intervals: dict[str, dict[str, dict[float, tuple[float, float]]]] | None = None,
) -> Figure:
    """Line plots of values versus training sequence length, one line per model.

    ``panels`` maps a panel title to ``(y label, {model: {seq_len in s: value}})``. A model
    keeps its colour and marker in every panel; one legend for the figure. ``intervals``
    (``{panel title: {model: {seq_len: (low, high)}}}``) draws error bars, the models
    dodged sideways so that their bars do not hide each other.
    """
    models = sorted({m for _, series in panels.values() for m in series})
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    style = {m: (cmap(i % cmap.N), "osD^v<>ph*"[i % 10]) for i, m in enumerate(models)}
    ncols = ncols or min(len(panels), 4) or 1
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows + 0.4 + 0.22 * len(models)), squeeze=False
    )
    for ax, (title, (ylabel, series)) in zip(axes.flat, panels.items(), strict=False):
        lengths = sorted({x for points in series.values() for x in points})
        bars = (intervals or {}).get(title, {})
        dodge = 0.012 * ((lengths[-1] - lengths[0]) if len(lengths) > 1 else 1.0)
        for i, model in enumerate(sorted(series)):
            xs = sorted(series[model])
            ys = [series[model][x] for x in xs]
            color, marker = style[model]
            ax.plot(xs, ys, marker=marker, color=color, label=model)
            spans = bars.get(model, {})
            shown = [(x, y) for x, y in zip(xs, ys, strict=True) if x in spans]
            if shown:
                offset = dodge * (i - (len(series) - 1) / 2)
                below = [max(0.0, y - spans[x][0]) for x, y in shown]
                above = [max(0.0, spans[x][1] - y) for x, y in shown]
                ax.errorbar(
                    [x + offset for x, _ in shown],
                    [y for _, y in shown],
                    yerr=[below, above],
                    fmt="none",
                    ecolor=color,
                    capsize=3,
                    alpha=0.8,
                )
        ax.set_xticks(lengths)
        ax.set_xticklabels([f"{x:g}" for x in lengths])
        ax.set_xlabel("seq_len (s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if models:
        handles = [
            plt.Line2D([], [], color=style[m][0], marker=style[m][1], label=m) for m in models
        ]
        fig.legend(handles=handles, loc="lower center", ncol=min(3, len(models)), fontsize=8)
    bottom = (0.3 + 0.22 * -(-len(models) // 3)) / fig.get_figheight()
    fig.tight_layout(rect=(0, min(bottom, 0.5), 1, 1))
    return fig
