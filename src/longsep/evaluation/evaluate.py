"""Evaluate a separator (or an oracle) on the songs of a data set split; resumable.

Results go to an evaluation directory (:mod:`longsep.evaluation.results`); a track already
scored there is skipped by a resumed evaluation. Songs are separated one by one in the
calling process; BSSEval scoring, the slow part, runs in ``workers`` spawned processes
(``workers=1``: in the calling process), at most ``workers`` songs in flight.

:func:`evaluate_tracks` is the whole job (tracks, estimator, out dir -> summary) that
``evaluate.py`` and evaluation after training both call.

Layouts: audio is ``(samples, channels)`` float32 here (musdb / museval orientation).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from longsep import TARGETS, audio, order_targets
from longsep.config import GroupOptions
from longsep.data import instantiate_tracks
from longsep.data.musdb import MUSDBTracks, read_track_audio
from longsep.errors import LongsepError
from longsep.evaluation.metrics import evaluate_track
from longsep.evaluation.results import (
    FRAME_SECONDS,
    ResultStore,
    format_summary,
    nan_median,
    summarize,
)
from longsep.inference.options import InferenceOptions
from longsep.inference.separator import Separator
from longsep.inference.streaming import fit_length
from longsep.store import ModelSource

log = logging.getLogger(__name__)

BACKENDS = ("fast", "museval")


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
            mixture=read_track_audio(track),
            sources={n: read_track_audio(track.sources[n]) for n in names},
        )

    def reference(self, target: str, estimated: Sequence[str]) -> np.ndarray | None:
        """True audio of ``target``: a source, a sum of sources (``drums+bass``),
        ``accompaniment`` (all but vocals) or ``residual`` (the mixture minus the other
        ``estimated`` sources); None if unknown."""
        if target in self.sources:
            return self.sources[target]
        parts = target.split("+")
        if len(parts) > 1 and all(p in self.sources for p in parts):
            return np.sum([self.sources[p] for p in parts], 0, dtype=np.float64).astype(np.float32)
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
    """Estimates from a :class:`longsep.inference.separator.Separator` (``settings`` as given)."""

    def __init__(self, separator: Any, settings: Mapping[str, Any]) -> None:
        self.separator = separator
        self._settings = dict(settings)

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def __call__(self, song: Song) -> dict[str, np.ndarray]:
        out = self.separator.separate(torch.from_numpy(song.mixture.T), song.rate)
        return {t: a.detach().cpu().numpy().T.astype(np.float32) for t, a in out.items()}


class FolderEstimator:
    """Estimates another system wrote: ``<root>/<track>/<target>.<ext>`` (any audio format).

    ``targets`` default to every audio file found in the tracks' folders (``mixture`` aside).
    Files at another sample rate are resampled to the reference's and mono / stereo is
    matched, with a logged note; files of another length are zero-padded or cut to it,
    with a warning.
    """

    def __init__(self, root: str | Path, targets: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise LongsepError(f"estimates={root} is not a directory of <track>/<target>.wav")
        self.targets = list(targets) if targets else None

    def settings(self) -> dict[str, Any]:
        return {"estimates": str(self.root.resolve()), "targets": self.targets}

    def _found(self, track: str) -> dict[str, Path]:
        """``{name: file}`` of the audio files in the folder of ``track`` (``mixture`` aside)."""
        files = sorted((self.root / track).glob("*"))
        found = {p.stem: p for p in files if p.is_file() and audio.is_audio_file(p)}
        found.pop("mixture", None)
        return found

    def _files(self, track: str) -> dict[str, Path]:
        """``{target: file}`` of ``track``; one line naming the first missing folder or file."""
        folder = self.root / track
        if not folder.is_dir():
            raise LongsepError(
                f"estimates: {folder} does not exist (expected <estimates>/<track>/<target>.wav)"
            )
        found = self._found(track)
        targets = self.targets or list(found)
        if not targets:
            raise LongsepError(f"estimates: {folder} holds no audio files")
        for target in targets:
            if target not in found:
                raise LongsepError(f"estimates: {folder / target}.wav does not exist")
        return {t: found[t] for t in targets}

    def check(self, tracks: Sequence[str]) -> None:
        """Refuse, in one line, the first missing folder or file of ``tracks`` before any is
        scored; without ``targets``, every target found for one track is expected in all."""
        if self.targets is None:
            self.targets = order_targets(n for t in tracks for n in self._found(t)) or None
        for track in tracks:
            self._files(track)

    def __call__(self, song: Song) -> dict[str, np.ndarray]:
        estimates = {}
        for target, path in self._files(song.name).items():
            rate = audio.info(path).sample_rate
            if rate != song.rate:
                log.info("%s: %d Hz, resampled to the reference's %d Hz", path, rate, song.rate)
            signal = audio.load(path, sample_rate=song.rate, channels=song.mixture.shape[1])
            length = song.mixture.shape[0]
            if signal.shape[-1] != length:
                change = "cut" if signal.shape[-1] > length else "zero-padded"
                log.warning(
                    "%s: %d samples, the reference %d: %s", path, signal.shape[-1], length, change
                )
                signal = fit_length(signal, length)
            estimates[target] = signal.numpy().T.astype(np.float32)
        return estimates


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
    """Separate and score every song of ``tracks`` not yet in ``store``; return the new ones
    in the order of ``tracks`` (worker processes finish in any order).

    ``tracks`` are musdb tracks (anything ``load`` turns into a :class:`Song`);
    ``backend`` is that of :func:`longsep.evaluation.metrics.bss_eval`. A song that fails with a
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
    finished = set(run.finished)
    return [t.name for t in todo if t.name in finished]


