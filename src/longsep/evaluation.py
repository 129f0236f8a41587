"""Evaluate a separator (or an oracle) on the songs of a data set split; resumable.

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
split). A track is finished once its museval JSON exists (written last, atomically): a
resumed evaluation skips it. Songs are separated one by one in the calling process;
BSSEval scoring, the slow part, runs in ``workers`` spawned processes (``workers=1``: in
the calling process), at most ``workers`` songs in flight.

Layouts: audio is ``(samples, channels)`` float32 here (musdb / museval orientation).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from longsep import TARGETS
from longsep.errors import LongsepError
from longsep.metrics import evaluate_track, save_museval_json, to_museval_json

log = logging.getLogger(__name__)

BSS_METRICS: tuple[str, ...] = ("SDR", "SIR", "SAR", "ISR")
METRICS: tuple[str, ...] = (*BSS_METRICS, "SI-SDR")
SUBSETS: tuple[str, ...] = ("test", "train")
SETTINGS_FILE = "settings.json"
SUMMARY_FILE = "summary.json"
SCORES_FILE = "scores.csv"
EXTRA_DIR = "extra"
ESTIMATES_DIR = "estimates"
FRAME_SECONDS = 1.0  # BSSEval window and hop (the MUSDB18 / SiSEC 2018 protocol)


@dataclass
class Song:
    """One song of the evaluation: mixture and true sources, ``(samples, channels)`` float32."""

    name: str
    subset: str
    rate: int
    mixture: np.ndarray
    sources: dict[str, np.ndarray] = field(default_factory=dict)
    duration: float = field(init=False)

    def __post_init__(self) -> None:
        self.duration = self.mixture.shape[0] / self.rate

    @classmethod
    def from_track(cls, track: Any) -> Song:
        """Read a musdb track (mixture and every source) into memory."""
        names = [t for t in TARGETS if t in track.sources]
        names += sorted(n for n in track.sources if n not in names)
        return cls(
            name=track.name,
            subset=track.subset,
            rate=int(track.rate),
            mixture=np.asarray(track.audio, dtype=np.float32),
            sources={n: np.asarray(track.sources[n].audio, dtype=np.float32) for n in names},
        )

    def reference(self, target: str, estimated: Sequence[str]) -> np.ndarray | None:
        """True audio of ``target``: a source, ``accompaniment`` (all but vocals) or
        ``residual`` (the mixture minus the other ``estimated`` sources); None if unknown."""
        if target in self.sources:
            return self.sources[target]
        if target == "accompaniment" and "vocals" in self.sources:
            rest = [a for n, a in self.sources.items() if n != "vocals"]
            return np.sum(rest, axis=0, dtype=np.float64).astype(np.float32)
        if target == "residual":
            used = [self.sources[n] for n in estimated if n in self.sources]
            total = np.sum(used, axis=0, dtype=np.float64) if used else 0.0
            return (self.mixture.astype(np.float64) - total).astype(np.float32)
        return None


class Estimator(Protocol):
    """What the evaluation runs on each song."""

    def __call__(self, song: Song) -> dict[str, np.ndarray]:
        """Estimates ``{target: (samples, channels)}`` of ``song.mixture``."""

    def settings(self) -> dict[str, Any]:
        """JSON-able description of everything that determines the estimates."""


class ModelEstimator:
    """Estimates from a :class:`longsep.separator.Separator` (``settings`` as given)."""

    def __init__(self, separator: Any, settings: Mapping[str, Any]) -> None:
        self.separator = separator
        self._settings = dict(settings)

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def __call__(self, song: Song) -> dict[str, np.ndarray]:
        out = self.separator.separate(torch.from_numpy(song.mixture.T), song.rate)
        return {t: a.detach().cpu().numpy().T.astype(np.float32) for t, a in out.items()}


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temporary sibling, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_safe(value: Any) -> Any:
    """NaN / inf floats to None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented strict JSON (NaN as null), atomically."""
    text = json.dumps(_json_safe(data), indent=2)
    atomic_write(path, lambda p: p.write_text(text + "\n"))


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
        wanted = json.loads(json.dumps(_json_safe(dict(settings))))
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


def order_targets(targets: Iterable[str]) -> list[str]:
    """MUSDB's order (vocals, drums, bass, other), then accompaniment, residual, the rest."""
    rank = {t: i for i, t in enumerate((*TARGETS, "accompaniment", "residual"))}
    return sorted(dict.fromkeys(targets), key=lambda t: (rank.get(t, len(rank)), t))


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


