"""separate.py: inputs, outputs, summary and one-line errors for every kind of bad input."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from longsep import audio
from longsep.cli.common import user_errors
from longsep.cli.separate import separate
from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, save_store

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
SMALL = STFTConfig(n_fft=512, hop_length=128, sample_rate=RATE)
TARGETS = ("vocals", "drums", "bass", "other")


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
        save_store(folder, model, StoreEntry(target, spec, SMALL, seq_len=0.5))
    return folder


def _tone(seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(0)
    return (
        0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    ).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    paths = {
        "store": _store(root / "store"),
        "vocals_only": _store(root / "vocals_only", targets=("vocals",)),
        "good": root / "songs" / "good.wav",
        "mono": root / "songs" / "mono.flac",
        "corrupt": root / "bad" / "corrupt.wav",
        "empty": root / "bad" / "empty.wav",
        "short": root / "bad" / "short.wav",
        "surround": root / "bad" / "surround.wav",
        "silence": root / "silence" / "silence.wav",
        "no_audio": root / "no_audio",
        "musdb": root / "musdb" / "Artist - Song" / "mixture.wav",
    }
    for key in ("good", "mono", "corrupt", "silence", "musdb", "no_audio"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
    paths["no_audio"].mkdir(exist_ok=True)
    (paths["no_audio"] / "notes.txt").write_text("no audio here")
    sf.write(paths["good"], _tone(1.0), RATE)
    sf.write(paths["mono"], _tone(1.0, channels=1), RATE)
    paths["corrupt"].write_bytes(b"RIFF" + os.urandom(2000))
    paths["empty"].write_bytes(b"")
    sf.write(paths["short"], _tone(0.005), RATE)
    sf.write(paths["surround"], _tone(1.0, channels=4), RATE)
    sf.write(paths["silence"], np.zeros((RATE, 2), np.float32), RATE)
    sf.write(paths["musdb"], _tone(1.0), RATE)
    sf.write(paths["musdb"].with_name("vocals.wav"), _tone(1.0), RATE)
    return paths


def run_cli(overrides: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Compose conf/separate.yaml with ``overrides`` and run the entry point in-process."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("separate", overrides=overrides)
    try:
        user_errors(separate)(cfg)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing", "does not exist"),
        ("no_audio", "holds no audio files"),
        ("corrupt", "corrupt.wav"),
        ("empty", "empty.wav"),
        ("short", "short.wav"),
        ("surround", "surround.wav"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    files, tmp_path, capsys, monkeypatch, key, message
):
    source = files.get(key, tmp_path / "missing.wav")
    code, _, err = run_cli(
        [f"model={files['store']}", f"input={source}", f"out_dir={tmp_path / 'out'}"],
        capsys,
        monkeypatch,
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err
    assert _outputs(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("model", "targets", "message"),
    [
        ("store", "[vocals,piano]", "no target 'piano'"),
        ("vocals_only", "[vocals,drums]", "no target 'drums'"),
    ],
)
def test_bad_targets_are_one_line(files, tmp_path, capsys, monkeypatch, model, targets, message):
    code, _, err = run_cli(
        [
            f"model={files[model]}",
            f"input={files['good']}",
            f"targets={targets}",
            f"out_dir={tmp_path}",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 2 and err.count("\n") == 1 and message in err


def test_silence_separates_to_silence(files, tmp_path, capsys, monkeypatch):
    """Silence in, silence out; and the command sets the heap policy for long songs (the
    library does not)."""
    from longsep import heap

    calls = []
    monkeypatch.setattr(heap, "_mallopt", lambda *args: calls.append(args) or True)
    code, _, _ = run_cli(
        [f"model={files['store']}", f"input={files['silence']}", f"out_dir={tmp_path}"],
        capsys,
        monkeypatch,
    )
    assert code == 0
    for target in TARGETS:
        out = audio.load(tmp_path / "silence" / f"{target}.wav", sample_rate=RATE)
        assert out.shape == (2, RATE) and torch.isfinite(out).all() and out.abs().max() == 0
    assert calls == [(heap._M_MMAP_THRESHOLD, 1 << 20)]


def test_directory_with_a_bad_file_separates_the_rest(files, tmp_path, capsys, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="longsep")
    songs = tmp_path / "songs"
    songs.mkdir()
    for key in ("good", "mono", "corrupt"):
        (songs / files[key].name).write_bytes(files[key].read_bytes())
    code, out, err = run_cli(
        [f"model={files['store']}", f"input={songs}", f"out_dir={tmp_path / 'out'}", "codec=flac"],
        capsys,
        monkeypatch,
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "corrupt.wav" in lines[0] and "1 of 3 inputs failed" in lines[1]
    written = _outputs(tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == sorted(
        f"{song}/{t}.flac" for song in ("good", "mono") for t in TARGETS
    )
    assert audio.info(tmp_path / "out" / "mono" / "vocals.flac").channels == 1
    assert "separated 2 song(s) into 8 files, 1 failed" in caplog.text


def _log(capsys) -> str:
    return capsys.readouterr().out


def test_musdb_layout_glob_limit_and_residual(files, tmp_path, capsys, monkeypatch):
    pattern = str(files["musdb"].parents[1] / "*" / "*.wav")
    code, _, _ = run_cli(
        [f"model={files['vocals_only']}", f"input='{pattern}'", "limit=1", f"out_dir={tmp_path}"],
        capsys,
        monkeypatch,
    )
    assert code == 0
    # sorted glob: mixture.wav comes before vocals.wav; limit=1 keeps only the mixture
    assert [p.relative_to(tmp_path).as_posix() for p in _outputs(tmp_path)] == [
        "Artist - Song/residual.wav",
        "Artist - Song/vocals.wav",
    ]
    code, _, _ = run_cli(
        [
            f"model={files['vocals_only']}",
            f"input={files['musdb'].parents[1]}",
            f"out_dir={tmp_path / 'd'}",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0 and len(_outputs(tmp_path / "d")) == 2


def _subprocess(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    environ.pop("HYDRA_FULL_ERROR", None) if "HYDRA_FULL_ERROR" not in env else None
    return subprocess.run(
        [sys.executable, str(ROOT / "separate.py"), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_command_line_run_summary_and_no_run_directories(files, tmp_path):
    result = _subprocess(
        [f"model={files['store']}", f"input={files['good']}", "out_dir=separated", "codec=ogg"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "separated 1 song(s)" in result.stdout and "real-time factor" in result.stdout
    assert sorted(p.name for p in (tmp_path / "separated" / "good").iterdir()) == sorted(
        f"{t}.ogg" for t in TARGETS
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["separated"]


@pytest.mark.integration
def test_command_line_error_is_one_line_unless_verbose(files, tmp_path):
    args = [f"model={files['store']}", f"input={files['corrupt']}", "out_dir=separated"]
    result = _subprocess(args, tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "corrupt.wav" in result.stderr
    verbose = _subprocess([*args, "verbose=true"], tmp_path)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    assert not (tmp_path / "separated").exists()


def test_failed_exports_are_counted_per_song(files, tmp_path, capsys, monkeypatch, caplog):
    """Every song fails to write (a disk that fills up after the start): the summary says
    so, counts what is on disk, and no partial file is left."""
    from longsep.audio import encode
    from longsep.errors import LongsepError

    caplog.set_level(logging.INFO, logger="longsep")
    songs = tmp_path / "songs"
    songs.mkdir()
    for key in ("good", "mono"):
        (songs / files[key].name).write_bytes(files[key].read_bytes())

    def full(self):
        self.abort()
        raise LongsepError(f"{self.path}: cannot write audio (no space left on device)")

    monkeypatch.setattr(encode.AudioWriter, "commit", full)
    out = tmp_path / "out"
    code, _, err = run_cli(
        [f"model={files['store']}", f"input={songs}", f"out_dir={out}"], capsys, monkeypatch
    )
    assert code == 2 and "Traceback" not in err
    assert "2 of 2 inputs failed" in err and "no space left on device" in err
    assert "separated 0 song(s) into 0 files, 2 failed" in caplog.text
    assert _outputs(out) == [] and not list(out.rglob(".*.tmp-*"))


def test_an_out_dir_that_cannot_be_written_fails_before_separating(
    files, tmp_path, capsys, monkeypatch
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = [f"model={files['store']}", f"input={files['good']}", f"out_dir={blocker / 'out'}"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert (
        code == 2
        and err.strip() == f"error: out_dir={blocker / 'out'} is not writable: Not a directory"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_single_song_into_a_file_path_is_one_line(files, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(
        [f"model={files['store']}", f"input={files['good']}", f"out_dir={blocker / 'out'}"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and err.count("\n") == 1 and str(blocker / "out") in err


@pytest.mark.integration
def _temporaries(out: Path) -> list[Path]:
    """The hidden temporaries under ``out`` so far; none while ``out`` comes and goes (the
    run's write check makes it and removes it again before separating)."""
    try:
        return list(out.rglob(".*.tmp-*"))
    except FileNotFoundError:
        return []


def test_temporaries_of_a_killed_run_are_removed_by_the_next(files, tmp_path, capsys, monkeypatch):
    """A real separate.py killed while writing leaves hidden .tmp stems; the next run into
    the same out_dir removes them (only those of dead processes)."""
    out = tmp_path / "out"
    song = tmp_path / "long.wav"
    sf.write(song, np.tile(_tone(1.0), (60, 1)), RATE)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "separate.py"),
            f"model={files['store']}",
            f"input={song}",
            f"out_dir={out}",
            "segment=0.5",
        ],  # fmt: skip
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not _temporaries(out):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = list(out.rglob(".*.tmp-*"))
    assert stale
    alive = out / "long" / f".keep.tmp-{os.getpid()}-1.wav"  # a live writer's file stays
    alive.write_bytes(b"")
    code, _, _ = run_cli(
        [f"model={files['store']}", f"input={files['good']}", f"out_dir={out}"],
        capsys,
        monkeypatch,
    )
    assert code == 0
    assert not any(p.exists() for p in stale) and alive.exists()


