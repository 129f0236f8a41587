"""Bootstrap intervals of the study: medians over tracks and seeds, paired differences.

A cell of the study (source x model x seq_len) holds one score per (seed, track): a
matrix ``(seeds, tracks)``, NaN where a run has no score for a track. Seeds and tracks are
crossed (every seed is scored on the same test tracks), so a bootstrap resample draws seeds
with replacement and, independently, tracks with replacement, and takes the median of the
resampled sub-matrix. The interval is the percentile interval of those medians.

A paired difference compares two cells of one model that hold one training each, on the
same tracks, so track difficulty cancels before resampling (an interval over tracks only).
Cells of several runs are not paired: their runs are independent trainings, whatever their
seed numbers, and are compared by the two-level bootstrap of :mod:`longsep.study.arms`.

:func:`cell_intervals` and :func:`paired_intervals` apply both to the run records of a
sweep (their ``track_sdr``, see :func:`longsep.study.records.load_study`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

RESAMPLES = 10_000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
_CHUNK_VALUES = 4_000_000  # resampled values held at once (memory bound of a batch)


@dataclass(frozen=True)
class Interval:
    """A median and its bootstrap percentile interval, with the matrix size it came from."""

    estimate: float
    low: float
    high: float
    n_seeds: int
    n_tracks: int

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside ``[low, high]`` (False for an undefined one)."""
        finite = math.isfinite(self.low) and math.isfinite(self.high)
        return finite and not self.low <= value <= self.high

    def format(self, spec: str = ".2f", sign: bool = False) -> str:
        """``2.50 [1.90, 3.10]`` (``+0.40 [...]`` with ``sign``); ``-`` when undefined."""
        if not math.isfinite(self.estimate):
            return "-"
        head = format(self.estimate, ("+" if sign else "") + spec)
        return f"{head} [{format(self.low, spec)}, {format(self.high, spec)}]"


def score_matrix(
    runs: Mapping[Hashable, Mapping[str, float]], tracks: Sequence[str] | None = None
) -> np.ndarray:
    """``(seeds, tracks)`` float matrix of ``{seed: {track: score}}``, NaN where missing.

    Seeds keep the mapping's order; ``tracks`` defaults to the sorted union of all tracks.
    """
    names = sorted({t for scores in runs.values() for t in scores}) if tracks is None else tracks
    matrix = np.full((len(runs), len(names)), np.nan)
    for i, scores in enumerate(runs.values()):
        for j, name in enumerate(names):
            value = scores.get(name)
            if value is not None:
                matrix[i, j] = float(value)
    return matrix


def _medians(values: np.ndarray) -> np.ndarray:
    """Median of each row, NaN skipped (NaN for a row without a finite value)."""
    if not np.isnan(values).any():
        return np.median(values, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN
        return np.nanmedian(values, axis=1)


def bootstrap_median(
    scores: ArrayLike,
    n_resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Median of a ``(seeds, tracks)`` matrix (NaN skipped) with a bootstrap interval.

    Each of ``n_resamples`` resamples draws seeds and tracks with replacement (a 1-D
    array is one seed); the interval is the central ``confidence`` percentile range of
    the resampled medians, from a generator seeded with ``seed`` (reproducible reports).
    A matrix without a finite value gives an all-NaN interval.
    """
    matrix = np.asarray(scores, dtype=np.float64)
    matrix = matrix[None, :] if matrix.ndim == 1 else matrix
    if matrix.ndim != 2:
        raise ValueError(f"scores must be (seeds, tracks), got shape {matrix.shape}")
    if not 0 < confidence < 1 or n_resamples < 1:
        raise ValueError(f"confidence={confidence}, n_resamples={n_resamples}: out of range")
    finite = np.isfinite(matrix)
    matrix = matrix[finite.any(axis=1)][:, finite.any(axis=0)]  # drop empty seeds / tracks
    n_seeds, n_tracks = matrix.shape
    if matrix.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0)
    estimate = float(_medians(matrix.reshape(1, -1))[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_VALUES // matrix.size)
    stats = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        rows = rng.integers(0, n_seeds, (size, n_seeds))
        cols = rng.integers(0, n_tracks, (size, n_tracks))
        resampled = matrix[rows[:, :, None], cols[:, None, :]].reshape(size, -1)
        stats.append(_medians(resampled))
    medians = np.concatenate(stats)
    medians = medians[np.isfinite(medians)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), n_seeds, n_tracks)


def paired_difference(
    scores: ArrayLike,
    baseline: ArrayLike,
    n_resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Median of ``scores - baseline`` per (seed, track) pair with a bootstrap interval.

    Both are ``(seeds, tracks)`` matrices aligned on the same seeds and tracks; pairs
    missing on either side are skipped. See :func:`bootstrap_median`.
    """
    a, b = np.asarray(scores, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_median(a - b, n_resamples, confidence, seed)


# --------------------------------------------------------------------------- cells


Runs = dict[Any, dict[str, float]]  # seed -> track -> SDR
Intervals = dict[str, dict[str, dict[float, Interval]]]  # src -> model -> seq_len -> interval


def cell_runs(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[float, Runs]]]:
    """``{src: {model: {seq_len: {seed: {track: SDR}}}}}`` of the ok runs with per-track
    scores (``track_sdr``, see :func:`longsep.study.records.load_study`)."""
    cells: dict[str, dict[str, dict[float, Runs]]] = {}
    for r in records:
        if r.get("status") != "ok" or not r.get("track_sdr") or r.get("seq_len") is None:
            continue
        if not r.get("src") or not r.get("model"):
            continue
        cell = cells.setdefault(r["src"], {}).setdefault(r["model"], {})
        cell.setdefault(float(r["seq_len"]), {})[r.get("seed")] = dict(r["track_sdr"])
    return cells


def cell_intervals(records: Iterable[Mapping[str, Any]], n_resamples: int = RESAMPLES) -> Intervals:
    """Median SDR over tracks and seeds of every cell, with its bootstrap interval."""
    return {
        src: {
            model: {
                x: bootstrap_median(score_matrix(runs), n_resamples) for x, runs in cells.items()
            }
            for model, cells in models.items()
        }
        for src, models in cell_runs(records).items()
    }


def paired_intervals(
    records: Iterable[Mapping[str, Any]], n_resamples: int = RESAMPLES
) -> Intervals:
    """Per model, the paired difference of every seq_len against the model's shortest where
    both cells hold one run: median over the tracks both scored, with its bootstrap
    interval. Cells of several runs are never paired (by seed number or otherwise)."""
    out: Intervals = {}
    for src, models in cell_runs(records).items():
        for model, cells in models.items():
            shortest, *longer = sorted(cells)
            for x in longer:
                if len(cells[x]) != 1 or len(cells[shortest]) != 1:
                    continue
                (a,), (b,) = cells[x].values(), cells[shortest].values()
                tracks = sorted({*a, *b})
                diff = paired_difference(
                    score_matrix({0: a}, tracks), score_matrix({0: b}, tracks), n_resamples
                )
                out.setdefault(src, {}).setdefault(model, {})[x] = diff
    return out
