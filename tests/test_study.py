"""The sequence-length study: train-then-evaluate, result.json, failures, exclude, report."""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
import yaml
from conftest import CONF, ROOT, TINY_SYNTH, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from longsep.cli.evaluate import evaluate
from longsep.cli.study import main as study_main
from longsep.cli.train import EVALUATE_AFTER_KEYS, excluded_by, train
from longsep.errors import LongsepError
from longsep.evaluation.evaluate import ScoringOptions
from longsep.inference.options import InferenceOptions
from longsep.models import is_valid_combination
from longsep.models.build import instantiate_network
from longsep.study import records, report
from longsep.training.memory import PeakMemory

FAST = [*TINY_SYNTH, "seq_len=2", "logger=csv", "callbacks.media=null"]
ONE_STEP = ["trainer.max_steps=1", "trainer.limit_val_batches=1"]
FIGURES = ("sdr_vs_seq_len.png", "cost_vs_seq_len.png")


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _jobs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_data_dir) -> Path:
    """A real ``train.py -m`` sweep with evaluation: 8 jobs, 2 ok, 2 failed, 4 skipped.

    ``src=bogus`` makes one sweep point fail inside its job; ``umx_small x qkv1D`` is
    invalid and ``umx_transformer_small x default`` is excluded (both skipped).
    """
    out = tmp_path_factory.mktemp("study") / "multi"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "separator=umx_small,umx_transformer_small",
        "attention=default,qkv1D",
        "src=vocals,bogus",
        "exclude=[umx_transformer_small:default]",
        "evaluate_after.enabled=true",
        *FAST,
        *ONE_STEP,
        f"paths.root_dir={tiny_data_dir}",
        f"hydra.sweep.dir={out}",
        "hydra.sweep.subdir=${run_name}",  # the names below; the default numbers each job
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_sweep_records_every_job(sweep):
    jobs = _jobs(sweep)
    assert sorted(jobs) == sorted(p.name for p in sweep.iterdir() if p.is_dir())
    status = {name: r["status"] for name, r in jobs.items()}
    assert status == {
        "umx_small-vocals-2s": "ok",
        "umx_small-bogus-2s": "failed",
        "umx_small-qkv1D-vocals-2s": "skipped",
        "umx_small-qkv1D-bogus-2s": "skipped",
        "umx_transformer_small-vocals-2s": "skipped",
        "umx_transformer_small-bogus-2s": "skipped",
        "umx_transformer_small-qkv1D-vocals-2s": "ok",
        "umx_transformer_small-qkv1D-bogus-2s": "failed",
    }
    ok = jobs["umx_transformer_small-qkv1D-vocals-2s"]
    assert ok["model"] == "umx_transformer_small:qkv1D" and ok["seq_len"] == 2.0
    assert ok["global_step"] == 1 and ok["batch_size"] == 48
    assert ok["train_audio_seconds"] == 1 * 48 * 2.0
    for key in ("train_seconds", "eval_seconds", "step_seconds", "peak_memory_mb"):
        assert ok[key] > 0, key
    assert ok["steps_per_second"] == pytest.approx(1 / ok["step_seconds"])
    assert ok["best_val_loss"] is not None and ok["eval_tracks"] == 1
    assert set(ok["test"]) == {"vocals", "residual"}
    assert set(ok["test"]["vocals"]) == {"SDR", "SIR", "SAR", "ISR", "SI-SDR"}
    assert ok["test_sdr"] == ok["test"]["vocals"]["SDR"]
    assert jobs["umx_small-vocals-2s"]["attention"] == "none"

    failed = jobs["umx_small-bogus-2s"]
    assert "bogus" in failed["error"] and "\n" not in failed["error"]
    assert "invalid sweep combination" in jobs["umx_small-qkv1D-vocals-2s"]["reason"]
    excluded = jobs["umx_transformer_small-vocals-2s"]
    assert "exclude" in excluded["reason"] and excluded["attention"] == "mha"
    assert not (sweep / "umx_transformer_small-vocals-2s" / "model").exists()


