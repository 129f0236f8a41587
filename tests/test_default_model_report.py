"""experiments/default_model_report.py: paired differences of default-model candidates."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "experiments" / "results" / "soundfonts"


@pytest.fixture(scope="module")
def report():
    path = ROOT / "experiments" / "default_model_report.py"
    spec = importlib.util.spec_from_file_location("default_model_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_uniform_shift_is_the_difference_with_a_degenerate_interval(report):
    songs = {f"song{i}": float(i) for i in range(7)}
    baseline = {"vocals": songs}
    better = {"vocals": {s: v + 1.5 for s, v in songs.items()}}
    oracle = {"vocals": {s: 12.0 for s in songs}}
    rows = report.compare_rows(baseline, {"base": baseline, "better": better}, oracle)
    base, new = rows
    assert (base["diff"], base["songs_better"]) == (0.0, 0)
    assert (new["diff"], new["low"], new["high"]) == (1.5, 1.5, 1.5)
    assert (new["sdr"], new["oracle_share"], new["songs_better"]) == (4.5, 0.375, 7)


def test_report_on_committed_evaluations_matches_their_summaries(report, tmp_path):
    out = tmp_path / "candidates.csv"
    report.main([
        "--oracle", str(RESULTS / "oracle_irm2_timgm6mb"),
        "--baseline", f"shipped={RESULTS / 'before_timgm6mb'}",
        f"two={RESULTS / 'two_soundfont_timgm6mb'}",
        "--out", str(out),
    ])  # fmt: skip
    rows = {(r["candidate"], r["target"]): r for r in csv.DictReader(out.open())}
    for name, folder in (("shipped", "before_timgm6mb"), ("two", "two_soundfont_timgm6mb")):
        median = json.loads((RESULTS / folder / "summary.json").read_text())["median"]
        for target, scores in median.items():
            assert float(rows[name, target]["sdr"]) == pytest.approx(scores["SDR"], abs=1e-3)
    two = rows["two", "vocals"]
    assert float(two["low"]) <= float(two["diff"]) <= float(two["high"])
    assert int(two["songs"]) == 10
    table = out.with_suffix(".md").read_text()  # what the READMEs quote
    diff = f"{float(two['diff']):+.2f} [{float(two['low']):+.2f}, {float(two['high']):+.2f}]"
    assert f"| two | vocals | {float(two['sdr']):.2f} |" in table
    assert diff.replace("-", "−") in table


def test_a_bad_argument_is_one_line(report, capsys):
    with pytest.raises(SystemExit):
        report.main(["--oracle", "x", "--baseline", "nodir", "a=b", "--out", "o.csv"])
    assert "give NAME=DIR" in capsys.readouterr().err
