"""The context study's statistics: the run as the unit, two-level bootstrap, Holm, TOST."""

from __future__ import annotations

import numpy as np
import pytest

from longsep.study import arms
from longsep.study.arms import Group, contrast, evaluate_family, holm


def _simulate(rng, delta, runs=4, tracks=10, run_sd=0.3, inter_sd=0.4, noise_sd=0.3):
    """Two arms of ``runs`` trainings scored on the same ``tracks``: track difficulty
    (shared), track x arm interaction, a run effect and per-(run, track) noise."""
    difficulty = rng.normal(0.0, 2.0, tracks)
    out = []
    for mean in (0.0, delta):
        inter = rng.normal(0.0, inter_sd, tracks)
        run = rng.normal(0.0, run_sd, runs)
        noise = rng.normal(0.0, noise_sd, (runs, tracks))
        out.append(mean + difficulty + inter + run[:, None] + noise)
    return out


def _coverage(sims=300, **kwargs):
    rng, hits = np.random.default_rng(1), 0
    for i in range(sims):
        a, b = _simulate(rng, 0.5, **kwargs)
        c = contrast("B - A", [Group("B", 1, b), Group("A", -1, a)], resamples=2000, seed=i)
        hits += c.low <= 0.5 <= c.high
    return hits / sims


def test_interval_covers_a_known_contrast_at_its_nominal_rate():
    """4 runs x 10 tracks, track-level variation larger than the run spread: ~95 %."""
    assert 0.93 <= _coverage() <= 0.98


def test_small_sample_correction_helps_when_the_run_spread_dominates(monkeypatch):
    """With a run spread of 0.6 dB and 4 runs the corrected bootstrap still under-covers
    (about 90 %), but less than a plain one (about 87 %); hence a fifth seed is added
    when the observed spread exceeds 0.3 dB (the pre-registration)."""
    dominated = {"run_sd": 0.6, "inter_sd": 0.2, "noise_sd": 0.2}
    corrected = _coverage(**dominated)
    monkeypatch.setattr(arms, "_adjusted", lambda groups: [g.scores for g in groups])
    plain = _coverage(**dominated)
    assert corrected >= 0.88 and corrected > plain


def test_no_run_or_track_noise_gives_the_exact_contrast():
    a = np.full((4, 10), 3.0)
    b = np.full((5, 10), 3.7)
    c = contrast("B - A", [Group("B", 1, b), Group("A", -1, a)], resamples=500)
    assert c.estimate == pytest.approx(0.7)
    assert c.low == pytest.approx(0.7) and c.high == pytest.approx(0.7)
    assert c.p == 0.0 and c.runs == {"B": 5, "A": 4}


def test_runs_are_not_paired_by_seed():
    """Reordering one arm's runs (what pairing by seed number would change) changes
    nothing but Monte-Carlo noise: runs are resampled within their arm."""
    rng = np.random.default_rng(3)
    a, b = _simulate(rng, 0.2)
    first = contrast("x", [Group("B", 1, b), Group("A", -1, a)], resamples=20_000)
    second = contrast("x", [Group("B", 1, b), Group("A", -1, a[::-1])], resamples=20_000)
    assert first.estimate == pytest.approx(second.estimate)
    assert first.low == pytest.approx(second.low, abs=0.03)
    assert first.high == pytest.approx(second.high, abs=0.03)


def test_holm_matches_the_step_down_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1, but not below 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_equivalence_needs_the_whole_tost_interval_inside_the_bound():
    rng = np.random.default_rng(5)
    tight = [Group("B", 1, 5 + rng.normal(0, 0.05, (6, 10))), Group("A", -1, np.full((6, 10), 5.0))]
    wide = [Group("B", 1, 5 + rng.normal(0, 1.0, (4, 10))), Group("A", -1, np.full((4, 10), 5.0))]
    done = evaluate_family([contrast("tight", tight), contrast("wide", wide)])
    assert done[0].verdict() == "equivalent" and done[0].eq_high < arms.EQUIVALENCE_BOUND
    assert done[1].verdict() == "inconclusive"
    assert done[1].holm_high - done[1].holm_low >= done[1].high - done[1].low  # stricter level


def test_tied_p_values_get_the_same_holm_step_whatever_their_order():
    """Two large effects both at p = 0 and a null one: both large ones get the family's
    strictest level (alpha / 3), in either order; the null one the last step (alpha / 1)."""
    rng = np.random.default_rng(6)
    made = [
        contrast(
            name,
            [
                Group("B", 1, shift + rng.normal(0, 0.5, (4, 10))),
                Group("A", -1, rng.normal(0, 0.5, (4, 10))),
            ],
        )
        for name, shift in (("big", 5.0), ("bigger", 6.0), ("null", 0.0))
    ]
    assert made[0].p == made[1].p == 0.0 and made[2].p > 0.05
    for order in (made, made[::-1]):
        done = {c.name: c for c in evaluate_family(order)}
        for name in ("big", "bigger"):
            level = arms.ALPHA / 3
            low, high = np.quantile(done[name].draws, [level / 2, 1 - level / 2])
            assert (done[name].holm_low, done[name].holm_high) == pytest.approx((low, high))
        assert (done["null"].holm_low, done["null"].holm_high) == pytest.approx(
            (done["null"].low, done["null"].high)
        )


