"""``python -m longsep.study <multirun dir>``: the study report of a sweep."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from longsep.errors import LongsepError
from longsep.study.intervals import RESAMPLES
from longsep.study.records import load_study
from longsep.study.report import read_scaling, write_report


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
    args = parser.parse_args(argv)
    try:
        records = load_study(args.sweep_dir)
        scaling = read_scaling(args.scaling) if args.scaling else None
        out = args.out or str(Path(args.sweep_dir) / "report")
        if args.resamples < 1:
            raise LongsepError(f"--resamples {args.resamples}: give 1 or more")
        title = Path(args.sweep_dir).name
        paths = write_report(records, out, scaling, title=title, n_resamples=args.resamples)
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(Path(paths[1]).read_text(), end="")
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0