def test_truncated_wav_is_separated_with_a_warning(files, tmp_path, capsys, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="longsep")
    data = files["good"].read_bytes()
    song = tmp_path / "cut.wav"
    song.write_bytes(data[: len(data) // 2])
    code, _, _ = run_cli(
        [f"model={files['store']}", f"input={song}", f"out_dir={tmp_path / 'out'}"],
        capsys,
        monkeypatch,
    )
    assert code == 0
    assert "cut.wav is truncated" in caplog.text
    assert audio.info(tmp_path / "out" / "cut" / "vocals.wav").frames == sf.info(song).frames


def test_bitrate_spellings_reach_the_writer(files, tmp_path, capsys, monkeypatch):
    for bitrate in ("320k", "320000", "320"):
        code, _, err = run_cli(
            [
                f"model={files['store']}",
                f"input={files['good']}",
                f"out_dir={tmp_path / bitrate}",
                "codec=mp3",
                f"bitrate={bitrate}",
            ],  # fmt: skip
            capsys,
            monkeypatch,
        )
        assert code == 0, err
    sizes = {b: (tmp_path / b / "good" / "vocals.mp3").stat().st_size for b in ("320k", "320")}
    assert sizes["320k"] == sizes["320"]


def _written(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in _outputs(folder)]


@pytest.mark.parametrize("targets", ["vocals", "[vocals]"])
def test_one_target_as_a_name_or_a_list(files, tmp_path, capsys, monkeypatch, targets):
    args = [f"model={files['store']}", f"input={files['good']}", f"targets={targets}"]
    code, _, err = run_cli([*args, f"out_dir={tmp_path}"], capsys, monkeypatch)
    assert code == 0, err
    assert _written(tmp_path) == ["good/residual.wav", "good/vocals.wav"]


def test_duration_minus_one_is_the_whole_file(files, tmp_path, capsys, monkeypatch):
    args = [f"model={files['vocals_only']}", f"input={files['good']}"]
    for duration, samples in (("-1", RATE), ("0.5", RATE // 2), ("null", RATE)):
        out = tmp_path / duration
        code, _, err = run_cli(
            [*args, f"duration={duration}", f"out_dir={out}"], capsys, monkeypatch
        )
        assert code == 0, err
        assert audio.info(out / "good" / "vocals.wav").frames == samples
    for duration in ("0", "-2", "abc"):
        out = tmp_path / f"bad{duration}"
        code, _, err = run_cli(
            [*args, f"duration={duration}", f"out_dir={out}"], capsys, monkeypatch
        )
        assert code == 2 and err.count("\n") == 1
        assert f"duration={duration}: give seconds > 0, or -1 / null" in err
        assert _outputs(out) == []


def test_spleeter_filename_format_keys(files, tmp_path, capsys, monkeypatch):
    fmt = "{foldername}/{filename}-{instrument}.{codec}"
    args = [f"model={files['vocals_only']}", f"input={files['musdb']}", f"out_dir={tmp_path}"]
    code, _, err = run_cli([*args, f"filename_format='{fmt}'"], capsys, monkeypatch)
    assert code == 0, err
    assert _written(tmp_path) == [
        "Artist - Song/mixture-residual.wav",
        "Artist - Song/mixture-vocals.wav",
    ]
    code, _, err = run_cli([*args, "filename_format='{track}/{stem}.wav'"], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "['stem']" in err
    for key in ("{track}", "{target}", "{codec}", "{filename}", "{instrument}", "{foldername}"):
        assert key in err


def test_two_stems_are_vocals_and_the_sum_of_the_rest(files, tmp_path, capsys, monkeypatch):
    args = [f"model={files['store']}", f"input={files['good']}"]
    code, _, err = run_cli([*args, f"out_dir={tmp_path / 'all'}"], capsys, monkeypatch)
    assert code == 0, err
    code, _, err = run_cli([*args, "stems=2", f"out_dir={tmp_path / 'two'}"], capsys, monkeypatch)
    assert code == 0, err
    assert _written(tmp_path / "two") == ["good/accompaniment.wav", "good/vocals.wav"]
    every = {t: audio.load(tmp_path / "all" / "good" / f"{t}.wav") for t in TARGETS}
    two = {
        t: audio.load(tmp_path / "two" / "good" / f"{t}.wav") for t in ("vocals", "accompaniment")
    }
    torch.testing.assert_close(two["vocals"], every["vocals"])
    rest = every["drums"] + every["bass"] + every["other"]
    torch.testing.assert_close(two["accompaniment"], rest, atol=1e-4, rtol=0)
    assert two["accompaniment"].abs().max() > 1e-3

    # one target: the accompaniment is the residual
    one = [f"model={files['vocals_only']}", f"input={files['good']}"]
    code, _, err = run_cli([*one, f"out_dir={tmp_path / 'r'}"], capsys, monkeypatch)
    code, _, err = run_cli([*one, "stems=2", f"out_dir={tmp_path / 'r2'}"], capsys, monkeypatch)
    assert code == 0, err
    torch.testing.assert_close(
        audio.load(tmp_path / "r2" / "good" / "accompaniment.wav"),
        audio.load(tmp_path / "r" / "good" / "residual.wav"),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stems=4"], "stems=4: use 2 (vocals + accompaniment) or null"),
        (["stems=2", "targets=[drums,bass]"], "stems=2 needs a vocals target"),
        (["stems=2", "targets=vocals", "niter=0"], "stems=2 needs a vocals target"),
    ],
)
def test_two_stems_errors_are_one_line(files, tmp_path, capsys, monkeypatch, overrides, message):
    args = [f"model={files['store']}", f"input={files['good']}", f"out_dir={tmp_path}"]
    code, _, err = run_cli([*args, *overrides], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and message in err
    assert _outputs(tmp_path) == []


def test_nothing_is_written_outside_out_dir_whatever_the_input_is_called(
    files, tmp_path, capsys, monkeypatch
):
    """An input named `...wav` has the track name `..`: its stems stay inside out_dir."""
    songs = tmp_path / "songs"
    songs.mkdir()
    sf.write(songs / "...wav", _tone(1.0), RATE, format="WAV")
    out = tmp_path / "deep" / "out"
    args = [f"model={files['vocals_only']}", f"input={songs / '...wav'}", f"out_dir={out}"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert [p.relative_to(tmp_path).as_posix() for p in _outputs(tmp_path / "deep")] == [
        "deep/out/__/residual.wav",
        "deep/out/__/vocals.wav",
    ]


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("../../x/{track}_{target}.{codec}", "climbs out of out_dir"),
        ("/tmp/{track}_{target}.{codec}", "is absolute"),
        ("{track}.{codec}", "has no {target}: the 2 targets would be written to one file"),
    ],
)
def test_filename_formats_that_escape_or_collide_are_one_line_and_write_nothing(
    files, tmp_path, capsys, monkeypatch, fmt, message
):
    out = tmp_path / "out"
    args = [f"model={files['vocals_only']}", f"input={files['good']}", f"out_dir={out}"]
    code, _, err = run_cli([*args, f"filename_format='{fmt}'"], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert _outputs(tmp_path) == []


def test_two_inputs_with_one_name_are_refused_before_anything_is_separated(
    files, tmp_path, capsys, monkeypatch
):
    for folder in ("x", "y"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        sf.write(tmp_path / "in" / folder / "song.wav", _tone(1.0), RATE)
    out = tmp_path / "out"
    args = [f"model={files['vocals_only']}", f"input={tmp_path / 'in'}", f"out_dir={out}"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1, err
    assert "x/song.wav" in err and "y/song.wav" in err and "{foldername}" in err
    assert _outputs(out) == []
    fmt = "{foldername}/{track}/{target}.{codec}"  # the documented way out
    code, _, err = run_cli([*args, f"filename_format='{fmt}'"], capsys, monkeypatch)
    assert code == 0, err
    assert len(_outputs(out)) == 4
