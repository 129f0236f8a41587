"""Built-in synthetic multitrack data set in MUSDB18-HQ layout: no download needed.

Each song is composed from its seed: tempo, key, a four-chord progression per section
type, a form of recurring sections (intro / verse / chorus / bridge / outro) in which the
stems enter and leave, and one timbre per instrument. Every section type is rendered once
and placed at each of its occurrences, so a section recurs sample-identically (except in
its first :data:`TAIL_SECONDS`, where the previous section rings over): the long-range
repetition that the sequence-length study probes. Stems, each ``(samples, 2)`` float32
(musdb orientation):

- ``drums``:  synthesized kick, snare, hi-hats and crash in a groove per section type,
- ``bass``:   wavetable bass (E1..E3) on the chord roots, with passing notes,
- ``other``:  chords, plucked (bright-to-dull wavetable) or pad (detuned saws),
- ``vocals``: a sung melody: harmonic source with spectral tilt through vowel formants,
  note glides, delayed vibrato, consonant noise and phrase pauses.

``mixture`` is the float32 sum of the four stems; one gain per song keeps every peak at or
below :data:`PEAK`.

Long-context controls (``control=``, default ``none``: the songs above). ``positive``: a
*distractor*, a second sung melody in ``other`` from the vocals' synthesizer with its own
timbre, register, level and melodies drawn from the vocals' distributions, sings wherever
the vocals do, so no instant tells which voice is the target. Only a ``solo`` section
(>= :data:`SOLO_SECONDS`, vocals without the distractor) at the start or the end (drawn
per song) does, and a ``break`` of >= :data:`GAP_SECONDS` without either voice separates
it from every section where both sing: a model must look that far to pick the target.
``negative``: the same songs with the ``solo`` samples cut out (a shorter song, otherwise
sample-identical). Track names end in `` (positive)`` / `` (negative)``; the manifest
records ``control``, ``distractor_voice`` and the negative's ``removed`` section.

Layout written by :func:`generate_dataset`::

    DIR/train/<track>/{mixture,vocals,drums,bass,other}.wav   training and validation songs
    DIR/test/<track>/{mixture,vocals,drums,bass,other}.wav    test songs
    DIR/setup.yaml   musdb setup file naming the validation songs
    DIR/synth.json   manifest, written last: present and matching means complete
    DIR/.synth-content.json   parameters the track folders were made with (for resuming)

Read it with ``musdb.DB(root=DIR, is_wav=True, subsets=..., split=...,
setup_file="setup.yaml")``; without ``setup_file`` musdb uses the MUSDB18 validation
names, so ``split='valid'`` is empty and ``split='train'`` holds the validation songs too.
With ``subtype="PCM_16"`` (default) the stems are put on the 16-bit grid before summing, so
``mixture`` is the exact sum of the stems as read by soundfile *and* by musdb (which decodes
through ffmpeg as 16-bit); ``"FLOAT"`` files hold :func:`generate_song`'s arrays unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import cycle
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from scipy.signal import butter, sosfilt

from longsep import TARGETS
from longsep.errors import LongsepError
from longsep.io import atomic_write, exclusive_use, read_json, replace_dir, write_text

log = logging.getLogger(__name__)

SYNTH_VERSION = 1
SAMPLE_RATE = 44100
DEFAULT_N_TRAIN = 16
DEFAULT_N_VALID = 4
DEFAULT_N_TEST = 6
DEFAULT_MIN_SECONDS = 60.0
DEFAULT_MAX_SECONDS = 72.0
DEFAULT_SUBTYPE = "PCM_16"
SUBTYPES = ("PCM_16", "FLOAT")
PEAK = 0.9
TAIL_SECONDS = 2.5
MANIFEST = "synth.json"
CONTENT_FILE = ".synth-content.json"  # content parameters of the track folders on disk
SETUP_FILE = "setup.yaml"
FILES = ("mixture", *TARGETS)

KINDS = ("intro", "verse", "chorus", "bridge", "outro")
CONTROLS = ("none", "positive", "negative")
CONTROL_KINDS = ("solo", "break")  # the exposed section and the gap after (or before) it
SOLO_SECONDS = 11.0  # the exposed section is at least this long: >= 8 s of singing
GAP_SECONDS = 10.0  # instrumental break between the exposed and the both-singing sections
CONTROL_MIN_SECONDS = 48.0  # room for solo, break and one both-singing section
BODY = ("verse", "chorus", "verse", "chorus", "bridge", "chorus")
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {  # scale degrees (0 = tonic), one chord per bar
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 5, 4), (0, 3, 4, 3), (1, 4, 0, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 6, 2), (0, 6, 5, 6), (0, 3, 4, 0), (5, 6, 0, 0), (0, 2, 3, 5)),
}
VOWELS = {  # formant frequencies F1..F4 in Hz (adult voice)
    "a": (730.0, 1090.0, 2440.0, 3300.0),
    "e": (530.0, 1840.0, 2480.0, 3300.0),
    "i": (270.0, 2290.0, 3010.0, 3500.0),
    "o": (570.0, 840.0, 2410.0, 3300.0),
    "u": (300.0, 870.0, 2240.0, 3300.0),
}
FORMANT_BANDWIDTHS = (80.0, 100.0, 140.0, 180.0)
FORMANT_GAINS = (1.0, 0.6, 0.35, 0.25)  # parallel formant branches, peak-normalised
KICK_PATTERNS = ((0, 8), (0, 6, 8), (0, 8, 10), (0, 3, 8), (0, 7, 10), (0, 10))
BASS_RHYTHMS = (
    (0, 1, 2, 3, 4, 5, 6, 7),
    (0, 3, 4, 6),
    (0, 2, 4, 6),
    (0, 4),
    (0, 3, 6),
    (0, 2, 3, 6),
)
STRUM_RHYTHMS = ((0, 2, 4, 6), (0, 3, 6), (0, 3, 4, 6), (0, 4), (0, 2, 3, 5, 6))
_TABLE_SIZE = 2048
_CONTROL_HOP = 32
_STEM_CODES = {stem: i + 1 for i, stem in enumerate((*TARGETS, "distractor"))}
_KIND_CODES = {kind: i + 1 for i, kind in enumerate((*KINDS, *CONTROL_KINDS))}
_SPLIT_CODES = {"train": 1, "valid": 2, "test": 3}
_PLAN_CODE, _DURATION_CODE, _CONTROL_CODE = 0, 7, 8
_TRACK_RE = re.compile(r"^synth_(train|valid|test)_\d{3,} - ")


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    """Equal-tempered frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Section:
    """One occurrence of a section: ``start`` and ``length`` in samples."""

    kind: str
    start: int
    length: int
    bars: int
    stems: tuple[str, ...]


