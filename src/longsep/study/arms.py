"""Statistics of the context study with the training run as the unit (pre-registered in
``experiments/README.md``).

A *group* is the runs of one arm (or one arm on one data set): a matrix ``(runs, tracks)``
of scores, every run scored on the same tracks. A *contrast* is a weighted sum over groups
of the group's mean over its runs and the tracks: B − A is ``[(+1, B), (-1, A)]``, the
intervention effect of arm B is ``[(+1, B)]``, the control's interaction is
``[(+1, B+), (-1, C+), (-1, B-), (+1, C-)]``.

Intervals come from a two-level bootstrap: each resample draws the tracks with replacement,
the same draw for every group (tracks pair across groups), and, independently in each group,
the group's runs with replacement. Runs are never paired by seed. Before resampling, run
deviations from the group's per-track mean and track deviations of the contrast from its
estimate are scaled by ``sqrt(n / (n - 1))``, which restores the variance a plain bootstrap
loses with few runs or tracks. Intervals are percentile intervals; the two-sided p-value is
twice the smaller share of resampled contrasts on either side of 0.

:func:`holm` adjusts the p-values of a family of contrasts; :func:`evaluate_family`
adds each contrast's Holm-step interval and the equivalence test against ±``bound`` (its
``1 - 2 alpha / m`` interval inside the bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
EQUIVALENCE_BOUND = 0.3  # dB, pre-registered


@dataclass(frozen=True)
class Group:
    """The runs of one arm: ``scores`` ``(runs, tracks)``, tracks in the family's order."""

    name: str
    weight: float
    scores: np.ndarray

    @property
    def runs(self) -> int:
        return int(self.scores.shape[0])

    def run_sd(self) -> float:
        """Between-run standard deviation of the run means (NaN with one run)."""
        means = self.scores.mean(axis=1)
        return float(means.std(ddof=1)) if len(means) > 1 else math.nan


@dataclass(frozen=True)
class Contrast:
    """A contrast, its bootstrap distribution's summaries and its decisions."""

    name: str
    estimate: float
    low: float  # 95 % percentile interval
    high: float
    p: float
    runs: dict[str, int]
    run_sd: dict[str, float]
    tracks: int
    p_holm: float = math.nan
    holm_low: float = math.nan  # interval at the contrast's Holm step
    holm_high: float = math.nan
    eq_low: float = math.nan  # 1 - 2 alpha / m interval (TOST, Bonferroni over the family)
    eq_high: float = math.nan
    draws: np.ndarray = field(default=None, repr=False, compare=False)

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    @property
    def equivalent(self) -> bool:
        """Within ±:data:`EQUIVALENCE_BOUND` by the two one-sided tests."""
        return self.eq_low > -EQUIVALENCE_BOUND and self.eq_high < EQUIVALENCE_BOUND

    def verdict(self) -> str:
        """``higher`` / ``lower`` (significant), ``equivalent``, or ``inconclusive``."""
        if self.significant:
            return "higher" if self.estimate > 0 else "lower"
        return "equivalent" if self.equivalent else "inconclusive"


def _inflate_runs(scores: np.ndarray) -> np.ndarray:
    """Run deviations from the per-track mean scaled by ``sqrt(n / (n - 1))``."""
    n = scores.shape[0]
    if n < 2:
        return scores
    mean = scores.mean(axis=0, keepdims=True)
    return mean + math.sqrt(n / (n - 1)) * (scores - mean)


def _adjusted(groups: Sequence[Group]) -> list[np.ndarray]:
    """The groups' scores with run and track deviations inflated (see the module doc)."""
    data = [_inflate_runs(g.scores.astype(np.float64)) for g in groups]
    weights = np.array([g.weight for g in groups], dtype=np.float64)
    per_track = sum(w * d.mean(axis=0) for w, d in zip(weights, data, strict=True))
    tracks = per_track.shape[0]
    if tracks < 2:
        return data
    shift = (math.sqrt(tracks / (tracks - 1)) - 1.0) * (per_track - per_track.mean())
    norm = float(weights @ weights)
    return [d + shift * (w / norm) for w, d in zip(weights, data, strict=True)]


