"""Compare evaluations: a side-by-side table and per-target box plots.

``python -m longsep.evaluation.compare DIR [DIR ...] [--out comparison] [--metric SDR]`` (or
``python evaluate.py compare=[dirA,dirB]``). A DIR is an evaluation directory written by
:mod:`longsep.evaluation.evaluate`, or any folder of museval JSON files (``<dir>/test/*.json``),
or a run / model dir whose ``eval/`` holds exactly one evaluation. Scores are medians over
frames per track, then medians over tracks (museval's aggregation).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from longsep import order_targets
from longsep.errors import LongsepError
from longsep.evaluation.results import (
    METRICS,
    SUBSETS,
    SUMMARY_FILE,
    ResultStore,
    aggregate,
    score_rows,
)

log = logging.getLogger(__name__)

Rows = list[dict]


def _has_scores(folder: Path) -> bool:
    return any(any((folder / s).glob("*.json")) for s in SUBSETS)


def resolve_eval_dir(path: str | Path) -> Path:
    """The evaluation directory named by ``path``: itself, or the only evaluation (a folder
    with a summary) below its ``eval/``."""
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise LongsepError(f"compare: {path} is not a directory")
    if _has_scores(folder):
        return folder
    found = sorted(p.parent for p in folder.glob(f"eval/**/{SUMMARY_FILE}"))
    if len(found) == 1:
        return found[0]
    if found:
        options = ", ".join(str(f) for f in found[:4])
        raise LongsepError(f"compare: {path} holds several evaluations; name one of {options}")
    raise LongsepError(f"compare: {path} holds no evaluation (no <dir>/test/*.json)")


def load_method(path: str | Path) -> tuple[str, Rows]:
    """(name, per-track rows) of one evaluation; the name from its summary, else the dir."""
    folder = resolve_eval_dir(path)
    store = ResultStore(folder)
    name = None
    summary_file = folder / SUMMARY_FILE
    names = None
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        name, names = summary.get("name"), summary.get("tracks")
    rows = score_rows(store, names)
    if not rows:
        raise LongsepError(f"compare: {folder} has no readable track scores")
    return str(name or folder.name), rows


def _unique(names: Sequence[str], paths: Sequence[str]) -> list[str]:
    counts = {n: names.count(n) for n in names}
    return [n if counts[n] == 1 else f"{n} ({p})" for n, p in zip(names, paths, strict=True)]


def load_methods(paths: Sequence[str | Path]) -> dict[str, Rows]:
    """Name -> rows for several evaluations (names made unique with their paths)."""
    if not paths:
        raise LongsepError("compare: give at least one evaluation directory")
    loaded = [load_method(p) for p in paths]
    names = _unique([n for n, _ in loaded], [str(p) for p in paths])
    return {name: rows for name, (_, rows) in zip(names, loaded, strict=True)}


def comparison_table(methods: Mapping[str, Rows]) -> dict[str, dict[str, dict[str, float]]]:
    """``{target: {metric: {method: median over tracks}}}`` for the targets of any method."""
    medians = {name: aggregate(rows) for name, rows in methods.items()}
    targets = order_targets(t for m in medians.values() for t in m)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for target in targets:
        for metric in METRICS:
            values = {n: m.get(target, {}).get(metric, math.nan) for n, m in medians.items()}
            if any(math.isfinite(v) for v in values.values()):
                table.setdefault(target, {})[metric] = values
    return table


def format_comparison(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The comparison as text: one block per target, metrics as rows, methods as columns."""
    methods = list(dict.fromkeys(n for t in table.values() for m in t.values() for n in m))
    width = max(9, *(len(n) + 2 for n in methods)) if methods else 9
    header = f"{'':<16}" + "".join(f"{n:>{width}}" for n in methods)
    lines = ["median over frames, then tracks (dB)", header]
    for target, metrics in table.items():
        lines.append(target)
        for metric, values in metrics.items():
            cells = "".join(f"{_cell(values.get(n)):>{width}}" for n in methods)
            lines.append(f"  {metric:<14}{cells}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def per_track(methods: Mapping[str, Rows], target: str, metric: str) -> dict[str, np.ndarray]:
    """Method -> per-track values ``(tracks,)`` of ``metric`` for ``target``."""
    out = {}
    for name, rows in methods.items():
        values = [r["score"] for r in rows if r["target"] == target and r["metric"] == metric]
        if values:
            out[name] = np.asarray(values, dtype=float)
    return out


def _write_table_csv(path: Path, table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "target", "metric", "score"])
        for target, metrics in table.items():
            for metric, values in metrics.items():
                for method, value in values.items():
                    writer.writerow([method, target, metric, repr(float(value))])


def compare(
    paths: Sequence[str | Path], out_dir: str | Path = "comparison", metric: str = "SDR"
) -> tuple[str, list[Path]]:
    """Table text and box-plot PNGs (one per target) comparing evaluation dirs.

    Writes ``<out_dir>/comparison.csv`` (method, target, metric, median over tracks) and
    ``<out_dir>/<metric>_<target>.png``.
    """
    from longsep.viz import plt, score_boxplot

    if metric not in METRICS:
        raise LongsepError(f"metric={metric}: use one of {', '.join(METRICS)}")
    methods = load_methods(paths)
    table = comparison_table(methods)
    out = Path(str(out_dir)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _write_table_csv(out / "comparison.csv", table)
    figures = []
    for target in table:
        scores = per_track(methods, target, metric)
        if not scores:
            continue
        fig = score_boxplot(scores, metric=metric, title=target)
        path = out / f"{metric}_{target}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        figures.append(path)
    log.info("comparison of %d evaluations written to %s", len(methods), out)
    return format_comparison(table), figures


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.evaluation.compare DIR [DIR ...]``: print the table, save plots."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.evaluation.compare", description="Compare evaluation directories."
    )
    parser.add_argument("dirs", nargs="+", help="evaluation directories")
    parser.add_argument("--out", default="comparison", help="folder for the box plots")
    parser.add_argument("--metric", default="SDR", choices=METRICS)
    args = parser.parse_args(argv)
    try:
        text, figures = compare(args.dirs, args.out, args.metric)
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(text)
    print(f"figures: {', '.join(str(p) for p in figures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
