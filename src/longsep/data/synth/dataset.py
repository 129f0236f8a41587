"""The synthetic set on disk: parameters, the track plan, writing tracks atomically,
resuming an interrupted generation, the manifest and musdb's setup file."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from longsep import TARGETS
from longsep.data.synth.instruments import render_song
from longsep.data.synth.plan import (
    CONTROLS,
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_SECONDS,
    GAP_SECONDS,
    SAMPLE_RATE,
    SOLO_SECONDS,
    ControlDesign,
    SongSpec,
    plan_song,
    song_duration,
)
from longsep.errors import LongsepError
from longsep.io import atomic_write, exclusive_use, read_json, replace_dir, write_text

log = logging.getLogger(__name__)


SYNTH_VERSION = 1


DEFAULT_N_TRAIN = 16


DEFAULT_N_VALID = 4


DEFAULT_N_TEST = 6


DEFAULT_SUBTYPE = "PCM_16"


SUBTYPES = ("PCM_16", "FLOAT")


MANIFEST = "synth.json"


CONTENT_FILE = ".synth-content.json"  # content parameters of the track folders on disk


SETUP_FILE = "setup.yaml"


FILES = ("mixture", *TARGETS)


_SPLIT_CODES = {"train": 1, "valid": 2, "test": 3}


_TRACK_RE = re.compile(r"^synth_(train|valid|test)_\d{3,} - ")


def _coerce(name: str, value: Any, kind: str) -> Any:
    """``value`` as the field's type (``int`` / ``float`` / ``str`` / ``bool``), or a one-line
    error."""
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return {"true": True, "false": False}[str(value).lower()]
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        return float(value) if kind == "float" else str(value)
    except (TypeError, ValueError, KeyError):
        raise LongsepError(f"synth {name}={value!r} must be of type {kind}") from None


@dataclass(frozen=True)
class SynthParams:
    """The parameters that define a generated set (recorded in the manifest)."""

    n_train: int = DEFAULT_N_TRAIN
    n_valid: int = DEFAULT_N_VALID
    n_test: int = DEFAULT_N_TEST
    seed: int = 0
    min_seconds: float = DEFAULT_MIN_SECONDS
    max_seconds: float = DEFAULT_MAX_SECONDS
    sample_rate: int = SAMPLE_RATE
    subtype: str = DEFAULT_SUBTYPE
    control: str = "none"
    solo_seconds: float = SOLO_SECONDS
    gap_seconds: float = GAP_SECONDS
    distractor_register: str = "random"
    accompaniment: bool = True
    negative: str = "cut"
    compact: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.type))
        for key in ("n_train", "n_valid", "n_test", "seed"):
            if getattr(self, key) < 0:
                raise LongsepError(f"synth {key}={getattr(self, key)} must be >= 0")
        if self.n_train + self.n_valid + self.n_test == 0:
            raise LongsepError("synth n_train + n_valid + n_test is 0: ask for at least one song")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise LongsepError(
                f"synth min_seconds={self.min_seconds}, max_seconds={self.max_seconds}: "
                "need 0 < min_seconds <= max_seconds"
            )
        if self.sample_rate < 8000:
            raise LongsepError(f"synth sample_rate={self.sample_rate} must be >= 8000")
        if self.subtype not in SUBTYPES:
            raise LongsepError(f"synth subtype={self.subtype!r} must be one of {list(SUBTYPES)}")
        if self.control not in CONTROLS:
            raise LongsepError(f"synth control={self.control!r} must be one of {list(CONTROLS)}")
        design = self.design  # checks the control's layout
        if self.control != "none" and self.min_seconds < design.min_seconds:
            raise LongsepError(
                f"synth control={self.control} needs min_seconds >= {design.min_seconds:g} "
                "(solo_seconds + gap_seconds + room for a both-singing section)"
            )

    @property
    def design(self) -> ControlDesign:
        """The control songs' layout (used only with ``control``)."""
        return ControlDesign(
            self.solo_seconds, self.gap_seconds, self.distractor_register, self.accompaniment,
            self.negative, self.compact,
        )  # fmt: skip

    def record(self) -> dict[str, Any]:
        """All parameters, for the manifest; ``control`` and its layout only where they are
        set (older sets stay valid)."""
        out = asdict(self)
        defaults = asdict(ControlDesign()) | {"control": "none"}
        for key, value in defaults.items():
            if out[key] == value:
                del out[key]
        return out

    def content(self) -> dict[str, Any]:
        """The parameters a single track depends on (not the counts)."""
        out = {k: v for k, v in self.record().items() if not k.startswith("n_")}
        return {"version": SYNTH_VERSION, **out}


