"""The wheel: configs ship inside the package and the ``longsep`` command works from any
directory without the repository (installed non-editable into a separate folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT

from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, save_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel and installed (no dependencies) into its own folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building leaves build/ and *.egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(work / "dist")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("longsep-*.whl")
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return target


def _longsep(target: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(target / "bin" / "longsep"), *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


def test_the_wheel_ships_the_configs(installed):
    confs = sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*.yaml"))
    assert "longsep/conf/train.yaml" in confs
    assert "longsep/conf/hydra/launcher/slurm.yaml" in confs
    assert "longsep/conf/experiment/seq_len_study.yaml" in confs


def test_installed_command_separates_from_another_directory(installed, tmp_path):
    stft = STFTConfig(n_fft=512, hop_length=128)
    node = {"_target_": "longsep.models.umx.UMX", "nb_bins": stft.nb_bins, "nb_channels": 2,
            "hidden_size": 8, "max_bin": 64}  # fmt: skip
    for target in ("vocals", "drums"):
        model = UMX(**{k: v for k, v in node.items() if k != "_target_"})
        save_store(tmp_path / "store", model, StoreEntry(target, node, stft, seq_len=1.0))
    song = tmp_path / "song.wav"
    sf.write(song, np.random.default_rng(0).uniform(-0.3, 0.3, (44100, 2)), 44100)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = _longsep(installed, ["study", "--help"], elsewhere)
    assert where.returncode == 0 and "sweep_dir" in where.stdout
    helped = _longsep(installed, ["separate", "--help"], elsewhere)
    assert helped.returncode == 0 and "filename_format" in helped.stdout
    done = _longsep(
        installed,
        ["separate", f"model={tmp_path / 'store'}", f"input={song}", "out_dir=out"],
        elsewhere,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (elsewhere / "out" / "song").iterdir()) == [
        "drums.wav",
        "vocals.wav",
    ]
    # the person's form with the default model that ships in the wheel
    default = _longsep(installed, ["separate", str(song), "-o", "stems"], elsewhere)
    assert default.returncode == 0, default.stderr[-2000:]
    assert "the default model" in default.stdout + default.stderr
    assert str(installed) in default.stdout + default.stderr  # the packaged copy, not the clone's
    assert sorted(p.name for p in (elsewhere / "stems" / "song").iterdir()) == [
        "bass.wav",
        "drums.wav",
        "other.wav",
        "vocals.wav",
    ]
    code = "import longsep.config as c; print(c.conf_dir())"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert shown.stdout.strip().startswith(str(installed)), shown.stdout
