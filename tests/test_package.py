"""The wheel as a person installs it: built, installed with its declared dependencies and
an extra into a fresh venv (nothing of the development venv), then the ``longsep`` command
run from a directory without the repository: separation with the default model that ships
in the wheel, training with the extra's logger and with the joblib launcher (issue 29)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT, TINY_SYNTH
from folder_layout import TINY_TRAIN
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, save_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[Path]:
    """A fresh venv holding the project's wheel and its dependencies (``[tensorboard]``),
    resolved by pip from the wheel's metadata; removed afterwards, also when set-up fails.

    torch and what it requires (its CUDA libraries: 5 GB) are linked from the running
    environment instead of installed a second time, so that the test needs ~0.5 GB of disk;
    pip sees them as installed, and resolves and installs everything else itself."""
    work = tmp_path_factory.mktemp("wheel")
    try:
        yield _install_wheel(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # rmtree unlinks the links, never their targets


def _install_wheel(work: Path) -> Path:
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
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    linked = _link_distributions("torch", _site(venv))
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
               f"{wheel}[tensorboard]"]  # fmt: skip
    # first what pip would install: never a linked one (it would write through the link)
    plan = subprocess.run(
        [*install, "--dry-run", "--report", str(work / "plan.json")],
        capture_output=True, text=True, timeout=1200, env=_clean_env(),
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned = json.loads((work / "plan.json").read_text())["install"]
    names = {canonicalize_name(item["metadata"]["name"]) for item in planned}
    assert not names & linked, f"pip would replace linked packages: {sorted(names & linked)}"
    pip = subprocess.run(install, capture_output=True, text=True, timeout=1200, env=_clean_env())
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv


def _link_distributions(name: str, site: Path) -> set[str]:
    """Symlink distribution ``name`` of the running environment, and every distribution it
    requires (recursively, extras and markers evaluated here), into ``site``, except those
    ``site`` has; returns the linked distributions' names."""
    own = metadata.distributions(path=[str(site)])
    present = {canonicalize_name(d.metadata["Name"]) for d in own}
    todo, done, names = [Requirement(name)], set(), set()
    while todo:
        want = todo.pop()
        dist = metadata.distribution(want.name)
        key = canonicalize_name(dist.metadata["Name"])
        if (key, frozenset(want.extras)) in done or key in present:
            continue  # what the venv has of its own (pip, setuptools) stays its own
        done.add((key, frozenset(want.extras)))
        names.add(key)
        extras = {""} | set(want.extras)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(req)
        for top in {Path(f).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            _link(site / top, Path(dist.locate_file(top)))
    return names


def _link(link: Path, target: Path) -> None:
    """``link`` -> ``target``; a namespace directory (``nvidia/``, which several
    distributions share) is made a real directory of links, so that a distribution pip adds
    to it lands in the venv, not in the running environment."""
    if target.is_dir() and not (target / "__init__.py").exists() and target.suffix != ".dist-info":
        link.mkdir(exist_ok=True)
        for child in target.iterdir():
            _link(link / child.name, child)
    elif target.exists() and not link.exists():
        link.symlink_to(target, target_is_directory=target.is_dir())


def _clean_env() -> dict[str, str]:
    """The environment without the development venv or the repository on any path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LONGSEP_ROOT", "PYTHONHOME")}  # fmt: skip
    return {**env, "OMP_NUM_THREADS": "1"}


def _longsep(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "longsep"), *args], cwd=cwd, env=_clean_env(), capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


def test_the_wheel_ships_the_configs(installed):
    site = _site(installed)
    confs = sorted(p.relative_to(site).as_posix() for p in (site / "longsep").rglob("*.yaml"))
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
    shown = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code], cwd=elsewhere, env=_clean_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    assert shown.stdout.strip().startswith(str(installed)), shown.stdout


def _finished_runs(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cwd / "runs").rglob("result.json"))]


def test_installed_command_trains_with_the_extras_logger(installed, tmp_path):
    """``longsep train logger=tensorboard ...`` works with what ``.[tensorboard]`` installs."""
    done = _longsep(installed, ["train", "logger=tensorboard", *TINY_TRAIN, *TINY_SYNTH], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = _finished_runs(tmp_path)
    assert result["status"] == "ok" and result["best_val_loss"] is not None
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*")), "no tensorboard events"


def test_installed_command_sweeps_with_the_joblib_launcher(installed, tmp_path):
    """``longsep train -m hydra/launcher=joblib ...``: two jobs side by side, both ``ok``
    (the README's sweep: two seq_len values, so two run dirs)."""
    tiny = [a for a in TINY_TRAIN if not a.startswith("seq_len=")]
    done = _longsep(
        installed,
        ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seq_len=1,2",
         *tiny, *TINY_SYNTH],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr  # Hydra's launcher log
    assert [r["status"] for r in _finished_runs(tmp_path)] == ["ok", "ok"]
