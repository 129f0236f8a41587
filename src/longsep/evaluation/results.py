"""An evaluation directory: per-track scores, the score table and the summary.

An evaluation directory ``out_dir`` holds::

    settings.json                   what produced the scores (model, options, backend, data)
    <subset>/<track>.json           framewise BSSEval v4 scores in museval's format
                                    (subset = musdb's: "test", or "train" for split=valid)
    extra/<track>.json              SI-SDR per target, separation time, duration
    estimates/<track>/<target>.wav  the estimates (save_estimates=True)
    scores.csv                      track, target, metric, score (median over frames)
    summary.json                    median over tracks per target and metric, real-time factor

The ``<subset>`` folders are what ``museval.eval_mus_track(output_dir=out_dir)`` writes, so
``museval.EvalStore().add_eval_dir(out_dir)`` / ``MethodStore`` read them (for the test
split). A track is finished once its museval JSON exists (written last, atomically).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from longsep import order_targets
from longsep.errors import LongsepError
from longsep.evaluation.bsseval import BSS_METRICS
from longsep.evaluation.metrics import save_museval_json, to_museval_json
from longsep.io import atomic_write, json_safe, write_json

if TYPE_CHECKING:
    from longsep.evaluation.evaluate import Song

log = logging.getLogger(__name__)

# table order: SDR first, then the other BSSEval v4 ratios, then SI-SDR
METRICS: tuple[str, ...] = ("SDR", "SIR", "SAR", "ISR", "SI-SDR")
SUBSETS: tuple[str, ...] = ("test", "train")
SETTINGS_FILE = "settings.json"
SUMMARY_FILE = "summary.json"
SCORES_FILE = "scores.csv"
EXTRA_DIR = "extra"
ESTIMATES_DIR = "estimates"
FRAME_SECONDS = 1.0  # BSSEval window and hop (the MUSDB18 / SiSEC 2018 protocol)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nan_median(values: Iterable[float]) -> float:
    """Median of the finite values (museval / pandas skip NaN); NaN if none."""
    finite = np.asarray([v for v in values if v is not None], dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else math.nan


class ResultStore:
    """The files of one evaluation directory (see the module docstring)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir).expanduser()

    def track_json(self, name: str, subset: str) -> Path:
        return self.dir / subset / f"{name}.json"

    def extra_json(self, name: str) -> Path:
        return self.dir / EXTRA_DIR / f"{name}.json"

    def is_done(self, name: str, subset: str) -> bool:
        return self.track_json(name, subset).is_file() and self.extra_json(name).is_file()

    def check_settings(self, settings: Mapping[str, Any], overwrite: bool = False) -> None:
        """Record ``settings``; refuse to resume results made with other settings."""
        path = self.dir / SETTINGS_FILE
        wanted = json.loads(json.dumps(json_safe(dict(settings))))
        if path.is_file() and not overwrite:
            found = json.loads(path.read_text())
            if found != wanted:
                old, new = _flatten(found), _flatten(wanted)
                changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
                raise LongsepError(
                    f"out_dir={self.dir} holds results made with other settings "
                    f"({', '.join(changed)} differ): set another out_dir or overwrite=true"
                )
        write_json(path, wanted)

    def settings(self) -> dict[str, Any]:
        path = self.dir / SETTINGS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, song: Song, scores: Mapping[str, Any], seconds: float) -> Path:
        """Write a finished song: extra info first, the museval JSON last."""
        extra = {
            "track": song.name,
            "subset": song.subset,
            "duration": song.duration,
            "separation_seconds": seconds,
            "SI-SDR": {t: v.get("SI-SDR") for t, v in scores["targets"].items()},
        }
        write_json(self.extra_json(song.name), extra)
        document = to_museval_json(song.name, scores)
        path = self.track_json(song.name, song.subset)
        atomic_write(path, lambda p: save_museval_json(document, p))
        return path

    def save_estimates(self, song: Song, estimates: Mapping[str, np.ndarray]) -> None:
        """Write ``estimates/<track>/<target>.wav``."""
        from longsep import audio

        for target, signal in estimates.items():
            path = self.dir / ESTIMATES_DIR / song.name / f"{target}.wav"
            audio.save(path, torch.from_numpy(np.ascontiguousarray(signal.T)), song.rate)

    def track_files(self) -> dict[str, Path]:
        """Track name -> museval JSON of every finished song found in the directory."""
        found: dict[str, Path] = {}
        for subset in SUBSETS:
            for path in sorted((self.dir / subset).glob("*.json")):
                found.setdefault(path.stem, path)
        return found

    def track_scores(self, name: str, path: Path | None = None) -> dict[str, dict[str, float]]:
        """``{target: {metric: median over frames}}`` of one song, SI-SDR included."""
        path = path or self.track_files().get(name)
        if path is None:
            raise LongsepError(f"no scores for track {name!r} in {self.dir}")
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LongsepError(f"cannot read {path}: {exc}; delete it to recompute") from exc
        out: dict[str, dict[str, float]] = {}
        for target in document.get("targets", []):
            frames = target.get("frames", [])
            out[target["name"]] = {
                m: nan_median(f["metrics"].get(m, math.nan) for f in frames) for m in BSS_METRICS
            }
        extra = self.extra(name)
        for target, value in (extra.get("SI-SDR") or {}).items():
            out.setdefault(target, {})["SI-SDR"] = math.nan if value is None else float(value)
        return out

    def extra(self, name: str) -> dict[str, Any]:
        path = self.extra_json(name)
        return json.loads(path.read_text()) if path.is_file() else {}


