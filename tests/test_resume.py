"""Killed runs resume exactly: real train.py processes, SIGKILL, then the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_SYNTH

from longsep.store import read_checkpoint

# shrinking overrides only: tiny data, short chunks, small batches, a checkpoint every 3 steps
SHRINK = [
    *TINY_SYNTH,
    "data.samples_per_track=4",
    "data.batch_size=2",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "callbacks.media=null",
]


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "LONGSEP_ROOT": str(root), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], root: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_when(args: list[str], root: Path, ready, timeout: float = 300) -> None:
    """Start train.py, SIGKILL it once ``ready()`` holds."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    proc = subprocess.Popen(
        cmd, cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "timed out waiting to kill the run"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _step(path: Path) -> int:
    try:
        return int(read_checkpoint(path)["global_step"])
    except Exception:  # not written yet
        return -1


def _last(root: Path) -> list[Path]:
    return sorted(root.glob("runs/*/*/checkpoints/last.ckpt"))


@pytest.mark.timeout(900)
def test_sigkill_mid_epoch_then_ckpt_path_last_is_bit_identical(tmp_path):
    command = ["separator=umx_small", "seq_len=2", "src=vocals"]
    args = [*command, *SHRINK, "trainer.max_steps=20"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    _run(args, whole)

    # epochs are 4 steps (2 tracks x 4 chunks / batch 2); checkpoints at 3, 6, 9, ...
    _kill_when(args, killed, lambda: any(_step(p) >= 9 for p in _last(killed)))
    (first,) = _last(killed)
    at_kill = _step(first)
    assert 9 <= at_kill < 20 and at_kill % 3 == 0
    assert not list(first.parent.glob("last-v*.ckpt")), "one last.ckpt only"
    time.sleep(1.1)  # the resumed run gets its own timestamped directory
    proc = _run([*args, "ckpt_path=last"], killed)
    assert f"resuming from {first}" in proc.stderr + proc.stdout

    ref = read_checkpoint(_last(whole)[0])
    resumed_dir = next(p for p in _last(killed) if p != first)
    out = read_checkpoint(resumed_dir)
    assert out["global_step"] == ref["global_step"] == 20
    assert out["state_dict"].keys() == ref["state_dict"].keys()
    for key, value in ref["state_dict"].items():
        assert torch.equal(out["state_dict"][key], value), key
    for a, b in zip(
        ref["optimizer_states"][0]["state"].values(),
        out["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_or_missing_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    for ckpt, message in ((bad, "cannot read checkpoint"), ("/nonexistent.ckpt", "does not exist")):
        cmd = [sys.executable, str(ROOT / "train.py"), "separator=umx_small", f"ckpt_path={ckpt}"]
        proc = subprocess.run(
            [*cmd, *SHRINK], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True
        )
        assert proc.returncode != 0
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


@pytest.mark.timeout(900)
def test_killed_study_sweep_skips_done_jobs_and_resumes_the_other(tmp_path):
    """The CPU study command as typed, narrowed to 2 jobs: kill it in the second job,
    run the same command again."""
    args = [
        "+experiment=seq_len_study_cpu",
        *SHRINK,
        "hydra.sweeper.params.separator=umx_small",
        "hydra.sweeper.params.attention=default",
        "hydra.sweeper.params.seq_len=2",
        "hydra.sweeper.params.src='vocals,drums'",
        "hydra.sweeper.params.seed=42",
        "trainer.max_steps=24",
        "trainer.val_check_interval=12",
    ]
    sweep = tmp_path / "runs" / "multirun" / "seq_len_study_cpu"
    first, second = sweep / "umx_small-vocals-2s-seed42", sweep / "umx_small-drums-2s-seed42"
    _kill_when(args, tmp_path, lambda: _step(second / "checkpoints" / "last.ckpt") >= 6)
    assert json.loads((first / "result.json").read_text())["status"] == "ok"
    done_at = (first / "result.json").stat().st_mtime_ns
    at_kill = _step(second / "checkpoints" / "last.ckpt")
    assert not (second / "result.json").exists()

    proc = _run(args, tmp_path)
    log = proc.stdout + proc.stderr
    assert "not training it again" in log
    assert f"resuming from {second / 'checkpoints' / 'last.ckpt'}" in log
    assert (first / "result.json").stat().st_mtime_ns == done_at
    result = json.loads((second / "result.json").read_text())
    assert result["status"] == "ok" and result["global_step"] == 24 > at_kill
    assert result["test"]["drums"]["SDR"] is not None
