"""Copy the small result files of a sweep's finished jobs into a folder that is committed.

A study on 2 CPU cores runs for days across sessions; each finished run's record must land
in git as soon as it exists, so no hour of compute is lost when the machine stops. Only
small text files are copied (never checkpoints, model stores or audio), in the sweep's own
layout, so ``python -m longsep.study <dest>`` reads the copies as it reads the sweep:

- ``result.json``, ``config.yaml``, ``.hydra/overrides.yaml``: the record, the resolved
  config and the command-line overrides of the job;
- ``csv/**/metrics.csv``: the training and validation curves;
- ``eval/<data>/<split>/{scores.csv,summary.json,settings.json}``: the per-track scores;
- ``intervention.csv``, ``control.csv`` and ``control_within.csv``: the per-window scores
  of the study's analyses.

``--score`` first writes the per-window files that need a run's weights, for every finished
run with a model that lacks them: the far-context intervention of arms B and C
(``intervention``) or the long-context control's scores (``control``). The weights never
land, so these must be scored while the machine that trained them still holds them.

    python -m longsep.study.collect runs/multirun/context_study_rendered \\
        experiments/results/context_rendered/runs --score intervention
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from longsep.errors import LongsepError
from longsep.study.records import RESULT_FILE, read_result

PATTERNS: tuple[str, ...] = (
    RESULT_FILE,
    "config.yaml",
    ".hydra/overrides.yaml",
    "csv/**/metrics.csv",
    "eval/*/*/scores.csv",
    "eval/*/*/summary.json",
    "eval/*/*/settings.json",
    "intervention.csv",
    "control.csv",
    "control_within.csv",
)
MAX_BYTES = 2_000_000  # a "small file": larger ones are left out with a warning
ANALYSES = ("intervention", "control")


def finished_jobs(sweep: Path) -> list[Path]:
    """Job dirs under ``sweep`` whose ``result.json`` says ``ok`` or ``failed``."""
    jobs = []
    for path in sorted(sweep.rglob(RESULT_FILE)):
        job = path.parent
        if any(part.startswith(".") for part in job.relative_to(sweep).parts):
            continue
        if read_result(job)["status"] in ("ok", "failed"):
            jobs.append(job)
    return jobs


def collect(sweep_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy the small files of every finished job of ``sweep_dir`` into ``dest`` (same
    relative layout); return the files that were new or changed."""
    sweep, out = Path(sweep_dir), Path(dest)
    if not sweep.is_dir():
        raise LongsepError(f"{sweep_dir} is not a directory: give a multirun (sweep) directory")
    jobs = finished_jobs(sweep)
    sources = [sweep / "multirun.yaml"] if jobs else []
    for job in jobs:
        sources += [p for pattern in PATTERNS for p in sorted(job.glob(pattern))]
    changed = []
    for source in sources:
        if not source.is_file() or source.stat().st_size > MAX_BYTES:
            continue
        target = out / source.relative_to(sweep)
        data = source.read_bytes()
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.replace(target)
        changed.append(target)
    return changed


def score(sweep_dir: str | Path, analysis: str) -> None:
    """Write the per-window files of ``analysis`` (one of :data:`ANALYSES`) for every
    finished run of ``sweep_dir`` that has a model and lacks them."""
    if analysis == "intervention":
        from longsep.study.arms_report import run_interventions

        run_interventions(sweep_dir)
    elif analysis == "control":
        from longsep.study.control import score_runs

        score_runs(sweep_dir)
    else:
        raise LongsepError(f"unknown analysis {analysis!r}: one of {', '.join(ANALYSES)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.study.collect SWEEP DEST [--score ANALYSIS]``: print the files
    copied. A scoring error is printed and the files are still copied (exit status 1)."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.study.collect",
        description="Copy the small result files of a sweep's finished jobs into DEST.",
    )
    parser.add_argument("sweep_dir")
    parser.add_argument("dest")
    parser.add_argument(
        "--score",
        choices=ANALYSES,
        help="first score the runs' per-window analysis that needs their weights",
    )
    args = parser.parse_args(argv)
    status = 0
    if args.score:
        try:
            score(args.sweep_dir, args.score)
        except LongsepError as exc:
            print(f"error: scoring {args.sweep_dir}: {exc}", file=sys.stderr)
            status = 1
    try:
        for path in collect(args.sweep_dir, args.dest):
            print(path)
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