def test_result_medians_are_those_of_evaluate_py(sweep, tiny_data_dir):
    """The run's eval dir is where ``evaluate.py ckpt=<run>`` writes, with the same settings
    (it resumes instead of refusing) and the same medians."""
    run = sweep / "umx_small-vocals-2s"
    record = json.loads((run / "result.json").read_text())
    assert Path(record["eval_dir"]) == run / "eval" / "synth" / "test"
    summary = json.loads((run / "eval" / "synth" / "test" / "summary.json").read_text())
    assert record["test"] == summary["median"]

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                f"ckpt={run}",
                f"paths.root_dir={tiny_data_dir}",
                *[o for o in TINY_SYNTH if o.startswith("data.generate")],
                "backend=fast",
                "progress=false",
            ],
        )
    evaluate(cfg)  # settings differ -> LongsepError; same -> every track is reused
    again = json.loads((run / "eval" / "synth" / "test" / "summary.json").read_text())
    assert again["median"] == record["test"]


def test_report_of_the_sweep(sweep, tmp_path):
    out = tmp_path / "report"
    assert study_main([str(sweep), "--out", str(out)]) == 0
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 8
    assert [r["status"] for r in rows].count("ok") == 2
    ok = next(r for r in rows if r["job"] == "umx_small-vocals-2s")
    assert ok["model"] == "umx_small:none" and float(ok["test.vocals.SDR"]) == pytest.approx(
        json.loads((sweep / ok["job"] / "result.json").read_text())["test_sdr"], abs=1e-4
    )
    text = (out / "results.md").read_text()
    assert "| umx_small:none | " in text and "| umx_transformer_small:qkv1D | " in text
    assert "`umx_small-bogus-2s`: src='bogus'" in text
    assert "`umx_transformer_small-qkv1D-bogus-2s`" in text
    for name in FIGURES:
        assert matplotlib.image.imread(out / name).ndim == 3
    first = {p.name: p.read_bytes() for p in out.glob("results.*")}
    study_main([str(sweep), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.glob("results.*")} == first


def test_single_run_failure_raises_and_is_recorded_once_it_has_trained(tmp_path, tiny_data_dir):
    """A config error leaves no run directory; a failure after training (here a bad
    evaluate_after key) keeps the run and records ``failed``."""
    run = tmp_path / "run"
    cfg = compose_train([*FAST, "separator=umx_small", "src=bogus"], run, tiny_data_dir)
    with pytest.raises(LongsepError, match="bogus"):
        train(cfg)
    assert not run.exists()
    overrides = [*FAST, *ONE_STEP, "separator=umx_small", "evaluate_after.enabled=true"]
    cfg = compose_train([*overrides, "+evaluate_after.bogus=1"], run, tiny_data_dir)
    with pytest.raises(LongsepError, match="evaluate_after.bogus is not an option"):
        train(cfg)
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "failed" and "evaluate_after.bogus" in record["error"]
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_exclude_patterns(tmp_path, tiny_data_dir):
    cfg = compose_train(
        ["exclude=[umx_transformer*:default,auto_transformer_small:qkv1D]"],
        tmp_path / "r",
        tiny_data_dir,
    )
    assert excluded_by(cfg, "umx_transformer_small", None) == "umx_transformer*:default"
    assert excluded_by(cfg, "umx_transformer", "default") == "umx_transformer*:default"
    assert excluded_by(cfg, "umx_transformer", "mha") is None
    assert excluded_by(cfg, "auto_transformer_small", "qkv1D") == "auto_transformer_small:qkv1D"
    assert excluded_by(cfg, "auto_transformer", "qkv1D") is None
    null_spelling = compose_train(["exclude=[umx_small:null]"], tmp_path / "n", tiny_data_dir)
    assert excluded_by(null_spelling, "umx_small", "default")
    bad = compose_train(["exclude=[umx_small]"], tmp_path / "b", tiny_data_dir)
    with pytest.raises(LongsepError, match="separator:attention"):
        excluded_by(bad, "umx_small", None)


def test_excluded_run_is_skipped_without_training(tmp_path, tiny_data_dir):
    run = tmp_path / "run"
    overrides = [*FAST, "separator=umx_small", "exclude=[umx_small:default]"]
    assert train(compose_train(overrides, run, tiny_data_dir)) is None
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "skipped" and "exclude" in record["reason"]
    assert not (run / "checkpoints").exists()


def test_cpu_training_is_deterministic(tmp_path, tiny_data_dir):
    """The same seed twice: the same losses and bit-identical exported weights."""
    overrides = [
        *FAST,
        "separator=umx_small",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
    ]
    records, weights = [], []
    for name in ("a", "b"):
        run = tmp_path / name
        train(compose_train(overrides, run, tiny_data_dir))
        records.append(json.loads((run / "result.json").read_text()))
        weights.append(load_file(run / "model" / "vocals.safetensors"))
    assert records[0]["best_val_loss"] == records[1]["best_val_loss"]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


# --------------------------------------------------------------------------- report only


def _write_job(sweep: Path, name: str, **fields) -> None:
    record = records.new_record(**fields)
    records.write_result(sweep / name, record)


def _ok(
    sweep: Path,
    name: str,
    model: str,
    src: str,
    seq_len: float,
    seed: int,
    sdr: float,
    memory_source: str = "cuda_max_allocated",
):
    separator, attention = model.split(":")
    _write_job(
        sweep,
        name,
        status="ok",
        separator=separator,
        attention=attention,
        src=src,
        seq_len=seq_len,
        seed=seed,
        peak_memory_mb=1024.0 * seq_len,
        peak_memory_source=memory_source,
        step_seconds=0.1 * seq_len,
        test={src: {"SDR": sdr, "SIR": sdr + 1}, "residual": {"SDR": 0.5}},
    )


@pytest.fixture()
def fake_sweep(tmp_path) -> Path:
    """result.json files written by hand, a failed, a skipped and a killed job."""
    sweep = tmp_path / "sweep"
    for seed, sdr in zip((1, 2, 3), (1.0, 4.0, 2.5), strict=True):
        _ok(sweep, f"a-vocals-7s-seed{seed}", "umx:none", "vocals", 7.0, seed, sdr)
    for seed, sdr in zip((1, 2), (3.0, 5.5), strict=True):
        _ok(sweep, f"a-vocals-15s-seed{seed}", "umx:none", "vocals", 15.0, seed, sdr)
    # CPU jobs of one sweep share a process: their RSS peak is no per-run memory figure
    _ok(sweep, "b-vocals-7s", "umx_transformer:qkv1D", "vocals", 7.0, 1, -1.25, "rss_peak")
    _ok(sweep, "b-drums-7s", "umx_transformer:qkv1D", "drums", 7.0, 1, 6.0, "rss_peak")
    _write_job(
        sweep,
        "b-vocals-60s",
        status="failed",
        separator="umx_transformer",
        attention="qkv1D",
        src="vocals",
        seq_len=60.0,
        error="OutOfMemoryError: CUDA out of memory",
    )
    _write_job(sweep, "c-vocals-7s", status="skipped", reason="invalid sweep combination")
    killed = sweep / "d-bass-30s" / ".hydra"
    killed.mkdir(parents=True)
    (killed / "config.yaml").write_text(yaml.safe_dump({"src": "bass", "seq_len": 30.0}))
    choices = {"separator": "umx_transformer", "attention": "default", "data": "musdb"}
    (killed / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (killed / "overrides.yaml").write_text(yaml.safe_dump(["src=bass", "seq_len=30"]))
    (sweep / ".submitit" / "x").mkdir(parents=True)  # launcher files are not jobs
    return sweep


def test_report_aggregates_runs_by_hand_computed_medians(fake_sweep, tmp_path):
    loaded = records.load_study(fake_sweep)
    assert len(loaded) == 10
    medians, counts = report.median_series(loaded, "test_sdr")
    assert medians["vocals"]["umx:none"] == {7.0: 2.5, 15.0: 4.25}  # median(1, 4, 2.5), mean
    assert counts["vocals"]["umx:none"] == {7.0: 3, 15.0: 2}
    assert medians["vocals"]["umx_transformer:qkv1D"] == {7.0: -1.25}
    assert medians["drums"] == {"umx_transformer:qkv1D": {7.0: 6.0}}

    out = tmp_path / "report"
    report.write_report(loaded, out)
    text = (out / "results.md").read_text()
    assert "| umx:none | 2.50 (3) | 4.25 (2) |" in text
    assert "| umx_transformer:qkv1D | -1.25 (1) | - |" in text
    assert "10 jobs: 7 ok, 2 failed, 1 skipped" in text
    assert "`b-vocals-60s`: OutOfMemoryError: CUDA out of memory" in text
    assert "`d-bass-30s`: no result.json" in text
    assert "| umx:none | 7.00 / 0.700 | 15.00 / 1.500 |" in text  # GB / s, median over runs
    assert "| umx_transformer:qkv1D | - / 0.700 | - |" in text  # CPU RSS left out

    rows = _read_csv(out / "results.csv")
    assert [r["job"] for r in rows][:3] == [f"a-vocals-7s-seed{s}" for s in (1, 2, 3)]
    assert [r["src"] for r in rows] == ["vocals"] * 7 + ["drums", "bass", ""]  # MUSDB order
    killed = next(r for r in rows if r["job"] == "d-bass-30s")
    assert killed["status"] == "failed" and killed["model"] == "umx_transformer:mha"
    assert killed["overrides"] == "src=bass seq_len=30"
    assert rows[0]["test.vocals.SDR"] == "1" and rows[0]["test.residual.SDR"] == "0.5"


def _scored(sweep: Path, name: str, seq_len: float, seed: int, tracks: dict[str, float]) -> None:
    """An ok umx:none vocals run with per-track scores in its eval dir's scores.csv."""
    run = sweep / name
    eval_dir = run / "eval" / "synth" / "test"
    eval_dir.mkdir(parents=True)
    lines = ["track,target,metric,score"]
    for track, sdr in tracks.items():
        lines += [f"{track},vocals,SDR,{float(sdr)!r}", f"{track},vocals,SIR,99.0"]
        lines += [f"{track},residual,SDR,-50.0"]
    (eval_dir / "scores.csv").write_text("\n".join(lines) + "\n")
    median = float(np.median(list(tracks.values())))
    _write_job(
        sweep,
        name,
        status="ok",
        separator="umx",
        attention="none",
        src="vocals",
        seq_len=seq_len,
        seed=seed,
        run_dir=str(run),
        eval_dir=str(eval_dir),
        test={"vocals": {"SDR": median}},
    )


def test_report_gives_intervals_and_paired_differences(tmp_path):
    """One run per cell, 8 tracks: 15 s is +1 dB on every track (paired interval [1, 1],
    marked), 30 s is the same as 7 s up to +-0.5 dB noise (interval around 0, unmarked);
    a run without evaluation still reports its median. With a second run in the 7-s and
    15-s cells, those are independent trainings: not paired (by seed number or otherwise)."""
    sweep = tmp_path / "sweep"
    rng = np.random.default_rng(0)
    base = {seed: {f"track{i}": float(v) for i, v in enumerate(rng.normal(4, 3, 8))}
            for seed in (42, 43)}  # fmt: skip
    tracks = base[42]
    _scored(sweep, "umx-vocals-7s-seed42", 7.0, 42, tracks)
    _scored(sweep, "umx-vocals-15s-seed42", 15.0, 42, {t: v + 1.0 for t, v in tracks.items()})
    noise = dict(zip(tracks, [-0.5, 0.5] * 4, strict=True))
    _scored(sweep, "umx-vocals-30s-seed42", 30.0, 42, {t: v + noise[t] for t, v in tracks.items()})
    _ok(sweep, "b-vocals-7s", "umx_transformer:qkv1D", "vocals", 7.0, 1, -1.25)
    moved = tmp_path / "moved"
    sweep.rename(moved)  # recorded absolute eval dirs are re-rooted on the job dirs

    loaded = records.load_study(moved)
    seven = next(r for r in loaded if r["job"] == "umx-vocals-7s-seed42")
    assert seven["track_sdr"] == base[42]
    out = tmp_path / "report"
    assert study_main([str(moved), "--out", str(out), "--resamples", "2000"]) == 0
    text = (out / "results.md").read_text()
    cell = report.cell_intervals(loaded, 2000)["vocals"]["umx:none"][7.0]
    assert cell.estimate == pytest.approx(np.median(list(base[42].values())))
    assert f"| umx:none | {cell.format()} (1×8) | " in text
    assert "| umx_transformer:qkv1D | -1.25 (1) | - | - |" in text  # no per-track scores
    paired = report.paired_intervals(loaded, 2000)["vocals"]["umx:none"]
    assert paired[15.0].format(sign=True) == "+1.00 [1.00, 1.00]"
    assert paired[30.0].low < 0 < paired[30.0].high
    row = f"| umx:none | +1.00 [1.00, 1.00] * | {paired[30.0].format(sign=True)} |"
    assert row in text, text
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 4 and "track_sdr" not in rows[0]  # one row per job
    assert matplotlib.image.imread(out / "sdr_vs_seq_len.png").ndim == 3

    _scored(moved, "umx-vocals-7s-seed43", 7.0, 43, base[43])
    _scored(moved, "umx-vocals-15s-seed43", 15.0, 43, {t: v + 1.0 for t, v in base[43].items()})
    paired = report.paired_intervals(records.load_study(moved), 2000)
    assert "umx:none" not in paired.get("vocals", {})  # 7 s holds two runs: nothing pairs to it


def test_report_cost_figure_from_the_scaling_benchmark(fake_sweep, tmp_path):
    lines = [
        {"model": "umx", "small": False, "seq_len": 7.0, "fwd_bwd_s": 0.3, "peak_mb": 98.0},
        {"model": "umx", "small": False, "seq_len": 60.0, "fwd_bwd_s": 5.2, "peak_mb": 569.0},
        {"model": "umx_transformer:qkv1D", "seq_len": 60.0, "error": "killed"},
        {"model": "umx", "mem_ratio_60s_7s": "5.81x"},
    ]
    scaling = tmp_path / "scaling.jsonl"
    text = "\n".join(json.dumps(x) for x in lines) + "\n| model | ... |\n"
    scaling.write_text(text)
    rows = report.read_scaling(scaling)
    assert len(rows) == 2
    assert report.scaling_series(rows, "peak_mb") == {"umx:none": {7.0: 98.0, 60.0: 569.0}}
    out = tmp_path / "report"
    assert study_main([str(fake_sweep), "--out", str(out), "--scaling", str(scaling)]) == 0
    assert matplotlib.image.imread(out / "cost_vs_seq_len.png").shape[0] > 500  # two rows
    assert "| umx:none | 0.300 / 98 | 5.200 / 569 |" in (out / "results.md").read_text()
    with pytest.raises(SystemExit):
        study_main([str(tmp_path / "nowhere")])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux peak RSS reset")
def test_peak_memory_sees_an_allocation():
    memory = PeakMemory("cpu")
    memory.start()
    before, _ = memory.read()
    block = torch.ones(64 * 2**20)  # 256 MB, touched
    del block
    peak, source = memory.read()
    assert source in ("rss_peak", "rss_peak_process")
    assert peak - before > 200


# --------------------------------------------------------------------------- configs


def _sweep_points(cfg) -> list[dict[str, str | None]]:
    """The jobs of ``hydra.sweeper.params`` (Hydra's basic sweeper: a cartesian product)."""
    parser = OverridesParser.create()
    params = cfg.hydra.sweeper.params
    overrides = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [
        [
            (o.key_or_group, v)
            for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])
        ]
        for o in overrides
    ]
    return [dict(point) for point in itertools.product(*axes)]


