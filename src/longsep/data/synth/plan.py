"""The synthetic songs' plan: form, sections, chords, which stems play where, and the
long-context control songs (see :mod:`longsep.data.synth`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import cycle
from typing import Any

import numpy as np

from longsep import TARGETS
from longsep.errors import LongsepError

log = logging.getLogger(__name__)


SAMPLE_RATE = 44100
MIN_SAMPLE_RATE = 16000  # the snare's noise band reaches 8 kHz


DEFAULT_MIN_SECONDS = 60.0


DEFAULT_MAX_SECONDS = 72.0


PEAK = 0.9


TAIL_SECONDS = 2.5


KINDS = ("intro", "verse", "chorus", "bridge", "outro")


CONTROLS = ("none", "positive", "negative")


CONTROL_KINDS = ("solo", "break")  # the exposed section and the gap after (or before) it


SOLO_SECONDS = 11.0  # the exposed section is at least this long: >= 8 s of singing


GAP_SECONDS = 10.0  # instrumental break between the exposed and the both-singing sections


CONTROL_ROOM_SECONDS = 27.0  # a body section (<= 16 s), the 2-s fade, bar rounding (< 9 s)


COMPACT_ROOM_SECONDS = 10.0  # a compact song's 4-bar body section (>= 6.9 s) and its fade


FADE_SECONDS = 2.0  # every song fades out over its last two seconds


NEGATIVES = ("cut", "muted")  # how a negative control loses its solo


REGISTERS = ("random", "opposite")  # how the distractor's register is chosen


BODY = ("verse", "chorus", "verse", "chorus", "bridge", "chorus")


KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")


SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


PROGRESSIONS = {  # scale degrees (0 = tonic), one chord per bar
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 5, 4), (0, 3, 4, 3), (1, 4, 0, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 6, 2), (0, 6, 5, 6), (0, 3, 4, 0), (5, 6, 0, 0), (0, 2, 3, 5)),
}


_STEM_CODES = {stem: i + 1 for i, stem in enumerate((*TARGETS, "distractor"))}


_KIND_CODES = {kind: i + 1 for i, kind in enumerate((*KINDS, *CONTROL_KINDS))}


_PLAN_CODE, _DURATION_CODE, _CONTROL_CODE = 0, 7, 8


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    """Equal-tempered frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


@dataclass(frozen=True)
class Section:
    """One occurrence of a section: ``start`` and ``length`` in samples."""

    kind: str
    start: int
    length: int
    bars: int
    stems: tuple[str, ...]


