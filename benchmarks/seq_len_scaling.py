"""Forward + backward time and peak memory of every separator versus input length.

Each (separator, attention, seq_len) is measured in a fresh subprocess (batch 1,
stereo, training mode, after a short warm-up pass) so memory growth is clean:
peak RSS growth on CPU (peak reset through /proc/self/clear_refs where possible),
``max_memory_allocated`` growth on a GPU. Prints one JSON line per measurement,
then a markdown table with the ratio of peak memory at the longest / shortest
length per model (target <= 12x from 7 s to 60 s) and each model's memory
relative to the peer, Open-Unmix's BiLSTM (``umx``), at the longest length.

    python benchmarks/seq_len_scaling.py                      # full size, all models
    python benchmarks/seq_len_scaling.py --small --seq-lens 7 15
    python benchmarks/seq_len_scaling.py --models umx umx_transformer:qkv1D --bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ATTENTIONS = ("mha", "qkv1D", "qkv2D", "qkvg1D")
MODELS = ["umx"] + [f"{s}:{a}" for s in ("umx_transformer", "auto_transformer") for a in ATTENTIONS]
PEER = "umx"


def _proc_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(model: str, seq_len: float, small: bool, bf16: bool, device: str) -> dict:
    """Build ``model`` (``separator[:attention]``) and time one forward + backward pass."""
    import torch

    from longsep.models import build_network
    from longsep.spectral import STFTConfig

    separator, _, attention = model.partition(":")
    name = f"{separator}_small" if small else separator
    net = build_network(name, attention or None, seq_len=seq_len).to(device).train()
    frames = STFTConfig().seconds_to_frames(seq_len)
    cuda = device.startswith("cuda")
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        warm_up = net(torch.rand(1, 2, net.nb_output_bins, 8, device=device))
    warm_up.float().mean().backward()  # one-time kernel / allocator set-up, not measured
    net.zero_grad(set_to_none=True)
    del warm_up
    mag = torch.rand(1, 2, net.nb_output_bins, frames, device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset = _reset_peak_rss()
        base = (_proc_kib("VmRSS") or 0) * 1024
        base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        loss = net(mag).float().square().mean()
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    elif reset and _proc_kib("VmHWM") is not None:
        peak = _proc_kib("VmHWM") * 1024 - base
    else:  # peak since start of process: an upper bound taken from the baseline peak
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - min(base, base_peak)
    return {
        "model": model,
        "small": small,
        "seq_len": seq_len,
        "frames": frames,
        "params": sum(p.numel() for p in net.parameters()),
        "fwd_bwd_s": round(seconds, 3),
        "peak_mb": round(peak / 2**20, 1),
        "device": device,
        "bf16": bf16,
        "threads": torch.get_num_threads(),
    }


def _run_worker(model: str, seq_len: float, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", model, "--seq-lens", str(seq_len)]
    cmd += ["--device", args.device] + (["--small"] if args.small else [])
    cmd += ["--bf16"] if args.bf16 else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["?"]
        return {"model": model, "seq_len": seq_len, "error": tail[0]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ratio(by: dict, model: str, num: float, den: float, den_model: str | None = None) -> str:
    a = by.get((den_model or model, den), {}).get("peak_mb")
    b = by.get((model, num), {}).get("peak_mb")
    return f"{b / a:.2f}x" if a and b else "-"


def _table(rows: list[dict], seq_lens: list[float]) -> list[str]:
    """Markdown: time / peak memory per length, growth longest/shortest, memory vs the peer."""
    by = {(r["model"], r["seq_len"]): r for r in rows}
    lo, hi = min(seq_lens), max(seq_lens)
    head = ["model", "params (M)", *(f"{s:g} s: fwd+bwd s / peak MB" for s in seq_lens)]
    head += [f"mem {hi:g}s/{lo:g}s", f"mem vs {PEER} at {hi:g}s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in dict.fromkeys(r["model"] for r in rows):
        params = [by[model, s]["params"] for s in seq_lens if "params" in by.get((model, s), {})]
        cells = [model, f"{params[0] / 1e6:.2f}" if params else "?"]
        for s in seq_lens:
            r = by.get((model, s), {})
            cells.append(f"{r['fwd_bwd_s']:.2f} / {r['peak_mb']:.0f}" if "peak_mb" in r else "err")
        cells += [_ratio(by, model, hi, lo), _ratio(by, model, hi, hi, PEER)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="separator[:attention]")
    parser.add_argument("--seq-lens", nargs="+", type=float, default=[7, 15, 30, 60])
    parser.add_argument("--small", action="store_true", help="use the *_small presets")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        row = measure(args.worker, args.seq_lens[0], args.small, args.bf16, args.device)
        print(json.dumps(row))
        return
    rows = []
    for model in args.models:
        for seq_len in args.seq_lens:
            row = _run_worker(model, seq_len, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n".join(_table(rows, args.seq_lens)))
    by = {(r["model"], r["seq_len"]): r for r in rows}
    lo, hi = min(args.seq_lens), max(args.seq_lens)
    for model in dict.fromkeys(r["model"] for r in rows):
        ratio = _ratio(by, model, hi, lo)
        print(json.dumps({"model": model, f"mem_ratio_{hi:g}s_{lo:g}s": ratio}))


if __name__ == "__main__":
    main()
