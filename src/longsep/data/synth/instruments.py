"""The synthetic songs' sound: DSP helpers, one synthesizer per stem, and a planned song
rendered to stems and mixture."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from longsep import TARGETS
from longsep.data.synth.plan import (
    _CONTROL_CODE,
    _KIND_CODES,
    _PLAN_CODE,
    _STEM_CODES,
    PEAK,
    SAMPLE_RATE,
    SCALES,
    TAIL_SECONDS,
    SongSpec,
    _rng,
    midi_to_hz,
    plan_song,
)

log = logging.getLogger(__name__)


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


class Vocals(_Instrument):
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


class Distractor(Vocals):
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
    "vocals": Vocals,
    "drums": _Drums,
    "bass": _Bass,
    "other": _Other,
}


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
    with the exposed section's samples cut out, or with the vocals there set to 0 (a
    ``muted`` design: the mixture summed again, every stem scaled down in the rare case
    that it then peaks above :data:`PEAK`).
    """
    if spec.removed is not None:
        cut = spec.removed
        muted = spec.design.negative == "muted"
        samples = spec.samples if muted else spec.samples + cut.length
        positive = plan_song(
            spec.seed, samples / spec.sample_rate, spec.sample_rate, "positive", spec.design
        )
        song = render_song(positive)
        if muted:  # the solo's voice taken out in place; the mixture summed again
            song["vocals"][cut.start : cut.start + cut.length] = 0.0
            song["mixture"] = _float32_sum(song)
            peak = float(np.max(np.abs(song["mixture"])))
            if peak > PEAK:  # only with accompaniment: the voice had cancelled some of it
                song = {k: (a * (PEAK / peak)).astype(np.float32) for k, a in song.items()}
                song["mixture"] = _float32_sum(song)
            return song
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
        stems["other"] += _levelled(spec, Distractor(spec), level_db)
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
