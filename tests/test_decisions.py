"""The context study's pre-registered decisions, read off simulated sweeps with a known
answer, the registered family sizes, the spread rule and the control's verdict file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_arms import _fake_sweep

from longsep.errors import LongsepError
from longsep.study.arms import Group, contrast, evaluate_family, holm
from longsep.study.arms_report import write_arms_report
from longsep.study.control import has_responded, summary, within_registered
from longsep.study.decisions import read_control, spread_breaches
from longsep.study.records import load_study

NULL = {"A": 0.0, "B": 0.0, "C": 0.0}
LONGER_HELPS = {"A": 0.0, "B": 1.0, "C": 0.0}


def _control(tmp_path, responded: bool):
    path = tmp_path / f"control-{responded}"
    path.mkdir()
    (path / "control.json").write_text(json.dumps({"responded": responded}))
    return read_control(path)


def _decisions(sweep, out, control=None, oracle=None) -> dict[str, str]:
    """``{question: answer}`` of the one model in arms.md (``answer`` for a withheld one)."""
    write_arms_report(sweep, load_study(sweep), out, resamples=2000, control=control,
                      oracle=oracle)  # fmt: skip
    text = (out / "arms.md").read_text()
    section = text.split("## Decisions (pre-registered rules)")[1].split("## Family 1")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    answers = {q.strip(): a.strip() for q, a in rows if q.strip() != "question"}
    answers["text"] = section
    return answers


def test_a_sweep_where_longer_input_and_far_context_help(tmp_path):
    """B = A + 1 dB, C = A, an intervention effect in B only: every positive rule fires."""
    _fake_sweep(tmp_path / "sweep", np.random.default_rng(0), LONGER_HELPS)
    d = _decisions(tmp_path / "sweep", tmp_path / "out", _control(tmp_path, True))
    assert d["Longer input (B − A)"] == "helps"
    assert d["Models use far context (intervention)"] == "yes"
    assert d["Far context improves separation (B − C)"] == "yes"
    assert d["No usable far-context benefit above 0.3 dB"].startswith("not shown")
    assert d["Chunk count matters (C − A)"] == "not shown"
    assert "**umx_small:none / vocals**" in d["text"] and "Control: responded" in d["text"]


@pytest.mark.parametrize(
    ("responded", "answer"),
    [
        (True, "holds"),
        (False, "no benefit detected by a control that could not respond"),
        (None, "no benefit detected; no control result was given"),
    ],
)
def test_a_null_result_is_only_as_strong_as_its_control(tmp_path, responded, answer):
    """A = B = C and no intervention effect: equivalence, and the 0.3-dB bound reads the
    control's verdict."""
    _fake_sweep(tmp_path / "sweep", np.random.default_rng(1), NULL, effect=0.0)
    control = None if responded is None else _control(tmp_path, responded)
    d = _decisions(tmp_path / "sweep", tmp_path / "out", control)
    assert d["Longer input (B − A)"] == "equivalent"
    assert d["Models use far context (intervention)"] == "not shown"
    assert d["No usable far-context benefit above 0.3 dB"].startswith(answer)


def test_an_intervention_that_leaks_in_arm_c_makes_no_claim(tmp_path):
    """An effect in arm C (the test's own negative) makes the intervention unreliable."""
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, np.random.default_rng(2), LONGER_HELPS)
    for path in sweep.glob("*reach7.5s*/intervention.csv"):
        rows = list(csv.DictReader(path.open()))
        lines = ["track,donor,start_seconds,sdr_true,sdr_replaced"] + [
            f"{r['track']},x,{r['start_seconds']},{float(r['sdr_true']) + 0.8:.4f},6" for r in rows
        ]
        path.write_text("\n".join(lines) + "\n")
    d = _decisions(sweep, tmp_path / "out")
    assert d["Models use far context (intervention)"].startswith("unreliable")


