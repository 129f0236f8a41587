"""Wiener EM speed: longsep's filter versus ``norbert.wiener`` on the same inputs.

A synthetic stereo song (:func:`longsep.data.synth.generate_song`, 180 s at 44.1 kHz by
default) gives the mixture STFT (n_fft 4096, hop 1024: 7753 frames x 2049 bins for
180 s) and four separator-like magnitude estimates (each stem's magnitude with a
seeded multiplicative error and some leakage of the mixture). Both implementations
filter them with one EM iteration (``niter=1``, mixture-phase initial estimates, the
same ``eps``) in windows of 300 frames, as Open-Unmix filters a song:

- ours: :func:`longsep.inference.wiener.apply_wiener`, the call the Separator makes
  (our layout ``(batch, sources, channels, bins, frames)``, float32 / complex64 in and
  out and inside, ill-conditioned bins redone in float64; it loops over the windows itself);
- theirs: ``norbert.wiener`` (numpy, float64) called on each window in norbert's layout
  ``(frames, bins, channels, sources)``.

Each side gets its inputs already in its own layout (built before the clock starts);
converting a window to float64 for norbert is timed, as it is timed inside ours.
Each runs ``--repeats`` times, alternating which goes first, and its fastest run counts
(the machine may be shared). Prints one JSON line: seconds of each, the ratio ours /
norbert (``wall``, target <= 0.3) and the largest disagreement
``max |ours - norbert| / max |norbert|`` of the outputs (target <= 1e-4).

    python benchmarks/wiener_speed.py                  # 180 s, all cores
    python benchmarks/wiener_speed.py --seconds 5      # quick check (the test runs this)
    python benchmarks/wiener_speed.py --threads 1      # on a busy machine
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from longsep import TARGETS
from longsep.data.synth import generate_song
from longsep.inference.wiener import apply_wiener
from longsep.spectral import STFTConfig, make_transforms


def make_inputs(seconds: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude estimates ``(1, 4, 2, bins, frames)`` float32 and the mixture STFT
    ``(1, 2, bins, frames)`` complex64 of the synthetic song of ``seed``."""
    song = generate_song(seed, duration=seconds)
    stft, _ = make_transforms(STFTConfig(n_fft=4096, hop_length=1024))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mix = stft(torch.from_numpy(song["mixture"].T.copy()))[None]  # (1, 2, F, T)
        mix_mag = mix.abs()
        mags = []
        for target in TARGETS:
            mag = stft(torch.from_numpy(song[target].T.copy())).abs()
            error = torch.empty(mag.shape).uniform_(0.7, 1.3, generator=gen)
            mags.append(mag * error + 0.05 * mix_mag[0])  # estimation error + leakage
    return torch.stack(mags)[None].contiguous(), mix.contiguous()


def run_ours(mags: torch.Tensor, mix: torch.Tensor, window: int, eps: float) -> torch.Tensor:
    """:func:`apply_wiener` over windows of ``window`` frames: ``(1, 4, 2, bins, frames)``."""
    return apply_wiener(mags, mix, niter=1, softmask=False, wiener_win_len=window, eps=eps)


def run_norbert(
    v: np.ndarray, x: np.ndarray, window: int, eps: float
) -> tuple[list[np.ndarray], float]:
    """``norbert.wiener`` per window of ``v (T, F, C, J)`` float32, ``x (T, F, C)`` complex64.

    Returns the filtered windows (complex128, norbert's layout) and the seconds spent.
    """
    import norbert

    out, seconds = [], 0.0
    for start in range(0, x.shape[0], window):
        t = slice(start, start + window)
        begin = time.perf_counter()
        y = norbert.wiener(
            v[t].astype(np.float64),
            x[t].astype(np.complex128),
            iterations=1,
            use_softmask=False,
            eps=eps,
        )
        seconds += time.perf_counter() - begin
        out.append(y)
    return out, seconds


def disagreement(ours: torch.Tensor, theirs: list[np.ndarray], window: int) -> float:
    """``max |ours - theirs| / max |theirs|`` (ours in our layout, theirs per window)."""
    diff, scale = 0.0, 0.0
    for k, ref in enumerate(theirs):
        # ours (1, J, C, F, T) -> norbert's (T, F, C, J)
        mine = ours[0, ..., k * window : k * window + ref.shape[0]].permute(3, 2, 1, 0)
        diff = max(diff, float(np.abs(mine.numpy().astype(np.complex128) - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
    return diff / max(scale, 1e-30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="song length")
    parser.add_argument("--window", type=int, default=300, help="frames filtered together")
    parser.add_argument("--eps", type=float, default=1e-10, help="regularisation (both)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each, alternating; the fastest counts"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mags, mix = make_inputs(args.seconds, args.seed)
    # norbert's layout, built before any clock starts: (T, F, C, J) and (T, F, C)
    v = np.ascontiguousarray(mags[0].permute(3, 2, 1, 0).numpy())
    x = np.ascontiguousarray(mix[0].permute(2, 1, 0).numpy())
    # warm-up on one window each (allocator, thread pools, imports), not timed
    run_ours(mags[..., : args.window], mix[..., : args.window], args.window, args.eps)
    run_norbert(v[: args.window], x[: args.window], args.window, args.eps)

    ours_times, norbert_times, ours, theirs = [], [], None, None
    for k in range(args.repeats):  # alternate which goes first: load on a shared machine
        for side in ("ours", "norbert") if k % 2 == 0 else ("norbert", "ours"):
            if side == "ours":
                ours = None  # free the previous output first (1 GB at 180 s)
                start = time.perf_counter()
                ours = run_ours(mags, mix, args.window, args.eps)
                ours_times.append(time.perf_counter() - start)
            else:
                theirs = None
                theirs, seconds = run_norbert(v, x, args.window, args.eps)
                norbert_times.append(seconds)
    ours_s, norbert_s = min(ours_times), min(norbert_times)
    result = {
        "benchmark": "wiener_speed",
        "seconds": args.seconds,
        "frames": int(mix.shape[-1]),
        "bins": int(mix.shape[-2]),
        "sources": int(mags.shape[1]),
        "channels": int(mix.shape[1]),
        "window": args.window,
        "niter": 1,
        "eps": args.eps,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "ours_s": round(ours_s, 3),
        "norbert_s": round(norbert_s, 3),
        "ours_s_all": [round(t, 3) for t in ours_times],
        "norbert_s_all": [round(t, 3) for t in norbert_times],
        "ratio": "ours/norbert",
        "wall": round(ours_s / norbert_s, 3),
        "max_rel_disagreement": disagreement(ours, theirs, args.window),
        "target": "wall <= 0.3, max_rel_disagreement <= 1e-4",
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
