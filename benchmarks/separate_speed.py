"""Separation speed and memory: longsep's Separator vs Open-Unmix's, same weights, same input.

Four UMX-HQ-size target models (hidden 512, max_bin for 16 kHz, random weights) are saved
once as an Open-Unmix model directory; each implementation then separates the same stereo
track (niter=1) on CPU in a fresh subprocess, so peak RSS is its own. Prints one JSON line
per run and one with the ratios (ours / theirs).

    python benchmarks/separate_speed.py                 # 180-s track, ours vs openunmix
    python benchmarks/separate_speed.py --minutes 60    # 60-min track, ours only (memory)
    python benchmarks/separate_speed.py --minutes 180 --file-only   # file to file only

Without ``--minutes`` ours also separates the track from a 16-bit wav to four wav stems
(``separate_to_file``: reading the wav and writing the stems included), and the ratios
compare both of our runs with Open-Unmix's in-memory separation.

With ``--minutes``, ours runs twice: ``Separator(track)`` in memory (the four stems are
held: 4x the input) and ``separate_to_file`` on a 16-bit wav of the track, which reads the
input window by window and streams the stems to wav files (constant memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RATE = 44100
TARGETS = ("vocals", "drums", "bass", "other")


def write_models(folder: Path, hidden: int) -> None:
    """Random UMX-HQ-size Open-Unmix models in Open-Unmix's directory format."""
    from openunmix.model import OpenUnmix
    from openunmix.utils import bandwidth_to_max_bin

    max_bin = int(bandwidth_to_max_bin(RATE, 4096, 16000))
    for seed, target in enumerate(TARGETS):
        torch.manual_seed(seed)
        model = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=hidden, max_bin=max_bin)
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
        torch.save(model.state_dict(), folder / f"{target}.pth")
        args = {"nfft": 4096, "nhop": 1024, "nb_channels": 2, "hidden_size": hidden}
        (folder / f"{target}.json").write_text(json.dumps({"args": args}))
    conf = {"nfft": 4096, "nhop": 1024, "sample_rate": RATE, "nb_channels": 2}
    (folder / "separator.json").write_text(json.dumps(conf))


def make_track(seconds: float, seed: int = 0) -> torch.Tensor:
    """``(1, 2, samples)`` noise plus tones, built in 10-s pieces to keep the peak low."""
    samples = int(seconds * RATE)
    track = torch.empty(1, 2, samples)
    gen = torch.Generator().manual_seed(seed)
    piece = 10 * RATE
    for lo in range(0, samples, piece):
        hi = min(samples, lo + piece)
        t = torch.arange(lo, hi, dtype=torch.float64) / RATE
        tones = (torch.sin(2 * torch.pi * 220 * t) + torch.sin(2 * torch.pi * 1300 * t)).float()
        track[0, :, lo:hi] = 0.2 * tones + 0.05 * torch.randn(2, hi - lo, generator=gen)
    return track


def write_track(path: Path, seconds: float) -> None:
    """A track like :func:`make_track`'s, written as 16-bit wav 60 s at a time (the whole
    track is never in memory, so hours of audio can be written)."""
    import soundfile as sf

    with sf.SoundFile(str(path), "w", RATE, 2, "PCM_16") as f:
        for index, lo in enumerate(range(0, int(seconds * RATE), 60 * RATE)):
            piece = make_track(min(60.0, seconds - lo / RATE), seed=index)[0]
            f.write(piece.T.numpy())


def reset_peak_rss() -> None:
    """Start the peak RSS afresh: a child's ru_maxrss starts at its parent's RSS at fork."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak RSS since :func:`reset_peak_rss` (VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    """One measurement in this process: load, separate once, print JSON."""
    torch.set_num_threads(args.threads) if args.threads else None
    if args.impl == "ours":
        from longsep.inference.separator import Separator

        segment = None if args.segment == "none" else args.segment
        sep = Separator.from_pretrained(args.models, niter=args.niter, segment=segment)
    else:
        from openunmix.utils import load_separator

        sep = load_separator(str(args.models), targets=list(TARGETS), niter=args.niter).eval()
        sep.freeze()
    if args.input:  # ours, file to files, with the heap policy separate.py sets
        from longsep.heap import unmap_large_blocks

        unmap_large_blocks()
        stems = args.input.parent / "stems"

        def run() -> dict:
            outputs = sep.separate_to_file(args.input, stems)
            size = sum(p.stat().st_size for p in outputs.values())
            shutil.rmtree(stems)
            return {"impl": "ours-to-file", "stems_mb": round(size / 2**20, 1)}
    else:
        track = make_track(args.seconds)

        def run() -> dict:
            with torch.inference_mode():
                out = sep(track)
            peak = peak_rss_mb()  # before the check below, which copies the output
            finite = all(bool(torch.isfinite(part).all()) for part in out.split(RATE, -1))
            return {"peak_rss_mb": peak, "output_shape": list(out.shape), "finite": finite}

    reset_peak_rss()
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    extra = run()
    wall = time.perf_counter() - start
    result = {
        "impl": args.impl,
        "seconds": args.seconds,
        "niter": args.niter,
        "threads": torch.get_num_threads(),
        "wall_s": round(wall, 3),
        "rtf": round(wall / args.seconds, 4),
        "peak_rss_mb": round(extra.pop("peak_rss_mb", None) or peak_rss_mb(), 1),
        "rss_before_separation_mb": round(rss_before, 1),
        **extra,
    }
    if args.impl == "ours":
        result["segment_s"] = sep.segment
    print(json.dumps(result), flush=True)


def measure(impl: str, models: Path, args: argparse.Namespace, track: Path | None = None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        impl,
        "--models",
        str(models),
        "--seconds",
        str(args.seconds),
        "--niter",
        str(args.niter),
        "--threads",
        str(args.threads),
        "--segment",
        str(args.segment),
        *(["--input", str(track)] if track else []),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        result = {"impl": impl, "error": done.stderr.strip().splitlines()[-1:]}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="track length")
    parser.add_argument("--minutes", type=float, help="long-track mode: ours only")
    parser.add_argument(
        "--file-only", action="store_true", help="with --minutes: skip the in-memory run"
    )
    parser.add_argument("--niter", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--segment", default="auto", help="ours: seconds, auto or none")
    parser.add_argument("--child", choices=["ours", "openunmix"], help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minutes:
        args.seconds = args.minutes * 60
    if args.child:
        args.impl = args.child
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_models(Path(tmp), args.hidden)
        runs = [] if args.minutes and args.file_only else [measure("ours", Path(tmp), args)]
        write_track(Path(tmp) / "track.wav", args.seconds)
        runs.append(measure("ours", Path(tmp), args, track=Path(tmp) / "track.wav"))
        if not args.minutes:
            runs.append(measure("openunmix", Path(tmp), args))
    if any("error" in run for run in runs):
        sys.exit(1)
    if not args.minutes:
        ours, ours_file, theirs = runs
        ratios = {
            "ratio": "ours/openunmix",
            "seconds": args.seconds,
            "wall": round(ours["wall_s"] / theirs["wall_s"], 3),
            "wall_file_to_file": round(ours_file["wall_s"] / theirs["wall_s"], 3),
            "peak_rss": round(ours["peak_rss_mb"] / theirs["peak_rss_mb"], 3),
            "peak_rss_file_to_file": round(ours_file["peak_rss_mb"] / theirs["peak_rss_mb"], 3),
            "target": "wall <= 0.5, peak_rss <= 1.0",
        }
        print(json.dumps(ratios), flush=True)


if __name__ == "__main__":
    main()
