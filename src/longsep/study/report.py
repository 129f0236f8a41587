"""The study report: tables and figures from the run records of a sweep.

:func:`write_report` writes into an output folder:

- ``results.csv``: one row per job, every field, sorted by source, model, seq_len, seed;
- ``results.md``: per source x model x seq_len the median test SDR of the trained source
  over tracks and seeds with its 95 % bootstrap interval (:mod:`longsep.study.intervals`;
  runs without per-track scores: the median over runs), per model the paired difference of
  every seq_len against its shortest where both cells hold one run (same track; cells of
  several runs are independent trainings, compared by ``arms.md``), the cost per model x seq_len,
  and the failed runs with their errors (a run with a limited reach, arm C, is a model of
  its own, :func:`cell_record`);
- ``sdr_vs_seq_len.png`` (with the intervals as error bars) and ``cost_vs_seq_len.png``
  (peak memory and step time), the latter with a row from ``benchmarks/seq_len_scaling.py``
  JSON lines when ``scaling``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from longsep import order_targets
from longsep.errors import LongsepError
from longsep.evaluation.results import METRICS, nan_median
from longsep.io import atomic_write
from longsep.study.intervals import (
    RESAMPLES,
    Interval,
    Intervals,
    cell_intervals,
    paired_intervals,
)
from longsep.study.records import FIELDS, PER_RUN_MEMORY, STATUSES, model_label

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- tables


def _fmt(value: Any) -> str:
    """Fixed formatting for CSV cells: floats with 6 significant digits, lists joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "" if not math.isfinite(value) else format(value, ".6g")
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _test_columns(records: Iterable[Mapping[str, Any]]) -> list[str]:
    targets = order_targets(t for r in records for t in (r.get("test") or {}))
    present = {(t, m) for r in records for t, v in (r.get("test") or {}).items() for m in v}
    return [f"test.{t}.{m}" for t in targets for m in METRICS if (t, m) in present]


def results_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text: ``job``, every field, then ``test.<target>.<metric>`` columns."""
    columns = ["job", *FIELDS, *_test_columns(records)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        row = []
        for column in columns:
            if column.startswith("test."):
                _, target, metric = column.split(".", 2)
                row.append(_fmt((record.get("test") or {}).get(target, {}).get(metric)))
            else:
                row.append(_fmt(record.get(column)))
        writer.writerow(row)
    return buffer.getvalue()


Series = dict[str, dict[float, float]]  # model -> seq_len -> value


def median_series(
    records: Iterable[Mapping[str, Any]], field: str
) -> tuple[dict[str, Series], dict[str, dict[str, dict[float, int]]]]:
    """``{src: {model: {seq_len: median of field}}}`` over ok runs, and the run counts."""
    values: dict[str, dict[str, dict[float, list[float]]]] = {}
    for r in records:
        value = r.get(field)
        if r.get("status") != "ok" or value is None or not math.isfinite(float(value)):
            continue
        if not r.get("src") or not r.get("model") or r.get("seq_len") is None:
            continue  # an incomplete record cannot be placed in a cell
        cell = values.setdefault(r["src"], {}).setdefault(r["model"], {})
        cell.setdefault(float(r["seq_len"]), []).append(float(value))
    medians = {
        s: {m: {x: nan_median(v) for x, v in sorted(c.items())} for m, c in sorted(ms.items())}
        for s, ms in values.items()
    }
    counts = {
        s: {m: {x: len(v) for x, v in sorted(c.items())} for m, c in sorted(ms.items())}
        for s, ms in values.items()
    }
    return medians, counts


def cell_record(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record as the tables place it: a run with a limited reach (arm C) is its own
    model, ``umx_small:none reach 7.5 s``, so that it never shares a cell with the same
    model's full-reach runs of its length (arm B)."""
    if not record.get("reach") or not record.get("model"):
        return record
    return {**record, "model": f"{record['model']} reach {float(record['reach']):g} s"}


def _by_model(records: Iterable[Mapping[str, Any]], field: str, scale: float = 1.0) -> Series:
    """``{model: {seq_len: median of field * scale}}`` over ok runs of every source.

    Peak memory counts only where it is a per-run figure (:data:`PER_RUN_MEMORY`).
    """
    if field == "peak_memory_mb":
        records = [r for r in records if r.get("peak_memory_source") in PER_RUN_MEMORY]
    pooled = [{**r, "src": "all"} for r in records]
    medians, _ = median_series(pooled, field)
    return {m: {x: v * scale for x, v in c.items()} for m, c in medians.get("all", {}).items()}


def sdr_series(records: Sequence[Mapping[str, Any]], intervals: Intervals) -> dict[str, Series]:
    """``{src: {model: {seq_len: SDR}}}``: the pooled median of a cell with per-track
    scores, else the median over its runs (what the tables show)."""
    medians, _ = median_series(records, "test_sdr")
    for src, models in intervals.items():
        for model, cells in models.items():
            for x, interval in cells.items():
                if math.isfinite(interval.estimate):
                    medians.setdefault(src, {}).setdefault(model, {})[x] = interval.estimate
    return {
        s: {m: dict(sorted(c.items())) for m, c in sorted(ms.items())} for s, ms in medians.items()
    }


