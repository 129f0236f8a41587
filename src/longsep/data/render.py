"""A multitrack set rendered from real General-MIDI songs, in MUSDB18-HQ layout.

Each song is a Standard MIDI File composed for General MIDI (by default the 54 songs of
Debian's ``simutrans-data``). Its channels are split into the four MUSDB18 stems and each
stem is rendered on its own by ``fluidsynth`` with a General-MIDI SoundFont (or with each of
several: one track per song and SoundFont, ``<song>__<tag>``, every song in the same split
for all of them):

- ``drums``:  the percussion channel (MIDI channel 10),
- ``bass``:   channels playing bass programs (GM 33-40),
- ``vocals``: the lead melodic line (:func:`assign_stems`) re-voiced with a voice-like
  program (Choir Aahs, Voice Oohs or Synth Voice, one per song),
- ``other``:  every other channel.

``mixture`` is the exact sum of the four 16-bit stems. Layout written by :func:`render_dataset`::

    DIR/train/<track>/{mixture,vocals,drums,bass,other}.wav   training and validation songs
    DIR/test/<track>/{mixture,vocals,drums,bass,other}.wav    test songs
    DIR/setup.yaml    musdb setup file naming the validation songs
    DIR/render.json   manifest (sources, each track's SoundFont, stem assignment), written last

Songs are rendered whole, with their repetitions; an interrupted run resumes. The split
depends on the songs and the seed only, so sets rendered from the same songs with other
SoundFonts (or only their test split, ``splits=("test",)``) share it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from longsep import TARGETS
from longsep.data.midi import analyse, assign_stems, read_midi, stem_midi
from longsep.data.synth import musdb_setup
from longsep.errors import LongsepError
from longsep.io import atomic_write, read_json, replace_dir, write_text

log = logging.getLogger(__name__)

RENDER_VERSION = 2
MIDI_DIR = "/usr/share/games/simutrans/music"  # Debian package simutrans-data
SOUNDFONTS = (  # Debian's General-MIDI SoundFonts, best first
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # fluid-soundfont-gm
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # timgm6mb-soundfont
)
SPLITS = ("train", "valid", "test")
TAG_SEPARATOR = "__"  # <song>__<SoundFont tag>: a track of a set rendered with several
INSTALL_HINT = (
    "run `make render-deps` as root (apt-get install fluidsynth fluid-soundfont-gm simutrans-data)"
)
VOICE_PROGRAMS = (52, 53, 54)  # Choir Aahs, Voice Oohs, Synth Voice (0-based GM numbers)
VOCAL_LEVELS_DB = (-4.0, 1.0)  # vocals over accompaniment (active RMS), drawn per song
PEAK = 0.9
MANIFEST = "render.json"
PARAMS_FILE = ".render-params.json"
STAGING = ".render-staging"
FILES = ("mixture", *TARGETS)


def find_soundfont(path: str | None = None) -> Path:
    """``path`` if given (checked to be a SoundFont file), else the first installed of
    :data:`SOUNDFONTS`."""
    if path is not None:
        sf2 = Path(path).expanduser()
        if not sf2.is_file():
            raise LongsepError(f"soundfont={path} does not exist")
        with sf2.open("rb") as f:
            header = f.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"sfbk":
            raise LongsepError(f"soundfont={path} is not a SoundFont file (.sf2 / .sf3)")
        return sf2
    for candidate in SOUNDFONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise LongsepError(f"no General-MIDI SoundFont found in {list(SOUNDFONTS)}: {INSTALL_HINT}")


def soundfont_tag(path: str | Path) -> str:
    """A SoundFont's short name in track names: its file name's letters and digits, lower
    case (``FluidR3_GM.sf2`` -> ``fluidr3gm``)."""
    return re.sub(r"[^a-z0-9]", "", Path(path).stem.lower()) or "soundfont"


def find_soundfonts(paths: str | Sequence[str] | None = None) -> list[Path]:
    """The SoundFonts to render with: ``paths`` (one or several), else Debian's first
    (:func:`find_soundfont`); a one-line error for a missing file or two with one tag."""
    if paths is None or isinstance(paths, str | Path):
        paths = [] if paths is None else [paths]
    if not paths:
        return [find_soundfont(None)]
    fonts = [find_soundfont(str(p)) for p in paths]
    seen: dict[str, Path] = {}
    for sf2 in fonts:
        tag = soundfont_tag(sf2)
        if tag in seen:
            raise LongsepError(
                f"soundfonts {seen[tag]} and {sf2} have the same tag '{tag}' (from the file "
                "name): give each SoundFont once, under a file name of its own"
            )
        seen[tag] = sf2
    return fonts


def fluidsynth_version() -> str:
    """``fluidsynth --version``'s first line; a one-line error when it is not installed."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise LongsepError(f"fluidsynth is not installed: {INSTALL_HINT}")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout.strip().splitlines() or ["fluidsynth"])[0]


