"""Write small folder data sets (any stem names, wav or flac) for tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def tone(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """A stereo ``(samples, 2)`` sine plus noise, distinct per ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    left = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 900) * t)
    noise = 0.02 * rng.standard_normal(t.shape)
    return np.stack([left + noise, 0.7 * left - noise], axis=1).astype(np.float32)


def write_files(folder: Path, seconds: Mapping[str, float], ext: str = "wav", seed: int = 0):
    """``folder/<name>.<ext>`` for each name -> seconds (float wav, 24-bit flac)."""
    folder.mkdir(parents=True, exist_ok=True)
    subtype = "FLOAT" if ext == "wav" else "PCM_24"
    for i, (name, length) in enumerate(seconds.items()):
        sf.write(folder / f"{name}.{ext}", tone(length, seed * 100 + i), RATE, subtype=subtype)


def write_folder(
    root: Path,
    splits: Mapping[str, Mapping[str, float]],
    stems: Sequence[str],
    ext: str = "wav",
) -> Path:
    """``root/<split>/<track>/<stem>.<ext>``: splits -> {track: seconds}."""
    seed = 0
    for split, tracks in splits.items():
        for track, seconds in tracks.items():
            seed += 1
            write_files(root / split / track, {s: seconds for s in stems}, ext, seed)
    return root


# one optimizer step and one validation batch of a small UMX on 1-s chunks
TINY_TRAIN = [
    "separator=umx_small",
    "seq_len=1",
    "++trainer.max_steps=1",
    "++trainer.val_check_interval=1",
    "++trainer.limit_val_batches=1",
    "data.batch_size=2",
    "data.num_workers=0",
    "callbacks.media=null",
]


def train_cli(cwd: Path, *args: str) -> Path:
    """Run ``python train.py ARGS`` + :data:`TINY_TRAIN` from ``cwd`` as a user types it;
    return the run directory (checked to hold an ``ok`` result.json with a validation loss)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    env.pop("LONGSEP_ROOT", None)
    argv = [sys.executable, str(ROOT / "train.py"), *args, *TINY_TRAIN]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((cwd / "runs").glob("*/*/result.json"), key=lambda p: p.stat().st_mtime)
    result = json.loads(results[-1].read_text())
    assert result["status"] == "ok" and result["best_val_loss"] is not None  # validated
    return results[-1].parent
