"""Default-model candidates against a baseline on the same songs: per target, each
candidate's median SDR, its share of the oracle's, and the paired difference from the
baseline (median over songs of candidate - baseline, 95 % bootstrap interval over songs;
one training each, so seed-to-seed variation is not in the interval). Cited by
models/README.md (issue 29).

    python experiments/default_model_report.py --oracle ORACLE_DIR --baseline NAME=DIR \\
        NAME=DIR [NAME=DIR ...] --out experiments/results/soundfonts/candidates_timgm6mb.csv

writes the CSV and, beside it, the same table in markdown (``.md``).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from longsep import order_targets
from longsep.errors import LongsepError
from longsep.evaluation.compare import load_method
from longsep.io import atomic_write
from longsep.study.intervals import bootstrap_median

FIELDS = ("candidate", "target", "sdr", "oracle_sdr", "oracle_share", "diff", "low", "high",
          "songs_better", "songs")  # fmt: skip


def track_sdr(path: str | Path) -> dict[str, dict[str, float]]:
    """``{target: {track: SDR}}`` of one evaluation directory."""
    _, rows = load_method(path)
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["metric"] == "SDR":
            out.setdefault(row["target"], {})[row["track"]] = float(row["score"])
    return out


def compare_rows(
    baseline: dict[str, dict[str, float]],
    candidates: dict[str, dict[str, dict[str, float]]],
    oracle: dict[str, dict[str, float]],
) -> list[dict[str, object]]:
    """One row per (candidate, target); the baseline is a candidate with a zero difference."""
    rows = []
    for name, scores in candidates.items():
        for target in order_targets(scores):
            songs = sorted(set(scores[target]) & set(baseline.get(target, {})))
            if not songs:
                raise LongsepError(f"{name}: no {target} songs in common with the baseline")
            if target not in oracle:
                raise LongsepError(f"the oracle has no {target} scores (evaluate its targets)")
            mine = np.array([scores[target][s] for s in songs])
            theirs = np.array([baseline[target][s] for s in songs])
            diff = bootstrap_median(mine - theirs)
            sdr = float(np.median(list(scores[target].values())))
            best = float(np.median(list(oracle[target].values())))
            rows.append({
                "candidate": name, "target": target, "sdr": round(sdr, 3),
                "oracle_sdr": round(best, 3), "oracle_share": round(sdr / best, 3),
                "diff": round(diff.estimate, 3), "low": round(diff.low, 3),
                "high": round(diff.high, 3), "songs_better": int((mine > theirs).sum()),
                "songs": len(songs),
            })  # fmt: skip
    return rows


def markdown(rows: Sequence[dict[str, object]], baseline: str) -> str:
    """The rows as a markdown table, differences as ``+0.36 [+0.10, +0.79]``."""
    lines = [
        f"Median SDR over songs (dB); difference from `{baseline}`: median over songs of the "
        "paired difference, 95 % bootstrap interval over songs (one training each).",
        "",
        "| candidate | target | SDR | oracle IRM2 | share of the oracle | difference | "
        "songs better |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = f"{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]".replace("-", "−")
        lines.append(
            f"| {r['candidate']} | {r['target']} | {r['sdr']:.2f} | {r['oracle_sdr']:.2f} | "
            f"{100 * float(r['oracle_share']):.0f} % | {diff} | {r['songs_better']} of "
            f"{r['songs']} |"
        )
    return "\n".join(lines) + "\n"


def _named(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=DIR")
    return name, path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", type=_named, help="NAME=evaluation dir")
    parser.add_argument("--baseline", required=True, type=_named, help="NAME=evaluation dir")
    parser.add_argument("--oracle", required=True, help="the oracle's evaluation dir")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write")
    args = parser.parse_args(argv)
    try:
        baseline = track_sdr(args.baseline[1])
        candidates = {args.baseline[0]: baseline}
        candidates.update({name: track_sdr(path) for name, path in args.candidates})
        rows = compare_rows(baseline, candidates, track_sdr(args.oracle))
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(args.out, lambda p: p.write_text(text.getvalue()))
    table = markdown(rows, args.baseline[0])
    atomic_write(args.out.with_suffix(".md"), lambda p: p.write_text(table))
    print(text.getvalue(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