@dataclass(frozen=True)
class SongSpec:
    """What a seed composes: tempo, key, form and per-section stems (no audio)."""

    seed: int
    sample_rate: int
    samples: int
    tempo: int
    root: int
    mode: str
    progressions: dict[str, tuple[int, ...]]
    bars: dict[str, int]
    sections: tuple[Section, ...]
    other_style: str
    voice: str
    swing: float
    control: str = "none"
    distractor_voice: str = ""  # register of the control's second singer
    removed: Section | None = None  # negative control: the exposed section, cut out

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    @property
    def key(self) -> str:
        return f"{KEY_NAMES[self.root]} {self.mode}"

    @property
    def name(self) -> str:
        """A filesystem-safe title, e.g. ``Eb minor 112bpm`` or ``Eb minor 112bpm (positive)``."""
        suffix = "" if self.control == "none" else f" ({self.control})"
        return f"{self.key} {self.tempo}bpm{suffix}"

    @property
    def bar_samples(self) -> float:
        return 240.0 / self.tempo * self.sample_rate

    def section_length(self, kind: str) -> int:
        return round(self.bars[kind] * self.bar_samples)

    def chord(self, kind: str, bar: int) -> tuple[int, ...]:
        """Pitch classes (root first) of the triad on ``bar`` of a ``kind`` section."""
        scale = SCALES[self.mode]
        degree = self.progressions[kind][bar % len(self.progressions[kind])]
        return tuple((self.root + scale[(degree + 2 * i) % 7]) % 12 for i in range(3))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest (control songs add ``control``, ...)."""
        out = {
            "seed": self.seed,
            "seconds": round(self.duration, 4),
            "samples": self.samples,
            "tempo": self.tempo,
            "key": self.key,
            "other_style": self.other_style,
            "voice": self.voice,
            "sections": [[s.kind, s.start, s.length, list(s.stems)] for s in self.sections],
        }
        if self.control != "none":
            out |= {"control": self.control, "distractor_voice": self.distractor_voice}
        if self.removed is not None:
            out["removed"] = [self.removed.kind, self.removed.start, self.removed.length]
        return out


def song_duration(seed: int, min_seconds: float, max_seconds: float) -> float:
    """The length (seconds, millisecond grid) that ``seed`` draws in ``[min, max]``."""
    u = _rng(seed, _DURATION_CODE).random()
    return round(min_seconds + (max_seconds - min_seconds) * u, 3)


def _section_stems(rng: np.random.Generator) -> dict[str, tuple[str, ...]]:
    """Which stems play in each section type (verse and chorus have all four)."""
    maybe = {
        "intro": {"drums": 0.5, "bass": 0.5},
        "bridge": {"bass": 0.6},
        "outro": {"drums": 0.5, "bass": 0.5, "vocals": 0.3},
    }
    always = {"intro": {"other"}, "verse": set(TARGETS), "chorus": set(TARGETS)}
    always["bridge"] = {"vocals", "other"}
    always["outro"] = {"other"}
    out = {}
    for kind in KINDS:
        on = set(always[kind])
        on |= {stem for stem, p in maybe.get(kind, {}).items() if rng.random() < p}
        out[kind] = tuple(s for s in TARGETS if s in on)
    return out


def _form(samples: int, bar: float, bars: dict[str, int], intro: bool) -> list[str]:
    """Section kinds in order: intro, a cycle of body sections, outro (cut at the end)."""
    kinds = ["intro"] if intro else []
    for kind in cycle(BODY):
        kinds.append(kind)
        if round(sum(bars[k] for k in [*kinds, "outro"]) * bar) >= samples:
            break
    kinds.append("outro")
    return kinds


def _tile(
    kinds: Sequence[str],
    samples: int,
    bar: float,
    bars: dict[str, int],
    stems: dict[str, tuple[str, ...]],
) -> tuple[Section, ...]:
    """Sections of ``kinds`` one after the other, up to ``samples``."""
    sections, start = [], 0
    for kind in kinds:
        if start >= samples:
            break
        length = round(bars[kind] * bar)  # the same for every occurrence: sections tile
        sections.append(Section(kind, start, length, bars[kind], stems[kind]))
        start += length
    return tuple(sections)


def plan_song(
    seed: int, duration: float | None = None, sample_rate: int = SAMPLE_RATE, control: str = "none"
) -> SongSpec:
    """Compose the song of ``seed`` (``duration`` seconds; default drawn from the seed),
    or its ``positive`` / ``negative`` long-context control (see the module docstring)."""
    if seed < 0:
        raise LongsepError(f"seed={seed} must be a non-negative integer")
    if duration is None:
        duration = song_duration(seed, DEFAULT_MIN_SECONDS, DEFAULT_MAX_SECONDS)
    if duration <= 0:
        raise LongsepError(f"duration={duration} must be a positive number of seconds")
    if control != "none" and duration < CONTROL_MIN_SECONDS:
        raise LongsepError(f"control={control} needs songs of >= {CONTROL_MIN_SECONDS:g} s")
    rng = _rng(seed, _PLAN_CODE)
    tempo = int(rng.integers(80, 141))
    root = int(rng.integers(12))
    mode = ("major", "minor")[int(rng.integers(2))]
    choices = PROGRESSIONS[mode]
    main = choices[rng.integers(len(choices))]
    chorus = main if rng.random() < 0.5 else choices[rng.integers(len(choices))]
    bridge = choices[rng.integers(len(choices))]
    progressions = {"intro": main, "verse": main, "chorus": chorus, "bridge": bridge}
    progressions["outro"] = main
    body_bars = 8 if 8 * 240.0 / tempo <= 16.0 and rng.random() < 0.5 else 4
    bars = {"intro": 4, "verse": body_bars, "chorus": body_bars, "bridge": 4, "outro": 4}
    stems = _section_stems(rng)
    other_style = ("pad", "pluck")[int(rng.integers(2))]
    voice = ("low", "high")[int(rng.integers(2))]
    swing = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.4 else 0.0

    samples = round(duration * sample_rate)
    bar = 240.0 / tempo * sample_rate
    sections = _tile(_form(samples, bar, bars, intro=duration >= 30.0), samples, bar, bars, stems)
    spec = SongSpec(
        seed, sample_rate, samples, tempo, root, mode, progressions, bars, sections,
        other_style, voice, swing,
    )  # fmt: skip
    if control == "none":
        return spec
    positive = _control_song(spec, stems)
    return positive if control == "positive" else _without_exposed(positive)


def _without_exposed(positive: SongSpec) -> SongSpec:
    """The negative control: ``positive`` with its exposed section cut out."""
    cut = next(s for s in positive.sections if s.kind == "solo")
    sections = tuple(
        s if s.start < cut.start else replace(s, start=s.start - cut.length)
        for s in positive.sections
        if s is not cut
    )
    samples = positive.samples - cut.length
    return replace(positive, samples=samples, sections=sections, control="negative", removed=cut)


def _control_song(spec: SongSpec, stems: dict[str, tuple[str, ...]]) -> SongSpec:
    """The positive control of a planned song: a distractor sings wherever the vocals do,
    except in a ``solo`` section at the start or the end, a ``break`` away from the rest."""
    rng = _rng(spec.seed, _CONTROL_CODE)
    distractor_voice = ("low", "high")[int(rng.integers(2))]  # as plan_song draws ``voice``
    exposed_first = bool(rng.random() < 0.5)
    bar, seconds = spec.bar_samples, spec.bar_samples / spec.sample_rate
    solo = 2 * math.ceil(SOLO_SECONDS / seconds / 2)  # whole two-bar phrases
    bars = {**spec.bars, "solo": solo, "break": math.ceil(GAP_SECONDS / seconds)}
    main = spec.progressions["verse"]
    progressions = {**spec.progressions, "solo": main, "break": main}
    stems = {**stems, "outro": tuple(s for s in stems["outro"] if s != "vocals")}
    stems = {k: (*v, "distractor") if "vocals" in v else v for k, v in stems.items()}
    stems |= {"solo": TARGETS, "break": TARGETS[1:]}  # TARGETS[1:]: drums, bass, other

    def length(names: Sequence[str]) -> int:
        return sum(round(bars[k] * bar) for k in names)

    if exposed_first:
        rest = spec.samples - length(["solo", "break"])
        kinds = ["solo", "break", *_form(rest, bar, bars, intro=False)]
    else:  # body sections, then break and solo, then outros with the final fade-out
        kinds, room = [], spec.samples - 2 * spec.sample_rate
        for kind in cycle(BODY):
            if kinds and length([*kinds, kind, "break", "solo"]) > room:
                break
            kinds.append(kind)
        kinds += ["break", "solo"]
        kinds += ["outro"] * math.ceil((spec.samples - length(kinds)) / length(["outro"]))
    return replace(
        spec, bars=bars, progressions=progressions, control="positive",
        sections=_tile(kinds, spec.samples, bar, bars, stems), distractor_voice=distractor_voice,
    )  # fmt: skip


# ---------------------------------------------------------------------------- DSP helpers


def _pan(mono: np.ndarray, position: float) -> np.ndarray:
    """Constant-power pan, ``position`` in [-1, 1]: ``(n,)`` -> ``(n, 2)``."""
    angle = (position + 1.0) * np.pi / 4.0
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)], axis=1)


def _add(buf: np.ndarray, pos: int, sig: np.ndarray, gain: float = 1.0) -> None:
    """Add ``gain * sig`` into ``buf`` from sample ``pos``, cut at the end of ``buf``."""
    end = min(len(buf), pos + len(sig))
    if end > pos:
        buf[pos:end] += gain * sig[: end - pos]


def _envelope(
    n: int, sr: int, attack: float, decay: float, sustain: float, gate: float, release: float
) -> np.ndarray:
    """Attack ramp, exponential decay to ``sustain``, linear release after ``gate`` (s)."""
    t = np.arange(n) / sr
    rise = np.clip(t / attack, 0.0, 1.0)
    body = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack, 0.0) / decay)
    fall = np.clip(1.0 - (t - gate) / release, 0.0, 1.0)
    return rise * body * fall


def _fade_out(sig: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(sig))
    if n > 0:
        sig[len(sig) - n :] *= np.linspace(1.0, 0.0, n).reshape((n,) + (1,) * (sig.ndim - 1))
    return sig


def _table(f0: float, sr: int, cutoff: float, tilt: float = 1.0) -> np.ndarray:
    """One band-limited period (``_TABLE_SIZE + 1`` samples, wrapped) of a low-passed saw.

    Harmonic ``k`` has amplitude ``k**-tilt / sqrt(1 + (k f0 / cutoff)**4)``; harmonics
    above 0.45 ``sr`` are left out.
    """
    count = int(min(0.45 * sr / f0, _TABLE_SIZE // 2 - 1))
    k = np.arange(1, max(count, 1) + 1, dtype=np.float64)
    amps = k**-tilt / np.sqrt(1.0 + (k * f0 / cutoff) ** 4)
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : len(k) + 1] = -0.5j * _TABLE_SIZE * amps
    wave = np.fft.irfft(spectrum, _TABLE_SIZE)
    wave /= np.max(np.abs(wave))
    return np.append(wave, wave[0])


def _phase(freq: float, n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Oscillator phase in cycles, ``[0, 1)``, of a constant frequency."""
    return (phase0 + freq / sr * np.arange(n)) % 1.0