def render_midi(midi_path: Path, soundfont: Path, sample_rate: int) -> np.ndarray:
    """``(samples, 2)`` float32 audio of one MIDI file rendered by ``fluidsynth``."""
    with tempfile.TemporaryDirectory(prefix="longsep-render-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav), "-T", "wav", "-O", "float"]
        cmd += ["-r", str(sample_rate), "-g", "0.5", str(soundfont), str(midi_path)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wav.is_file():
            raise LongsepError(f"fluidsynth failed on {midi_path}: {result.stderr.strip()[-300:]}")
        audio, _ = sf.read(wav, dtype="float32", always_2d=True)
    return audio


def quantize(stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scale the stems so nothing peaks above :data:`PEAK`, round them to int16 and sum.

    The mixture is the integer sum of the rounded stems, so it is their exact sum.
    """
    mixture = sum(stems.values())
    peak = max(float(np.max(np.abs(a))) for a in [mixture, *stems.values()])
    gain = PEAK / peak if peak > 0 else 1.0
    ints = {s: np.round(a * gain * 32768.0).astype(np.int32) for s, a in stems.items()}
    out = {s: a.astype(np.int16) for s, a in ints.items()}
    out["mixture"] = np.clip(sum(ints.values()), -32768, 32767).astype(np.int16)
    return out


@dataclass(frozen=True)
class Song:
    """One source file planned into the set."""

    source: str
    split: str
    name: str
    seconds: float
    stems: dict[str, list[int]]
    lead_programs: tuple[int, ...]
    voice: int
    vocals_db: float

    @property
    def subset(self) -> str:
        return "test" if self.split == "test" else "train"


@dataclass(frozen=True)
class Track:
    """One folder of the set: a planned song rendered with one SoundFont."""

    song: Song
    soundfont: Path
    name: str

    @property
    def folder(self) -> str:
        """``<subset>/<name>`` inside the set."""
        return f"{self.song.subset}/{self.name}"


def plan_tracks(songs: Sequence[Song], soundfonts: Sequence[Path]) -> list[Track]:
    """Every song once per SoundFont, all in the song's split; with one SoundFont a track
    has the song's name, with several ``<song>__<tag>`` (:func:`soundfont_tag`)."""
    if len(soundfonts) == 1:
        return [Track(s, soundfonts[0], s.name) for s in songs]
    return [
        Track(s, sf2, f"{s.name}{TAG_SEPARATOR}{soundfont_tag(sf2)}")
        for s in songs
        for sf2 in soundfonts
    ]


def plan_song(path: Path, split: str) -> Song:
    """Analyse one MIDI file: its stems, lead line and the voice the lead is sung with."""
    midi = read_midi(path)
    channels, seconds = analyse(midi)
    stems = assign_stems(channels, seconds)
    lead = {c.number: c.programs for c in channels}.get(next(iter(stems["vocals"]), -1), ())
    rng = np.random.default_rng(int(hashlib.sha256(path.name.encode()).hexdigest()[:16], 16))
    voice = VOICE_PROGRAMS[int(rng.integers(len(VOICE_PROGRAMS)))]
    level = round(float(rng.uniform(*VOCAL_LEVELS_DB)), 2)
    return Song(str(path), split, path.stem, round(seconds, 3), stems, lead, voice, level)


def active_rms(audio: np.ndarray, frame: int = 2048) -> float:
    """RMS over the frames louder than 40 dB below the loudest (0 for silence)."""
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame * audio.shape[1])
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    if rms.size == 0 or rms.max() == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(rms[rms > rms.max() * 0.01]))))


def balance_vocals(stems: dict[str, np.ndarray], vocals_db: float) -> None:
    """Scale ``vocals`` in place to ``vocals_db`` over the accompaniment (active RMS)."""
    vocals = active_rms(stems["vocals"])
    accompaniment = active_rms(sum(a for s, a in stems.items() if s != "vocals"))
    if vocals > 0 and accompaniment > 0:
        stems["vocals"] *= accompaniment * 10 ** (vocals_db / 20) / vocals


