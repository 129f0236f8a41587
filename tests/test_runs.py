"""Run identity (which run ``ckpt_path=last`` continues) and deferred interrupts, in process."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml

from longsep.errors import LongsepError
from longsep.training import runs
from longsep.training.interrupts import Interrupted, InterruptRequest


def _config(root: str = "/home/a/longsep", run: str = "2026-01-01", **top) -> dict:
    out = f"{root}/runs/umx-vocals-6s/{run}"
    config = {
        "separator": {"_target_": "UMX", "hidden_size": 512},
        "data": {"root": f"{root}/data/synth", "num_workers": 0, "seed": 42},
        "module": {"optimizer": {"lr": 0.001}},
        "trainer": {"max_steps": 100, "default_root_dir": out, "log_every_n_steps": 10},
        "callbacks": {
            "last_checkpoint": {"dirpath": f"{out}/checkpoints", "every_n_train_steps": 50},
            "early_stopping": {"patience": 140},
        },
        "paths": {"root_dir": root, "output_dir": out},
        "store_dir": f"{out}/model",
        "seed": 42,
        "gpu": None,
        "ckpt_path": None,
    }
    config.update(top)
    return config


def test_identity_ignores_where_files_go_logging_device_and_checkpoint_cadence():
    base = runs.identity(_config())
    moved = _config(root="/scratch/b/longsep", run="2026-02-02", gpu=1, ckpt_path="last")
    moved["callbacks"]["last_checkpoint"]["every_n_train_steps"] = 5
    moved["trainer"]["log_every_n_steps"] = 1
    moved["data"]["num_workers"] = 4
    assert runs.identity(moved) == base


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(seed=7),
        lambda c: c["module"]["optimizer"].update(lr=0.01),
        lambda c: c["data"].update(root="/elsewhere/musdb18"),
        lambda c: c["separator"].update(hidden_size=256),
        lambda c: c["trainer"].update(max_steps=200),
        lambda c: c["callbacks"]["early_stopping"].update(patience=10),
    ],
    ids=["seed", "lr", "data", "model", "max_steps", "early_stopping"],
)
def test_identity_changes_with_what_the_run_trains(change):
    config = _config()
    change(config)
    assert runs.identity(config) != runs.identity(_config())


def test_differences_name_the_keys_and_both_values():
    a, b = _config(seed=7), _config()
    b["module"]["optimizer"]["lr"] = 0.01
    assert runs.differences(a, b) == (
        "module.optimizer.lr: 0.001 here, 0.01 there; seed: 7 here, 42 there"
    )
    assert runs.differences(a, a) == ""


def _write_run(log_dir, name: str, stamp: str, config: dict, mtime: float) -> None:
    run = log_dir / name / stamp
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / runs.LAST).write_bytes(b"ckpt")
    os.utime(run / runs.LAST, (mtime, mtime))


def test_find_resumable_takes_the_newest_run_of_the_same_identity(tmp_path):
    now = time.time()
    root = str(tmp_path)
    for stamp, seed, age in (("r1", 1, 30), ("r2", 2, 20), ("r3", 1, 10), ("r4", 2, 0)):
        config = _config(root=root, run=stamp, seed=seed)
        config["paths"]["output_dir"] = str(tmp_path / "umx" / stamp)
        _write_run(tmp_path, "umx", stamp, config, now - age)
    wanted = _config(root=root, run="new", seed=1)
    assert runs.find_resumable(tmp_path, "umx", wanted) == tmp_path / "umx" / "r3"
    with pytest.raises(LongsepError, match=r"4 run\(s\) named 'umx'.*seed: 3 here, 2 there"):
        runs.find_resumable(tmp_path, "umx", _config(root=root, seed=3))
    with pytest.raises(LongsepError, match="no last.ckpt for run 'other'"):
        runs.find_resumable(tmp_path, "other", wanted)


def test_find_resumable_finds_a_sweep_job_in_its_numbered_directory(tmp_path):
    """Sweep jobs live in ``multirun/<time>/<job number>-<run name>`` (conf/hydra/default.yaml)."""
    root = str(tmp_path)
    for num, seed in ((0, 1), (1, 2)):
        config = _config(root=root, run="sweep", seed=seed)
        _write_run(tmp_path / "multirun", "stamp", f"{num}-umx", config, time.time())
    found = runs.find_resumable(tmp_path, "umx", _config(root=root, run="new", seed=2))
    assert found == tmp_path / "multirun" / "stamp" / "1-umx"
    _write_run(tmp_path / "multirun", "stamp", "2-umx_small", _config(root=root), time.time())
    with pytest.raises(LongsepError, match=r"2 run\(s\) named 'umx'"):  # not umx_small's
        runs.find_resumable(tmp_path, "umx", _config(root=root, seed=3))


def test_check_job_dir_refuses_another_configs_run_only(tmp_path):
    root = str(tmp_path)
    job = tmp_path / "multirun" / "stamp" / "0-umx"
    earlier = _config(root=root, seed=1)
    earlier["paths"]["output_dir"] = str(job)
    _write_run(tmp_path / "multirun", "stamp", "0-umx", earlier, time.time())
    same = _config(root=root, seed=1)
    same["paths"]["output_dir"] = str(job)
    runs.check_job_dir(job, same)  # a killed or finished run of this job: no error
    newer = _config(root=root, seed=1, new_option=None)  # a key the earlier version lacked
    newer["paths"]["output_dir"] = str(job)
    runs.check_job_dir(job, newer)
    runs.check_job_dir(tmp_path / "fresh", _config(root=root, seed=2))  # nothing there yet
    with pytest.raises(LongsepError, match=r"0-umx holds another run \(seed: 2 here, 1 there\)"):
        runs.check_job_dir(job, _config(root=root, seed=2))


def test_a_signal_is_noted_while_deferring_and_raised_otherwise():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    request = InterruptRequest()
    with request.installed():
        with request.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs at the next bytecode of the main thread
        assert request.signum == signal.SIGTERM
        with pytest.raises(Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert raised.value.exit_code == 130 and raised.value.name == "SIGINT"
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_while_a_save_is_pending_stops_at_once():
    request = InterruptRequest()
    with request.installed(), request.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert Interrupted(signal.SIGTERM, 3).exit_code == 143
