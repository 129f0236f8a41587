"""Landing a sweep's small result files in a committed folder."""

from __future__ import annotations

import json

import pytest

from longsep.study.collect import collect
from longsep.study.records import load_study


def _job(root, name, status, eval_rows=True):
    job = root / name
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"x" * 100)
    (job / "config.yaml").write_text("seed: 42\n")
    record = {"status": status, "src": "vocals", "separator": "umx_small", "attention": "none"}
    if eval_rows:
        folder = job / "eval" / "rendered" / "test"
        folder.mkdir(parents=True)
        (folder / "scores.csv").write_text(
            "track,target,metric,score\nsong a,vocals,SDR,5.0\nsong b,vocals,SDR,6.0\n"
        )
        record |= {"run_dir": str(job), "eval_dir": str(folder)}
    (job / "result.json").write_text(json.dumps(record))
    return job


def test_collect_copies_finished_jobs_small_files_and_the_copy_reads_as_a_sweep(tmp_path):
    sweep, dest = tmp_path / "sweep", tmp_path / "landed"
    _job(sweep, "umx_small-vocals-7s-seed42", "ok")
    running = sweep / "umx_small-vocals-30s-seed42"
    (running / "checkpoints").mkdir(parents=True)
    (running / "config.yaml").write_text("seed: 42\n")
    first = collect(sweep, dest)
    names = sorted(p.relative_to(dest).as_posix() for p in first)
    assert names == [
        "umx_small-vocals-7s-seed42/config.yaml",
        "umx_small-vocals-7s-seed42/eval/rendered/test/scores.csv",
        "umx_small-vocals-7s-seed42/result.json",
    ]
    assert not list(dest.rglob("*.ckpt")) and not (dest / running.name).exists()
    assert collect(sweep, dest) == []  # nothing new: nothing to commit
    (record,) = load_study(dest)
    assert record["track_sdr"] == {"song a": 5.0, "song b": 6.0}  # eval dir re-rooted


@pytest.mark.integration
def test_file_lock_serialises_two_processes(tmp_path):
    """Two jobs of a sweep preparing one data set: the second waits for the first."""
    import subprocess
    import sys

    script = (
        "import sys, time; from longsep.io import file_lock\n"
        "with file_lock(sys.argv[1]):\n"
        "    open(sys.argv[2], 'a').write(f'in {time.time()}\\n'); time.sleep(0.5)\n"
        "    open(sys.argv[2], 'a').write(f'out {time.time()}\\n')\n"
    )
    log = tmp_path / "log"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "x.lock"), str(log)])
        for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events == ["in", "out", "in", "out"]  # never two inside at once
