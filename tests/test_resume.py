"""Killed and interrupted runs resume exactly: real train.py processes, SIGKILL, SIGINT and
SIGTERM, then the same command; ``ckpt_path=last`` picks the run of the same identity."""

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

pytestmark = pytest.mark.integration

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


def _timer(checkpoint: dict) -> dict:
    """The StepTimer's share of a checkpoint: seconds, timed steps and their seconds."""
    return checkpoint["callbacks"]["StepTimer"]


def _last(root: Path) -> list[Path]:
    return sorted(root.glob("runs/*/*/checkpoints/last.ckpt"))


COMMAND = ["separator=umx_small", "seq_len=2", "src=vocals", *SHRINK, "trainer.max_steps=20"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The last checkpoint of :data:`COMMAND` run without interruption."""
    whole = tmp_path_factory.mktemp("whole")
    _run(COMMAND, whole)
    (last,) = _last(whole)
    return read_checkpoint(last)


@pytest.mark.timeout(900)
def test_sigkill_mid_epoch_then_ckpt_path_last_is_bit_identical(tmp_path, uninterrupted):
    args = COMMAND
    killed = tmp_path / "killed"
    killed.mkdir()

    # epochs are 4 steps (2 tracks x 4 chunks / batch 2); checkpoints at 3, 6, 9, ...
    _kill_when(args, killed, lambda: any(_step(p) >= 9 for p in _last(killed)))
    (first,) = _last(killed)
    at_kill = _step(first)
    earlier = _timer(read_checkpoint(first))
    assert earlier["steps"] == at_kill - 1
    assert 9 <= at_kill < 20 and at_kill % 3 == 0
    assert not list(first.parent.glob("last-v*.ckpt")), "one last.ckpt only"
    time.sleep(1.1)  # Hydra makes a new timestamped directory for the resuming command
    proc = _run([*args, "ckpt_path=last"], killed)
    assert f"resuming from {first}" in proc.stderr + proc.stdout
    assert _last(killed) == [first], "the resumed run continues in its own directory"
    assert list(killed.glob("runs/*/*")) == [first.parent.parent]
    assert len(list((first.parent.parent / ".hydra").glob("resumed-*/overrides.yaml"))) == 1
    _assert_same_state(uninterrupted, read_checkpoint(first), 20)
    # the cost of the run is summed over both processes; each leaves its first step untimed
    assert _timer(uninterrupted)["steps"] == 19
    final = _timer(read_checkpoint(first))
    assert final["steps"] == (at_kill - 1) + (20 - at_kill - 1)
    result = json.loads((first.parent.parent / "result.json").read_text())
    assert result["train_seconds"] > earlier["seconds"] > 0
    assert result["train_seconds"] == pytest.approx(final["seconds"], abs=5)


def _interrupt_at(
    args: list[str], root: Path, signum: int | None, step: int, check=lambda: None
) -> subprocess.Popen:
    """Run train.py; once its log shows ``step``, call ``check()`` and send ``signum`` (None:
    let it run on); return the ended process."""
    log = root / "console.log"
    cmd = [sys.executable, str(ROOT / "train.py"), *args, "trainer.log_every_n_steps=1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=_env(root), stdout=out, stderr=out)
        deadline = time.monotonic() + 300
        while f" step {step} " not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "timed out waiting for the step"
            time.sleep(0.02)
        check()
        if signum is not None:
            proc.send_signal(signum)
        proc.wait(timeout=300)
    return proc


@pytest.mark.timeout(900)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_saves_records_and_resumes_exactly(tmp_path, uninterrupted, signum):
    """No step-based checkpoint and none by wall time: what is saved, the interrupt saved."""
    args = [
        *COMMAND,
        "callbacks.last_checkpoint.every_n_train_steps=0",
        "callbacks.last_checkpoint.every_n_minutes=null",
    ]
    proc = _interrupt_at(args, tmp_path, signum, step=5)
    console = (tmp_path / "console.log").read_text()
    assert proc.returncode == 128 + signum, console[-3000:]
    (last,) = _last(tmp_path)
    run_dir = last.parent.parent
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == signal.Signals(signum).name
    assert 5 <= result["global_step"] == _step(last) < 20
    lines = [x for x in console.splitlines() if x.startswith("interrupted by")]
    said = f"interrupted by {result['signal']} at step {result['global_step']}"
    assert len(lines) == 1 and lines[0].startswith(said), console[-3000:]
    assert "Traceback" not in console

    time.sleep(1.1)
    proc = _run([*args, "ckpt_path=last"], tmp_path)
    assert _last(tmp_path) == [last]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    _assert_same_state(uninterrupted, read_checkpoint(last), 20)


@pytest.mark.timeout(900)
def test_ckpt_path_last_resumes_the_run_of_its_own_seed_only(tmp_path):
    """Two runs with one name, seeds 1 and 2, both interrupted: each resumes its own; a
    third seed has nothing to resume and says which key differs."""
    dirs = {}
    for seed in (1, 2):
        proc = _interrupt_at([*COMMAND, f"seed={seed}"], tmp_path, signal.SIGINT, step=4)
        assert proc.returncode == 130
        (new,) = set(p.parent.parent for p in _last(tmp_path)) - set(dirs.values())
        dirs[seed] = new
        time.sleep(1.1)
    for seed in (2, 1):
        proc = _run([*COMMAND, f"seed={seed}", "ckpt_path=last"], tmp_path)
        said = proc.stdout + proc.stderr
        assert f"resuming from {dirs[seed] / 'checkpoints' / 'last.ckpt'}" in said
        assert json.loads((dirs[seed] / "result.json").read_text())["seed"] == seed
        time.sleep(1.1)
    assert sorted(p.parent.parent for p in _last(tmp_path)) == sorted(dirs.values())

    cmd = [sys.executable, str(ROOT / "train.py"), *COMMAND, "seed=3", "ckpt_path=last"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2
    errors = [x for x in (proc.stdout + proc.stderr).splitlines() if "ckpt_path=last" in x]
    assert len(errors) == 1 and "seed: 3 here, 1 there" in errors[0], proc.stderr[-2000:]
    assert len(list(tmp_path.glob("runs/*/*"))) == 2, "no directory for the refused run"


def _assert_same_state(ref: dict, out: dict, step: int) -> None:
    """Weights and optimizer states ``torch.equal``, both at ``step``."""
    assert out["global_step"] == ref["global_step"] == step
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


# the CPU study's sweep narrowed to 2 jobs, one source each
STUDY_SWEEP = [
    "+experiment=seq_len_study_cpu",
    *SHRINK,
    "hydra.sweeper.params.separator=umx_small",
    "hydra.sweeper.params.attention=default",
    "hydra.sweeper.params.seq_len=2",
    "hydra.sweeper.params.src='vocals,drums'",
    "hydra.sweeper.params.seed=42",
]


def _sweep_jobs(root: Path) -> tuple[Path, Path]:
    """The directories of :data:`STUDY_SWEEP`'s two jobs, in the order they run."""
    sweep = root / "runs" / "multirun" / "seq_len_study_cpu"
    return sweep / "umx_small-vocals-2s-seed42", sweep / "umx_small-drums-2s-seed42"


@pytest.mark.timeout(900)
def test_killed_study_sweep_skips_done_jobs_and_resumes_the_other(tmp_path):
    """The CPU study command as typed, narrowed to 2 jobs: kill it in the second job,
    run the same command again."""
    args = [*STUDY_SWEEP, "trainer.max_steps=24", "trainer.val_check_interval=12"]
    first, second = _sweep_jobs(tmp_path)
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


@pytest.mark.timeout(900)
def test_an_interrupted_sweep_records_it_stops_and_resumes_when_run_again(tmp_path):
    """The CPU study's sweep narrowed to 2 jobs: SIGTERM in the first job records
    ``interrupted`` there and ends the sweep with 143; the same command finishes both."""
    args = [
        *STUDY_SWEEP,
        "callbacks.last_checkpoint.every_n_train_steps=0",
        "trainer.max_steps=12",
        "evaluate_after.enabled=false",
    ]
    first, second = _sweep_jobs(tmp_path)
    proc = _interrupt_at(args, tmp_path, signal.SIGTERM, step=4)
    assert proc.returncode == 143, (tmp_path / "console.log").read_text()[-3000:]
    record = json.loads((first / "result.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    assert record["global_step"] == _step(first / "checkpoints" / "last.ckpt") >= 4
    assert not second.exists(), "the sweep went on after the interrupt"

    def no_record_while_it_runs() -> None:  # a collector must not land it as finished
        assert not (first / "result.json").exists()

    proc = _interrupt_at(args, tmp_path, None, step=8, check=no_record_while_it_runs)
    console = (tmp_path / "console.log").read_text()
    assert proc.returncode == 0, console[-3000:]
    assert f"resuming from {first / 'checkpoints' / 'last.ckpt'}" in console
    for job in (first, second):
        record = json.loads((job / "result.json").read_text())
        assert record["status"] == "ok" and record["global_step"] == 12
