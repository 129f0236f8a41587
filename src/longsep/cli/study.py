"""``python -m longsep.study <multirun dir> [--context]``: the study report of a sweep, and
the analyses of whether its models use long context."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from longsep.errors import LongsepError
from longsep.evaluation.compare import load_method
from longsep.evaluation.results import aggregate
from longsep.study.arms_report import write_arms_report
from longsep.study.context import WINDOWS, analyse
from longsep.study.decisions import read_control
from longsep.study.intervals import RESAMPLES
from longsep.study.records import load_study
from longsep.study.report import read_scaling, write_report


def _window_arg(window: float | None) -> str:
    return "song" if window is None else f"{window:g}"


def _parse_window(text: str) -> float | None:
    """``--windows`` values: seconds > 0 or ``song`` (the whole song in one pass)."""
    if text == "song":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise LongsepError(f"--windows {text}: give seconds > 0 or 'song'")
    return value


def read_oracle(path: str) -> dict:
    """``{"name", "median": {target: {metric: median over tracks}}}`` of an evaluation dir."""
    name, rows = load_method(path)
    return {"name": name, "median": aggregate(rows)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.study <multirun dir>``: write the report, print its tables."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.study",
        description="Tables and figures of a sequence-length study sweep.",
    )
    parser.add_argument("sweep_dir", help="multirun directory (one sub-directory per job)")
    parser.add_argument("--out", help="output folder (default: <sweep_dir>/report)")
    parser.add_argument(
        "--scaling", help="JSON lines of benchmarks/seq_len_scaling.py for the cost figure"
    )
    parser.add_argument(
        "--resamples",
        type=int,
        default=RESAMPLES,
        help=f"bootstrap resamples per interval (default {RESAMPLES}; a fixed seed)",
    )
    parser.add_argument(
        "--oracle",
        help="an oracle's evaluation dir (evaluate.py oracle=irm2 out_dir=...) on the same "
        "split: its median SDR per source and the best cell's share of it",
    )
    parser.add_argument(
        "--context",
        action="store_true",
        help="also run the context analyses of every finished run (test-time window sweep, "
        "attention reach) into <out>/context",
    )
    parser.add_argument(
        "--arms",
        action="store_true",
        help="the context study's pre-registered contrasts (arms A / B / C) and the far-context "
        "intervention of every B and C run into <out>/arms.md, contrasts.csv, "
        "context_effects.png",
    )
    parser.add_argument(
        "--control",
        help="with --arms: the long-context control's result (control.json, or the folder "
        "python -m longsep.study.control wrote it to) that the decisions read",
    )
    parser.add_argument(
        "--windows",
        nargs="+",
        default=[_window_arg(w) for w in WINDOWS],
        help="test-time windows of the context sweep, seconds or 'song' (default: "
        + " ".join(_window_arg(w) for w in WINDOWS)
        + ")",
    )
    args = parser.parse_args(argv)
    try:
        records = load_study(args.sweep_dir)
        scaling = read_scaling(args.scaling) if args.scaling else None
        out = args.out or str(Path(args.sweep_dir) / "report")
        if args.resamples < 1:
            raise LongsepError(f"--resamples {args.resamples}: give 1 or more")
        title = Path(args.sweep_dir).name
        oracle = read_oracle(args.oracle) if args.oracle else None
        if args.control and not args.arms:
            raise LongsepError("--control is read by --arms only: add --arms")
        control = read_control(args.control) if args.control else None
        paths = write_report(records, out, scaling, title, args.resamples, oracle)
        if args.context:
            windows = [_parse_window(w) for w in args.windows]
            paths += analyse(args.sweep_dir, Path(out) / "context", windows)
        if args.arms:
            paths += write_arms_report(
                args.sweep_dir, records, out, title, args.resamples, control, oracle
            )
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(Path(paths[1]).read_text(), end="")
    if args.arms:
        print(Path(out, "arms.md").read_text(), end="")
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0