def _lookup(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Linear-interpolated wavetable read at ``phase`` (cycles)."""
    pos = phase * (len(table) - 1)
    i = pos.astype(np.int64)
    frac = pos - i
    return table[i] + frac * (table[i + 1] - table[i])


def _filtered_noise(
    rng: np.random.Generator, n: int, sr: int, cutoff: float | tuple[float, float], kind: str
) -> np.ndarray:
    """White noise through a Butterworth ``kind`` ('high' / 'band') filter."""
    sos = butter(2 if kind == "band" else 4, cutoff, btype=kind, fs=sr, output="sos")
    return sosfilt(sos, rng.standard_normal(n))


def _normalize(sig: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(sig))
    return sig / peak if peak > 0 else sig


# ---------------------------------------------------------------------------- instruments


class _Instrument:
    """Base: per-song timbre from ``rng(seed, stem, 0)``; material per section type."""

    stem = ""

    def __init__(self, spec: SongSpec) -> None:
        self.spec = spec
        self.sr = spec.sample_rate
        self.tail = round(TAIL_SECONDS * spec.sample_rate)

    def rng(self, kind: str | None = None, purpose: int = 0) -> np.random.Generator:
        """Generator for the timbre (``kind=None``) or a section type's material."""
        return _rng(self.spec.seed, _STEM_CODES[self.stem], _KIND_CODES.get(kind, 0), purpose)

    def at(self, bar: int, step: float, per_bar: int) -> int:
        """Sample offset of grid ``step`` (of ``per_bar``) in ``bar`` of a section."""
        return round((bar + step / per_bar) * self.spec.bar_samples)

    def buffer(self, kind: str) -> np.ndarray:
        return np.zeros((self.spec.section_length(kind) + self.tail, 2))

    def render(self, kind: str) -> np.ndarray:
        """One ``kind`` section with its tail: ``(section_length + tail, 2)`` float64."""
        raise NotImplementedError


class _Drums(_Instrument):
    stem = "drums"

    def __init__(self, spec: SongSpec) -> None:
        super().__init__(spec)
        rng = self.rng()
        self.kit = {
            "kick": _pan(self._kick(rng), 0.0),
            "snare": _pan(self._snare(rng), rng.uniform(-0.1, 0.1)),
            "hat": _pan(self._hat(rng, rng.uniform(0.015, 0.04), 0.15), rng.uniform(-0.4, 0.4)),
            "open": _pan(self._hat(rng, rng.uniform(0.12, 0.3), 0.8), rng.uniform(-0.4, 0.4)),
            "crash": _pan(self._crash(rng), rng.uniform(-0.5, 0.5)),
        }
        self.kicks = KICK_PATTERNS[rng.integers(len(KICK_PATTERNS))]
        self.halftime = rng.random() < 0.15
        self.levels = {"kick": 1.0, "snare": rng.uniform(0.7, 0.95), "crash": 0.5}
        self.levels["hat"] = self.levels["open"] = rng.uniform(0.25, 0.45)

    def _kick(self, rng: np.random.Generator) -> np.ndarray:
        t = np.arange(round(0.6 * self.sr)) / self.sr
        f_start, f_end = rng.uniform(100, 180), rng.uniform(40, 60)
        freq = f_end + (f_start - f_end) * np.exp(-t / rng.uniform(0.02, 0.05))
        body = np.sin(2 * np.pi * np.cumsum(freq) / self.sr) * np.exp(-t / rng.uniform(0.15, 0.35))
        click = 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.002)
        drive = rng.uniform(1.0, 3.0)
        return _fade_out(np.tanh(drive * (body + click)) / np.tanh(drive), round(0.02 * self.sr))

    def _snare(self, rng: np.random.Generator) -> np.ndarray:
        n = round(0.5 * self.sr)
        t = np.arange(n) / self.sr
        f = rng.uniform(170, 240)
        tone = (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 1.6 * f * t)) * np.exp(
            -t / rng.uniform(0.04, 0.09)
        )
        noise = _normalize(_filtered_noise(rng, n, self.sr, (1000.0, 8000.0), "band"))
        noise *= np.exp(-t / rng.uniform(0.08, 0.18))
        mix = rng.uniform(0.3, 0.6)
        return _fade_out(_normalize(mix * tone + (1 - mix) * noise), round(0.02 * self.sr))

    def _hat(self, rng: np.random.Generator, decay: float, seconds: float) -> np.ndarray:
        n = round(seconds * self.sr)
        t = np.arange(n) / self.sr
        noise = _filtered_noise(rng, n, self.sr, rng.uniform(6000.0, 9000.0), "high")
        return _fade_out(_normalize(noise * np.exp(-t / decay)), round(0.01 * self.sr))

    def _crash(self, rng: np.random.Generator) -> np.ndarray:
        n = self.tail
        t = np.arange(n) / self.sr
        noise = _normalize(_filtered_noise(rng, n, self.sr, 3000.0, "high"))
        ring = sum(np.sin(2 * np.pi * rng.uniform(3000, 9000) * t) for _ in range(6)) / 6
        env = np.clip(t / 0.002, 0, 1) * np.exp(-t / rng.uniform(0.5, 0.9))
        return _fade_out(_normalize((noise + 0.3 * ring) * env), round(0.2 * self.sr))

    def _bar_hits(
        self, rng: np.random.Generator, kind: str, fill: bool, hat16: bool, opens: bool
    ) -> list[tuple[str, float, float]]:
        """``(piece, 16th step, velocity)`` of one bar."""
        light = kind in ("intro", "outro")
        hits = [("kick", float(s), 1.0) for s in self.kicks]
        hits += [("kick", float(s), 0.8) for s in (2, 10, 14) if rng.random() < 0.12]
        if not light:
            hits += (
                [("snare", 8.0, 1.0)]
                if self.halftime
                else [("snare", 4.0, 1.0), ("snare", 12.0, 1.0)]
            )
            if rng.random() < 0.3:
                hits.append(("snare", float(rng.choice((3, 7, 11, 15))), 0.25))
        for s in range(0, 16, 1 if hat16 else 2):
            velocity = 0.9 if s % 4 == 0 else (0.6 if s % 2 == 0 else 0.45)
            piece = "open" if opens and s % 4 == 2 else "hat"
            hits.append((piece, float(s), velocity * (0.6 if light else 1.0)))
        if fill:
            hits = [h for h in hits if h[1] < 12 or h[0] == "kick"]
            hits += [("snare", float(s), 0.5 + 0.1 * (s - 12)) for s in range(12, 16)]
        return hits

    def render(self, kind: str) -> np.ndarray:
        rng, buf = self.rng(kind), self.buffer(kind)
        bars = self.spec.bars[kind]
        hat16, opens = rng.random() < 0.4, kind == "chorus" and rng.random() < 0.6
        crash = kind == "chorus" or (kind == "verse" and rng.random() < 0.5)
        for bar in range(bars):
            fill = bar == bars - 1 and kind in ("verse", "chorus") and rng.random() < 0.6
            hits = self._bar_hits(rng, kind, fill, hat16, opens)
            if crash and bar == 0:
                hits.append(("crash", 0.0, 1.0))
            for piece, step, velocity in hits:
                step += self.spec.swing if int(step) % 2 else 0.0
                gain = velocity * self.levels[piece] * rng.uniform(0.88, 1.0)
                _add(buf, self.at(bar, step, 16), self.kit[piece], gain)
        return buf