def test_a_wide_run_spread_withholds_every_contrast_until_seed_46_has_run(tmp_path):
    """The registration adds seed 46 "before any contrast is computed": no family table,
    contrasts.csv or figure is written until it has run in arms B and C."""
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, np.random.default_rng(3), NULL, run_sd=1.5)
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [+experiment=context_study_rendered]\n"
    )
    d = _decisions(sweep, tmp_path / "out")
    assert "withheld" in d["text"] and "Longer input (B − A)" not in d
    assert "## Family" not in (tmp_path / "out" / "arms.md").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["arms.md"]
    assert (
        "python train.py +experiment=context_study_rendered hydra.sweeper.params.seed=46 "
        "\"hydra.sweeper.params.arm='B,C'\"" in d["text"]
    )
    _fake_sweep(sweep, np.random.default_rng(4), NULL, run_sd=1.5, seeds=(46,), arms_=("B", "C"))
    d = _decisions(sweep, tmp_path / "out2")
    assert "Seed 46 has run" in d["text"] and "Longer input (B − A)" in d
    assert (tmp_path / "out2" / "contrasts.csv").is_file()


def test_the_spread_rule_compares_runs_on_the_tracks_they_all_scored():
    """A track one run could not score does not make the runs' means differ."""
    runs = {"r1": {"t1": 5.0, "t2": 15.0}, "r2": {"t1": 5.0}, "r3": {"t1": 5.0, "t2": 15.0}}
    assert spread_breaches({"m": {"B": runs}}) == []
    runs["r2"]["t1"] = 6.0
    assert spread_breaches({"m": {"B": runs}}) == [("m", "B", pytest.approx(0.57735, abs=1e-4))]


def test_a_model_below_half_the_oracle_is_flagged_under_trained(tmp_path):
    """Simulated scores sit near 5 dB: under half of a 20-dB oracle, over half of 8 dB."""
    _fake_sweep(tmp_path / "sweep", np.random.default_rng(5), NULL)
    low = _decisions(tmp_path / "sweep", tmp_path / "a", oracle={"median": {"vocals": {"SDR": 20}}})
    assert "Under-trained (below half the oracle's 20.00 dB): A " in low["text"]
    high = _decisions(tmp_path / "sweep", tmp_path / "b", oracle={"median": {"vocals": {"SDR": 8}}})
    assert "Under-trained" not in high["text"]


def test_sources_are_never_pooled_and_the_family_has_its_registered_size(tmp_path):
    """Two sources of one model: two models in the report, 6 contrasts in family 1; with one
    source's runs still missing, family 1 keeps its size (Holm over 6, not 3)."""
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, np.random.default_rng(6), LONGER_HELPS, src="vocals")
    _fake_sweep(sweep, np.random.default_rng(7), NULL, src="drums")
    write_arms_report(sweep, load_study(sweep), tmp_path / "out", resamples=2000)
    rows = list(csv.DictReader((tmp_path / "out" / "contrasts.csv").open()))
    family1 = [r for r in rows if r["family"] == "1"]
    assert {r["model"] for r in family1} == {"umx_small:none / vocals", "umx_small:none / drums"}
    assert all(r["runs"] in ("B:4 A:4", "B:4 C:4", "C:4 A:4") for r in family1)
    records = load_study(sweep)
    for r in records:  # the drums runs are still training: records without scores
        if r["src"] == "drums":
            r.pop("track_sdr", None)
    write_arms_report(sweep, records, tmp_path / "partial", resamples=2000)
    partial = list(csv.DictReader((tmp_path / "partial" / "contrasts.csv").open()))
    full = {(r["contrast"], r["model"]): r for r in family1}
    for row in (r for r in partial if r["family"] == "1"):  # vocals only, still 3 of 6
        same = full[(row["contrast"], row["model"])]
        for key in ("estimate", "p", "eq_low", "eq_high"):  # the TOST level: 1 - 2 * 0.05 / 6
            assert row[key] == same[key], key
        assert float(row["p_holm"]) >= min(1.0, 4 * float(row["p"]))  # at worst the 3rd of 6


def test_holm_over_a_registered_family_larger_than_the_contrasts_at_hand():
    """By hand: p = 0.01, 0.02 in a family of 6 adjust to 6 x 0.01 and 5 x 0.02."""
    assert holm([0.02, 0.01], m=6) == pytest.approx([0.10, 0.06])
    rng = np.random.default_rng(0)
    g = [Group("B", 1, rng.normal(1, 1, (4, 10))), Group("A", -1, rng.normal(0, 1, (4, 10)))]
    c = contrast("B - A", g, resamples=4000)
    (alone,) = evaluate_family([c])
    (in_six,) = evaluate_family([c], m=6)
    assert (alone.eq_low, alone.eq_high) == pytest.approx(np.quantile(c.draws, [0.05, 0.95]))
    assert (in_six.eq_low, in_six.eq_high) == pytest.approx(
        np.quantile(c.draws, [0.05 / 6, 1 - 0.05 / 6])
    )