def make_params(**params: Any) -> SynthParams:
    """:class:`SynthParams` from keyword arguments, with a one-line error for unknown keys."""
    known = {f.name for f in fields(SynthParams)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise LongsepError(f"unknown synth parameter(s) {unknown}: use some of {sorted(known)}")
    return SynthParams(**params)


@dataclass(frozen=True)
class TrackJob:
    """One song of the set: where it goes and the seed and duration it is made from."""

    split: str
    index: int
    seed: int
    seconds: float
    sample_rate: int
    spec: SongSpec = field(repr=False, compare=False)

    @property
    def subset(self) -> str:
        return "test" if self.split == "test" else "train"

    @property
    def name(self) -> str:
        return f"synth_{self.split}_{self.index:03d} - {self.spec.name}"

    def folder(self, root: Path) -> Path:
        return root / self.subset / self.name


def track_seed(seed: int, split: str, index: int) -> int:
    """The song seed of track ``index`` of ``split`` in a set made with ``seed``."""
    return int(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]).generate_state(1)[0])


def plan_dataset(params: SynthParams) -> list[TrackJob]:
    """The songs of a set, train then valid then test (no audio rendered)."""
    jobs = []
    for split, count in (
        ("train", params.n_train),
        ("valid", params.n_valid),
        ("test", params.n_test),
    ):
        for index in range(count):
            seed = track_seed(params.seed, split, index)
            seconds = song_duration(seed, params.min_seconds, params.max_seconds)
            spec = plan_song(seed, seconds, params.sample_rate, params.control, params.design)
            jobs.append(TrackJob(split, index, seed, seconds, params.sample_rate, spec))
    return jobs


def _complete(folder: Path) -> bool:
    return all((folder / f"{name}.wav").is_file() for name in FILES)


def _encode(song: dict[str, np.ndarray], subtype: str) -> dict[str, np.ndarray]:
    """Arrays to write. PCM_16: stems rounded to int16, mixture = their integer sum.

    The mixture sum stays inside int16: ``|mix| <= PEAK`` plus at most 2 LSB of rounding.
    """
    if subtype == "FLOAT":
        return song
    ints = {s: np.round(song[s] * 32768.0).astype(np.int32) for s in TARGETS}
    out = {s: a.astype(np.int16) for s, a in ints.items()}
    out["mixture"] = sum(ints.values()).astype(np.int16)
    return out


def write_track(job: TrackJob, root: Path, subtype: str) -> Path:
    """Render one song and move it into place as a whole (staging folder, then rename)."""
    song = render_song(job.spec)
    staging = root / ".synth-staging" / job.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, audio in _encode(song, subtype).items():
        atomic_write(
            staging / f"{name}.wav",
            lambda p, a=audio: sf.write(p, a, job.sample_rate, subtype=subtype, format="WAV"),
        )
    return replace_dir(staging, job.folder(root))


def musdb_setup(validation_tracks: Sequence[str], sample_rate: int = SAMPLE_RATE) -> dict:
    """A musdb setup file (as ``musdb/configs/mus.yaml``) naming our validation tracks."""
    sources = {s: f"{s}.wav" for s in TARGETS}
    targets: dict[str, dict[str, int]] = {s: {s: 1} for s in TARGETS}
    targets["accompaniment"] = {"bass": 1, "drums": 1, "other": 1}
    targets["linear_mixture"] = {s: 1 for s in TARGETS}
    return {
        "sample_rate": float(sample_rate),
        "sources": sources,
        "mixture": "mixture.wav",
        "stem_ids": {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4},
        "targets": targets,
        "validation_tracks": list(validation_tracks),
    }


def _existing_tracks(root: Path) -> list[Path]:
    """Track folders under ``train/`` and ``test/``; refuses folders we did not write."""
    found = []
    for subset in ("train", "test"):
        folder = root / subset
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not entry.is_dir():
                continue
            if not _TRACK_RE.match(entry.name):
                raise LongsepError(
                    f"{entry} is not a synthetic track: generate the synthetic set into "
                    "its own (empty) folder"
                )
            found.append(entry)
    return found


