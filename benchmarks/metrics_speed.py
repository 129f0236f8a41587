"""BSSEval v4 speed: our torch backend (``fast``) versus museval on the same signals.

Four stereo targets of a built-in synthetic song (with its silent intro, so some frames
are ``nan``) and separator-like estimates (filtered target + leakage of the other
targets + noise) are scored with 1-s windows by both backends in the same run. Prints
one JSON object: seconds of compute per minute of audio for each, the speed ratio, and
the largest per-frame difference in dB. Targets: ratio >= 20 on CPU for 60 s of audio,
difference <= 0.01.

    python benchmarks/metrics_speed.py                        # 30 s of audio, CPU
    python benchmarks/metrics_speed.py --seconds 60           # the length of the target
    python benchmarks/metrics_speed.py --seconds 240 --device cuda
    python benchmarks/metrics_speed.py --threads 1          # on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from scipy.signal import lfilter

from longsep import TARGETS
from longsep.data.synth import generate_song
from longsep.evaluation.bsseval import BSS_METRICS, bss_eval


def make_signals(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """References and estimates, ``(4, samples, 2)`` float64, museval layout."""
    song = generate_song(seed, duration=seconds)
    # 16-bit, as MUSDB18 stems are: exactly panned float32 stems make BSSEval's Gram
    # matrix singular to rounding, and then museval's own scores are not reproducible
    refs = np.round(np.stack([song[t] for t in TARGETS]).astype(np.float64) * 32767) / 32767
    rng = np.random.default_rng(seed)
    leak = 0.15 * (refs.sum(0, keepdims=True) - refs)
    colored = lfilter([0.8, 0.15, -0.05], [1.0], refs, axis=1)
    noise = 0.01 * rng.standard_normal(refs.shape) * refs.std(axis=(1, 2), keepdims=True)
    return refs, colored + leak + noise


def timed(fn, repeats: int) -> tuple[list[float], dict[str, np.ndarray]]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, bool]:
    """Largest |difference| over frames finite in both, and whether nan/inf agree."""
    diff, same = 0.0, True
    for m in BSS_METRICS:
        x, y = a[m], b[m]
        same &= bool(np.array_equal(np.isnan(x), np.isnan(y)))
        same &= bool(np.array_equal(np.isposinf(x), np.isposinf(y)))
        both = np.isfinite(x) & np.isfinite(y)
        if both.any():
            diff = max(diff, float(np.abs(x[both] - y[both]).max()))
    return diff, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="device of the fast backend")
    parser.add_argument("--repeats", type=int, default=2, help="fast runs before and after")
    parser.add_argument("--window", type=int, default=44100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    refs, ests = make_signals(args.seconds, args.seed)
    kwargs = {"window": args.window, "hop": args.window}

    def fast() -> dict[str, np.ndarray]:
        out = bss_eval(refs, ests, backend="fast", device=args.device, **kwargs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    noise = np.random.default_rng(args.seed).standard_normal(
        (2, *refs.shape[:1], 2 * args.window, 2)
    )
    start = time.perf_counter()  # FFT plans, thread pools, CUDA context
    bss_eval(*noise, backend="fast", device=args.device, **kwargs)
    warmup = time.perf_counter() - start
    # the fast runs bracket the museval run, so that load changes affect both alike
    before, fast_scores = timed(fast, args.repeats)
    museval_times, museval_scores = timed(
        lambda: bss_eval(refs, ests, backend="museval", **kwargs), 1
    )
    after, _ = timed(fast, args.repeats)
    fast_times = before + after
    diff, same = compare(fast_scores, museval_scores)
    fast_s, museval_s = statistics.median(fast_times), museval_times[0]
    per_min = 60.0 / args.seconds
    print(
        json.dumps(
            {
                "benchmark": "metrics_speed",
                "seconds_audio": args.seconds,
                "targets": refs.shape[0],
                "channels": refs.shape[2],
                "frames": int(fast_scores["SDR"].shape[1]),
                "nan_frames": int(np.isnan(museval_scores["SDR"]).all(0).sum()),
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "museval_s": round(museval_s, 3),
                "fast_s_runs": [round(t, 3) for t in fast_times],
                "load_average": round(os.getloadavg()[0], 2),
                "fast_warmup_s": round(warmup, 3),
                "museval_s_per_min": round(museval_s * per_min, 3),
                "fast_s_per_min": round(fast_s * per_min, 3),
                "speed_ratio": round(museval_s / fast_s, 2),
                "max_abs_diff_db": diff,
                "nan_inf_positions_match": same,
            }
        )
    )


if __name__ == "__main__":
    main()