def render_song(
    song: Song, root: Path, soundfont: Path, sample_rate: int, name: str | None = None
) -> Path:
    """Render the four stems of ``song`` with ``soundfont`` and move its folder (``name``,
    the song's by default) into place as a whole."""
    folder = name or song.name
    midi = read_midi(song.source)
    staging = root / STAGING / folder
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stems = {}
    for stem in TARGETS:
        channels = song.stems[stem]
        if not channels:
            stems[stem] = None
            continue
        part = stem_midi(midi, channels, song.voice if stem == "vocals" else None)
        part_path = staging / f"{stem}.mid"
        part.save(str(part_path))
        stems[stem] = render_midi(part_path, soundfont, sample_rate)
        part_path.unlink()
    length = max(a.shape[0] for a in stems.values() if a is not None)
    padded = {
        s: np.zeros((length, 2), np.float32)
        if a is None
        else np.pad(a, ((0, length - a.shape[0]), (0, 0)))
        for s, a in stems.items()
    }
    balance_vocals(padded, song.vocals_db)
    for name, audio in quantize(padded).items():
        atomic_write(
            staging / f"{name}.wav",
            lambda p, a=audio: sf.write(p, a, sample_rate, subtype="PCM_16", format="WAV"),
        )
    return replace_dir(staging, root / song.subset / folder)


def split_names(songs: Sequence[Song], n_valid: int, n_test: int, seed: int) -> dict[str, str]:
    """``{name: split}``: a seeded permutation of the songs where every stem plays gives
    ``n_test`` test and ``n_valid`` valid songs (BSSEval needs non-silent references);
    the rest train."""
    full = [s.name for s in songs if all(s.stems.values())]
    if n_valid + n_test > len(full) or n_valid + n_test >= len(songs):
        raise LongsepError(
            f"{len(songs)} songs ({len(full)} with all four stems) cannot give {n_valid} valid "
            f"+ {n_test} test songs and a training set: lower --valid-tracks / --test-tracks"
        )
    splits = dict.fromkeys((s.name for s in songs), "train")
    for rank, index in enumerate(np.random.default_rng(seed).permutation(len(full))):
        if rank < n_test + n_valid:
            splits[full[index]] = "test" if rank < n_test else "valid"
    return splits


def plan_dataset(
    midi_files: Sequence[Path], n_valid: int, n_test: int, seed: int, min_seconds: float
) -> list[Song]:
    """Songs of the set; files that cannot be read or are too short are left out (logged)."""
    readable = []
    for path in sorted(midi_files):
        try:
            song = plan_song(path, "train")
        except LongsepError as exc:
            log.warning("skipping %s", exc)
            continue
        if song.seconds < min_seconds:
            log.warning("skipping %s: %.0f s < %.0f s", path, song.seconds, min_seconds)
        elif not song.stems["vocals"]:
            log.warning("skipping %s: no melodic line to sing", path)
        else:
            readable.append(song)
    if not readable:
        raise LongsepError(
            f"no usable MIDI song in {sorted(set(str(p.parent) for p in midi_files))}"
        )
    splits = split_names(readable, n_valid, n_test, seed)
    return [Song(**{**asdict(s), "split": splits[s.name]}) for s in readable]


def midi_files(midi_dir: str | Path) -> list[Path]:
    """The ``*.mid`` / ``*.midi`` files of ``midi_dir``; a one-line error when there are none."""
    folder = Path(midi_dir).expanduser()
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        hint = f": {INSTALL_HINT}" if str(folder) == MIDI_DIR else ""
        raise LongsepError(f"no MIDI files (*.mid) in {folder}{hint}")
    return files


