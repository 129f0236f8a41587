"""Bad input and hostile files against the real commands: each case asserts the exit code,
the one-line message and what is on disk afterwards.

The model-file cases start from the shipped default model
(``src/longsep/pretrained/umx_small_rendered``), changed the way a broken or malicious
download would be. Each command runs as a user types it (a subprocess), so the whole path
from Hydra to the error line is covered.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import ROOT
from safetensors.torch import load_file, save_file

DEFAULT_MODEL = ROOT / "src" / "longsep" / "pretrained" / "umx_small_rendered"
RATE = 22050
pytestmark = pytest.mark.integration


def _cli(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LONGSEP_ROOT": str(cwd), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / script), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 2 and exactly one ``error:`` line holding ``needles``."""
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said[-3000:]
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, said[-3000:]
    assert said.count(errors[0].removeprefix("error: ")) == 1, "the error is printed once"
    assert "Traceback" not in said and "weights_only=False" not in said
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """Four seconds of a chord over noise, stereo, at the default model's rate."""
    folder = tmp_path_factory.mktemp("songs")
    t = np.arange(4 * RATE) / RATE
    rng = np.random.default_rng(0)
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
    audio = np.stack([chord + 0.05 * rng.standard_normal(t.size)] * 2, axis=1)
    sf.write(folder / "song.wav", audio.astype(np.float32), RATE, subtype="PCM_16")
    return folder / "song.wav"


def _vocals_store(folder: Path) -> Path:
    """The default model's vocals target alone, in ``folder``."""
    folder.mkdir(parents=True)
    for suffix in (".yaml", ".safetensors"):
        shutil.copy(DEFAULT_MODEL / f"vocals{suffix}", folder / f"vocals{suffix}")
    return folder


def _huge_hidden_size(store: Path) -> None:
    meta = yaml.safe_load((store / "vocals.yaml").read_text())
    meta["separator"]["hidden_size"] = 100_000_000  # 400 GB of LSTM weights if allocated
    (store / "vocals.yaml").write_text(yaml.safe_dump(meta))


def _wrong_shape(store: Path) -> None:
    state = load_file(store / "vocals.safetensors")
    state["fc1.weight"] = state["fc1.weight"][:, :-1].contiguous()
    save_file(state, store / "vocals.safetensors")


def _python_tag(store: Path) -> None:
    (store / "vocals.yaml").write_text("!!python/object/apply:os.system ['touch pwned']\n")


def _foreign_target(store: Path) -> None:
    meta = yaml.safe_load((store / "vocals.yaml").read_text())
    meta["separator"]["_target_"] = "os.system"
    (store / "vocals.yaml").write_text(yaml.safe_dump(meta))


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (_huge_hidden_size, ["vocals.safetensors", "'fc1.weight' is (", "100000000"]),
        (_wrong_shape, ["vocals.safetensors", "'fc1.weight' is (", "in the model"]),
        (_python_tag, ["vocals.yaml", "could not determine a constructor", "(line 1)"]),
        (_foreign_target, ["vocals.yaml", "refusing to build 'os.system'"]),
    ],
    ids=["huge-hidden-size", "wrong-shape", "python-tag", "foreign-target"],
)
def test_a_model_store_that_lies_is_one_line_and_writes_nothing(tmp_path, song, change, needles):
    store = _vocals_store(tmp_path / "model")
    change(store)
    out = tmp_path / "out"
    proc = _cli("separate.py", [f"model={store}", f"input={song}", f"out_dir={out}"], tmp_path)
    _one_error(proc, *needles)
    assert not out.exists() and not (tmp_path / "pwned").exists()


def test_a_pickled_checkpoint_is_refused_without_advice_to_unpickle(tmp_path, song):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": {}, "x": Payload()}, tmp_path / "evil.ckpt")
    proc = _cli("separate.py", [f"model={tmp_path / 'evil.ckpt'}", f"input={song}"], tmp_path)
    _one_error(proc, "evil.ckpt", "pickled Python objects")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "separated").exists()


def test_an_input_named_dots_is_written_inside_out_dir(tmp_path, song):
    songs = tmp_path / "songs"
    songs.mkdir()
    shutil.copy(song, songs / "...wav")
    out = tmp_path / "deep" / "out"
    proc = _cli("separate.py", [f"input={songs / '...wav'}", f"out_dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stems = [f"out/__/{t}.wav" for t in ("bass", "drums", "other", "vocals")]
    assert _files(tmp_path / "deep") == stems


@pytest.mark.parametrize(
    ("fmt", "needle"),
    [
        ("../../x/{track}_{target}.{codec}", "climbs out of out_dir"),
        ("/tmp/longsep-adversarial/{track}_{target}.{codec}", "is absolute"),
        ("{track}.{codec}", "has no {target}"),
    ],
    ids=["climbs-out", "absolute", "no-target"],
)
def test_filename_formats_that_escape_or_collide_write_nothing(tmp_path, song, fmt, needle):
    out = tmp_path / "a" / "out"
    args = [f"input={song}", f"out_dir={out}", f"filename_format='{fmt}'"]
    _one_error(_cli("separate.py", args, tmp_path), needle)
    assert _files(tmp_path) == [] and not Path("/tmp/longsep-adversarial").exists()


def test_two_inputs_with_one_name_lose_no_stem(tmp_path, song):
    for folder in ("x", "y"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(song, tmp_path / "in" / folder / "song.wav")
    out = tmp_path / "out"
    proc = _cli("separate.py", [f"input={tmp_path / 'in'}", f"out_dir={out}"], tmp_path)
    _one_error(proc, "x/song.wav", "y/song.wav")
    assert not out.exists()


def test_the_same_separation_twice_gives_byte_identical_files(tmp_path, song):
    digests = []
    for name in ("one", "two"):
        out = tmp_path / name
        proc = _cli("separate.py", [f"input={song}", f"out_dir={out}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = _files(out)
        assert len(files) == 4
        digests.append({f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1]


def test_a_symlink_loop_as_input_says_so(tmp_path):
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    _one_error(_cli("separate.py", [f"input={loop}"], tmp_path), "loop.wav", "symbolic link")


def test_an_out_dir_that_cannot_be_written_is_reported_before_separating(tmp_path, song):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "out"
    proc = _cli("separate.py", [f"input={song}", f"out_dir={out}"], tmp_path)
    _one_error(proc, f"out_dir={out} is not writable")
    assert "separated" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("override", "needle"),
    [("init_from=/nonexistent/model", "init_from=/nonexistent/model does not exist"),
     ("gpu=7", "gpu=7 but")],
    ids=["init_from", "gpu"],
)  # fmt: skip
def test_training_fails_before_generating_data(tmp_path, override, needle):
    proc = _cli("train.py", ["separator=umx_small", override], tmp_path)
    _one_error(proc, needle)
    assert not (tmp_path / "data").exists(), "the data set was generated first"
    assert not list(tmp_path.glob("runs/*")), "a run directory was left behind"
