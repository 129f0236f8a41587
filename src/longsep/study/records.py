"""Run records of the sequence-length study: ``<run dir>/result.json``, one per job.

Every training run writes ``<run dir>/result.json`` (:func:`write_result`), one flat
record with the fields of :data:`FIELDS` plus ``test``, the evaluation medians
``{target: {metric: median over tracks of the per-track median over frames}}``.
``status`` is ``ok``, ``failed`` (``error`` holds one line), ``interrupted`` (SIGINT or
SIGTERM: ``signal``, and ``global_step`` where ``last.ckpt`` was saved; running the same
command again resumes it) or ``skipped`` (``reason``: an invalid or excluded separator x
attention pair of a sweep). ``identity`` is the run's :mod:`~longsep.training.runs` hash.
:func:`load_study` reads the records of every job of a sweep; a job dir without one (a
killed job) counts as failed. It adds ``track_sdr``, ``{track: SDR}`` of the trained
source read from the run's evaluation (``<eval_dir>/scores.csv``), which the report's
intervals resample.

A model is named ``separator:attention`` with the attention in effect (``none`` for UMX,
``mha`` for a transformer trained with ``attention=default``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from longsep import target_rank
from longsep.errors import LongsepError
from longsep.evaluation.results import SCORES_FILE
from longsep.io import write_json

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
STATUSES: tuple[str, ...] = ("ok", "failed", "interrupted", "skipped")
NO_ATTENTION = ("", "null", "None", "default")  # attention choices that select no config
FIELDS: tuple[str, ...] = (
    "status",
    "model",
    "separator",
    "attention",
    "src",
    "seq_len",
    "arm",
    "reach",
    "seed",
    "test_sdr",
    "global_step",
    "max_steps",
    "batch_size",
    "world_size",
    "train_audio_seconds",
    "train_seconds",
    "step_seconds",
    "steps_per_second",
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
    "identity",
    "signal",
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


def arm_of(record: Mapping[str, Any]) -> str:
    """A run's arm of the context study: as recorded (``arm=``), else C for a limited
    ``reach``, B for 30-s chunks or longer, A for shorter ones."""
    if record.get("arm"):
        return str(record["arm"])
    if record.get("reach"):
        return "C"
    return "B" if float(record.get("seq_len") or 0) >= 30 else "A"


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


def add_training(
    record: dict[str, Any],
    *,
    global_step: int,
    batch_size: int,
    world_size: int,
    seq_len: float,
    train_seconds: float,
    step_seconds: float | None,
    peak_memory: tuple[float | None, str | None],
    device: str,
    best_val_loss: float | None,
) -> dict[str, Any]:
    """Fill in what a finished training gives: steps, audio seen, times, memory, device."""
    record.update(
        global_step=global_step,
        batch_size=batch_size,
        world_size=world_size,
        train_audio_seconds=global_step * batch_size * world_size * float(seq_len),
        train_seconds=train_seconds,
        step_seconds=step_seconds,
        steps_per_second=1.0 / step_seconds if step_seconds else None,
        peak_memory_mb=peak_memory[0],
        peak_memory_source=peak_memory[1],
        device=device,
        best_val_loss=best_val_loss,
    )
    return record


def add_evaluation(
    record: dict[str, Any], summary: Mapping[str, Any], seconds: float
) -> dict[str, Any]:
    """Fill in an evaluation's summary (:func:`longsep.evaluation.evaluate.evaluate_model`):
    its medians (``test``), the trained source's SDR (``test_sdr``), time and folder."""
    record.update(
        eval_seconds=seconds,
        eval_tracks=summary["n_tracks"],
        eval_dir=summary["out_dir"],
        test=summary["median"],
    )
    record["test_sdr"] = source_sdr(record)
    return record


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
        arm=choices.get("arm"),
        reach=config.get("reach"),
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
    seq_len = record.get("seq_len")
    seed = record.get("seed")
    return (
        *target_rank(record.get("src") or ""),
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
        record["track_sdr"] = track_sdr(record, job)
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


def _eval_dir(record: Mapping[str, Any], job: Path) -> Path | None:
    """The run's evaluation dir: as recorded, else re-rooted on ``job`` (a moved sweep)."""
    recorded = record.get("eval_dir")
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_dir():
        return path
    try:
        return job / path.relative_to(record.get("run_dir") or "")
    except ValueError:
        return None


def track_sdr(record: Mapping[str, Any], job: str | Path) -> dict[str, float]:
    """``{track: SDR}`` of the run's source from ``<eval_dir>/scores.csv`` (median over
    frames per track); empty for a run without evaluation or a readable score table."""
    src = record.get("src")
    folder = _eval_dir(record, Path(job)) if record.get("status") == "ok" else None
    if not src or folder is None or not (folder / SCORES_FILE).is_file():
        return {}
    out: dict[str, float] = {}
    try:
        with (folder / SCORES_FILE).open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("target") == src and row.get("metric") == "SDR":
                    value = float(row["score"])
                    if math.isfinite(value):
                        out[row["track"]] = value
    except (OSError, KeyError, ValueError) as exc:
        log.warning("%s: per-track scores left out (%s)", folder / SCORES_FILE, exc)
        return {}
    return out