@pytest.mark.parametrize(
    "launcher",
    [
        [],
        pytest.param(["hydra/launcher=joblib"], marks=pytest.mark.slow),
        pytest.param(["hydra/launcher=slurm"], marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize(
    "experiment, data, trained, models, seeds",
    [
        pytest.param(  # 432 jobs composed: slow (README's --cfg job of it runs in integration)
            "seq_len_study",
            "musdb",
            4 * 108,  # 9 models x 3 arms x 4 sources per seed
            {"umx:none"}
            | {
                f"{s}:{a}"
                for s in ("umx_transformer", "auto_transformer")
                for a in ("mha", "qkv1D", "qkv2D", "qkvg1D")
            },
            {42, 43, 44, 45},
            marks=pytest.mark.slow,
        ),
        (
            "seq_len_study_cpu",
            "synth",
            3 * 24,
            {
                "umx_small:none",
                "umx_transformer_small:qkv1D",
                "umx_transformer_small:qkvg1D",
                "auto_transformer_small:mha",
            },
            {42, 43, 44},
        ),
        (
            "context_study_rendered",
            "rendered",
            4 * 6,  # 2 models x 3 arms per seed
            {"umx_small:none", "umx_transformer_small:qkvg1D"},
            {42, 43, 44, 45},
        ),
    ],
)
def test_study_configs_compose_and_sweep_the_wanted_models(
    tmp_path, experiment, data, trained, models, seeds, launcher
):
    cfg = compose_train([f"+experiment={experiment}", *launcher], tmp_path / "r", tmp_path)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.runtime.choices.data == data
    assert cfg.evaluate_after.enabled and cfg.evaluate_after.backend == "fast"
    assert cfg.evaluate_after.segment == "auto" and cfg.evaluate_after.split == "test"
    assert cfg.trainer.max_steps > 0 and cfg.data.batch_size is None
    assert cfg.callbacks.early_stopping is None
    assert cfg.module.scheduler is None or experiment.endswith("rendered")  # one-cycle lr
    assert cfg.trainer.check_val_every_n_epoch is None
    if launcher:
        assert cfg.hydra.launcher._target_.endswith(("JoblibLauncher", "SlurmLauncher"))
    run = []
    for point in _sweep_points(cfg):
        separator, attention = point["separator"], point["attention"]
        if excluded_by(cfg, separator, attention) or not is_valid_combination(separator, attention):
            continue
        run.append(point)
    labels = {
        records.model_label(
            p["separator"], records.effective_attention(p["separator"], p["attention"])
        )
        for p in run
    }
    assert labels == models and len(run) == trained
    assert {p["seed"] for p in run} == seeds
    assert list(cfg.hydra.sweeper.params)[0] == "seed"  # outermost: replicate by replicate
    assert cfg.hydra.sweep.subdir.endswith(f"-seed{cfg.seed}")


def test_original_recipe_lands_where_intended(tmp_path):
    """``+experiment=seq_len_study_original``: the original's optimizer, scheduler, batch,
    transformer and test protocol on our sweep; one job's config resolves and builds."""
    cfg = compose_train(
        ["+experiment=seq_len_study_original", "separator=umx_transformer", "attention=qkv1D"],
        tmp_path / "r",
        tmp_path,
    )
    assert cfg.hydra.sweep.dir.endswith("multirun/seq_len_study_original")
    params = cfg.hydra.sweeper.params
    assert params.separator == "umx_transformer,auto_transformer" and params.seed == "42,43,44,45"
    assert params.arm == "A,B,C"  # the context design, under the original protocol
    assert params.attention == "default,qkv1D,qkv2D,qkvg1D"
    optimizer = instantiate(cfg.module.optimizer)
    assert optimizer.func is torch.optim.Adam
    assert optimizer.keywords == {"lr": 1e-4, "betas": [0.5, 0.999], "weight_decay": 1e-5}
    assert type(optimizer.keywords["betas"]) is list  # plain: weights_only checkpoints load
    scheduler = instantiate(cfg.module.scheduler)
    assert scheduler.func is torch.optim.lr_scheduler.ReduceLROnPlateau
    assert scheduler.keywords == {"mode": "min", "factor": 0.3, "patience": 16, "cooldown": 10}
    assert cfg.data.batch_size == 8
    assert (cfg.separator.heads, cfg.separator.dropout, cfg.separator.positional) == (
        16,
        0.2,
        "none",
    )
    after = cfg.evaluate_after
    assert (after.segment, after.overlap, after.niter, after.split) == (7, 0, 0, "test")
    known = {*EVALUATE_AFTER_KEYS, *InferenceOptions.names(), *ScoringOptions.names()}
    assert set(after) <= known
    job = OmegaConf.to_container(cfg, resolve=True)
    assert job["evaluate_after"]["enabled"] and job["data"]["batch_size"] == 8
    model = instantiate_network(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    # the UMX baseline under the same recipe, as experiments/README.md gives it
    umx = compose_train(
        [
            "+experiment=seq_len_study_original",
            "separator=umx",
            "~separator.heads",
            "~separator.dropout",
            "~separator.positional",
        ],
        tmp_path / "u",
        tmp_path,
    )
    assert type(instantiate_network(umx)).__name__ == "UMX"
    assert umx.module.optimizer.lr == 1e-4 and umx.data.batch_size == 8


def test_hydra_refuses_null_as_attention_choice_so_sweeps_use_default(tmp_path):
    """Why conf/attention/default.yaml exists (see conf/experiment/seq_len_study.yaml)."""
    with pytest.raises(ValueError, match="Config group override must be a string"):
        compose_train(["attention=null"], tmp_path / "n", tmp_path)
    cfg = compose_train(
        ["separator=umx_transformer", "attention=default"], tmp_path / "d", tmp_path
    )
    assert cfg.get("attention") is None and cfg.hydra.runtime.choices.attention == "default"
    assert cfg.run_name == "umx_transformer-vocals-6s"


def test_report_compares_with_the_oracle(fake_sweep, tmp_path):
    """--oracle: the oracle's median per source and the best cell's share of it (umx:none at
    15 s, median(3.0, 5.5) = 4.25 dB, against an oracle of 8.5 dB: 50 %)."""
    loaded = records.load_study(fake_sweep)
    oracle = {"name": "oracle-irm2", "median": {"vocals": {"SDR": 8.5}}}
    text = report.results_markdown(loaded, oracle=oracle)
    assert (
        "Oracle `oracle-irm2` on the same split: 8.50 dB. Best cell: umx:none at 15 s, "
        "4.25 dB = 50 % of it." in text
    )
    assert "Oracle `oracle-irm2`: no drums score." in text
