"""60-s training chunks per second: the decoded-audio cache versus musdb reads.

Both sides draw the same random (track, source, offset) chunks of every source
and sum them to a mixture, as a training step needs. The peer reads through
``musdb`` each time (``track.chunk_start`` / ``chunk_duration``, which decodes
with ffmpeg through stempeg). Prints one JSON object. Target: speedup >= 5.

    python benchmarks/data_loading.py                 # built-in synthetic set
    python benchmarks/data_loading.py --root ~/musdb18 --is-wav false
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from longsep.data.cache import TrackCache
from longsep.data.musdb import cache_musdb_track, open_musdb


def draw(tracks, n: int, seconds: float, seed: int) -> list[tuple[int, str, float]]:
    """Random (track index, source, start seconds) triples valid for every track."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = int(rng.integers(len(tracks)))
        span = max(0.0, tracks[t].duration - seconds)
        for source in ("vocals", "drums", "bass", "other"):
            out.append((t, source, float(rng.uniform(0, span))))
    return out


def bench_cache(cache: TrackCache, tracks, picks, seconds: float, rate: int) -> float:
    opened = [cache.open(t.subset, t.name) for t in tracks]
    length = round(seconds * rate)
    start = time.perf_counter()
    for i in range(0, len(picks), 4):
        mix = sum(opened[t].chunk(s, round(o * rate), length) for t, s, o in picks[i : i + 4])
        assert mix.shape[-1] == length
    return (len(picks) // 4) / (time.perf_counter() - start)


def bench_musdb(tracks, picks, seconds: float) -> float:
    start = time.perf_counter()
    for i in range(0, len(picks), 4):
        mix = 0
        for t, s, o in picks[i : i + 4]:
            track = tracks[t]
            track.chunk_start, track.chunk_duration = o, seconds
            mix = mix + track.sources[s].audio
    return (len(picks) // 4) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="MUSDB root (default: a synthetic set)")
    parser.add_argument("--is-wav", default="true", choices=["true", "false"])
    parser.add_argument("--setup-file", default=None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--cache-dtype", default="int16")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, setup_file = args.root, args.setup_file
        if root is None:
            from longsep.data.synth import ensure_dataset

            root = ensure_dataset(Path(tmp) / "synth", n_train=4, n_valid=0, n_test=0, seed=0)
            setup_file = "setup.yaml"
        tracks = open_musdb(root, "train", args.is_wav == "true", setup_file=setup_file)
        cache = TrackCache(Path(tmp) / "cache", root, 44100, args.cache_dtype)
        start = time.perf_counter()
        for track in tracks:
            cache_musdb_track(cache, track)
        fill = time.perf_counter() - start
        picks = draw(tracks, args.chunks, args.seconds, seed=0)
        ours = bench_cache(cache, tracks, picks, args.seconds, 44100)
        peer = bench_musdb(tracks, picks, args.seconds)
    print(
        json.dumps(
            {
                "benchmark": "data_loading",
                "chunk_seconds": args.seconds,
                "chunks": args.chunks,
                "tracks": len(tracks),
                "cache_dtype": args.cache_dtype,
                "cache_fill_seconds": round(fill, 2),
                "cache_chunks_per_s": round(ours, 2),
                "musdb_chunks_per_s": round(peer, 2),
                "speedup": round(ours / peer, 2),
                "target_speedup": 5.0,
            }
        )
    )


if __name__ == "__main__":
    main()