class _Progress:
    """A tqdm bar on a terminal, else one log line per finished song."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.count = total, done
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="track", dynamic_ncols=True)

    def update(self, song: Song, scores: Mapping[str, Any]) -> None:
        self.count += 1
        sdr = {t: nan_median(v["SDR"]) for t, v in scores["targets"].items() if "SDR" in v}
        text = " ".join(f"{t} {v:.2f}" for t, v in sdr.items())
        if self.bar is not None:
            self.bar.set_postfix_str(f"{song.name[:30]} SDR {text}", refresh=False)
            self.bar.update(1)
        else:
            log.info("[%d/%d] %s: SDR %s", self.count, self.total, song.name, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _init_worker(threads: int) -> None:
    torch.set_num_threads(max(1, threads))


def _scoring_pool(workers: int) -> ProcessPoolExecutor | nullcontext:
    if workers <= 1:
        return nullcontext()
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
    )


def _estimate(song: Song, estimator: Estimator) -> tuple[dict, dict, float]:
    """Run ``estimator`` on ``song``; return (references, estimates, seconds)."""
    started = time.perf_counter()
    estimates = estimator(song)
    seconds = time.perf_counter() - started
    names = order_targets(estimates)
    references = {}
    for target in names:
        reference = song.reference(target, names)
        if reference is None:
            log.warning("%s: no reference for target %r, not scored", song.name, target)
        else:
            references[target] = reference
    return references, {t: estimates[t] for t in references}, seconds


class _Run:
    """Bookkeeping of one :func:`evaluate_songs` call: saving, progress, failures."""

    def __init__(self, store: ResultStore, bar: _Progress) -> None:
        self.store, self.bar = store, bar
        self.finished: list[str] = []
        self.failed: dict[str, str] = {}
        self.pending: dict[Future, tuple[Song, float]] = {}

    def fail(self, name: str, exc: LongsepError) -> None:
        log.error("%s: %s", name, exc)
        self.failed[name] = str(exc)

    def finish(self, song: Song, score: Callable[[], Mapping[str, Any]], seconds: float) -> None:
        try:
            scores = score()
        except LongsepError as exc:
            self.fail(song.name, exc)
            return
        self.store.save(song, scores, seconds)
        self.finished.append(song.name)
        self.bar.update(song, scores)

    def drain(self, limit: int) -> None:
        """Wait until at most ``limit`` songs are being scored."""
        while len(self.pending) > limit:
            done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for future in done:
                song, seconds = self.pending.pop(future)
                self.finish(song, future.result, seconds)

    def check(self, total: int) -> None:
        if self.failed:
            details = "; ".join(f"{n}: {m}" for n, m in self.failed.items())
            raise LongsepError(f"{len(self.failed)} of {total} tracks failed ({details})")


def evaluate_songs(
    tracks: Sequence[Any],
    estimator: Estimator,
    store: ResultStore,
    backend: str = "fast",
    workers: int = 1,
    overwrite: bool = False,
    save_estimates: bool = False,
    progress: bool = True,
    load: Callable[[Any], Song] = Song.from_track,
) -> list[str]:
    """Separate and score every song of ``tracks`` not yet in ``store``; return the new ones.

    ``tracks`` are musdb tracks (anything ``load`` turns into a :class:`Song`);
    ``backend`` is that of :func:`longsep.metrics.bss_eval`. A song that fails with a
    :class:`LongsepError` (unreadable audio, a silent source, ...) is skipped; the others
    are saved, then one LongsepError names every failed song.
    """
    todo = [t for t in tracks if overwrite or not store.is_done(t.name, t.subset)]
    if len(todo) < len(tracks):
        log.info("%d of %d tracks already in %s", len(tracks) - len(todo), len(tracks), store.dir)
    run = _Run(store, _Progress(len(tracks), len(tracks) - len(todo), progress))
    try:
        with _scoring_pool(workers) as pool:
            for track in todo:
                try:
                    song = load(track)
                    references, estimates, seconds = _estimate(song, estimator)
                    if save_estimates:
                        store.save_estimates(song, estimates)
                except LongsepError as exc:
                    run.fail(track.name, exc)
                    continue
                frame = round(FRAME_SECONDS * song.rate)
                score = partial(
                    evaluate_track,
                    references,
                    estimates,
                    backend=backend,
                    window=frame,
                    hop=frame,
                    rate=song.rate,
                )
                if pool is None:
                    run.finish(song, score, seconds)
                    continue
                run.drain(workers - 1)
                run.pending[pool.submit(score)] = (song, seconds)
                song.mixture, song.sources = song.mixture[:0], {}  # the worker has them
            run.drain(0)
    finally:
        run.bar.close()
    run.check(len(todo))
    return run.finished


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
