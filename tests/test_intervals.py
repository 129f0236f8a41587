"""Bootstrap intervals of the study on synthetic numbers with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from longsep.study.intervals import (
    Interval,
    bootstrap_median,
    cell_intervals,
    paired_difference,
    paired_intervals,
    score_matrix,
)


def test_constant_scores_give_a_zero_width_interval():
    interval = bootstrap_median(np.full((3, 8), 4.5), n_resamples=500)
    assert interval == Interval(4.5, 4.5, 4.5, 3, 8)
    assert interval.excludes(0.0) and not interval.excludes(4.5)


def test_a_shift_on_every_track_is_a_paired_difference_of_exactly_the_shift():
    rng = np.random.default_rng(1)
    baseline = rng.normal(5.0, 3.0, (3, 20))  # tracks differ by several dB
    interval = paired_difference(baseline + 1.0, baseline, n_resamples=1000)
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((1.0, 1.0, 1.0))
    assert interval.excludes(0.0)
    # unpaired, the same shift drowns in the spread of the tracks
    unpaired = bootstrap_median(baseline + 1.0, n_resamples=1000)
    assert unpaired.high - unpaired.low > 1.0


def test_median_and_interval_of_a_known_matrix():
    scores = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, np.nan]])
    interval = bootstrap_median(scores, n_resamples=2000)
    assert interval.estimate == 3.0  # median of the 5 finite values
    assert (interval.n_seeds, interval.n_tracks) == (2, 3)
    assert 1.0 <= interval.low <= interval.estimate <= interval.high <= 5.0
    assert bootstrap_median(scores, n_resamples=2000) == interval  # fixed generator seed
    assert bootstrap_median([2.0, 4.0], n_resamples=10).n_seeds == 1  # 1-D: one seed


def test_empty_and_invalid_input():
    empty = bootstrap_median(np.full((2, 3), np.nan), n_resamples=10)
    assert math.isnan(empty.estimate) and not empty.excludes(0.0) and empty.format() == "-"
    with pytest.raises(ValueError, match="shape"):
        paired_difference(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_median([1.0, 2.0], confidence=1.5)


def test_coverage_on_normal_samples():
    """The 95 % interval of the median of 40 normal tracks covers the true median (0) in
    about 95 % of 200 simulated studies (percentile bootstrap of a median: within 88-99 %)."""
    rng = np.random.default_rng(7)
    covered = [
        not bootstrap_median(rng.normal(0.0, 1.0, 40), n_resamples=1000, seed=i).excludes(0.0)
        for i in range(200)
    ]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_resampling_seeds_widens_the_interval_when_seeds_disagree():
    tracks = np.linspace(-1.0, 1.0, 30)
    agree = np.stack([tracks, tracks, tracks])
    disagree = np.stack([tracks - 2.0, tracks, tracks + 2.0])
    narrow = bootstrap_median(agree, n_resamples=2000)
    wide = bootstrap_median(disagree, n_resamples=2000)
    assert wide.high - wide.low > 2 * (narrow.high - narrow.low)


def test_score_matrix_aligns_tracks_and_seeds():
    matrix = score_matrix({42: {"b": 2.0, "a": 1.0}, 43: {"a": 3.0, "c": 4.0}})
    np.testing.assert_array_equal(matrix, [[1.0, 2.0, np.nan], [3.0, np.nan, 4.0]])
    assert score_matrix({1: {"a": 1.0}}, tracks=["z", "a"]).tolist()[0][1] == 1.0


def _record(seq_len: float, seed: int, scores: dict[str, float], **extra) -> dict:
    return {
        "status": "ok",
        "src": "vocals",
        "model": "umx:none",
        "seq_len": seq_len,
        "seed": seed,
        "track_sdr": scores,
        **extra,
    }


def test_cells_of_one_run_pair_by_track_and_cells_of_several_never_pair_by_seed():
    tracks = {f"t{i}": float(i) for i in range(10)}
    records = [
        _record(7.0, 1, tracks),
        _record(15.0, 2, {t: v + 0.5 for t, v in tracks.items()}),  # one run each: paired
        *(_record(30.0, seed, {t: v + seed for t, v in tracks.items()}) for seed in (1, 2)),
        _record(60.0, 1, {}),  # no per-track scores: not a cell
        {**_record(7.0, 5, tracks), "status": "failed"},
    ]
    cells = cell_intervals(records, n_resamples=500)["vocals"]["umx:none"]
    assert sorted(cells) == [7.0, 15.0, 30.0]
    assert (cells[30.0].n_seeds, cells[30.0].n_tracks) == (2, 10)
    paired = paired_intervals(records, n_resamples=500)["vocals"]["umx:none"]
    assert list(paired) == [15.0]  # 30 s holds two independent trainings: not paired
    assert (paired[15.0].low, paired[15.0].estimate, paired[15.0].high) == (0.5, 0.5, 0.5)
    assert paired[15.0].format(sign=True) == "+0.50 [0.50, 0.50]"
