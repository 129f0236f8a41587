"""GPU check of the study: bf16 training steps of every model at 7, 30, 60 s, and separation.

One command (under 8 minutes on one H100 / H200) that prints JSON lines:

- ``"check": "train_step"``, one per separator x attention x seq_len: umx, and
  umx_transformer / auto_transformer with each attention design (the pairs of
  :func:`longsep.models.valid_combinations`; a transformer's "no attention" choice is
  ``mha`` and is measured once, as ``mha``). The batch is the study preset's,
  ``floor(data.seconds_budget / seq_len)`` with the budget read from
  ``conf/experiment/seq_len_study.yaml``. A step is what the trainer does with
  ``precision=bf16-mixed``: :meth:`SeparationModule.training_step` (STFT, separator,
  MSE loss) under bf16 autocast, backward, gradient clipping
  (``conf/trainer/default.yaml``), and the optimizer of ``conf/module/default.yaml``
  (Adam). One warm-up step, then ``--reps`` timed steps, each between
  ``torch.cuda.synchronize()`` calls; ``step_s`` is their median. ``peak_mem_mb`` is
  ``torch.cuda.max_memory_allocated`` over all steps (weights, gradients and Adam
  state included). ``time_vs_umx`` / ``mem_vs_umx`` compare with the peer, Open-Unmix's
  BiLSTM (``umx``), at the same seq_len in the same run.
- ``"check": "separate"``: wall time of :class:`longsep.inference.separator.Separator`
  with four full-size UMX models (random weights), ``niter=1``, on the GPU, separating a
  180-s stereo song (after an untimed warm-up on a short clip).
- ``"check": "summary"``: device name, torch version, counts, total wall time.

Which SDPA kernel ran (``sdpa``) is read from the torch profiler during the warm-up step
(CPU activity only: it records the aten operator that ``scaled_dot_product_attention``
dispatched to, ``_scaled_dot_product_flash_attention``, ``..._efficient_attention``,
``..._cudnn_attention`` or ``..._attention_math``). This reports what the default
dispatcher chose in the very step being timed, call by call (a model whose calls take
different kernels shows them all, with counts in ``sdpa_calls``), at no extra step and no
extra memory. The alternative, re-running the step under
``torch.nn.attention.sdpa_kernel([backend])`` for flash, efficient, math until one runs,
answers a different question (the best backend that can run *every* call, which is not
what ran when calls differ), costs up to three extra steps per configuration, and the
forced math backend can run out of memory at 60 s. ``"none"``: the model made no
SDPA call (umx).

An error in one configuration (out of memory included) is reported as a line with
``"status": "failed"`` and the error; the others still run, and the script exits with
status 1 at the end if any failed.

    python benchmarks/gpu_check.py                       # all models, 7 / 30 / 60 s, GPU
    python benchmarks/gpu_check.py --models umx umx_transformer:qkv1D --seq-lens 60
    python benchmarks/gpu_check.py --dry-run             # same code paths, CPU, tiny sizes

``--dry-run`` runs everything on the CPU with the ``*_small`` separator presets, seq_len 1
and 2 s, a 2-s seconds budget (batch 2 and 1), float32 (CPU bf16 convolutions are 5-10x
slower; ``--dtype bf16`` to check the autocast path there), one timed repetition and a 5-s
song, so that the script cannot rot unnoticed (tests/test_benchmarks.py runs it).
``--all-attentions`` adds the attention configs the study does not sweep (``*_dense``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from longsep import TARGETS
from longsep.config import conf_dir
from longsep.models import build_network, valid_combinations
from longsep.models.build import DEFAULT_ATTENTION, is_no_attention
from longsep.spectral import STFTConfig

PEER = "umx"
SDPA_OPS = {  # aten operator that scaled_dot_product_attention dispatched to -> kernel
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_attention_math_for_mps": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def _study_preset() -> Any:
    return OmegaConf.load(conf_dir() / "experiment" / "seq_len_study.yaml")


def model_list(all_attentions: bool = False) -> list[str]:
    """``separator`` or ``separator:attention`` names of the study's valid pairs.

    Separators and attentions are those the study preset sweeps
    (``conf/experiment/seq_len_study.yaml``), paired by
    :func:`longsep.models.valid_combinations`. A separator that takes attention is listed
    with each attention (its no-attention choice, ``default``, builds ``mha`` and is
    listed as ``mha``); one without is listed alone. ``all_attentions``: every attention
    config of ``conf/attention``, not only the study's.
    """
    params = _study_preset().hydra.sweeper.params
    separators = [s.strip() for s in str(params.separator).split(",")]
    studied = {a.strip() for a in str(params.attention).split(",")}
    if any(is_no_attention(a) for a in studied):
        studied.add(DEFAULT_ATTENTION)
    pairs = valid_combinations(separators)
    with_attention = {s for s, a in pairs if a is not None}
    names = []
    for separator, attention in pairs:
        if attention is None:
            if separator not in with_attention:
                names.append(separator)
        elif all_attentions or attention in studied:
            names.append(f"{separator}:{attention}")
    return names


def study_seconds_budget() -> float:
    """``data.seconds_budget`` of the study preset (audio seconds per training batch)."""
    return float(_study_preset().data.seconds_budget)


def _conf(group: str, name: str = "default") -> Any:
    return OmegaConf.load(conf_dir() / group / f"{name}.yaml")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def sdpa_kernels(prof: torch.profiler.profile) -> dict[str, int]:
    """Forward SDPA calls per kernel (``flash``, ``efficient``, ``math``, ...) in ``prof``."""
    counts: dict[str, int] = {}
    for event in prof.events():
        kernel = SDPA_OPS.get(event.name)
        if kernel:
            counts[kernel] = counts.get(kernel, 0) + 1
    return counts


def make_train_step(
    model: str, seq_len: float, batch: int, device: torch.device, bf16: bool, small: bool
) -> tuple[Callable[[], float], int, int]:
    """A closure running one training step of ``model`` (``separator[:attention]``).

    Returns (step, parameter count, STFT frames per item); ``step()`` returns the loss.
    """
    from longsep.training.module import SeparationModule

    separator, _, attention = model.partition(":")
    name = f"{separator}_small" if small else separator
    net = build_network(name, attention or None, seq_len=seq_len)
    stft = STFTConfig()
    module = SeparationModule(net, target=TARGETS[0], stft=stft, loss="mse").to(device).train()
    optimizer = instantiate(_conf("module").optimizer)(module.parameters())
    clip = _conf("trainer").get("gradient_clip_val")
    samples = round(seq_len * stft.sample_rate)
    gen = torch.Generator(device=device).manual_seed(0)
    data = {
        key: torch.rand(batch, 2, samples, device=device, generator=gen) * 2 - 1
        for key in ("mixture", "target")
    }

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(data, 0)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), float(clip))
        optimizer.step()
        return float(loss.detach())

    params = sum(p.numel() for p in net.parameters())
    return step, params, stft.frames(samples)


def check_train_step(
    model: str, seq_len: float, budget: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Time ``args.reps`` training steps of ``model`` at ``seq_len``; one JSON-able row."""
    device = torch.device(args.device)
    separator, _, attention = model.partition(":")
    batch = max(1, math.floor(budget / seq_len))
    row: dict[str, Any] = {
        "check": "train_step",
        "model": model,
        "separator": separator,
        "attention": attention or None,
        "seq_len": seq_len,
        "batch": batch,
        "small": args.small,
        "dtype": "bf16-autocast" if args.bf16 else "float32",
        "device": str(device),
    }
    step: Callable[[], float] | None = None
    try:
        _free(device)
        _reset_peak(device)
        step, row["params"], row["frames"] = make_train_step(
            model, seq_len, batch, device, args.bf16, args.small
        )
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities) as prof:  # warm-up, not timed
            step()
            _sync(device)
        calls = sdpa_kernels(prof)
        del prof
        times, loss = [], float("nan")
        for _ in range(args.reps):
            _sync(device)
            start = time.perf_counter()
            loss = step()
            _sync(device)
            times.append(time.perf_counter() - start)
        row.update(
            step_s=round(statistics.median(times), 4),
            step_s_reps=[round(t, 4) for t in times],
            peak_mem_mb=_peak_mb(device),
            sdpa="+".join(sorted(calls)) or "none",
            sdpa_calls=calls,
            loss_finite=math.isfinite(loss),
            status="ok",
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported, the run goes on
        row.update(status="failed", error=_error(exc))
    step = None  # drop the model, optimizer and batch before freeing the cache
    _free(device)
    return row


def make_song(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    """``(1, 2, samples)`` tones plus noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    tones = (torch.sin(2 * torch.pi * 220 * t) + torch.sin(2 * torch.pi * 1300 * t)).float()
    noise = torch.randn(2, t.numel(), generator=gen)
    return (0.2 * tones + 0.05 * noise)[None]


def check_separate(args: argparse.Namespace) -> dict[str, Any]:
    """Separate a ``args.song_seconds`` stereo song with four UMX models on ``args.device``."""
    from longsep.inference.separator import Separator

    device = torch.device(args.device)
    name = "umx_small" if args.small else "umx"
    row: dict[str, Any] = {
        "check": "separate",
        "models": f"4 x {name}",
        "song_s": args.song_seconds,
        "niter": 1,
        "device": str(device),
        "input_device": "cpu",
    }
    try:
        _free(device)
        torch.manual_seed(0)
        models = {target: build_network(name) for target in TARGETS}
        separator = Separator(models, STFTConfig(), niter=1, device=device)
        row["segment_s"] = separator.segment
        song = make_song(args.song_seconds, separator.sample_rate)
        separator(song[..., : separator.sample_rate])  # warm-up on 1 s, not timed
        _sync(device)
        _reset_peak(device)
        start = time.perf_counter()
        out = separator(song)
        _sync(device)
        wall = time.perf_counter() - start
        row.update(
            wall_s=round(wall, 3),
            rtf=round(wall / args.song_seconds, 5),
            peak_mem_mb=_peak_mb(device),
            output_shape=list(out.shape),
            finite=bool(torch.isfinite(out).all()),
            status="ok",
        )
        del out, separator, models
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        row.update(status="failed", error=_error(exc))
    _free(device)
    return row


def device_name(device: str) -> str:
    """``torch.cuda.get_device_name`` of a CUDA device, else the CPU's name."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _add_peer_ratios(row: dict[str, Any], peers: dict[float, dict[str, Any]]) -> None:
    peer = peers.get(row["seq_len"])
    if row["status"] != "ok" or not peer or row["model"] == PEER:
        return
    row["time_vs_umx"] = round(row["step_s"] / peer["step_s"], 3) if peer["step_s"] else None
    if row.get("peak_mem_mb") and peer.get("peak_mem_mb"):
        row["mem_vs_umx"] = round(row["peak_mem_mb"] / peer["peak_mem_mb"], 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--dry-run`` fills in the CPU / tiny defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (< 1 min)")
    parser.add_argument(
        "--models", nargs="+", help="separator[:attention] names (default: the study's valid pairs)"
    )
    parser.add_argument("--seq-lens", nargs="+", type=float, help="seconds (default 7 30 60)")
    parser.add_argument("--reps", type=int, help="timed steps after the warm-up (default 3)")
    parser.add_argument("--seconds-budget", type=float, help="default: the study preset's")
    parser.add_argument("--song-seconds", type=float, help="separation song (default 180)")
    parser.add_argument("--device", help="default cuda (cpu with --dry-run)")
    parser.add_argument(
        "--dtype", choices=["bf16", "float32"], help="default bf16 autocast (float32 dry run)"
    )
    parser.add_argument(
        "--all-attentions", action="store_true", help="every conf/attention, not the study's"
    )
    parser.add_argument("--no-separate", action="store_true", help="skip the separation check")
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.models = args.models or model_list(args.all_attentions)
    args.seq_lens = args.seq_lens or ([1.0, 2.0] if dry else [7.0, 30.0, 60.0])
    args.reps = args.reps or (1 if dry else 3)
    args.seconds_budget = args.seconds_budget or (2.0 if dry else study_seconds_budget())
    args.song_seconds = args.song_seconds or (5.0 if dry else 180.0)
    args.device = args.device or ("cpu" if dry else "cuda")
    args.small = dry
    args.bf16 = (args.dtype or ("float32" if dry else "bf16")) == "bf16"
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but no CUDA device is visible (try --dry-run)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every check, print JSON lines; return 1 if any failed."""
    args = parse_args(argv)
    # SeparationModule.training_step logs through self.log, which warns outside a Trainer
    warnings.filterwarnings("ignore", message=".*self.log.*")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    peers: dict[float, dict[str, Any]] = {}
    models = sorted(args.models, key=lambda m: m != PEER)  # the peer first, for the ratios
    for model in models:
        for seq_len in args.seq_lens:
            row = check_train_step(model, seq_len, args.seconds_budget, args)
            if model == PEER and row["status"] == "ok":
                peers[seq_len] = row
            _add_peer_ratios(row, peers)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if not args.no_separate:
        row = check_separate(args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    failed = [r for r in rows if r["status"] != "ok"]
    summary = {
        "check": "summary",
        "status": "failed" if failed else "ok",
        "device": str(args.device),
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dry_run": args.dry_run,
        "seconds_budget": args.seconds_budget,
        "checks": len(rows),
        "ok": len(rows) - len(failed),
        "failed": [
            r.get("model", r["check"]) + (f"@{r['seq_len']:g}s" if "seq_len" in r else "")
            for r in failed
        ],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
