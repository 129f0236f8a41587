"""Write small MUSDB18-HQ-layout data sets for tests (no download, no generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

SOURCES = ("vocals", "drums", "bass", "other")


def _stem(rng: np.random.Generator, index: int, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    freq = 110.0 * (index + 1) * rng.uniform(0.9, 1.1)
    tone = 0.2 * np.sin(2 * np.pi * freq * t)
    noise = 0.02 * rng.standard_normal(t.shape)
    left, right = tone + noise, 0.8 * tone + noise[::-1]
    return np.stack([left, right], axis=1).astype(np.float32)


def write_track(folder: Path, seconds: float, seed: int, rate: int = 44100) -> None:
    """``mixture.wav`` + the four stems (float wav), mixture = exact sum."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = {name: _stem(rng, i, seconds, rate) for i, name in enumerate(SOURCES)}
    for name, audio in stems.items():
        sf.write(folder / f"{name}.wav", audio, rate, subtype="FLOAT")
    sf.write(folder / "mixture.wav", sum(stems.values()), rate, subtype="FLOAT")


def write_musdb(
    root: Path, train: dict[str, float], valid: dict[str, float], test: dict[str, float]
):
    """Tracks (name -> seconds) per split plus a musdb ``setup.yaml`` naming the valid ones."""
    import musdb

    for seed, (name, seconds) in enumerate({**train, **valid}.items()):
        write_track(root / "train" / name, seconds, seed)
    for seed, (name, seconds) in enumerate(test.items(), start=100):
        write_track(root / "test" / name, seconds, seed)
    setup = yaml.safe_load((Path(musdb.__path__[0]) / "configs" / "mus.yaml").read_text())
    setup["validation_tracks"] = sorted(valid)
    (root / "setup.yaml").write_text(yaml.safe_dump(setup))
    return root