def load_tracks(data: Any, split: str, names: Sequence[str] | None = None) -> list:
    """The tracks (musdb's, or folders read alike) of ``split`` of the ``data`` config
    (generating the synthetic set if configured), limited to ``names`` when given."""
    source = instantiate_tracks(data)
    if isinstance(source, MUSDBTracks):
        source.prepare()
    tracks = list(source.tracks(split))
    if not tracks:
        raise LongsepError(f"split={split} of data.root={data.get('root')} holds no tracks")
    if names:
        have = {t.name for t in tracks}
        unknown = [n for n in names if n not in have]
        if unknown:
            raise LongsepError(
                f"tracks: {unknown} are not in split={split} (e.g. {', '.join(sorted(have)[:3])})"
            )
        tracks = [t for t in tracks if t.name in set(names)]
    return tracks


def model_estimator(
    source: ModelSource, targets: Sequence[str] | None, options: InferenceOptions
) -> ModelEstimator:
    """A :class:`ModelEstimator` for the model of ``source`` with the inference ``options``."""
    separator = Separator.from_pretrained(str(source.model), targets, options)
    settings = {
        "model": str(source.model.resolve()),
        "targets": list(separator.targets),
        "niter": separator.niter,
        "softmask": separator.softmask,
        "alpha": separator.alpha,
        "wiener_win_len": separator.wiener_win_len,
        "segment": separator.segment,
        "overlap": separator.overlap,
        "band_target": separator.band_target,  # gets what the model's band leaves of a song
    }
    log.info(
        "model %s: targets %s, segment %s s, device %s",
        source.model,
        ", ".join(separator.targets),
        separator.segment,
        separator.device,
    )
    return ModelEstimator(separator, settings)


@dataclass(frozen=True)
class ScoringOptions(GroupOptions):
    """How an evaluation scores (defaults: ``conf/evaluation/default.yaml``): the
    ``split``, the BSSEval ``backend`` (``fast`` | ``museval``), scoring ``workers``,
    ``overwrite`` (rescore finished tracks) and ``save_estimates``."""

    GROUP = "evaluation"

    split: str
    backend: str
    workers: int
    overwrite: bool
    save_estimates: bool


def evaluate_model(
    source: ModelSource,
    data: Any,
    out_dir: str | Path,
    *,
    inference: InferenceOptions,
    scoring: ScoringOptions,
    targets: Sequence[str] | None = None,
    tracks: Sequence[str] | None = None,
    name: str | None = None,
    data_name: str = "data",
    progress: bool = True,
) -> dict[str, Any]:
    """Separate the ``scoring.split`` of the data set ``data`` (a data config node) with the
    model of ``source`` and score it into ``out_dir``; return the summary. What
    ``evaluate.py ckpt=``, training's ``evaluate_after`` and the study's analyses run. The
    model is loaded first, so a bad one fails before the data set is read (or generated)."""
    estimator = model_estimator(source, targets, inference)
    songs = load_tracks(data, scoring.split, tracks)
    return evaluate_tracks(
        songs,
        estimator,
        out_dir,
        name=name or source.label,
        meta={"root": data.get("root"), "split": scoring.split, "data": data_name},
        backend=scoring.backend,
        workers=scoring.workers,
        overwrite=scoring.overwrite,
        save_estimates=scoring.save_estimates,
        progress=progress,
    )


def evaluate_tracks(
    tracks: Sequence[Any],
    estimator: Estimator,
    out_dir: str | Path,
    *,
    name: str,
    meta: Mapping[str, Any],
    backend: str = "fast",
    workers: int = 1,
    overwrite: bool = False,
    save_estimates: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``estimator`` on ``tracks`` into ``out_dir`` and return the summary
    (:func:`longsep.evaluation.results.summarize`, also written to ``summary.json``).

    ``meta`` (``split``, ``data``, ``root``) is recorded with the settings; results of other
    settings in ``out_dir`` are an error unless ``overwrite``. If some tracks fail, the
    others are summarized and a :class:`LongsepError` is raised.
    """
    if int(workers) < 1:
        raise LongsepError(f"workers={workers}: use 1 or more")
    if backend not in BACKENDS:
        raise LongsepError(f"backend={backend}: use {' or '.join(BACKENDS)}")
    store = ResultStore(Path(out_dir))
    data = {"root": str(meta.get("root")), "split": str(meta.get("split"))}
    store.check_settings(
        {"estimator": estimator.settings(), "backend": backend, "data": data},
        overwrite=overwrite,
    )
    log.info("evaluating %s on %d %s tracks into %s", name, len(tracks), data["split"], store.dir)
    failure = None
    try:
        evaluate_songs(
            tracks,
            estimator,
            store,
            backend=backend,
            workers=int(workers),
            overwrite=overwrite,
            save_estimates=save_estimates,
            progress=progress,
        )
    except LongsepError as exc:  # some tracks failed: summarize the others, then report
        failure = exc
    summary = summarize(
        store,
        [t.name for t in tracks],
        name,
        {"split": data["split"], "data": str(meta.get("data")), "backend": backend},
    )
    if failure is not None:
        log.info("%s", format_summary(summary))
        raise failure
    return summary