def bootstrap(
    groups: Sequence[Group], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, np.ndarray]:
    """The contrast's estimate and ``resamples`` two-level bootstrap replicates of it."""
    tracks = {g.scores.shape[1] for g in groups}
    if len(tracks) != 1 or not all(g.runs for g in groups):
        raise ValueError("every group needs runs scored on the same tracks")
    (n_tracks,) = tracks
    estimate = float(sum(g.weight * g.scores.mean() for g in groups))
    rng = np.random.default_rng(seed)
    track_counts = rng.multinomial(n_tracks, np.full(n_tracks, 1 / n_tracks), size=resamples)
    draws = np.zeros(resamples)
    for group, data in zip(groups, _adjusted(groups), strict=True):
        n = group.runs
        run_counts = rng.multinomial(n, np.full(n, 1 / n), size=resamples)
        draws += (
            group.weight * np.einsum("bn,nt,bt->b", run_counts, data, track_counts) / (n * n_tracks)
        )
    return estimate, draws


def contrast(
    name: str, groups: Sequence[Group], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Contrast:
    """Estimate, 95 % interval and two-sided p-value of one contrast."""
    estimate, draws = bootstrap(groups, resamples, seed)
    low, high = np.quantile(draws, [0.025, 0.975])
    p = min(1.0, 2 * min(float(np.mean(draws <= 0)), float(np.mean(draws >= 0))))
    return Contrast(
        name=name,
        estimate=estimate,
        low=float(low),
        high=float(high),
        p=p,
        runs={g.name: g.runs for g in groups},
        run_sd={g.name: g.run_sd() for g in groups},
        tracks=int(groups[0].scores.shape[1]),
        draws=draws,
    )


def holm(pvalues: Sequence[float], m: int | None = None) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order, over a family of ``m``
    hypotheses (default: those given; a larger ``m`` counts the family's missing ones as
    the last steps, so the adjustment is never weaker than the registered family's)."""
    m = max(len(pvalues), m or 0)
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def evaluate_family(
    contrasts: Sequence[Contrast], alpha: float = ALPHA, m: int | None = None
) -> list[Contrast]:
    """Holm-adjusted p-values, Holm-step intervals and TOST intervals over one family of
    ``m`` contrasts (default: those given; see :func:`holm`). The i-th smallest p gets its
    interval at level ``alpha / (m - i + 1)``; tied p-values (often 0 with large effects)
    all get the first of their steps, whatever the family's order."""
    m = max(len(contrasts), m or 0)
    adjusted = holm([c.p for c in contrasts], m)
    out = []
    for i, c in enumerate(contrasts):
        rank = sum(d.p < c.p for d in contrasts)  # tied p-values share the strictest step
        level = alpha / (m - rank)
        holm_low, holm_high = np.quantile(c.draws, [level / 2, 1 - level / 2])
        eq_low, eq_high = np.quantile(c.draws, [alpha / m, 1 - alpha / m])
        out.append(
            replace(
                c,
                p_holm=adjusted[i],
                holm_low=float(holm_low),
                holm_high=float(holm_high),
                eq_low=float(eq_low),
                eq_high=float(eq_high),
            )
        )
    return out


def group_matrix(runs: Mapping[str, Mapping[str, float]], tracks: Sequence[str]) -> np.ndarray:
    """``(runs, tracks)`` of ``{run: {track: score}}`` in ``tracks``' order (runs sorted)."""
    return np.array([[runs[r][t] for t in tracks] for r in sorted(runs)], dtype=np.float64)


def common_tracks(*groups: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Tracks scored in every run of every group, sorted."""
    sets = [set(scores) for runs in groups for scores in runs.values()]
    return sorted(set.intersection(*sets)) if sets else []