def _complete(folder: Path) -> bool:
    return all((folder / f"{name}.wav").is_file() for name in FILES)


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` in one form: a parameters file written before sets had several SoundFonts
    (one path, no ``splits``) reads as the same set rendered today."""
    out = dict(params)
    fonts = out.get("soundfont")
    out["soundfont"] = sorted([fonts] if isinstance(fonts, str) else fonts or [])
    splits = out.get("splits")
    out["splits"] = None if splits is None or set(splits) == set(SPLITS) else sorted(splits)
    return out


def render_dataset(
    out_dir: str | Path,
    midi_dir: str | Path = MIDI_DIR,
    soundfont: str | Sequence[str] | None = None,
    sample_rate: int = 44100,
    n_valid: int = 5,
    n_test: int = 10,
    seed: int = 0,
    min_seconds: float = 60.0,
    limit: int | None = None,
    workers: int = 1,
    splits: Sequence[str] | None = None,
) -> Path:
    """Render the set into ``out_dir`` (MUSDB18-HQ layout) and return its path.

    ``soundfont``: one path or several (each song once per SoundFont, :func:`plan_tracks`);
    None: Debian's first. ``splits``: render only the songs of these splits (e.g.
    ``("test",)``: a test set in another timbre, the same songs as the full set's test).
    Complete track folders of an interrupted run with the same parameters are kept;
    different parameters in a non-empty folder are refused. ``limit`` renders only the
    first songs (for tests).
    """
    fonts = find_soundfonts(soundfont)
    if splits is not None and (not splits or set(splits) - set(SPLITS)):
        raise LongsepError(f"splits={list(splits)}: name one or more of {list(SPLITS)}")
    version = fluidsynth_version()
    files = midi_files(midi_dir)[:limit]
    root = Path(out_dir).expanduser()
    params = {
        "version": RENDER_VERSION, "midi_dir": str(Path(midi_dir).expanduser()),
        "soundfont": str(fonts[0]) if len(fonts) == 1 else [str(f) for f in fonts],
        "sample_rate": sample_rate, "n_valid": n_valid,
        "n_test": n_test, "seed": seed, "min_seconds": min_seconds, "limit": limit,
    }  # fmt: skip
    if splits is not None and set(splits) != set(SPLITS):
        params["splits"] = [s for s in SPLITS if s in splits]
    previous = read_json(root / PARAMS_FILE)
    if previous is not None and _comparable(previous) != _comparable(params):
        raise LongsepError(
            f"{root} holds a set rendered with other parameters ({root / PARAMS_FILE}): "
            "render into a new folder or delete it"
        )
    songs = plan_dataset(files, n_valid, n_test, seed, min_seconds)
    if splits is not None:
        songs = [s for s in songs if s.split in splits]
    tracks = plan_tracks(songs, fonts)
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / PARAMS_FILE, json.dumps(params))
    (root / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(root / STAGING, ignore_errors=True)
    todo = [t for t in tracks if not _complete(root / t.folder)]
    if len(fonts) == 1:
        log.info(
            "rendered set %s: %d of %d songs to render with %s", root, len(todo), len(songs),
            fonts[0],
        )  # fmt: skip
    else:
        log.info(
            "rendered set %s: %d of %d tracks (%d songs x %d SoundFonts: %s) to render", root,
            len(todo), len(tracks), len(songs), len(fonts), ", ".join(map(soundfont_tag, fonts)),
        )  # fmt: skip
    args = (
        [t.song for t in todo], [root] * len(todo), [t.soundfont for t in todo],
        [sample_rate] * len(todo), [t.name for t in todo],
    )  # fmt: skip
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            for i, folder in enumerate(pool.map(render_song, *args), 1):
                log.info("[%d/%d] wrote %s", i, len(todo), folder)
    else:
        for i, job in enumerate(zip(*args, strict=True), 1):
            log.info("[%d/%d] wrote %s", i, len(todo), render_song(*job))
    shutil.rmtree(root / STAGING, ignore_errors=True)
    valid = [t.name for t in tracks if t.song.split == "valid"]
    write_text(
        root / "setup.yaml", yaml.safe_dump(musdb_setup(valid, sample_rate), sort_keys=False)
    )
    manifest: dict[str, Any] = {
        "format": "longsep-rendered", **params, "fluidsynth": version,
        "soundfonts": {soundfont_tag(f): str(f) for f in fonts},
        "seconds": round(sum(t.song.seconds for t in tracks), 3),
        "tracks": [
            {**asdict(t.song), "name": t.name, "song": t.song.name, "soundfont": str(t.soundfont)}
            for t in tracks
        ],
    }  # fmt: skip
    write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.data.render --out DIR``: render the set."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.data.render",
        description="Render General-MIDI songs stem by stem into a MUSDB18-HQ-layout set.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--midi", default=MIDI_DIR, help=f"folder of .mid files ({MIDI_DIR})")
    parser.add_argument(
        "--soundfont", nargs="+", default=None, metavar="SF2",
        help="General-MIDI .sf2 file(s): several render each song once per SoundFont, "
        "tracks <song>__<tag> (default: Debian's first)",
    )  # fmt: skip
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--valid-tracks", type=int, default=5)
    parser.add_argument("--test-tracks", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--min-seconds", type=float, default=60.0, help="shorter songs skipped")
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering songs")
    parser.add_argument(
        "--splits", nargs="+", choices=SPLITS, default=None,
        help="render only the songs of these splits (the split is the full set's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.perf_counter()
    try:
        root = render_dataset(
            args.out, args.midi, args.soundfont, args.sample_rate, args.valid_tracks,
            args.test_tracks, args.seed, args.min_seconds, args.limit, args.workers, args.splits,
        )  # fmt: skip
    except LongsepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = read_json(root / MANIFEST)
    counts = {s: sum(t["split"] == s for t in manifest["tracks"]) for s in SPLITS}
    minutes, took = manifest["seconds"] / 60, time.perf_counter() - began
    fonts = manifest["soundfonts"]
    what = "songs" if len(fonts) == 1 else f"tracks ({len(fonts)} SoundFonts: {', '.join(fonts)})"
    print(
        f"rendered {counts['train']} train + {counts['valid']} valid + {counts['test']} test "
        f"{what} ({minutes:.0f} min) to {root} in {took:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
