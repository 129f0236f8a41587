"""The sequence-length study: per-run result records and the study report.

Every training run writes ``<run dir>/result.json`` (:func:`write_result`), one flat
record with the fields of :data:`FIELDS` plus ``test``, the evaluation medians
``{target: {metric: median over tracks of the per-track median over frames}}``.
``status`` is ``ok``, ``failed`` (``error`` holds one line) or ``skipped`` (``reason``:
an invalid or excluded separator x attention pair of a sweep).

``python -m longsep.study <multirun dir> [--out DIR] [--scaling FILE.jsonl]`` reads the
record of every job of a sweep (a job dir without one, e.g. a killed job, counts as
failed) and writes into ``DIR`` (default ``<multirun dir>/report``):

- ``results.csv``: one row per job, every field, sorted by source, model, seq_len, seed;
- ``results.md``: median test SDR of the trained source per source x model x seq_len with
  the number of runs, the cost per model x seq_len, and the failed runs with their errors;
- ``sdr_vs_seq_len.png`` and ``cost_vs_seq_len.png`` (peak memory and step time), the
  latter with a row from ``benchmarks/seq_len_scaling.py`` JSON lines when ``--scaling``.

A model is named ``separator:attention`` with the attention in effect (``none`` for UMX,
``mha`` for a transformer trained with ``attention=default``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import resource
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from longsep import TARGETS
from longsep.errors import LongsepError
from longsep.evaluation import METRICS, atomic_write, nan_median, order_targets, write_json

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")
NO_ATTENTION = ("", "null", "None", "default")  # attention choices that select no config
FIELDS: tuple[str, ...] = (
    "status",
    "model",
    "separator",
    "attention",
    "src",
    "seq_len",
    "seed",
    "test_sdr",
    "global_step",
    "max_steps",
    "batch_size",
    "world_size",
    "train_audio_seconds",
    "train_seconds",
    "step_seconds",
    "peak_memory_mb",
    "peak_memory_source",
    "device",
    "best_val_loss",
    "eval_seconds",
    "eval_tracks",
    "data",
    "run_name",
    "run_dir",
    "eval_dir",
    "overrides",
    "error",
    "reason",
)
# Peak memory measurements that belong to one run. On CPU the jobs of a sweep share one
# process (Hydra's basic launcher), whose resident memory also holds the data cache pages
# and the allocator's pools of earlier jobs: its RSS peak is recorded but not compared; the
# report takes CPU memory from benchmarks/seq_len_scaling.py (--scaling, fresh processes).
PER_RUN_MEMORY = ("cuda_max_allocated",)
_MISSING = "no result.json: the job was killed, crashed hard or is still running"


# --------------------------------------------------------------------------- records


def effective_attention(separator: str, attention: str | None) -> str:
    """The attention a run trains with: ``none`` for UMX, ``mha`` for a transformer
    without an attention choice, else the choice itself."""
    from longsep.models.build import DEFAULT_ATTENTION, takes_attention

    if attention is None or str(attention) in NO_ATTENTION:
        return DEFAULT_ATTENTION if takes_attention(separator) else "none"
    return str(attention)


def model_label(separator: str, attention: str) -> str:
    """``umx_transformer:qkvg1D``: how tables and figures name a model."""
    return f"{separator}:{attention}"


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with every field of :data:`FIELDS` (None unless given) and ``test``."""
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    record["test"] = {}
    unknown = sorted(set(fields) - set(record))
    if unknown:
        raise ValueError(f"unknown result fields: {unknown}")
    record.update(fields)
    if record.get("separator") and record.get("attention"):
        record["model"] = model_label(record["separator"], record["attention"])
    return record


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``exc`` as one line: the message of a LongsepError (also when Hydra wrapped it, as
    its instantiate does), else ``Type: message``."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, LongsepError):
        cause = cause.__cause__ or cause.__context__
    text = str(cause) if cause is not None else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_result(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``<run_dir>/result.json`` atomically (NaN as null)."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"result status {record.get('status')!r} is not one of {STATUSES}")
    path = Path(run_dir) / RESULT_FILE
    write_json(path, dict(record))
    return path


def source_sdr(record: Mapping[str, Any]) -> float | None:
    """Median test SDR of the run's own source (``src``), or None."""
    value = (record.get("test") or {}).get(record.get("src") or "", {}).get("SDR")
    return float(value) if value is not None and math.isfinite(float(value)) else None


# --------------------------------------------------------------------------- measurements


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class PeakMemory:
    """Peak memory of this process between :meth:`start` and :meth:`read`.

    On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensors only). On CPU: the
    peak resident set size; Linux lets us reset it (``/proc/self/clear_refs``) and read
    ``VmHWM``, elsewhere ``resource.getrusage`` gives the peak since the process started
    (an upper bound when several runs share a process). Data-loader worker processes are
    not counted.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._reset = False

    def start(self) -> None:
        """Reset the peak."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._reset = _status_kib("VmHWM") is not None
        except OSError:
            self._reset = False

    def read(self) -> tuple[float, str]:
        """(peak in MB, how it was measured)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_max_allocated"
        if self._reset:
            return (_status_kib("VmHWM") or 0) / 1024, "rss_peak"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return peak / scale, "rss_peak_process"


# --------------------------------------------------------------------------- reading a sweep


def _job_dirs(sweep: Path) -> list[Path]:
    """Directories under ``sweep`` holding a result.json or a Hydra job record."""
    found = {p.parent for p in sweep.rglob(RESULT_FILE)}
    found |= {p.parent.parent for p in sweep.rglob(".hydra/config.yaml")}
    hidden = [p for p in found if any(s.startswith(".") for s in p.relative_to(sweep).parts)]
    return sorted(found - set(hidden))


def _record_without_result(job: Path) -> dict[str, Any]:
    """A failed record for a job that left no result.json, from its Hydra files."""
    fields: dict[str, Any] = {"status": "failed", "error": _MISSING, "run_dir": str(job)}
    try:
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {}
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text()) or {}
        choices = hydra.get("hydra", {}).get("runtime", {}).get("choices", {})
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError, AttributeError):
        return new_record(**fields)
    separator = choices.get("separator")
    fields.update(
        separator=separator,
        src=config.get("src"),
        seq_len=config.get("seq_len"),
        seed=config.get("seed"),
        data=choices.get("data"),
        overrides=list(overrides),
    )
    if separator:
        try:
            fields["attention"] = effective_attention(separator, choices.get("attention"))
        except LongsepError:
            fields["attention"] = str(choices.get("attention"))
    return new_record(**fields)


def read_result(job: str | Path) -> dict[str, Any]:
    """The record of one job dir; a failed record if it has none or it is unreadable."""
    job = Path(job)
    path = job / RESULT_FILE
    if not path.is_file():
        return _record_without_result(job)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return new_record(status="failed", error=f"unreadable {path}: {exc}", run_dir=str(job))
    record = new_record()
    record.update({k: v for k, v in data.items() if k in record})
    if record["status"] not in STATUSES:
        record.update(status="failed", error=f"{path}: unknown status {data.get('status')!r}")
    return record


def _order(record: Mapping[str, Any]) -> tuple:
    src = record.get("src") or ""
    rank = TARGETS.index(src) if src in TARGETS else len(TARGETS)
    seq_len = record.get("seq_len")
    seed = record.get("seed")
    return (
        rank,
        src,
        record.get("model") or "",
        float(seq_len) if seq_len is not None else math.inf,
        int(seed) if seed is not None else -1,
        record.get("job") or "",
    )


def load_study(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The records of every job under ``sweep_dir``, with ``job`` (its relative dir) and
    ``test_sdr`` filled in, sorted by source, model, seq_len, seed."""
    sweep = Path(str(sweep_dir)).expanduser()
    if not sweep.is_dir():
        raise LongsepError(f"{sweep_dir} is not a directory: give a multirun (sweep) directory")
    jobs = _job_dirs(sweep)
    if not jobs:
        raise LongsepError(f"{sweep_dir} holds no jobs (no */result.json nor */.hydra/)")
    records = []
    for job in jobs:
        record = read_result(job)
        record["job"] = job.relative_to(sweep).as_posix()
        record["test_sdr"] = source_sdr(record)
        for key in ("run_dir", "eval_dir"):  # relative, so a report does not name the machine
            record[key] = _relative(record.get(key), sweep)
        records.append(record)
    return sorted(records, key=_order)


def _relative(path: str | None, root: Path) -> str | None:
    """``path`` relative to ``root`` when it lies below it, else unchanged."""
    if not path:
        return path
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


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


def _by_model(records: Iterable[Mapping[str, Any]], field: str, scale: float = 1.0) -> Series:
    """``{model: {seq_len: median of field * scale}}`` over ok runs of every source.

    Peak memory counts only where it is a per-run figure (:data:`PER_RUN_MEMORY`).
    """
    if field == "peak_memory_mb":
        records = [r for r in records if r.get("peak_memory_source") in PER_RUN_MEMORY]
    pooled = [{**r, "src": "all"} for r in records]
    medians, _ = median_series(pooled, field)
    return {m: {x: v * scale for x, v in c.items()} for m, c in medians.get("all", {}).items()}


def _seq_lens(series: Iterable[Series]) -> list[float]:
    return sorted({x for s in series for c in s.values() for x in c})


def _sources(records: Iterable[Mapping[str, Any]]) -> list[str]:
    found = {r["src"] for r in records if r.get("status") == "ok" and r.get("src")}
    return sorted(found, key=lambda s: (TARGETS.index(s) if s in TARGETS else len(TARGETS), s))


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def results_markdown(
    records: Sequence[Mapping[str, Any]],
    title: str = "",
    scaling: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The study tables: SDR per source, cost per model (and per ``scaling`` benchmark
    rows), failed runs."""
    status = {s: sum(r.get("status") == s for r in records) for s in STATUSES}
    lines = [f"# Sequence-length study{': ' + title if title else ''}", ""]
    lines.append(
        f"{len(records)} jobs: {status['ok']} ok, {status['failed']} failed, "
        f"{status['skipped']} skipped (invalid or excluded separator x attention pairs)."
    )
    lines += [
        "",
        "Median test SDR (dB) of the trained source: BSSEval v4 median over 1-s frames per "
        "track, median over the test tracks, then median over the runs of a cell (n runs "
        "in parentheses).",
    ]
    sdr, counts = median_series(records, "test_sdr")
    seq_lens = _seq_lens(sdr.values())
    for src in _sources(records):
        lines += ["", f"## {src}", ""]
        rows = []
        for model, cells in sdr.get(src, {}).items():
            row = [model]
            for x in seq_lens:
                n = counts[src][model].get(x)
                row.append(f"{cells[x]:.2f} ({n})" if n else "-")
            rows.append(row)
        lines += _md_table(["model", *(f"{x:g} s" for x in seq_lens)], rows)
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
) -> list[Path]:
    """Write results.csv, results.md and the two figures into ``out_dir``; return paths."""
    from longsep.viz import seq_len_figure

    out = Path(str(out_dir)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    csv_text = results_csv(records)
    atomic_write(out / "results.csv", lambda p: p.write_text(csv_text))
    md_text = results_markdown(records, title, scaling)
    atomic_write(out / "results.md", lambda p: p.write_text(md_text))
    written += [out / "results.csv", out / "results.md"]

    sdr, _ = median_series(records, "test_sdr")
    panels = {src: ("median test SDR (dB)", sdr.get(src, {})) for src in _sources(records)}
    fig = seq_len_figure(panels or {"no finished runs": ("median test SDR (dB)", {})})
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
    args = parser.parse_args(argv)
    try:
        records = load_study(args.sweep_dir)
        scaling = read_scaling(args.scaling) if args.scaling else None
        out = args.out or str(Path(args.sweep_dir) / "report")
        paths = write_report(records, out, scaling, title=Path(args.sweep_dir).name)
    except LongsepError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(Path(paths[1]).read_text(), end="")
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
