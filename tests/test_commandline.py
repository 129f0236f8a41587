"""The installed command as a person types it: ``longsep separate a.mp3 b.flac -o out``,
``longsep <command> --help`` listing options with defaults and descriptions."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from longsep.__main__ import main
from longsep.cli.help import describe, separate_overrides


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("separate", overrides=overrides)


def test_positional_inputs_and_short_flags_become_the_hydra_config():
    """Names with spaces, commas, brackets and quotes reach the config as typed."""
    awkward = ["my song.wav", "a,b [live].flac", "it's.mp3"]
    overrides = separate_overrides(
        [*awkward, "-o", "out dir", "-t", "vocals,drums", "-c", "flac", "niter=0"]
    )
    cfg = _compose(overrides)
    assert list(cfg.input) == awkward
    assert cfg.out_dir == "out dir" and list(cfg.targets) == ["vocals", "drums"]
    assert cfg.codec == "flac" and cfg.niter == 0
    assert _compose(separate_overrides(["input=x.wav", "out_dir=y"])).input == "x.wav"


def test_help_lists_each_option_with_its_default_and_description(capsys):
    with pytest.raises(SystemExit) as done:
        separate_overrides(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "-o OUT_DIR, --out-dir OUT_DIR" in text
    assert any(
        line.split()[:2] == ["niter", "1"] and "Wiener EM" in line for line in text.splitlines()
    )
    train = describe("train")
    assert any(
        line.split()[:2] == ["seq_len", "6.0"] and "seconds" in line for line in train.splitlines()
    )
    assert "one of: auto_transformer, auto_transformer_small, umx" in train
    assert main(["evaluate", "--help"]) == 0
    assert "backend" in capsys.readouterr().out


@pytest.mark.integration
def test_separate_two_songs_from_another_directory(tmp_path):
    t = np.arange(2 * 44100) / 44100
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    sf.write(tmp_path / "my song.wav", song, 44100)
    sf.write(tmp_path / "other.flac", song, 44100)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longsep", "separate", "my song.wav", "other.flac", "-o", "out"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.wav")
    )
    stems = ("bass", "drums", "other", "vocals")
    assert written == sorted(f"{song}/{s}.wav" for song in ("my song", "other") for s in stems)


def test_torch_hub_loads_the_default_model_from_a_clone():
    """``torch.hub.load(<repo>, "default")`` as from a clone torch.hub made (source=local)."""
    separator = torch.hub.load(str(ROOT), "default", source="local", device="cpu", niter=0)
    assert separator.targets == ["vocals", "drums", "bass", "other"] and separator.niter == 0
    song = torch.randn(1, 2, separator.sample_rate)
    stems = separator(song)
    assert stems.shape == (1, 4, 2, separator.sample_rate)
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {"default", "umxhq", "umxl"} <= {n for n in dir(module) if not n.startswith("_")}
    assert "torch" in module.dependencies