class _Bass(_Instrument):
    stem = "bass"

    def __init__(self, spec: SongSpec) -> None:
        super().__init__(spec)
        rng = self.rng()
        self.tilt = rng.uniform(0.9, 1.6)
        self.cutoff = rng.uniform(250.0, 700.0)
        self.decay, self.sustain = rng.uniform(0.15, 0.5), rng.uniform(0.3, 0.8)
        self.sweep = rng.uniform(0.04, 0.2)
        self.legato = rng.uniform(0.55, 0.95)
        self.position = rng.uniform(-0.05, 0.05)
        self.notes: dict[tuple[int, int], np.ndarray] = {}

    def _note(self, midi: int, gate: int) -> np.ndarray:
        """Bright-to-dull wavetable note of ``gate`` samples plus a 30-ms release."""
        if (midi, gate) not in self.notes:
            f0, sr = float(midi_to_hz(midi)), self.sr
            n = gate + round(0.03 * sr)
            bright = _table(f0, sr, self.cutoff, self.tilt)
            dull = _table(f0, sr, self.cutoff / 3.0, self.tilt)
            phase = _phase(f0, n, sr)
            mix = np.exp(-np.arange(n) / (self.sweep * sr))
            tone = mix * _lookup(bright, phase) + (1 - mix) * _lookup(dull, phase)
            env = _envelope(n, sr, 0.005, self.decay, self.sustain, gate / sr, 0.03)
            self.notes[midi, gate] = tone * env
        return self.notes[midi, gate]

    @staticmethod
    def _register(pc: int) -> int:
        return 28 + (pc - 4) % 12  # E1 (MIDI 28) .. Eb2

    def render(self, kind: str) -> np.ndarray:
        rng, buf = self.rng(kind), self.buffer(kind)
        rhythm = BASS_RHYTHMS[rng.integers(len(BASS_RHYTHMS))]
        eighth = self.spec.bar_samples / 8
        mono = np.zeros(len(buf))
        for bar in range(self.spec.bars[kind]):
            root = self._register(self.spec.chord(kind, bar)[0])
            following = self._register(self.spec.chord(kind, bar + 1)[0])
            for j, step in enumerate(rhythm):
                nxt = rhythm[j + 1] if j + 1 < len(rhythm) else 8
                r = rng.random()
                midi = root + 12 if r < 0.15 else (root + 7 if r < 0.3 else root)
                if nxt == 8 and step >= 6 and rng.random() < 0.5:
                    approach = int(rng.choice((-2, -1, 1, 2)))
                    midi = following + (abs(approach) if following + approach < 28 else approach)
                gate = round((nxt - step) * eighth * self.legato)
                velocity = rng.uniform(0.85, 1.0) * (1.0 if step % 2 == 0 else 0.9)
                _add(mono, self.at(bar, step, 8), self._note(midi, gate), velocity)
        return _pan(mono, self.position)