def test_the_control_writes_the_verdict_the_decisions_read(tmp_path):
    rng = np.random.default_rng(0)
    groups = {n: {f"run{i}": {"s": 0.0} for i in range(3)} for n in ("positive:B", "negative:B")}
    up = [Group(n, w, rng.normal(m, 0.1, (3, 6))) for n, w, m in (("B+", 1, 2.0), ("C+", -1, 0.0))]
    flat = [Group(n, w, rng.normal(0, 0.1, (3, 6))) for n, w in (("B-", 1), ("C-", -1))]
    inter = [*up, *(Group(g.name, -g.weight, g.scores) for g in flat)]
    results = [contrast("B - C (positive)", up), contrast("B - C (negative)", flat),
               contrast("interaction", inter)]  # fmt: skip
    assert has_responded(results)
    data = summary(results, groups)
    (tmp_path / "control.json").write_text(json.dumps(data))
    control = read_control(tmp_path)
    assert control.responded and control.runs == {"negative:B": 3, "positive:B": 3}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LongsepError, match="bad.json: not a control result"):
        read_control(tmp_path / "bad.json")


def test_arm_c_is_its_own_model_in_the_cell_tables(tmp_path, capsys):
    """results.md never pools arm C with arm B (both 30 s): B's cell holds B's 4 runs and
    sits 1 dB above C's, as simulated."""
    from longsep.cli.study import main

    _fake_sweep(tmp_path / "sweep", np.random.default_rng(0), LONGER_HELPS)
    assert (
        main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--resamples", "500"]) == 0
    )
    table = (tmp_path / "out" / "results.md").read_text()
    b = next(line for line in table.splitlines() if line.startswith("| umx_small:none |"))
    c = next(
        line for line in table.splitlines() if line.startswith("| umx_small:none reach 7.5 s |")
    )
    assert b.endswith("(4×8) |") and c.endswith("(4×8) |")
    b30, c30 = (float(row.split("|")[3].split()[0]) for row in (b, c))
    assert b30 - c30 == pytest.approx(1.0, abs=0.3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arms", "--control", "missing"], "missing: not a control result"),
        (["--control", "missing"], "--control is read by --arms only"),
    ],
)
def test_a_bad_control_is_a_one_line_error_before_anything_is_written(
    tmp_path, capsys, extra, message
):
    from longsep.cli.study import main

    _fake_sweep(tmp_path / "sweep", np.random.default_rng(0), NULL)
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), *extra])
    assert stop.value.code == 2 and not (tmp_path / "out").exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line


def _within_sweep(root, data: str, c_noise: float = 0.0):
    """A committed copy of a control sweep's positive runs: ``control_within.csv`` per run,
    the solo worth 1 dB in arm B, ``c_noise`` of effect in arm C (exactly 0 by default)."""
    rng = np.random.default_rng(0)
    for arm, effect, noise in (("B", 1.0, 0.05), ("C", 0.0, c_noise)):
        for seed in (42, 43, 44):
            job = root / data / f"run-{arm}-{seed}"
            job.mkdir(parents=True)
            record = {"status": "ok", "model": "m:q", "src": "vocals", "arm": arm,
                      "seed": seed, "data": data, "run_dir": str(job)}  # fmt: skip
            rows = ["song,sdr_with_solo,sdr_solo_removed"] + [
                f"song {i},{2 + effect + noise * rng.normal():.4f},2" for i in range(6)
            ]
            (job / "result.json").write_text(json.dumps(record))
            (job / "control_within.csv").write_text("\n".join(rows) + "\n")


