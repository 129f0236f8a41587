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


def _trained_arm_b_run(sweep, data_root):
    """A finished arm-B job with a model (random weights) over a one-song test split."""
    import torch
    import yaml

    from longsep.models.build import compose_network, network_config, network_from_node
    from longsep.spectral import STFTConfig
    from longsep.store import StoreEntry, save_store

    job = _job(sweep, "m-vocals-10s-seed42", "ok", eval_rows=False)
    stft = {"n_fft": 1024, "hop_length": 256, "center": True, "sample_rate": 16000}
    torch.manual_seed(0)
    cfg = compose_network("umx_transformer_small", "qkvg1D", seq_len=10, stft=stft, bandwidth=8000)
    node = network_config(cfg)
    entry = StoreEntry("vocals", node, STFTConfig(**stft), seq_len=10)
    save_store(job / "model", network_from_node(node, "test"), entry)
    data = {"_target_": "longsep.data.datamodules.MUSDBDataModule", "root": str(data_root),
            "is_wav": True, "sample_rate": 16000}  # fmt: skip
    (job / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    record = json.loads((job / "result.json").read_text())
    record |= {"model": "umx_transformer_small:qkvg1D", "seq_len": 10.0, "arm": "B", "seed": 42}
    (job / "result.json").write_text(json.dumps(record))
    return job


def test_score_lands_the_intervention_that_needs_the_weights(tmp_path, capsys):
    """``--score intervention`` writes a B / C run's ``intervention.csv`` while its model is
    there, and it lands with the run's other small files (the model never does)."""
    from musdb_layout import write_musdb

    from longsep.study.collect import main

    data = write_musdb(tmp_path / "musdb", train={}, valid={}, test={"song": 13.0})
    sweep, dest = tmp_path / "sweep", tmp_path / "landed"
    job = _trained_arm_b_run(sweep, data)
    assert main([str(sweep), str(dest), "--score", "intervention"]) == 0
    landed = dest / job.name / "intervention.csv"
    rows = landed.read_text().splitlines()
    assert rows[0] == "track,donor,start_seconds,sdr_true,sdr_replaced" and len(rows) == 1 + 20
    assert not list(dest.rglob("*.safetensors"))
    capsys.readouterr()
    assert main([str(sweep), str(dest), "--score", "intervention"]) == 0  # scored once
    assert capsys.readouterr().out == ""


def test_a_scoring_error_is_reported_and_the_files_still_land(tmp_path, capsys):
    from longsep.study.collect import main

    sweep, dest = tmp_path / "sweep", tmp_path / "landed"
    job = _trained_arm_b_run(sweep, tmp_path / "no such data")
    assert main([str(sweep), str(dest), "--score", "intervention"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: scoring {sweep}: ") and "no such data" in line
    assert (dest / job.name / "result.json").is_file()
