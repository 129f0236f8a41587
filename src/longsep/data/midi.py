"""General-MIDI songs split into the four MUSDB18 stems (for :mod:`longsep.data.render`).

:func:`analyse` lists what each MIDI channel plays, :func:`assign_stems` maps channels to
``vocals`` (the lead melodic line, :func:`find_lead`), ``drums`` (the percussion channel),
``bass`` (bass programs) and ``other``, and :func:`stem_midi` writes the part of a song
that one stem plays, with its timing kept exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longsep import TARGETS
from longsep.errors import LongsepError

DRUM_CHANNEL = 9
BASS_PROGRAMS = range(32, 40)


@dataclass(frozen=True)
class Channel:
    """What one MIDI channel plays: its programs and notes ``(start_s, end_s, pitch)``."""

    number: int
    programs: tuple[int, ...]
    notes: tuple[tuple[float, float, int], ...]

    def coverage(self, seconds: float) -> float:
        """Fraction of the song during which the channel sounds at least one note."""
        covered, end = 0.0, 0.0
        for start, stop, _ in sorted(self.notes):
            if stop > end:
                covered += stop - max(start, end)
                end = stop
        return covered / seconds if seconds > 0 else 0.0

    def polyphony(self) -> float:
        """Fraction of notes that start while an earlier note of the channel still sounds."""
        notes = sorted(self.notes)
        overlapping, end = 0, -1.0
        for start, stop, _ in notes:
            overlapping += start < end - 0.05
            end = max(end, stop)
        return overlapping / max(len(notes), 1)

    def median_pitch(self) -> float:
        return float(np.median([pitch for _, _, pitch in self.notes])) if self.notes else 0.0


def _import_mido():
    try:
        import mido
    except ImportError as exc:
        raise LongsepError("rendering needs the mido package: pip install mido") from exc
    return mido


def read_midi(path: str | Path):
    """Parse a Standard MIDI File with ``mido``; a one-line error names a broken file."""
    mido = _import_mido()
    try:
        return mido.MidiFile(str(path), clip=True)
    except (OSError, ValueError, EOFError, KeyError, mido.KeySignatureError) as exc:
        raise LongsepError(f"{path}: not a readable MIDI file ({exc})") from exc


def analyse(midi) -> tuple[list[Channel], float]:
    """The channels that play notes, and the song's length in seconds."""
    now, sounding = 0.0, {}
    notes: dict[int, list] = {}
    programs: dict[int, list[int]] = {}
    for msg in midi:  # merged tracks, times in seconds
        now += msg.time
        if msg.type == "program_change":
            programs.setdefault(msg.channel, []).append(msg.program)
        elif msg.type in ("note_on", "note_off"):
            key = (msg.channel, msg.note)
            if key in sounding:
                notes.setdefault(msg.channel, []).append((sounding.pop(key), now, msg.note))
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[key] = now
    for (channel, pitch), start in sounding.items():
        notes.setdefault(channel, []).append((start, now, pitch))
    channels = [
        Channel(c, tuple(dict.fromkeys(programs.get(c, [0]))), tuple(sorted(n)))
        for c, n in sorted(notes.items())
    ]
    return channels, now


def find_lead(channels: Sequence[Channel], seconds: float) -> int | None:
    """The lead melodic line: the highest mostly-monophonic channel that plays long enough.

    Candidates are melodic channels (not drums, not bass) sounding during at least 20 % of
    the song with at most 25 % overlapping notes; the one with the highest median pitch
    wins. Without a candidate, the least polyphonic channel covering 10 % is taken.
    """
    melodic = [
        c
        for c in channels
        if c.number != DRUM_CHANNEL and not all(p in BASS_PROGRAMS for p in c.programs)
    ]
    candidates = [c for c in melodic if c.coverage(seconds) >= 0.2 and c.polyphony() <= 0.25]
    if candidates:
        return max(candidates, key=lambda c: (c.median_pitch(), c.coverage(seconds))).number
    fallback = [c for c in melodic if c.coverage(seconds) >= 0.1]
    return min(fallback, key=lambda c: c.polyphony()).number if fallback else None


def assign_stems(channels: Sequence[Channel], seconds: float) -> dict[str, list[int]]:
    """MIDI channel numbers of each stem (:data:`TARGETS` order); a stem may be empty."""
    lead = find_lead(channels, seconds)
    stems: dict[str, list[int]] = {stem: [] for stem in TARGETS}
    for channel in channels:
        if channel.number == DRUM_CHANNEL:
            stems["drums"].append(channel.number)
        elif channel.number == lead:
            stems["vocals"].append(channel.number)
        elif all(p in BASS_PROGRAMS for p in channel.programs):
            stems["bass"].append(channel.number)
        else:
            stems["other"].append(channel.number)
    return stems


def stem_midi(midi, channels: Iterable[int], voice: int | None = None):
    """A copy of ``midi`` keeping meta, sysex and the messages of ``channels`` only.

    Timing is kept exactly (dropped messages pass their delta time on). ``voice`` replaces
    every program change of those channels and is set at the start.
    """
    mido = _import_mido()
    keep = set(channels)
    out = mido.MidiFile(type=midi.type if midi.type != 2 else 1, ticks_per_beat=midi.ticks_per_beat)
    for index, track in enumerate(midi.tracks):
        new, carry = mido.MidiTrack(), 0
        if index == 0 and voice is not None:
            for channel in sorted(keep):
                new.append(mido.Message("control_change", channel=channel, control=0, value=0))
                new.append(mido.Message("program_change", channel=channel, program=voice))
        for msg in track:
            channel = getattr(msg, "channel", None)
            if channel is not None and channel not in keep:
                carry += msg.time
                continue
            if voice is not None and msg.type == "program_change":
                msg = msg.copy(program=voice)
            new.append(msg.copy(time=msg.time + carry))
            carry = 0
        out.tracks.append(new)
    return out