@dataclass(frozen=True)
class ControlDesign:
    """The layout of a long-context control song: the least length of the solo and of the
    break after (or before) it, both in whole bars, and the distractor's register:
    ``random`` (drawn as the vocals' is, so the two share it half the time) or ``opposite``
    (the other one: the solo tells the target by its register).

    ``accompaniment=False`` leaves only the two singers (no drums, bass or chords).
    ``negative``: the negative song has its solo ``cut`` out (a shorter song) or ``muted``
    (the solo's voice taken out in place: same length, every other sample the same).
    ``compact``: a song barely longer than its layout needs: the solo in whole bars (not
    two-bar phrases), body sections of 4 bars, and a song stretched, if its drawn length is
    shorter, to hold the solo, the break, one body section and the fade."""

    solo_seconds: float = SOLO_SECONDS
    gap_seconds: float = GAP_SECONDS
    distractor_register: str = "random"
    accompaniment: bool = True
    negative: str = "cut"
    compact: bool = False

    def __post_init__(self) -> None:
        for key in ("solo_seconds", "gap_seconds"):
            if not getattr(self, key) > 0:
                raise LongsepError(f"synth {key}={getattr(self, key)} must be > 0")
        if self.distractor_register not in REGISTERS:
            raise LongsepError(
                f"synth distractor_register={self.distractor_register!r} must be one of "
                f"{list(REGISTERS)}"
            )
        if self.negative not in NEGATIVES:
            raise LongsepError(f"synth negative={self.negative!r} must be one of {list(NEGATIVES)}")

    @property
    def min_seconds(self) -> float:
        """The shortest song that holds the solo, the break and a whole both-singing section."""
        room = COMPACT_ROOM_SECONDS if self.compact else CONTROL_ROOM_SECONDS
        return self.solo_seconds + self.gap_seconds + room


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
    design: ControlDesign = ControlDesign()

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
            default = asdict(ControlDesign())  # sets of earlier designs stay valid
            design = {k: v for k, v in asdict(self.design).items() if v != default[k]}
            if design:
                out["design"] = design
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
    seed: int,
    duration: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    control: str = "none",
    design: ControlDesign = ControlDesign(),
) -> SongSpec:
    """Compose the song of ``seed`` (``duration`` seconds; default drawn from the seed),
    or its ``positive`` / ``negative`` long-context control laid out by ``design`` (see the
    module docstring)."""
    if seed < 0:
        raise LongsepError(f"seed={seed} must be a non-negative integer")
    if duration is None:
        duration = song_duration(seed, DEFAULT_MIN_SECONDS, DEFAULT_MAX_SECONDS)
    if duration <= 0:
        raise LongsepError(f"duration={duration} must be a positive number of seconds")
    if sample_rate <= MIN_SAMPLE_RATE:
        raise LongsepError(
            f"synth sample_rate={sample_rate}: the instruments reach 8 kHz, so give more than "
            f"{MIN_SAMPLE_RATE} Hz (the data modules resample the set to the model's rate)"
        )
    if control != "none" and duration < design.min_seconds:
        raise LongsepError(f"control={control} needs songs of >= {design.min_seconds:g} s")
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
    if control != "none" and design.compact:
        body_bars = 4  # after the draw above, which keeps the stream
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
    positive = _control_song(replace(spec, design=design), stems)
    return positive if control == "positive" else _without_exposed(positive)


def _without_exposed(positive: SongSpec) -> SongSpec:
    """The negative control: ``positive`` with its exposed section cut out, or with the
    vocals taken out of it in place (``design.negative == "muted"``)."""
    cut = next(s for s in positive.sections if s.kind == "solo")
    if positive.design.negative == "muted":
        muted = replace(cut, stems=tuple(s for s in cut.stems if s != "vocals"))
        sections = tuple(muted if s is cut else s for s in positive.sections)
        return replace(positive, sections=sections, control="negative", removed=cut)
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
    if spec.design.distractor_register == "opposite":  # the draw above still keeps the stream
        distractor_voice = "high" if spec.voice == "low" else "low"
    exposed_first = bool(rng.random() < 0.5)
    design = spec.design
    bar, seconds = spec.bar_samples, spec.bar_samples / spec.sample_rate
    phrase = 1 if design.compact else 2  # the solo in whole bars, or two-bar phrases
    solo = phrase * math.ceil(design.solo_seconds / seconds / phrase)
    bars = {**spec.bars, "solo": solo, "break": math.ceil(design.gap_seconds / seconds)}
    main = spec.progressions["verse"]
    progressions = {**spec.progressions, "solo": main, "break": main}
    stems = {**stems, "outro": tuple(s for s in stems["outro"] if s != "vocals")}
    stems |= {"solo": TARGETS, "break": TARGETS[1:]}  # TARGETS[1:]: drums, bass, other
    if not design.accompaniment:
        stems = {k: tuple(s for s in v if s == "vocals") for k, v in stems.items()}
    sung = {k for k, v in stems.items() if "vocals" in v and k != "solo"}  # the duet's sections
    stems = {k: (*v, "distractor") if k in sung else v for k, v in stems.items()}

    def length(names: Sequence[str]) -> int:
        return sum(round(bars[k] * bar) for k in names)

    if design.compact:  # room for the solo, the break, one body section and the fade
        need = length(["solo", "break", BODY[0]]) + round(FADE_SECONDS * spec.sample_rate)
        spec = replace(spec, samples=max(spec.samples, need))

    if exposed_first:
        rest = spec.samples - length(["solo", "break"])
        kinds = ["solo", "break", *_form(rest, bar, bars, intro=False)]
    else:  # body sections, then break and solo, then outros with the final fade-out
        kinds, room = [], spec.samples - round(FADE_SECONDS * spec.sample_rate)
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
