"""``separate.py``: separate audio files with a model store, checkpoint or Open-Unmix model."""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from longsep import audio
from longsep.cli.common import names, seconds
from longsep.errors import LongsepError
from longsep.heap import unmap_large_blocks
from longsep.inference.export import ExportError, check_filename_format, plan_outputs
from longsep.inference.options import InferenceOptions
from longsep.inference.separator import Separator
from longsep.io import check_writable, remove_stale_temporaries
from longsep.store import default_model

log = logging.getLogger(__name__)

GLOB_CHARS = set("*?[")


def _required(cfg: DictConfig, key: str, what: str) -> Any:
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
        raise LongsepError(f"{key}=... is required: {what}")
    return cfg[key]


def _under(path: Path, folder: Path) -> bool:
    return folder in path.resolve().parents


def _audio_in_folder(folder: Path, exclude: Path) -> list[Path]:
    """Audio files below ``folder``; a folder holding ``mixture.*`` contributes only that."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and audio.is_audio_file(p))
    mixtures = {p.parent for p in found if p.stem == "mixture"}
    return [
        p
        for p in found
        if not _under(p, exclude) and (p.parent not in mixtures or p.stem == "mixture")
    ]


def collect_inputs(spec: str, out_dir: Path) -> list[Path]:
    """The audio files named by ``input=``: a file, a directory (recursive) or a glob."""
    exclude = out_dir.resolve()
    if GLOB_CHARS & set(spec):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [p for p in matches if p.is_file() and audio.is_audio_file(p)]
        if not files:
            raise LongsepError(f"input={spec!r} matches no audio files")
        return files
    path = Path(spec).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise LongsepError(
                f"input={spec} is a symbolic link that leads nowhere (its target is missing, "
                "or it points back at itself)"
            )
        raise LongsepError(f"input={spec} does not exist")
    if path.is_dir():
        files = _audio_in_folder(path, exclude)
        if not files:
            kinds = ", ".join(sorted(audio.AUDIO_EXTENSIONS))
            raise LongsepError(f"input={spec} holds no audio files ({kinds})")
        return files
    return [path]


def two_stems(sources: list[str]) -> dict[str, list[str]]:
    """Spleeter's 2-stem output: ``vocals`` and ``accompaniment`` (every other estimate)."""
    if "vocals" not in sources or len(sources) < 2:
        raise LongsepError(
            f"stems=2 needs a vocals target and at least one other (or residual=true); "
            f"the separator has {', '.join(sources)}"
        )
    return {"vocals": ["vocals"], "accompaniment": [n for n in sources if n != "vocals"]}


def separator_from_config(cfg: DictConfig) -> Separator:
    """The separator of ``cfg.model`` with the filter / window options of ``cfg``;
    ``stems=2`` writes vocals and accompaniment instead of every target."""
    stems = cfg.get("stems")
    if stems not in (None, 2):
        raise LongsepError(f"stems={stems}: use 2 (vocals + accompaniment) or null (every target)")
    model = cfg.get("model")
    if model in (None, ""):
        model = default_model()
        log.info("no model= given: separating with the default model %s", model)
    paths = list(model) if OmegaConf.is_list(model) else str(model)
    targets = names(cfg.get("targets"))
    separator = Separator.from_pretrained(paths, targets, InferenceOptions.of(cfg))
    if stems == 2:
        separator.regroup(two_stems(separator.sources))
    return separator


def duration_seconds(value: Any) -> float | None:
    """``duration=``: seconds > 0, or -1 / null for the whole file (Open-Unmix's -1)."""
    if value is None or value == -1:
        return None
    try:
        return seconds(value, "duration")
    except LongsepError:
        raise LongsepError(
            f"duration={value}: give seconds > 0, or -1 / null for the whole file"
        ) from None


def _seconds(path: Path, start: float, duration: float | None) -> float:
    try:
        total = audio.info(path).duration
    except LongsepError:
        return 0.0
    left = max(0.0, total - start)
    return min(left, duration) if duration is not None else left


@contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A rich progress bar on a terminal, else None (plain log lines)."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        yield bar