class _Other(_Instrument):
    stem = "other"

    def __init__(self, spec: SongSpec) -> None:
        super().__init__(spec)
        rng = self.rng()
        self.low = int(rng.integers(52, 58))
        self.top_root = rng.random() < 0.5
        self.spread = rng.uniform(0.3, 0.7)
        self.pad_detune = rng.uniform(4.0, 14.0)
        self.pad_oscillators = int(rng.integers(2, 4))
        self.pad_cutoff = rng.uniform(1200.0, 3500.0)
        self.pad_attack, self.pad_release = rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.6)
        self.phases = rng.random((5, 3))
        self.pluck_cutoff = rng.uniform(2500.0, 6000.0)
        self.pluck_decay, self.pluck_sweep = rng.uniform(0.25, 0.8), rng.uniform(0.04, 0.15)
        self.cache: dict[tuple, np.ndarray] = {}

    def voicing(self, chord: tuple[int, ...]) -> list[int]:
        """MIDI notes of a chord: each pitch class once above ``low`` (+ the root on top)."""
        notes = sorted(self.low + (pc - self.low) % 12 for pc in chord)
        if self.top_root:
            notes.append(self.low + (chord[0] - self.low) % 12 + 12)
        return notes

    def _voice_pan(self, i: int, count: int) -> float:
        return self.spread * (2.0 * i / max(count - 1, 1) - 1.0)

    def _pad_chord(self, chord: tuple[int, ...], gate: int) -> np.ndarray:
        """Detuned saws per chord note, slow attack, spread across the stereo field."""
        key = ("pad", chord, gate)
        if key not in self.cache:
            sr, n_osc = self.sr, self.pad_oscillators
            n = gate + round(self.pad_release * sr)
            env = _envelope(n, sr, self.pad_attack, 1.0, 1.0, gate / sr, self.pad_release)
            out = np.zeros((n, 2))
            for i, midi in enumerate(self.voicing(chord)):
                f0 = float(midi_to_hz(midi))
                table = _table(f0, sr, self.pad_cutoff)
                for j in range(n_osc):
                    cents = self.pad_detune * (2.0 * j / (n_osc - 1) - 1.0)
                    wave = _lookup(
                        table, _phase(f0 * 2 ** (cents / 1200), n, sr, self.phases[i, j])
                    )
                    out += _pan(wave * env, self.spread * (2.0 * j / (n_osc - 1) - 1.0))
            self.cache[key] = out / (n_osc * 2.0)
        return self.cache[key]

    def _pluck(self, midi: int, length: int) -> np.ndarray:
        """A plucked note: fast attack, exponential decay, brightness falling faster."""
        key = ("pluck", midi, length)
        if key not in self.cache:
            sr, f0 = self.sr, float(midi_to_hz(midi))
            n = min(length, round(5 * self.pluck_decay * sr)) + round(0.02 * sr)
            t = np.arange(n) / sr
            phase = _phase(f0, n, sr)
            mix = np.exp(-t / self.pluck_sweep)
            bright = _lookup(_table(f0, sr, self.pluck_cutoff), phase)
            dull = _lookup(_table(f0, sr, self.pluck_cutoff / 4.0), phase)
            env = np.clip(t / 0.003, 0, 1) * np.exp(-t / self.pluck_decay)
            self.cache[key] = _fade_out((mix * bright + (1 - mix) * dull) * env, round(0.02 * sr))
        return self.cache[key]

    def render(self, kind: str) -> np.ndarray:
        rng, buf = self.rng(kind), self.buffer(kind)
        bars = self.spec.bars[kind]
        if self.spec.other_style == "pad":
            for bar in range(bars):
                gate = self.at(bar + 1, 0, 1) - self.at(bar, 0, 1)
                _add(buf, self.at(bar, 0, 1), self._pad_chord(self.spec.chord(kind, bar), gate))
            return buf
        if rng.random() < 0.5:
            self._arpeggio(rng, kind, buf)
        else:
            self._strum(rng, kind, buf)
        return buf

    def _arpeggio(self, rng: np.random.Generator, kind: str, buf: np.ndarray) -> None:
        per_bar = 16 if self.spec.tempo < 110 and rng.random() < 0.5 else 8
        updown = rng.random() < 0.5
        for bar in range(self.spec.bars[kind]):
            notes = self.voicing(self.spec.chord(kind, bar))
            order = notes + notes[-2:0:-1] if updown else notes
            ring = self.at(0, len(notes), per_bar)
            for step in range(per_bar):
                midi = order[step % len(order)]
                voice = notes.index(midi)
                pluck = _pan(self._pluck(midi, ring), self._voice_pan(voice, len(notes)))
                _add(buf, self.at(bar, step, per_bar), pluck, rng.uniform(0.75, 1.0))

    def _strum(self, rng: np.random.Generator, kind: str, buf: np.ndarray) -> None:
        rhythm = STRUM_RHYTHMS[rng.integers(len(STRUM_RHYTHMS))]
        spread = rng.uniform(0.008, 0.02) * self.sr
        for bar in range(self.spec.bars[kind]):
            notes = self.voicing(self.spec.chord(kind, bar))
            for j, step in enumerate(rhythm):
                nxt = rhythm[j + 1] if j + 1 < len(rhythm) else 8
                length = self.at(bar, nxt, 8) - self.at(bar, step, 8)
                down = j % 2 == 0
                velocity = rng.uniform(0.75, 1.0) * (1.0 if down else 0.8)
                for i, midi in enumerate(notes if down else notes[::-1]):
                    voice = notes.index(midi)
                    pluck = _pan(self._pluck(midi, length), self._voice_pan(voice, len(notes)))
                    _add(buf, self.at(bar, step, 8) + round(i * spread), pluck, velocity)