def _fake_sweep(root, rng, shift, run_sd=0.1, effect=0.8, src="vocals", seeds=(42, 43, 44, 45),
                arms_=("A", "B", "C")):  # fmt: skip
    """A committed-copy layout: per run result.json, eval scores and, for B / C,
    intervention windows; ``shift[arm]`` is the arm's true SDR offset, ``effect`` arm B's
    true intervention effect, ``run_sd`` the spread of the run means."""
    import json

    tracks = [f"song {i}" for i in range(8)]
    difficulty = np.random.default_rng(7).normal(5.0, 2.0, len(tracks))
    layout = {"A": (7, None), "B": (30, None), "C": (30, 7.5)}
    for arm in arms_:
        seq_len, reach = layout[arm]
        for seed in seeds:
            job = root / f"umx_small-{src}-{seq_len}s{'-reach7.5s' if reach else ''}-seed{seed}"
            folder = job / "eval" / "rendered" / "test"
            folder.mkdir(parents=True)
            run = rng.normal(0, run_sd)
            rows = ["track,target,metric,score"] + [
                f"{t},{src},SDR,{d + shift[arm] + run + rng.normal(0, 0.1):.4f}"
                for t, d in zip(tracks, difficulty, strict=True)
            ]
            (folder / "scores.csv").write_text("\n".join(rows) + "\n")
            record = {
                "status": "ok", "separator": "umx_small", "attention": "none",
                "model": "umx_small:none", "src": src, "seq_len": seq_len, "arm": arm,
                "reach": reach, "seed": seed, "run_dir": str(job), "eval_dir": str(folder),
            }  # fmt: skip
            (job / "result.json").write_text(json.dumps(record))
            if arm != "A":
                true = effect if arm == "B" else 0.0
                lines = ["track,donor,start_seconds,sdr_true,sdr_replaced"] + [
                    f"{t},x,{w},{6 + true + rng.normal(0, 0.05):.4f},{6:.4f}"
                    for t in tracks
                    for w in range(3)
                ]
                (job / "intervention.csv").write_text("\n".join(lines) + "\n")


def test_study_command_reports_the_pre_registered_contrasts(tmp_path, capsys):
    """A sweep where B = A + 1 dB, C = A and only B's surroundings matter: the report
    says B − A and B − C higher, C − A equivalent, the intervention higher in B and
    equivalent in C."""
    from longsep.cli.study import main

    _fake_sweep(tmp_path / "sweep", np.random.default_rng(0), {"A": 0.0, "B": 1.0, "C": 0.0})
    assert main([str(tmp_path / "sweep"), "--arms", "--out", str(tmp_path / "out")]) == 0
    rows = {
        (r["family"], r["contrast"]): r
        for r in __import__("csv").DictReader((tmp_path / "out" / "contrasts.csv").open())
    }
    assert rows[("1", "B - A")]["verdict"] == "higher"
    assert float(rows[("1", "B - A")]["estimate"]) == pytest.approx(1.0, abs=0.15)
    assert rows[("1", "B - C")]["verdict"] == "higher"
    assert rows[("1", "C - A")]["verdict"] == "equivalent"
    assert rows[("2", "intervention (B)")]["verdict"] == "higher"
    assert rows[("negative", "intervention (C)")]["verdict"] == "equivalent"
    assert rows[("1", "B - A")]["runs"] == "B:4 A:4"
    assert (tmp_path / "out" / "context_effects.png").stat().st_size > 0
    assert "Family 1" in capsys.readouterr().out
    assert "## Commands and compute" in (tmp_path / "out" / "arms.md").read_text()


def test_jobs_the_sweep_skips_do_not_widen_the_families(tmp_path):
    """The grid also starts the invalid and excluded separator / attention pairs, which
    write ``skipped`` records: the Holm families count only the registered models."""
    import csv
    import json

    from longsep.cli.study import main

    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, np.random.default_rng(0), {"A": 0.0, "B": 0.3, "C": 0.0})

    def contrasts(out):
        assert main([str(sweep), "--arms", "--out", str(out)]) == 0
        return list(csv.DictReader((out / "contrasts.csv").open()))

    before = contrasts(tmp_path / "before")
    for seed in (42, 43, 44, 45):  # as train.py writes them for umx_small x qkvg1D
        job = sweep / f"umx_small-qkvg1D-vocals-7s-seed{seed}"
        job.mkdir()
        record = {
            "status": "skipped", "reason": "invalid sweep combination", "seed": seed,
            "separator": "umx_small", "attention": "qkvg1D", "model": "umx_small:qkvg1D",
            "src": "vocals", "seq_len": 7, "arm": "A", "run_dir": str(job),
        }  # fmt: skip
        (job / "result.json").write_text(json.dumps(record))
    assert contrasts(tmp_path / "after") == before