def _prepare_root(root: Path, params: SynthParams, jobs: list[TrackJob], overwrite: bool) -> None:
    """Drop stale tracks: all of them if the content parameters changed, else the extras."""
    existing = _existing_tracks(root)
    same = (read_json(root / CONTENT_FILE) or {}) == params.content() and not overwrite
    wanted = {job.folder(root) for job in jobs}
    stale = [folder for folder in existing if not same or folder not in wanted]
    if stale:
        why = f"data.generate asks for another synthetic set there ({len(stale)} tracks to remove)"
        with exclusive_use(root, why):
            for folder in stale:
                log.info("removing stale synthetic track %s", folder)
                shutil.rmtree(folder)
    (root / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(root / ".synth-staging", ignore_errors=True)
    write_text(root / CONTENT_FILE, json.dumps(params.content()))


def _manifest(params: SynthParams, jobs: list[TrackJob]) -> dict[str, Any]:
    tracks: dict[str, list] = {"train": [], "valid": [], "test": []}
    for job in jobs:
        tracks[job.split].append({"name": job.name, **job.spec.to_dict()})
    return {
        "format": "longsep-synth",
        "version": SYNTH_VERSION,
        "params": params.record(),
        "seconds": round(sum(job.spec.duration for job in jobs), 3),
        "tracks": tracks,
    }


def generate_dataset(
    out_dir: str | Path,
    n_train: int = DEFAULT_N_TRAIN,
    n_valid: int = DEFAULT_N_VALID,
    n_test: int = DEFAULT_N_TEST,
    seed: int = 0,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    subtype: str = DEFAULT_SUBTYPE,
    control: str = "none",
    solo_seconds: float = SOLO_SECONDS,
    gap_seconds: float = GAP_SECONDS,
    distractor_register: str = "random",
    accompaniment: bool = True,
    negative: str = "cut",
    compact: bool = False,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic set to ``out_dir`` in MUSDB18-HQ layout and return its path.

    Tracks already complete are kept (an interrupted run resumes); validation songs go to
    ``train/`` and are named in ``setup.yaml``; ``synth.json`` is written last.
    ``workers > 1`` renders songs in that many processes; ``control`` makes the
    long-context controls, laid out by ``solo_seconds``, ``gap_seconds``,
    ``distractor_register``, ``accompaniment``, ``negative`` and ``compact``
    (:class:`ControlDesign`; see the module docstring).
    """
    params = SynthParams(
        n_train, n_valid, n_test, seed, min_seconds, max_seconds, sample_rate, subtype, control,
        solo_seconds, gap_seconds, distractor_register, accompaniment, negative, compact,
    )  # fmt: skip
    root = Path(out_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan_dataset(params)
    _prepare_root(root, params, jobs, overwrite)
    todo = [job for job in jobs if not _complete(job.folder(root))]
    log.info("synthetic set %s: %d of %d songs to render", root, len(todo), len(jobs))
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            done = pool.map(write_track, todo, [root] * len(todo), [subtype] * len(todo))
            for i, folder in enumerate(done, 1):
                log.info("[%d/%d] wrote %s", i, len(todo), folder)
    else:
        for i, job in enumerate(todo, 1):
            log.info("[%d/%d] wrote %s", i, len(todo), write_track(job, root, subtype))
    valid = [job.name for job in jobs if job.split == "valid"]
    write_text(root / SETUP_FILE, yaml.safe_dump(musdb_setup(valid, sample_rate), sort_keys=False))
    write_text(root / MANIFEST, json.dumps(_manifest(params, jobs), indent=1))
    return root


def is_complete(out_dir: str | Path, params: SynthParams) -> bool:
    """Whether ``out_dir`` holds the complete set of ``params`` (manifest and files)."""
    root = Path(out_dir).expanduser()
    manifest = read_json(root / MANIFEST)
    if not manifest or manifest.get("version") != SYNTH_VERSION:
        return False
    if manifest.get("params") != params.record():
        return False
    for split, tracks in manifest.get("tracks", {}).items():
        subset = "test" if split == "test" else "train"
        if not all(_complete(root / subset / t["name"]) for t in tracks):
            return False
    return True


def ensure_dataset(out_dir: str | Path | None, workers: int = 1, **params: Any) -> Path:
    """Return ``out_dir`` at once if it holds the set of ``params``, else generate it.

    ``params`` are those of :func:`generate_dataset` (``n_train``, ``n_valid``, ``n_test``,
    ``seed``, ``min_seconds``, ``max_seconds``, ``sample_rate``, ``subtype``, ``control`` and
    its layout).
    """
    spec = make_params(**params)
    if out_dir is None:
        raise LongsepError("data.root is not set: give the folder for the synthetic set")
    root = Path(out_dir).expanduser()
    if is_complete(root, spec):
        log.debug("synthetic set %s is complete", root)
        return root
    log.info("generating the synthetic data set in %s", root)
    return generate_dataset(root, **asdict(spec), workers=workers)
