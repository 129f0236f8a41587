"""Benchmark scripts run as typed: ``gpu_check.py --dry-run`` and ``wiener_speed.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ATTENTIONS = ("mha", "qkv1D", "qkv2D", "qkvg1D")
STUDY_MODELS = {"umx"} | {
    f"{s}:{a}" for s in ("umx_transformer", "auto_transformer") for a in ATTENTIONS
}
DRY_RUN_SEQ_LENS = {1.0, 2.0}


def run_script(*args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, list]:
    """Run ``python benchmarks/<args>`` from the repo root; return it and its JSON lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done, [json.loads(line) for line in lines]  # every stdout line is JSON


def test_gpu_check_dry_run_covers_every_study_model():
    done, rows = run_script("benchmarks/gpu_check.py", "--dry-run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows and all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    steps = [r for r in rows if r["check"] == "train_step"]
    covered = {(r["model"], r["seq_len"]) for r in steps}
    assert covered == {(m, s) for m in STUDY_MODELS for s in DRY_RUN_SEQ_LENS}
    assert len(steps) == len(covered)
    for r in steps:
        assert r["step_s"] > 0 and r["loss_finite"]
        assert r["batch"] == int(2.0 // r["seq_len"])  # the dry run's 2-s seconds budget
        assert (r["sdpa"] == "none") == (r["model"] == "umx")  # umx makes no SDPA call
        if r["model"] != "umx":
            assert r["time_vs_umx"] > 0
    (separate,) = [r for r in rows if r["check"] == "separate"]
    assert separate["finite"] and separate["output_shape"] == [1, 4, 2, 5 * 44100]
    summary = rows[-1]
    assert summary["check"] == "summary" and summary["failed"] == []
    assert summary["checks"] == len(rows) - 1 and summary["torch"]


def test_gpu_check_reports_a_failure_and_exits_nonzero():
    # umx takes no attention: building it fails, is reported, and the run still ends
    done, rows = run_script(
        "benchmarks/gpu_check.py",
        "--dry-run",
        "--models",
        "umx:qkv1D",
        "umx",
        "--seq-lens",
        "1",
        "--no-separate",
    )
    assert done.returncode == 1
    by_model = {r.get("model"): r for r in rows}
    assert by_model["umx"]["status"] == "ok"
    assert by_model["umx:qkv1D"]["status"] == "failed"
    assert "attention" in by_model["umx:qkv1D"]["error"]
    assert rows[-1]["check"] == "summary" and rows[-1]["failed"] == ["umx:qkv1D@1s"]


def test_wiener_speed_agrees_with_norbert():
    done, rows = run_script("benchmarks/wiener_speed.py", "--seconds", "5", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = rows
    assert row["frames"] == 5 * 44100 // 1024 + 1 and row["bins"] == 2049
    assert row["sources"] == 4 and row["channels"] == 2 and row["niter"] == 1
    assert row["ours_s"] > 0 and row["norbert_s"] > 0
    assert row["ratio"] == "ours/norbert" and row["wall"] > 0
    assert row["max_rel_disagreement"] <= 1e-4


def test_evaluate_speed_runs_both_commands_and_compares_their_frames(tmp_path):
    data = [
        f"data.root={tmp_path / 'synth'}",
        "data.generate.n_train=1",
        "data.generate.n_valid=0",
        "data.generate.n_test=1",
        "data.generate.min_seconds=4",
        "data.generate.max_seconds=5",
    ]
    done, rows = run_script("benchmarks/evaluate_speed.py", "--", *data)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = rows
    assert row["tracks"] == 1 and 4 <= row["audio_s"] <= 5
    assert row["fast_s"] > 0 and row["museval_s"] > 0
    assert row["ratio"] == pytest.approx(row["museval_s"] / row["fast_s"], rel=0.01)
    assert row["frames"] == 4 * 4 * 4  # 4 targets x 4 metrics x 4 one-second frames
    assert row["nan_mismatches"] == 0 and row["max_frame_diff_db"] <= 0.01


def test_separate_speed_runs_ours_in_memory_and_file_to_file_against_openunmix():
    done, rows = run_script(
        "benchmarks/separate_speed.py", "--seconds", "4", "--hidden", "16", "--threads", "1"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours, ours_file, theirs, ratios = rows
    assert (ours["impl"], ours_file["impl"], theirs["impl"]) == (
        "ours",
        "ours-to-file",
        "openunmix",
    )
    assert ours["finite"] and theirs["finite"]
    assert ours["output_shape"] == theirs["output_shape"] == [1, 4, 2, 4 * 44100]
    # four float32 stereo wav stems of the 4-s track
    assert ours_file["stems_mb"] == pytest.approx(4 * 4 * 44100 * 2 * 4 / 2**20, abs=0.1)
    assert ratios["wall"] == pytest.approx(ours["wall_s"] / theirs["wall_s"], abs=1e-3)
    assert ratios["wall_file_to_file"] == pytest.approx(
        ours_file["wall_s"] / theirs["wall_s"], abs=1e-3
    )