def score_rows(store: ResultStore, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{track, target, metric, score}`` (median over frames) of finished songs.

    ``names`` restricts and orders the songs (default: every song in the directory).
    """
    files = store.track_files()
    names = list(files) if names is None else [n for n in names if n in files]
    rows = []
    for name in names:
        scores = store.track_scores(name, files[name])
        for target in order_targets(scores):
            for metric in METRICS:
                if metric in scores[target]:
                    rows.append(
                        {
                            "track": name,
                            "target": target,
                            "metric": metric,
                            "score": scores[target][metric],
                        }
                    )
    return rows


def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{target: {metric: median over tracks}}`` of per-track rows (NaN skipped)."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        grouped.setdefault(row["target"], {}).setdefault(row["metric"], []).append(row["score"])
    return {
        t: {m: nan_median(grouped[t][m]) for m in METRICS if m in grouped[t]}
        for t in order_targets(grouped)
    }


def summarize(
    store: ResultStore, names: Sequence[str], name: str, info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``scores.csv`` and ``summary.json`` for songs ``names``; return the summary."""
    rows = score_rows(store, names)
    with_scores = list(dict.fromkeys(r["track"] for r in rows))
    missing = [n for n in names if n not in with_scores]
    if missing:
        log.warning(
            "%d track(s) without scores in %s: %s", len(missing), store.dir, ", ".join(missing[:5])
        )
    atomic_write(store.dir / SCORES_FILE, lambda p: _write_csv(p, rows))
    extras = [store.extra(n) for n in with_scores]
    audio_seconds = sum(float(e.get("duration") or 0.0) for e in extras)
    separation = sum(float(e.get("separation_seconds") or 0.0) for e in extras)
    summary = {
        "name": name,
        "out_dir": str(store.dir),
        "tracks": with_scores,
        "n_tracks": len(with_scores),
        **dict(info or {}),
        "settings": store.settings(),
        "median": aggregate(rows),
        "audio_seconds": audio_seconds,
        "separation_seconds": separation,
        "rtf": separation / audio_seconds if audio_seconds else math.nan,
    }
    write_json(store.dir / SUMMARY_FILE, summary)
    return summary


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["track", "target", "metric", "score"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "score": repr(float(row["score"]))})


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a table: median over tracks per target and metric, plus the RTF."""
    median = summary["median"]
    lines = [
        f"{summary['name']}: {summary['n_tracks']} track(s), median over frames then tracks (dB)",
        f"{'target':<14}" + "".join(f"{m:>9}" for m in METRICS),
    ]
    for target, values in median.items():
        cells = "".join(f"{_cell(values.get(m)):>9}" for m in METRICS)
        lines.append(f"{target:<14}{cells}")
    rtf = summary.get("rtf")
    if rtf is not None and math.isfinite(rtf):
        lines.append(
            f"real-time factor {rtf:.3f} (separation {summary['separation_seconds']:.1f} s "
            f"for {summary['audio_seconds']:.1f} s of audio)"
        )
    lines.append(f"results: {summary['out_dir']}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"