@dataclass
class _Note:
    """A sung note: ``start`` and ``length`` in eighths from the section start."""

    start: int
    length: int
    midi: int
    vowel: str
    consonant: bool
    velocity: float


class _Vocals(_Instrument):
    stem = "vocals"
    max_hz = 6000.0

    def __init__(self, spec: SongSpec, voice: str | None = None) -> None:
        super().__init__(spec)
        rng = self.rng()
        voice = voice or spec.voice
        self.low = 57 if voice == "high" else 45
        self.formant_scale = (1.15 if voice == "high" else 1.0) * rng.uniform(0.95, 1.05)
        self.tilt = rng.uniform(0.6, 1.0)
        self.vibrato_rate, self.vibrato_depth = rng.uniform(5.0, 6.0), rng.uniform(0.2, 0.5)
        self.vibrato_delay = rng.uniform(0.15, 0.3)
        self.glide = rng.uniform(0.03, 0.08)
        self.breath = rng.uniform(0.02, 0.05)
        self.consonants = rng.uniform(0.2, 0.5)
        self.position = rng.uniform(-0.1, 0.1)
        scale = {(spec.root + s) % 12 for s in SCALES[spec.mode]}
        self.pitches = [m for m in range(self.low, self.low + 20) if m % 12 in scale]

    def _phrase(self, rng: np.random.Generator, kind: str, first_bar: int) -> list[_Note]:
        """A two-bar phrase: notes on the eighth grid, chord tones on strong beats, a rest."""
        pool = self.pitches[3:] if kind == "chorus" else self.pitches[:-2]
        current = pool[len(pool) // 2]
        notes, e, end = [], int(rng.integers(0, 3)), int(rng.integers(11, 15))
        while e < end:
            length = min(int(rng.choice((1, 2, 2, 3, 4))), end - e)
            if e % 4 == 0:
                chord = self.spec.chord(kind, first_bar + e // 8)
                tones = [m for m in pool if m % 12 in chord]
                current = min(tones, key=lambda m: (abs(m - current), m))
            else:
                i = pool.index(current) if current in pool else len(pool) // 2
                i = int(np.clip(i + rng.choice((-2, -1, -1, 1, 1, 2)), 0, len(pool) - 1))
                current = pool[i]
            vowel = "aeiou"[rng.integers(5)]
            consonant = bool(rng.random() < self.consonants)
            notes.append(
                _Note(first_bar * 8 + e, length, current, vowel, consonant, rng.uniform(0.8, 1.0))
            )
            e += length + (1 if rng.random() < 0.12 else 0)
        return notes

    def melody(self, kind: str) -> list[_Note]:
        """The section's notes; later phrases may repeat the phrase two phrases back."""
        rng = self.rng(kind, purpose=1)
        phrases: list[list[_Note]] = []
        for p in range(max(1, self.spec.bars[kind] // 2)):
            if p >= 2 and rng.random() < 0.5:
                phrases.append([_shift(n, 32) for n in phrases[p - 2]])
            else:
                phrases.append(self._phrase(rng, kind, 2 * p))
        return [n for phrase in phrases for n in phrase]

    def render(self, kind: str) -> np.ndarray:
        rng, buf = self.rng(kind), self.buffer(kind)
        mono = np.zeros(len(buf))
        eighth = self.spec.bar_samples / 8
        for segment in _legato_runs(self.melody(kind)):
            start = round(segment[0].start * eighth)
            _add(mono, start, self._sing(rng, segment, eighth, start))
        return _pan(mono, self.position)

    def _tracks(
        self, notes: Sequence[_Note], onsets: np.ndarray, tc: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Control-rate pitch (MIDI), formants ``(4, frames)`` and note accents."""
        idx = np.clip(np.searchsorted(onsets, tc, side="right") - 1, 0, len(notes) - 1)
        since = tc - onsets[idx]
        midi = np.array([n.midi for n in notes], dtype=np.float64)
        previous = np.concatenate([[midi[0] - 1.0], midi[:-1]])  # scoop into the first note
        glide = np.exp(-since / self.glide)
        pitch = midi[idx] + (previous[idx] - midi[idx]) * glide
        ramp = np.clip((since - self.vibrato_delay) / 0.25, 0.0, 1.0)
        pitch += self.vibrato_depth * ramp * np.sin(2 * np.pi * self.vibrato_rate * tc)
        formants = np.array([VOWELS[n.vowel] for n in notes]).T * self.formant_scale
        before = np.concatenate([formants[:, :1], formants[:, :-1]], axis=1)
        morph = np.exp(-since / 0.04)
        formant = formants[:, idx] + (before[:, idx] - formants[:, idx]) * morph
        velocity = np.array([n.velocity for n in notes])[idx]
        accent = velocity * (0.8 + 0.2 * np.exp(-since / 0.12))
        return pitch, formant, accent

    def _sing(
        self, rng: np.random.Generator, notes: Sequence[_Note], eighth: float, offset: int
    ) -> np.ndarray:
        """Render a legato run of notes (mono); sample 0 is the first note's onset."""
        sr, hop = self.sr, _CONTROL_HOP
        onsets = np.array([round(n.start * eighth) - offset for n in notes]) / sr
        gate = (round((notes[-1].start + notes[-1].length) * eighth) - offset) * 0.95 / sr
        n = round((gate + 0.08) * sr)
        frames = n // hop + 2
        tc = np.arange(frames) * hop / sr
        pitch, formant, accent = self._tracks(notes, onsets, tc)
        pitch += 0.08 * np.interp(tc, np.linspace(0, tc[-1], 8), rng.standard_normal(8))
        f0 = midi_to_hz(pitch)
        env = accent * np.clip(tc / 0.04, 0, 1) * np.clip((gate + 0.08 - tc) / 0.08, 0, 1)

        k = np.arange(1, int(self.max_hz / f0.min()) + 1, dtype=np.float64)[:, None]
        fk = k * f0[None, :]
        shape = np.zeros_like(fk)
        for f, b, g in zip(formant, FORMANT_BANDWIDTHS, FORMANT_GAINS, strict=True):
            shape += g * b * f / np.sqrt((f**2 - fk**2) ** 2 + (b * fk) ** 2)
        amps = k**-self.tilt * (fk < 0.45 * sr) * shape
        amps *= env / np.sqrt(np.sum(amps**2, axis=0) + 1e-12)

        pos = np.arange(n) / hop
        i0 = pos.astype(np.int64)
        w = pos - i0
        f0_audio = f0[i0] * (1 - w) + f0[i0 + 1] * w
        rotor = np.exp(2j * np.pi * (np.cumsum(f0_audio) / sr % 1.0))
        harmonic, voiced = rotor.copy(), np.zeros(n)
        for row in amps:
            voiced += (row[i0] * (1 - w) + row[i0 + 1] * w) * harmonic.imag
            harmonic *= rotor
        env_audio = env[i0] * (1 - w) + env[i0 + 1] * w
        voiced += self.breath * env_audio * _normalize(_filtered_noise(rng, n, sr, 1500.0, "high"))
        for note, onset in zip(notes, onsets, strict=True):
            if note.consonant:
                _add(voiced, round(onset * sr), self._consonant(rng), 0.3 * note.velocity)
        return voiced

    def _consonant(self, rng: np.random.Generator) -> np.ndarray:
        n = round(rng.uniform(0.03, 0.07) * self.sr)
        t = np.arange(n) / self.sr
        noise = _normalize(_filtered_noise(rng, n, self.sr, rng.uniform(3000, 5000), "high"))
        return noise * np.clip(t / 0.005, 0, 1) * np.exp(-t / 0.02)


class _Distractor(_Vocals):
    """The control songs' second singer (in ``other``): the vocals' synthesizer, with its
    own timbre, register and melodies drawn the same way."""

    stem = "distractor"

    def __init__(self, spec: SongSpec) -> None:
        super().__init__(spec, spec.distractor_voice)


def _shift(note: _Note, eighths: int) -> _Note:
    return _Note(
        note.start + eighths, note.length, note.midi, note.vowel, note.consonant, note.velocity
    )


def _legato_runs(notes: Sequence[_Note]) -> Iterator[list[_Note]]:
    """Split notes into runs sung without a pause (each note ends where the next starts)."""
    run: list[_Note] = []
    for note in notes:
        if run and run[-1].start + run[-1].length != note.start:
            yield run
            run = []
        run.append(note)
    if run:
        yield run


_INSTRUMENTS: dict[str, Callable[[SongSpec], _Instrument]] = {
    "vocals": _Vocals,
    "drums": _Drums,
    "bass": _Bass,
    "other": _Other,
}


# ---------------------------------------------------------------------------- songs


def _arrange(spec: SongSpec, instrument: _Instrument) -> np.ndarray:
    """Place each section type's single rendering at all its occurrences: ``(samples, 2)``."""
    out = np.zeros((spec.samples + instrument.tail, 2))
    rendered: dict[str, np.ndarray] = {}
    for section in spec.sections:
        if instrument.stem in section.stems:
            if section.kind not in rendered:
                rendered[section.kind] = instrument.render(section.kind)
            _add(out, section.start, rendered[section.kind])
    return out[: spec.samples]


def _active_rms(spec: SongSpec, stem: str, audio: np.ndarray) -> float:
    """RMS of ``audio`` over the sections where ``stem`` plays (0 if none)."""
    parts = [audio[s.start : s.start + s.length] for s in spec.sections if stem in s.stems]
    count = sum(p.size for p in parts)
    return float(np.sqrt(sum(np.sum(p**2) for p in parts) / count)) if count else 0.0


def _levelled(spec: SongSpec, instrument: _Instrument, level_db: float) -> np.ndarray:
    """An instrument's part at ``level_db`` (active RMS 0.1 = 0 dB), faded out at the end."""
    audio = _arrange(spec, instrument)
    rms = _active_rms(spec, instrument.stem, audio)
    if rms > 0:
        audio *= 0.1 * 10 ** (level_db / 20) / rms
    return _fade_out(audio, min(round(2.0 * spec.sample_rate), spec.samples // 10))


def render_song(spec: SongSpec) -> dict[str, np.ndarray]:
    """Render a planned song: ``{vocals, drums, bass, other, mixture}`` -> ``(samples, 2)``.

    Stems are float32, levelled per song (vocals on top), faded out over the last
    two seconds, and scaled by one common gain so that no stem nor the mixture peaks above
    :data:`PEAK`; ``mixture`` is their float32 sum. A control song's ``other`` holds the
    distractor, levelled as the vocals are; a negative control is its positive control
    with the exposed section's samples cut out.
    """
    if spec.removed is not None:
        cut = spec.removed
        positive = plan_song(
            spec.seed, (spec.samples + cut.length) / spec.sample_rate, spec.sample_rate, "positive"
        )
        song = render_song(positive)
        return {
            k: np.concatenate([a[: cut.start], a[cut.start + cut.length :]])
            for k, a in song.items()
        }
    levels_db = _rng(spec.seed, _PLAN_CODE, 1).uniform(
        [-1.0, -2.0, -3.0, -5.0], [1.0, 1.0, 0.0, -1.0]
    )
    stems = {}
    for stem, level_db in zip(TARGETS, levels_db, strict=True):
        stems[stem] = _levelled(spec, _INSTRUMENTS[stem](spec), level_db)
    if spec.control != "none":
        level_db = _rng(spec.seed, _CONTROL_CODE, 1).uniform(-1.0, 1.0)  # the vocals' range
        stems["other"] += _levelled(spec, _Distractor(spec), level_db)
    mixture = sum(stems.values())
    peak = max(np.max(np.abs(a)) for a in [mixture, *stems.values()])
    gain = PEAK / peak if peak > 0 else 1.0
    out = {stem: (audio * gain).astype(np.float32) for stem, audio in stems.items()}
    out["mixture"] = _float32_sum(out)
    return out


def _float32_sum(stems: dict[str, np.ndarray]) -> np.ndarray:
    """``vocals + drums + bass + other`` in float32, in that order."""
    total = stems[TARGETS[0]].copy()
    for stem in TARGETS[1:]:
        total += stems[stem]
    return total


def generate_song(
    seed: int, duration: float | None = None, sample_rate: int = SAMPLE_RATE, control: str = "none"
) -> dict[str, np.ndarray]:
    """The song of ``seed`` (or its ``control``): stems and mixture, ``(samples, 2)`` float32.

    Same seed, duration and rate give bit-identical audio. ``duration=None`` draws it
    from the seed in ``[DEFAULT_MIN_SECONDS, DEFAULT_MAX_SECONDS]``.
    """
    return render_song(plan_song(seed, duration, sample_rate, control))


# ---------------------------------------------------------------------------- data set


def _coerce(name: str, value: Any, kind: str) -> Any:
    """``value`` as the field's type (``int`` / ``float`` / ``str``), or a one-line error."""
    try:
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        return float(value) if kind == "float" else str(value)
    except (TypeError, ValueError):
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
        if self.control != "none" and self.min_seconds < CONTROL_MIN_SECONDS:
            raise LongsepError(
                f"synth control={self.control} needs min_seconds >= {CONTROL_MIN_SECONDS:g}"
            )

    def record(self) -> dict[str, Any]:
        """All parameters, for the manifest; ``control`` only when set (older sets stay valid)."""
        out = asdict(self)
        if self.control == "none":
            del out["control"]
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
            spec = plan_song(seed, seconds, params.sample_rate, params.control)
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
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic set to ``out_dir`` in MUSDB18-HQ layout and return its path.

    Tracks already complete are kept (an interrupted run resumes); validation songs go to
    ``train/`` and are named in ``setup.yaml``; ``synth.json`` is written last.
    ``workers > 1`` renders songs in that many processes; ``control`` makes the
    long-context controls (see the module docstring).
    """
    params = SynthParams(
        n_train, n_valid, n_test, seed, min_seconds, max_seconds, sample_rate, subtype, control
    )
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
    ``seed``, ``min_seconds``, ``max_seconds``, ``sample_rate``, ``subtype``, ``control``).
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


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.wav"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m longsep.data.synth --out DIR [--tracks N] ...``: write the set."""
    parser = argparse.ArgumentParser(
        prog="python -m longsep.data.synth",
        description="Write the built-in synthetic multitrack set (MUSDB18-HQ layout).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tracks", type=int, default=DEFAULT_N_TRAIN, help="training songs")
    parser.add_argument(
        "--valid-tracks", type=int, default=DEFAULT_N_VALID, help="validation songs"
    )
    parser.add_argument("--test-tracks", type=int, default=DEFAULT_N_TEST, help="test songs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS)
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)
    parser.add_argument("--subtype", choices=SUBTYPES, default=DEFAULT_SUBTYPE)
    parser.add_argument("--control", choices=CONTROLS, default="none", help="long-context control")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering songs")
    parser.add_argument("--overwrite", action="store_true", help="render every song again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.perf_counter()
    try:
        root = generate_dataset(
            args.out, args.tracks, args.valid_tracks, args.test_tracks, args.seed,
            args.min_seconds, args.max_seconds, args.sample_rate, args.subtype, args.control,
            workers=args.workers, overwrite=args.overwrite,
        )  # fmt: skip
    except LongsepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((root / MANIFEST).read_text())
    counts = {split: len(tracks) for split, tracks in manifest["tracks"].items()}
    print(
        f"wrote {counts['train']} train + {counts['valid']} valid + {counts['test']} test songs "
        f"({manifest['seconds']:.0f} s, {_folder_bytes(root) / 1e9:.2f} GB) to {root} "
        f"in {time.perf_counter() - began:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