def _report_failure(path: Path, exc: LongsepError, verbose: bool) -> None:
    if verbose:
        log.error("failed: %s", path, exc_info=exc)
    print(f"error: {exc}", file=sys.stderr)


def separate(cfg: DictConfig) -> None:
    """Separate every input of ``cfg``; one bad file is reported and skipped."""
    if cfg.get("verbose"):
        os.environ["HYDRA_FULL_ERROR"] = "1"
        logging.getLogger("longsep").setLevel(logging.DEBUG)
    unmap_large_blocks()  # freed window tensors leave the resident set: long songs stay small
    out_dir = Path(cfg.out_dir)
    duration = duration_seconds(cfg.get("duration"))
    check_filename_format(cfg.filename_format)
    audio.check_codec(cfg.codec, cfg.bitrate)
    specs = names(_required(cfg, "input", "a file, directory or glob, or a list of them"))
    inputs = list(dict.fromkeys(p for spec in specs or [] for p in collect_inputs(spec, out_dir)))
    if cfg.get("limit") is not None:
        inputs = inputs[: int(cfg.limit)]
    separator = separator_from_config(cfg)
    plan = plan_outputs(inputs, out_dir, cfg.filename_format, separator.targets, cfg.codec)
    check_writable(out_dir, "out_dir")  # before minutes of separation, not after
    remove_stale_temporaries(out_dir)
    log.info(
        "%d input(s); targets %s; segment %s s; device %s",
        len(inputs),
        ", ".join(separator.targets),
        separator.segment,
        separator.device,
    )
    if len(inputs) == 1:
        started = time.perf_counter()
        _separate_one(separator, cfg, inputs[0], out_dir, duration, synchronous=True)
        seconds = _seconds(inputs[0], cfg.start, duration)
        _summary(plan, [], seconds, time.perf_counter() - started)
        return
    failures: dict[Path, None] = {}  # ordered set of failed inputs
    audio_seconds, started = 0.0, time.perf_counter()
    with _progress(len(inputs)) as bar:
        task = bar.add_task("separating", total=len(inputs)) if bar else None
        for index, path in enumerate(inputs, 1):
            try:
                _separate_one(separator, cfg, path, out_dir, duration, synchronous=False)
                audio_seconds += _seconds(path, cfg.start, duration)
                if bar is None:
                    log.info("[%d/%d] %s", index, len(inputs), path)
            except LongsepError as exc:
                failures[path] = None
                _report_failure(path, exc, bool(cfg.get("verbose")))
            if bar is not None:
                bar.update(task, advance=1, description=path.name)
        try:
            separator.join()
        except ExportError as exc:  # songs separated but not written
            failures.update(dict.fromkeys(exc.inputs))
            _report_failure(out_dir, exc, bool(cfg.get("verbose")))
    _summary(plan, list(failures), audio_seconds, time.perf_counter() - started)
    if failures:
        raise LongsepError(f"{len(failures)} of {len(inputs)} inputs failed (see above)")


def _separate_one(
    separator: Separator,
    cfg: DictConfig,
    path: Path,
    out_dir: Path,
    duration: float | None,
    synchronous: bool,
) -> None:
    outputs = separator.separate_to_file(
        path,
        out_dir,
        codec=cfg.codec,
        bitrate=cfg.bitrate,
        filename_format=cfg.filename_format,
        start=cfg.start,
        duration=duration,
        synchronous=synchronous,
    )
    log.debug("%s -> %s", path, ", ".join(str(p) for p in outputs.values()))


def _summary(
    plan: dict[Path, dict[str, Path]], failed: list[Path], seconds: float, wall: float
) -> None:
    """What is on disk: songs whose every planned file exists, their files, the failures."""
    done = [song for song, outs in plan.items() if all(p.is_file() for p in outs.values())]
    files = sum(len(plan[song]) for song in done)
    rtf = wall / seconds if seconds else float("nan")
    log.info(
        "separated %d song(s) into %d files%s: %.1f min of audio in %.1f s, real-time factor "
        "%.3f (%.1fx)",
        len(done),
        files,
        f", {len(failed)} failed" if failed else "",
        seconds / 60,
        wall,
        rtf,
        1 / rtf if seconds and wall else float("nan"),
    )
