"""evaluate.py: resumable evaluation, museval-compatible results, summaries, compare, errors."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import museval
import numpy as np
import pytest
import simplejson
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from jsonschema import validate

from longsep import audio
from longsep.cli.evaluate import evaluate
from longsep.data.musdb import open_musdb
from longsep.data.synth import ensure_dataset
from longsep.errors import LongsepError
from longsep.evaluation.compare import compare, main
from longsep.evaluation.evaluate import Song, evaluate_songs
from longsep.evaluation.metrics import evaluate_track, si_sdr
from longsep.evaluation.oracle import OracleEstimator
from longsep.evaluation.results import FRAME_SECONDS, ResultStore, nan_median, summarize
from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, resolve_model, save_store

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["vocals", "drums", "bass", "other"]
PAIR = ["vocals", "bass"]  # two targets: BSSEval is much cheaper than with four
SYNTH = {"n_train": 1, "n_valid": 1, "n_test": 2, "min_seconds": 3, "max_seconds": 4}
SMALL = STFTConfig(n_fft=512, hop_length=128)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return ensure_dataset(root, **SYNTH)


@pytest.fixture(scope="module")
def tracks(synth_root) -> list:
    return open_musdb(synth_root, "test", is_wav=True, setup_file="setup.yaml")


def compose_eval(synth_root: Path, root_dir: Path, *overrides: str):
    """conf/evaluate.yaml over the tiny synthetic set, outputs under ``root_dir``."""
    generate = [f"++data.generate.{k}={v}" for k, v in SYNTH.items()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "evaluate",
            overrides=[
                f"data.root={synth_root}",
                *generate,
                f"paths.root_dir={root_dir}",
                "progress=false",
                "backend=fast",
                *overrides,
            ],
        )


def _store(folder: Path, targets=TARGETS) -> Path:
    spec = {
        "_target_": "longsep.models.umx.UMX",
        "nb_bins": SMALL.nb_bins,
        "nb_channels": 2,
        "hidden_size": 8,
        "max_bin": 64,
    }
    for i, target in enumerate(targets):
        torch.manual_seed(i)
        model = UMX(nb_bins=SMALL.nb_bins, nb_channels=2, hidden_size=8, max_bin=64).eval()
        save_store(folder, model, StoreEntry(target, spec, SMALL, seq_len=2.0))
    return folder


class Counting:
    """An estimator wrapper that counts calls and can fail on a given song."""

    def __init__(self, inner, fail_on: str | None = None) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, []

    def settings(self) -> dict:
        return self.inner.settings()

    def __call__(self, song: Song) -> dict:
        if song.name == self.fail_on:
            raise RuntimeError("interrupted")
        self.calls.append(song.name)
        return self.inner(song)


def _museval_json(path: Path) -> dict:
    return simplejson.loads(path.read_text(), allow_nan=True)


def _csv_rows(path: Path) -> dict[tuple[str, str, str], float]:
    with path.open() as handle:
        return {
            (r["track"], r["target"], r["metric"]): float(r["score"])
            for r in csv.DictReader(handle)
        }


@pytest.fixture(scope="module")
def evaluated(tracks, tmp_path_factory) -> dict[str, dict]:
    """Serial oracle evaluations of the test songs: method -> summary."""
    root = tmp_path_factory.mktemp("evaluated")
    summaries = {}
    for method in ("irm1", "ibm"):
        store = ResultStore(root / method)
        evaluate_songs(tracks, OracleEstimator(method, targets=PAIR), store)
        summaries[method] = summarize(store, [t.name for t in tracks], f"oracle-{method}")
    return summaries


def test_resume_skips_finished_tracks_and_gives_the_same_summary(tracks, evaluated, tmp_path):
    names = [t.name for t in tracks]
    store = ResultStore(tmp_path / "irm1")
    crashing = Counting(OracleEstimator("irm1", targets=PAIR), fail_on=names[1])
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate_songs(tracks, crashing, store)
    assert crashing.calls == names[:1] and store.is_done(names[0], "test")
    assert not store.is_done(names[1], "test")

    resumed = Counting(OracleEstimator("irm1", targets=PAIR))
    assert evaluate_songs(tracks, resumed, store) == names[1:]
    assert resumed.calls == names[1:]
    first = summarize(store, names, "irm1")
    assert first["median"] == evaluated["irm1"]["median"]  # as a run without interruption
    mtimes = {n: store.track_json(n, "test").stat().st_mtime_ns for n in names}

    again = Counting(OracleEstimator("irm1", targets=PAIR))
    assert evaluate_songs(tracks, again, store) == [] and again.calls == []
    assert {n: store.track_json(n, "test").stat().st_mtime_ns for n in names} == mtimes
    second = summarize(store, names, "irm1")
    assert second["median"] == first["median"] and second["tracks"] == names

    redo = Counting(OracleEstimator("irm1", targets=PAIR))
    assert evaluate_songs(tracks[:1], redo, store, overwrite=True) == names[:1]
    assert store.track_json(names[0], "test").stat().st_mtime_ns > mtimes[names[0]]
    assert summarize(store, names, "irm1")["median"] == first["median"]


class SilentBass(Counting):
    """Estimates with an all-zero bass for one song: BSSEval cannot score that song."""

    def __call__(self, song: Song) -> dict:
        estimates = self.inner(song)
        if song.name == self.fail_on:
            estimates["bass"] = np.zeros_like(estimates["bass"])
        return estimates


def test_a_failing_track_is_reported_after_the_others_are_saved(tracks, tmp_path):
    names = [t.name for t in tracks]
    store = ResultStore(tmp_path / "silent")
    estimator = SilentBass(OracleEstimator("irm1", targets=PAIR), fail_on=names[0])
    with pytest.raises(LongsepError, match=f"1 of 2 tracks failed [(]{names[0]}: .*silent"):
        evaluate_songs(tracks, estimator, store)
    assert not store.is_done(names[0], "test") and store.is_done(names[1], "test")


def test_cli_results_load_in_museval_and_match_its_own_evaluation(synth_root, tracks, tmp_path):
    """backend=museval: our JSON equals museval.eval_mus_track's on the same estimates, and
    scores.csv / summary.json equal museval's EvalStore aggregation of our JSON files."""
    track = tracks[0]
    cfg = compose_eval(
        synth_root,
        tmp_path,
        "oracle=irm1",
        "backend=museval",
        f"tracks=[{track.name}]",
        "targets=[vocals,bass]",
    )
    text = evaluate(cfg)
    out = next((tmp_path / "eval" / "oracle-irm1").glob("*/test"))
    ours = out / "test" / f"{track.name}.json"
    assert ours.is_file() and "oracle-irm1: 1 track(s)" in text and "vocals" in text

    estimates = OracleEstimator("irm1", targets=PAIR)(Song.from_track(track))
    museval.eval_mus_track(track, estimates, output_dir=str(tmp_path / "reference"))
    reference = _museval_json(tmp_path / "reference" / "test" / f"{track.name}.json")
    document = _museval_json(ours)
    schema = json.loads((Path(museval.__path__[0]) / "musdb.schema.json").read_text())
    validate(document, schema)
    assert [t["name"] for t in document["targets"]] == [t["name"] for t in reference["targets"]]
    for mine, theirs in zip(document["targets"], reference["targets"], strict=True):
        assert len(mine["frames"]) == len(theirs["frames"])
        for a, b in zip(mine["frames"], theirs["frames"], strict=True):
            assert (a["time"], a["duration"]) == (b["time"], b["duration"])
            for metric, value in b["metrics"].items():
                assert a["metrics"][metric] == pytest.approx(float(value), abs=2e-5, nan_ok=True)

    store = museval.EvalStore()
    store.add_eval_dir(str(out))
    per_track = store.agg_frames_scores()
    rows = _csv_rows(out / "scores.csv")
    assert {(k[1], k[2]) for k in rows if k[2] != "SI-SDR"} == {
        (t, m) for t in PAIR for m in ("SDR", "SIR", "SAR", "ISR")
    }
    for (name, target, metric), value in per_track.items():
        assert rows[(name, target, metric)] == pytest.approx(value, abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    for (target, metric), value in store.agg_frames_tracks_scores().items():
        assert summary["median"][target][metric] == pytest.approx(value, abs=1e-9)
    assert summary["median"]["vocals"]["SI-SDR"] == pytest.approx(
        rows[(track.name, "vocals", "SI-SDR")]
    )
    methods = museval.MethodStore()
    methods.add_eval_dir(str(out))
    assert set(methods.df["target"]) == set(PAIR)


def test_scoring_in_worker_processes_matches_serial_scoring(tracks, evaluated, tmp_path):
    names = [t.name for t in tracks]
    pooled = ResultStore(tmp_path / "pooled")
    assert evaluate_songs(tracks, OracleEstimator("ibm", targets=PAIR), pooled, workers=2) == names
    summarize(pooled, names, "ibm")
    expected = _csv_rows(Path(evaluated["ibm"]["out_dir"]) / "scores.csv")
    rows = _csv_rows(pooled.dir / "scores.csv")
    assert rows.keys() == expected.keys() and len(rows) == 2 * 2 * 5
    # equal up to summation order: one BLAS/torch thread a worker here, all cores serially
    # (35.82545 against 35.8254 dB SIR seen); a pooling bug (a wrong track or target) is dBs
    close = {k: pytest.approx(v, rel=1e-5, abs=2e-5) for k, v in expected.items()}
    assert {k: v for k, v in rows.items() if v != close[k]} == {}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_other_settings_in_the_same_out_dir_are_refused(synth_root, tracks, in_tmp):
    args = ["oracle=irm2", "out_dir=ev", f"tracks=[{tracks[0].name}]", "targets=[vocals,bass]"]
    evaluate(compose_eval(synth_root, in_tmp, *args))
    with pytest.raises(LongsepError, match="other settings [(]estimator.n_fft differ"):
        evaluate(compose_eval(synth_root, in_tmp, *args, "oracle_n_fft=2048"))
    text = evaluate(compose_eval(synth_root, in_tmp, *args, "oracle_n_fft=2048", "overwrite=true"))
    assert "oracle-irm2" in text
    assert json.loads((in_tmp / "ev" / "settings.json").read_text())["estimator"]["n_fft"] == 2048


def test_model_store_in_a_run_dir_estimates_and_rtf(synth_root, tracks, in_tmp):
    run = in_tmp / "runs" / "umx-vocals-2s" / "2025-01-01_00-00-00"
    _store(run / "model", targets=PAIR)
    (run / "checkpoints").mkdir()
    cfg = compose_eval(synth_root, in_tmp, f"ckpt={run}", "save_estimates=true", "niter=0")
    text = evaluate(cfg)
    out = next((run / "eval").glob("*/test"))
    assert "umx-vocals-2s@2025-01-01_00-00-00" in text and "real-time factor" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tracks"] == 2 and 0 < summary["rtf"] < 100
    assert summary["settings"]["estimator"]["model"] == str((run / "model").resolve())
    assert list(summary["median"]) == PAIR
    assert all(math.isfinite(v) for v in summary["median"]["vocals"].values())
    for track in tracks:
        document = _museval_json(out / "test" / f"{track.name}.json")
        assert [t["name"] for t in document["targets"]] == PAIR
    song = Song.from_track(tracks[0])
    extra = json.loads((out / "extra" / f"{song.name}.json").read_text())
    for target in PAIR:
        estimate = audio.load(out / "estimates" / song.name / f"{target}.wav")
        expected = si_sdr(
            estimate.double().flatten(), torch.from_numpy(song.sources[target].T).double().flatten()
        )
        assert extra["SI-SDR"][target] == pytest.approx(float(expected), abs=1e-3)
    text, _ = compare([run], in_tmp / "cmp")  # a run dir names its only evaluation
    assert "umx-vocals-2s@2025-01-01_00-00-00" in text


def test_single_target_model_is_scored_with_its_residual(synth_root, tracks, in_tmp):
    store = _store(in_tmp / "vocals_only", targets=["vocals"])
    evaluate(
        compose_eval(
            synth_root, in_tmp, f"ckpt={store}", "out_dir=ev", f"tracks=[{tracks[0].name}]"
        )
    )
    document = _museval_json(in_tmp / "ev" / "test" / f"{tracks[0].name}.json")
    assert [t["name"] for t in document["targets"]] == ["vocals", "residual"]
    song = Song.from_track(tracks[0])
    residual = song.reference("residual", ["vocals", "residual"])
    expected = song.sources["drums"] + song.sources["bass"] + song.sources["other"]
    np.testing.assert_allclose(residual, expected, atol=1e-5)


def test_resolve_ckpt_layouts(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("epoch001-step10.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"")
    os.utime(run / "checkpoints" / "epoch001-step10.ckpt", (1, 1))
    source = resolve_model(run)
    assert source.model == run / "checkpoints" / "epoch001-step10.ckpt"
    assert source.eval_root == run / "eval"
    _store(run / "model", targets=["vocals"])
    assert resolve_model(run).model == run / "model"
    assert resolve_model(run / "model").eval_root == run / "eval"
    last = resolve_model(run / "checkpoints" / "last.ckpt")
    assert last.model.name == "last.ckpt" and last.eval_root == run / "eval" / "last"
    alone = _store(tmp_path / "downloaded" / "umx-store", targets=["vocals"])
    assert resolve_model(alone).eval_root == Path.cwd() / "eval" / "umx-store"
    with pytest.raises(LongsepError, match="does not exist"):
        resolve_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LongsepError, match="holds no model"):
        resolve_model(tmp_path / "empty")


def test_empty_split_and_missing_arguments(synth_root, tmp_path):
    with pytest.raises(LongsepError, match="ckpt=... is required"):
        evaluate(compose_eval(synth_root, tmp_path))
    with pytest.raises(LongsepError, match="ckpt and oracle given: use one of"):
        evaluate(compose_eval(synth_root, tmp_path, "oracle=ibm", f"ckpt={tmp_path}"))
    with pytest.raises(LongsepError, match="oracle=.xyz.: use one of irm1"):
        evaluate(compose_eval(synth_root, tmp_path, "oracle=xyz"))
    with pytest.raises(LongsepError, match="tracks: .*nope"):
        evaluate(compose_eval(synth_root, tmp_path, "oracle=ibm", "tracks=[nope]"))
    empty = ensure_dataset(tmp_path / "novalid", **{**SYNTH, "n_valid": 0, "n_test": 0})
    cfg = compose_eval(empty, tmp_path, "oracle=ibm", "split=valid", "data.generate=null")
    with pytest.raises(LongsepError, match="split=valid .* holds no tracks"):
        evaluate(cfg)


@pytest.mark.integration
def test_evaluation_lists_tracks_without_importing_lightning(synth_root):
    """Reading a split goes through the track sets alone: Lightning takes seconds to import."""
    script = f"""
import sys
from omegaconf import OmegaConf
import longsep.cli.evaluate
from longsep.evaluation.evaluate import load_tracks
data = OmegaConf.create({{
    "_target_": "longsep.data.datamodules.MUSDBDataModule", "root": {str(synth_root)!r},
    "setup_file": "setup.yaml", "target": "vocals", "seq_len": 6.0, "batch_size": None,
}})
tracks = load_tracks(data, "test")
print(len(tracks), "pytorch_lightning" in sys.modules, "lightning" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(SYNTH["n_test"]), "False", "False"]


def test_evaluation_writes_the_configured_synthetic_set_on_first_use(tmp_path):
    from omegaconf import OmegaConf

    from longsep.evaluation.evaluate import load_tracks

    data = OmegaConf.create(
        {
            "_target_": "longsep.data.datamodules.MUSDBDataModule",
            "root": str(tmp_path / "fresh"),
            "setup_file": "setup.yaml",
            "generate": SYNTH,
        }
    )
    tracks = load_tracks(data, "test")
    assert len(tracks) == SYNTH["n_test"]
    assert all((tmp_path / "fresh" / "test" / t.name / "vocals.wav").is_file() for t in tracks)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_command_line_bad_ckpt_is_one_line(tmp_path):
    result = _cli([f"ckpt={tmp_path / 'nowhere'}", f"paths.root_dir={tmp_path}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "nowhere does not exist" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.integration
def test_a_run_is_evaluated_on_its_own_data_set(synth_root, tmp_path):
    """`evaluate.py ckpt=<run>` with no data keys reads the run's data node (its generate
    values included): the default set is not generated, the run's is not regenerated."""
    run = tmp_path / "runs" / "umx-vocals-2s" / "2025-01-01_00-00-00"
    _store(run / "model", targets=["vocals"])
    (run / "checkpoints").mkdir()
    data = {
        "_target_": "longsep.data.datamodules.MUSDBDataModule",
        "root": str(synth_root),
        "setup_file": "setup.yaml",
        "generate": SYNTH,
        "seq_len": 2.0,
    }
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data, "seed": 1}))
    (run / ".hydra").mkdir()
    choices = {"hydra": {"runtime": {"choices": {"data": "synth_tiny"}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    before = {p: p.stat().st_mtime_ns for p in synth_root.rglob("*.wav")}
    env_root = tmp_path / "elsewhere"
    env_root.mkdir()
    result = _cli([f"ckpt={run}", "backend=fast", "progress=false", "niter=0"], env_root)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "eval" / "synth_tiny" / "test" / "summary.json").read_text())
    assert summary["n_tracks"] == SYNTH["n_test"]
    assert {p: p.stat().st_mtime_ns for p in synth_root.rglob("*.wav")} == before
    assert not (env_root / "data").exists(), "the default data set was generated"


def test_compare_table_and_box_plots(synth_root, evaluated, in_tmp, capsys):
    dirs = {m: Path(evaluated[m]["out_dir"]) for m in ("irm1", "ibm")}
    text = evaluate(compose_eval(synth_root, in_tmp, f"compare=[{dirs['irm1']},{dirs['ibm']}]"))
    assert "oracle-irm1" in text and "oracle-ibm" in text
    sdr_line = text.splitlines()[text.splitlines().index("vocals") + 1]
    expected = [evaluated[m]["median"]["vocals"]["SDR"] for m in ("irm1", "ibm")]
    assert sdr_line.split() == ["SDR", *(f"{v:.2f}" for v in expected)]
    figures = sorted((in_tmp / "comparison").glob("*.png"))
    assert [p.name for p in figures] == sorted(f"SDR_{t}.png" for t in PAIR)
    assert all(matplotlib.image.imread(p).ndim == 3 for p in figures)
    with open(in_tmp / "comparison" / "comparison.csv") as handle:
        table = {
            (r["method"], r["target"], r["metric"]): float(r["score"])
            for r in csv.DictReader(handle)
        }
    assert table[("oracle-ibm", "bass", "SAR")] == evaluated["ibm"]["median"]["bass"]["SAR"]

    _, figures = compare([dirs["irm1"]], in_tmp / "single", metric="SI-SDR")
    assert len(figures) == 2
    assert main([str(dirs["irm1"]), "--out", str(in_tmp / "cli")]) == 0
    assert "oracle-irm1" in capsys.readouterr().out
    with pytest.raises(LongsepError, match="holds no evaluation"):
        compare([in_tmp / "comparison"], in_tmp / "x")


def _write_estimates(root: Path, songs: list[Song], make) -> Path:
    """``root/<track>/<target>.wav`` (float) of ``make(song, target)`` for every song."""
    for song in songs:
        for target in PAIR:
            signal = torch.from_numpy(np.ascontiguousarray(make(song, target).T))
            audio.save(root / song.name / f"{target}.wav", signal, song.rate, subtype="FLOAT")
    return root


def test_estimates_of_another_system_are_scored_like_a_model(synth_root, tracks, evaluated, in_tmp):
    songs = [Song.from_track(t) for t in tracks]
    exact = _write_estimates(in_tmp / "exact", songs, lambda song, t: song.sources[t])
    text = evaluate(compose_eval(synth_root, in_tmp, f"estimates={exact}", "targets=[vocals,bass]"))
    out = next((exact / "eval").glob("*/test"))
    summary = json.loads((out / "summary.json").read_text())
    assert "exact" in text and summary["n_tracks"] == 2 and list(summary["median"]) == PAIR
    for target, scores in summary["median"].items():
        # a perfect estimate's SDR is inf, written as NaN in museval's format: null here
        assert scores["SDR"] is None or scores["SDR"] > 60, target
        assert min(scores["SI-SDR"], scores["SIR"], scores["SAR"]) > 60

    rng = np.random.default_rng(1)
    noise = {
        (s.name, t): 0.05 * rng.standard_normal(s.sources[t].shape) for s in songs for t in PAIR
    }

    def noisy(song: Song, target: str) -> np.ndarray:
        return (0.7 * song.sources[target] + noise[song.name, target]).astype(np.float32)

    scaled = _write_estimates(in_tmp / "scaled", songs, noisy)
    evaluate(compose_eval(synth_root, in_tmp, f"estimates={scaled}", "out_dir=ev"))  # targets found
    rows = _csv_rows(in_tmp / "ev" / "scores.csv")
    frame = round(FRAME_SECONDS * songs[0].rate)
    for song in songs:
        expected = evaluate_track(
            {t: song.sources[t] for t in PAIR},
            {t: noisy(song, t) for t in PAIR},
            backend="fast",
            window=frame,
            hop=frame,
            rate=song.rate,
        )
        for target in PAIR:
            score = rows[(song.name, target, "SDR")]
            assert math.isfinite(score) and score < 30
            assert score == pytest.approx(nan_median(expected["targets"][target]["SDR"]), abs=1e-4)

    text = evaluate(
        compose_eval(synth_root, in_tmp, f"compare=[{evaluated['irm1']['out_dir']},ev]")
    )
    assert "oracle-irm1" in text and "scaled" in text


def test_estimates_at_another_rate_and_length_and_missing_files(synth_root, tracks, in_tmp, caplog):
    song = Song.from_track(tracks[0])
    root = in_tmp / "est"
    for target in ("vocals", "bass"):
        half = audio.resample(torch.from_numpy(song.sources[target].T.copy()), song.rate, 22050)
        audio.save(root / song.name / f"{target}.flac", half[:, :-100], 22050)
    args = [f"estimates={root}", "out_dir=ev", f"tracks=[{song.name}]", "targets=vocals"]
    caplog.set_level(logging.INFO, logger="longsep")
    text = evaluate(compose_eval(synth_root, in_tmp, *args))
    assert "resampled to the reference's 44100 Hz" in caplog.text and "zero-padded" in caplog.text
    summary = json.loads((in_tmp / "ev" / "summary.json").read_text())
    # one target (BSSEval needs two): SI-SDR only
    assert summary["median"] == {"vocals": {"SI-SDR": pytest.approx(40, abs=10)}}
    assert "est" in text

    with pytest.raises(LongsepError, match=f"{song.name}/drums.wav does not exist"):
        evaluate(
            compose_eval(synth_root, in_tmp, *args[:-1], "targets=[vocals,drums]", "out_dir=x")
        )
    with pytest.raises(LongsepError, match=f"estimates: {root / tracks[1].name} does not exist"):
        evaluate(compose_eval(synth_root, in_tmp, f"estimates={root}", "out_dir=y"))
    with pytest.raises(LongsepError, match="is not a directory"):
        evaluate(compose_eval(synth_root, in_tmp, f"estimates={in_tmp / 'nowhere'}"))
    with pytest.raises(LongsepError, match="oracle and estimates given: use one of"):
        evaluate(compose_eval(synth_root, in_tmp, f"estimates={root}", "oracle=ibm"))
    assert not (in_tmp / "x").exists() and not (in_tmp / "y").exists()


def test_song_reads_16_bit_wav_as_musdb_does_and_other_files_through_musdb(tracks, tmp_path):
    """16-bit wav stems are read with soundfile (no ffmpeg process per file), giving exactly
    musdb's (stempeg's s16le) values; a float wav goes through musdb, as before."""
    import shutil

    import soundfile as sf

    track = tracks[0]
    song = Song.from_track(track)
    np.testing.assert_array_equal(song.mixture, np.asarray(track.audio, dtype=np.float32))
    for name, source in track.sources.items():
        np.testing.assert_array_equal(song.sources[name], np.asarray(source.audio, np.float32))
    root = tmp_path / "float"
    shutil.copytree(Path(track.path).parents[1], root / "test")
    (root / "train").mkdir()
    folder = root / "test" / track.name
    for wav in folder.glob("*.wav"):
        data, rate = sf.read(wav, dtype="float32")
        sf.write(wav, data * 0.999, rate, subtype="FLOAT")  # off the 16-bit grid
    shutil.copy(Path(track.path).parents[2] / "setup.yaml", root)
    float_track = next(
        t for t in open_musdb(root, "test", is_wav=True, setup_file="setup.yaml")
        if t.name == track.name
    )  # fmt: skip
    mixture = Song.from_track(float_track).mixture
    np.testing.assert_array_equal(mixture, np.asarray(float_track.audio, dtype=np.float32))
    assert not np.array_equal(mixture, song.mixture * np.float32(0.999))