def _seq_lens(series: Iterable[Series]) -> list[float]:
    return sorted({x for s in series for c in s.values() for x in c})


def _sources(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return order_targets(r["src"] for r in records if r.get("status") == "ok" and r.get("src"))


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def results_markdown(
    records: Sequence[Mapping[str, Any]],
    title: str = "",
    scaling: Sequence[Mapping[str, Any]] | None = None,
    n_resamples: int = RESAMPLES,
    oracle: Mapping[str, Any] | None = None,
) -> str:
    """The study tables: SDR per source with intervals and paired differences, cost per
    model (and per ``scaling`` benchmark rows), failed runs. ``oracle`` (an evaluation's
    ``summary.json``) adds each source's oracle median and the best cell's share of it."""
    status = {s: sum(r.get("status") == s for r in records) for s in STATUSES}
    lines = [f"# Sequence-length study{': ' + title if title else ''}", ""]
    lines.append(
        f"{len(records)} jobs: {status['ok']} ok, {status['failed']} failed, "
        f"{status['skipped']} skipped (invalid or excluded separator x attention pairs)."
    )
    lines += [
        "",
        "Test SDR (dB) of the trained source, BSSEval v4 median over 1-s frames per track: "
        "the median over the tracks and seeds of a cell with its 95 % bootstrap interval "
        f"({n_resamples} resamples of seeds and tracks, percentile) and (seeds×tracks); a "
        "cell without per-track scores gives the median over its runs' medians (n runs).",
        "",
        "Paired difference (where both cells hold one run): per model, SDR at a seq_len "
        "minus SDR at the model's shortest seq_len on the same track, median over the "
        "tracks with its 95 % bootstrap interval; * where the interval excludes 0. Cells of "
        "several runs are independent trainings and are not paired (nothing is paired by "
        "seed number): `--arms` compares them by the two-level bootstrap.",
    ]
    _, counts = median_series(records, "test_sdr")
    intervals = cell_intervals(records, n_resamples)
    paired = paired_intervals(records, n_resamples)
    sdr = sdr_series(records, intervals)
    seq_lens = _seq_lens(sdr.values())
    for src in _sources(records):
        lines += ["", f"## {src}", ""]
        rows = []
        for model, cells in sdr.get(src, {}).items():
            row = [model]
            for x in seq_lens:
                interval = intervals.get(src, {}).get(model, {}).get(x)
                n = counts.get(src, {}).get(model, {}).get(x)
                if interval is not None and math.isfinite(interval.estimate):
                    row.append(f"{interval.format()} ({interval.n_seeds}×{interval.n_tracks})")
                else:
                    row.append(f"{cells[x]:.2f} ({n})" if n else "-")
            rows.append(row)
        lines += _md_table(["model", *(f"{x:g} s" for x in seq_lens)], rows)
        if oracle is not None:
            lines += ["", _oracle_line(src, sdr.get(src, {}), oracle)]
        if paired.get(src):
            lines += ["", f"Paired difference against the shortest seq_len ({src}):", ""]
            longer = sorted({x for cells in paired[src].values() for x in cells})
            rows = [
                [model, *(_paired_cell(cells.get(x)) for x in longer)]
                for model, cells in sorted(paired[src].items())
            ]
            lines += _md_table(["model", *(f"{x:g} s" for x in longer)], rows)
    memory = _by_model(records, "peak_memory_mb", 1 / 1024)
    step = _by_model(records, "step_seconds")
    cost_lens = _seq_lens([memory, step])
    if cost_lens:
        lines += [
            "",
            "## Cost",
            "",
            "Peak training memory (GB) / mean train step time (s), median over the runs of "
            "every source; one step sees the same seconds of audio at every seq_len. Memory "
            "is given for GPU runs (max allocated); the RSS of CPU jobs, which share one "
            "process, is not a per-run figure (see the --scaling benchmark instead).",
            "",
        ]
        rows = []
        for model in sorted(set(memory) | set(step)):
            row = [model]
            for x in cost_lens:
                gb, sec = memory.get(model, {}).get(x), step.get(model, {}).get(x)
                row.append(
                    "-" if gb is None and sec is None else f"{_num(gb, '.2f')} / {_num(sec, '.3f')}"
                )
            rows.append(row)
        lines += _md_table(["model", *(f"{x:g} s" for x in cost_lens)], rows)
    if scaling:
        seconds = scaling_series(scaling, "fwd_bwd_s")
        memory_mb = scaling_series(scaling, "peak_mb")
        lengths = _seq_lens([seconds])
        lines += [
            "",
            "## Batch-1 cost (benchmarks/seq_len_scaling.py)",
            "",
            "Forward + backward of one stereo chunk (s) / peak memory growth (MB), a fresh "
            "process per model and length.",
            "",
        ]
        rows = [
            [
                model,
                *(
                    f"{_num(c.get(x), '.3f')} / {_num(memory_mb[model].get(x), '.0f')}"
                    for x in lengths
                ),
            ]
            for model, c in seconds.items()
        ]
        lines += _md_table(["model", *(f"{x:g} s" for x in lengths)], rows)
    failed = [r for r in records if r.get("status") == "failed"]
    lines += ["", "## Failed runs", ""]
    lines += [f"- `{r['job']}`: {r.get('error') or 'unknown error'}" for r in failed] or ["none"]
    return "\n".join(lines) + "\n"


def _oracle_line(src: str, cells: Mapping[str, Mapping[float, float]], oracle: Mapping) -> str:
    """The oracle's median SDR for ``src`` and the best cell's median as a share of it."""
    median = (oracle.get("median") or {}).get(src, {}).get("SDR")
    name = oracle.get("name", "oracle")
    if median is None or not math.isfinite(median):
        return f"Oracle `{name}`: no {src} score."
    best = [(value, m, x) for m, c in cells.items() for x, value in c.items()]
    best = [b for b in best if math.isfinite(b[0])]
    line = f"Oracle `{name}` on the same split: {median:.2f} dB."
    if best:
        sdr, model, x = max(best)
        line += f" Best cell: {model} at {x:g} s, {sdr:.2f} dB = {100 * sdr / median:.0f} % of it."
    return line


def _paired_cell(interval: Interval | None) -> str:
    """``+0.40 [0.10, 0.70] *`` (``*``: the interval excludes 0), ``-`` when missing."""
    if interval is None or not math.isfinite(interval.estimate):
        return "-"
    return interval.format(sign=True) + (" *" if interval.excludes(0.0) else "")


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


# --------------------------------------------------------------------------- figures


def read_scaling(path: str | Path) -> list[dict[str, Any]]:
    """Measurements of ``benchmarks/seq_len_scaling.py`` output (its JSON lines; the
    markdown table and summary lines it also prints are skipped)."""
    file = Path(str(path)).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise LongsepError(f"--scaling {path}: cannot read it ({exc.strerror})") from exc
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if {"model", "seq_len", "peak_mb", "fwd_bwd_s"} <= set(row):
            rows.append(row)
    if not rows:
        raise LongsepError(f"--scaling {path} holds no seq_len_scaling.py measurements")
    return rows


def _scaling_label(row: Mapping[str, Any]) -> str:
    separator, _, attention = str(row["model"]).partition(":")
    if row.get("small"):
        separator += "_small"
    return model_label(separator, attention or "none")


def scaling_series(rows: Iterable[Mapping[str, Any]], key: str, scale: float = 1.0) -> Series:
    """``{model: {seq_len: row[key] * scale}}`` from benchmark rows (models as the runs')."""
    out: Series = {}
    for row in rows:
        out.setdefault(_scaling_label(row), {})[float(row["seq_len"])] = float(row[key]) * scale
    return {m: dict(sorted(c.items())) for m, c in sorted(out.items())}


def _save_figure(fig: Any, path: Path) -> Path:
    from longsep.viz import plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def write_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    scaling: Sequence[Mapping[str, Any]] | None = None,
    title: str = "",
    n_resamples: int = RESAMPLES,
    oracle: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write results.csv, results.md and the two figures into ``out_dir``; return paths.

    ``n_resamples``: bootstrap resamples of every interval (fixed generator seed);
    ``oracle``: an oracle evaluation's summary to compare with (:func:`results_markdown`)."""
    from longsep.viz import seq_len_figure

    out = Path(str(out_dir)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    csv_text = results_csv(records)
    atomic_write(out / "results.csv", lambda p: p.write_text(csv_text))
    records = [cell_record(r) for r in records]  # arm C apart from arm B in every cell
    md_text = results_markdown(records, title, scaling, n_resamples, oracle)
    atomic_write(out / "results.md", lambda p: p.write_text(md_text))
    written += [out / "results.csv", out / "results.md"]

    intervals = cell_intervals(records, n_resamples)
    sdr = sdr_series(records, intervals)
    label = "median test SDR (dB), 95 % interval"
    panels = {src: (label, sdr.get(src, {})) for src in _sources(records)}
    bars = {
        src: {m: {x: (i.low, i.high) for x, i in c.items()} for m, c in models.items()}
        for src, models in intervals.items()
    }
    fig = seq_len_figure(panels or {"no finished runs": (label, {})}, intervals=bars)
    written.append(_save_figure(fig, out / "sdr_vs_seq_len.png"))

    cost = {}
    run_memory = _by_model(records, "peak_memory_mb", 1 / 1024)
    if run_memory:
        cost["runs (batch = budget / seq_len): peak memory"] = ("peak memory (GB)", run_memory)
    cost["runs (batch = budget / seq_len): mean train step"] = (
        "step time (s)",
        _by_model(records, "step_seconds"),
    )
    if scaling:
        cost["benchmark (batch 1): peak memory"] = (
            "peak memory growth (GB)",
            scaling_series(scaling, "peak_mb", 1 / 1024),
        )
        cost["benchmark (batch 1): forward + backward"] = (
            "time (s)",
            scaling_series(scaling, "fwd_bwd_s"),
        )
    written.append(_save_figure(seq_len_figure(cost, ncols=2), out / "cost_vs_seq_len.png"))
    log.info("study report of %d jobs written to %s", len(records), out)
    return written