def test_the_solo_effect_within_models_is_read_from_a_committed_copy(tmp_path):
    """Per (run, song) SDR with the solo minus without, read from ``control_within.csv``
    files as ``collect`` lands them (no models); exploratory in the second design."""
    from longsep.study.control import analyse_within, within_check, within_markdown

    _within_sweep(tmp_path, "synth_positive_near", c_noise=0.05)
    groups = analyse_within(tmp_path)
    assert {a: len(runs) for a, runs in groups.items()} == {"B": 3, "C": 3}
    check = within_check(groups, within_registered(load_study(tmp_path)))
    b, c, diff = check.results
    assert b.estimate == pytest.approx(1.0, abs=0.05) and b.low > 0.9
    assert c.low < 0 < c.high and diff.estimate == pytest.approx(1.0, abs=0.05)
    text = within_markdown(check)
    assert f"| solo effect in B | {b.estimate:+.2f} | [{b.low:+.2f}, {b.high:+.2f}] |" in text
    assert "Exploratory, not registered" in text and "detect" not in text
    assert within_check({"B": groups["B"]}) is None and within_markdown(None) == ""


@pytest.mark.parametrize(("c_noise", "detected"), [(0.0, True), (0.05, False)])
def test_the_third_designs_within_model_criterion_reaches_the_decisions(
    tmp_path, c_noise, detected
):
    """The third design registers the check as a criterion (change log 2026-12-07 03:00
    UTC): B's effect above 0 with arm C's exactly 0. It is written to control.json, read by
    read_control and stated beside the grid's "models use far context" decision."""
    from longsep.study.control import analyse_within, within_check, within_markdown
    from longsep.study.decisions import model_decisions

    _within_sweep(tmp_path / "sweep", "synth_positive_whole", c_noise)
    check = within_check(
        analyse_within(tmp_path / "sweep"), within_registered(load_study(tmp_path / "sweep"))
    )
    assert check.registered and check.detected is detected
    verdict = "detects" if detected else "does not detect"
    assert f"**The same-weights test {verdict} use of the solo**" in within_markdown(check)
    rng = np.random.default_rng(0)
    flat = [Group(n, w, rng.normal(0, 0.1, (3, 6))) for n, w in (("B", 1), ("C", -1))]
    results = [contrast(name, flat) for name in ("B - C (positive)", "B - C (negative)", "i")]
    (tmp_path / "control.json").write_text(json.dumps(summary(results, {}, check)))
    control = read_control(tmp_path)
    assert control.solo_use_detected is detected and not control.responded
    (effect,) = evaluate_family([contrast("effect", [Group("B", 1, rng.normal(0, 0.05, (3, 6)))])])
    rows = dict(model_decisions({}, effect, effect, control))
    use = rows["Models use far context (intervention)"]
    assert use.startswith("not shown") and ("did not detect" in use) is not detected


def test_an_earlier_designs_control_json_has_no_criterion(tmp_path):
    (tmp_path / "control.json").write_text(
        json.dumps({"responded": False, "within_model": {"registered": False, "detected": True}})
    )
    assert read_control(tmp_path).solo_use_detected is None


def test_finished_runs_a_contrast_cannot_read_are_named(tmp_path):
    """A finished run without per-track scores or (in B / C) without its intervention is
    not silently dropped: the decisions section names it."""
    sweep = tmp_path / "sweep"
    _fake_sweep(sweep, np.random.default_rng(0), LONGER_HELPS)
    (sweep / "umx_small-vocals-7s-seed43" / "eval" / "rendered" / "test" / "scores.csv").unlink()
    (sweep / "umx_small-vocals-30s-seed44" / "intervention.csv").unlink()
    text = _decisions(sweep, tmp_path / "out", _control(tmp_path, True))["text"]
    assert (
        "Finished runs missing from the contrasts: umx_small-vocals-7s-seed43 (no per-track "
        "scores), umx_small-vocals-30s-seed44 (no intervention)." in text
    )
    complete = tmp_path / "complete"
    _fake_sweep(complete, np.random.default_rng(0), LONGER_HELPS)
    assert "missing from" not in _decisions(complete, tmp_path / "out2")["text"]


def test_the_decisions_name_the_controls_runs(tmp_path):
    """A reader can see that the control read is the complete one (3 runs a group)."""
    from longsep.study.decisions import decisions_markdown

    runs = {"negative:B": 3, "negative:C": 3, "positive:B": 3, "positive:C": 2}
    (tmp_path / "control.json").write_text(json.dumps({"responded": False, "runs": runs}))
    text = decisions_markdown({}, [], [], [], read_control(tmp_path))
    assert "did not respond; runs negative:B 3, negative:C 3, positive:B 3, positive:C 2" in text
