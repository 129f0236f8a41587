"""Audio files in and out: the only module that touches audio files.

``load`` returns ``(channels, samples)`` float32 tensors; wav / flac / ogg / mp3 (and
anything else libsndfile opens) are read with ``soundfile``, seeking to ``start`` so
only the requested part is decoded; m4a / aac / mp4 / MUSDB ``.stem.mp4`` are decoded
by the ``ffmpeg`` binary when it is installed. ``save`` writes wav / flac / ogg / mp3
atomically (temporary file, then rename). Problems with a file raise a one-line
:class:`~longsep.errors.LongsepError` naming it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from longsep.errors import LongsepError

log = logging.getLogger(__name__)

SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"})
FFMPEG_EXTENSIONS = frozenset({".m4a", ".aac", ".mp4", ".opus", ".wma", ".webm"})
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
READ_BLOCK = 1 << 18  # frames decoded at a time
CODECS = {  # codec -> (libsndfile format, default subtype, float-capable)
    "wav": ("WAV", "FLOAT", True),
    "flac": ("FLAC", "PCM_24", False),
    "ogg": ("OGG", "VORBIS", False),
    "mp3": ("MP3", "MPEG_LAYER_III", False),
}


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header."""

    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str


def is_audio_file(path: str | Path) -> bool:
    """Whether ``path`` has an extension we read (``.stem.mp4`` included)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _check_file(path: Path) -> None:
    if not path.exists():
        raise LongsepError(f"{path}: no such file")
    if not path.is_file():
        raise LongsepError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise LongsepError(f"{path}: empty file (0 bytes)")


def _needs_ffmpeg(path: Path) -> bool:
    return path.suffix.lower() not in SOUNDFILE_EXTENSIONS


def _require_ffmpeg(path: Path, tool: str = "ffmpeg") -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise LongsepError(f"{path}: install ffmpeg to read {path.suffix} files")
    return exe


def _ffprobe(path: Path, stream: int = 0) -> AudioInfo:
    exe = _require_ffmpeg(path, "ffprobe")
    cmd = [exe, "-v", "error", "-select_streams", f"a:{stream}", "-show_entries",
           "stream=sample_rate,channels,duration:format=duration,format_name", "-of", "json",
           str(path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    try:
        data = json.loads(result.stdout)
        info = data["streams"][0]
    except (json.JSONDecodeError, KeyError, IndexError):
        raise LongsepError(f"{path}: not a readable audio file (ffprobe found no audio)") from None
    rate, channels = int(info["sample_rate"]), int(info["channels"])
    duration = float(info.get("duration") or data.get("format", {}).get("duration") or 0.0)
    fmt = data.get("format", {}).get("format_name", "ffmpeg")
    return AudioInfo(rate, channels, round(duration * rate), duration, fmt)


def info(path: str | Path, stream: int = 0) -> AudioInfo:
    """Rate, channels, frames and duration of a file, without decoding it."""
    path = Path(path)
    _check_file(path)
    if _needs_ffmpeg(path):
        return _ffprobe(path, stream)
    try:
        meta = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise LongsepError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    truncated = _TRUNCATED.search(meta.extra_info or "")
    if truncated:
        log.warning(
            "%s is truncated: its header announces %s bytes of audio, the file holds %s; "
            "using the %.1f s present",
            path,
            truncated["declared"],
            truncated["present"],
            meta.duration,
        )
    return AudioInfo(meta.samplerate, meta.channels, meta.frames, meta.duration, meta.format)


# libsndfile's report of a data chunk longer than the file (a truncated wav / aiff)
_TRUNCATED = re.compile(
    r"^(?:data|SSND)\s*:\s*(?P<declared>\d+) \(should be (?P<present>\d+)\)", re.M
)


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _read_blocks(f: sf.SoundFile, count: int) -> np.ndarray:
    """``count`` frames (-1: to the end) from ``f``'s position, channels-first float32.

    Blocks are copied into an array sized from the header, so a long file is not held
    twice (interleaved, then transposed); the array grows if the header undercounts.
    """
    size = max(0, f.frames - f.tell()) if f.frames > 0 else 0
    data = np.empty((f.channels, size if count < 0 else min(count, size)), np.float32)
    done = 0
    for block in f.blocks(READ_BLOCK, frames=count, dtype="float32", always_2d=True):
        n = block.shape[0]
        if done + n > data.shape[1]:
            data = np.concatenate(
                [data[:, :done], np.empty((f.channels, max(n, done)), np.float32)], 1
            )
        data[:, done : done + n] = block.T
        done += n
    return data[:, :done]


def _read_soundfile(path: Path, start: float, duration: float | None) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            first = round(start * rate)
            if f.frames and first >= f.frames:
                raise LongsepError(
                    f"{path}: start={start:g} s is past the end ({f.frames / rate:.2f} s)"
                )
            if first:
                f.seek(first)
            count = -1 if duration is None else round(duration * rate)
            data = _read_blocks(f, count)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise LongsepError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    return data, rate


def _read_ffmpeg(
    path: Path, start: float, duration: float | None, stream: int
) -> tuple[np.ndarray, int]:
    meta = _ffprobe(path, stream)
    if meta.duration and start >= meta.duration:
        raise LongsepError(f"{path}: start={start:g} s is past the end ({meta.duration:.2f} s)")
    cmd = [_require_ffmpeg(path), "-v", "error", "-nostdin", "-ss", f"{start:.6f}"]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-i", str(path), "-map", f"0:a:{stream}", "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise LongsepError(f"{path}: ffmpeg cannot decode it ({message[-1] if message else '?'})")
    data = np.frombuffer(result.stdout, dtype=np.float32).reshape(-1, meta.channels)
    return data.T.copy(), meta.sample_rate


def load(
    path: str | Path,
    start: float = 0.0,
    duration: float | None = None,
    sample_rate: int | None = 44100,
    channels: int | None = 2,
    stream: int = 0,
) -> torch.Tensor:
    """Read ``duration`` seconds from ``start`` as a ``(channels, samples)`` float32 tensor.

    ``sample_rate=None`` keeps the file's rate; ``channels=2`` duplicates mono and
    refuses more than two channels, ``channels=1`` averages, ``channels=None`` keeps
    them. ``stream`` picks the audio stream of a multi-stream file (``.stem.mp4``).
    """
    path = Path(path)
    _check_file(path)
    if start < 0 or (duration is not None and duration <= 0):
        raise LongsepError(f"{path}: start must be >= 0 and duration > 0 seconds")
    if _needs_ffmpeg(path):
        data, rate = _read_ffmpeg(path, start, duration, stream)
    else:
        data, rate = _read_soundfile(path, start, duration)
    if data.shape[-1] == 0:
        raise LongsepError(f"{path}: no audio samples in the requested range")
    audio = torch.from_numpy(np.ascontiguousarray(data))
    audio = _set_channels(audio, channels, path)
    if sample_rate is not None and rate != sample_rate:
        audio = resample(audio, rate, int(sample_rate))
    return audio


LOWPASS_WIDTH = 6  # zero crossings of the sinc kernel (torchaudio's default)
ROLLOFF = 0.99  # kernel cut-off relative to the lower Nyquist frequency


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited (sinc) resampling of ``(..., samples)`` audio with torchaudio."""
    if orig_rate == new_rate:
        return audio
    return torchaudio.functional.resample(
        audio, int(orig_rate), int(new_rate), lowpass_filter_width=LOWPASS_WIDTH, rolloff=ROLLOFF
    )


class StreamResampler:
    """:func:`resample` of a signal that arrives in consecutive chunks.

    The output, concatenated, equals ``resample`` of the whole signal, cropped or
    zero-padded to ``out_length`` samples. ``total`` (input samples in all) must be known
    ahead, since the last chunk is padded like the whole signal's end. Input blocks are cut
    at multiples of the rates' reduced period and resampled with enough real neighbouring
    samples on each side to cover the sinc kernel, so only ``O(chunk)`` samples are held.
    """

    def __init__(
        self, orig_rate: int, new_rate: int, total: int, out_length: int | None = None
    ) -> None:
        common = math.gcd(int(orig_rate), int(new_rate))
        self.orig_rate, self.new_rate = int(orig_rate), int(new_rate)
        self.down, self.up = self.orig_rate // common, self.new_rate // common
        width = math.ceil(LOWPASS_WIDTH * self.down / (min(self.up, self.down) * ROLLOFF))
        self.context = self.down * math.ceil((width + self.down) / self.down)
        self.total = int(total)
        self.natural = math.ceil(self.total * self.up / self.down)  # resample()'s length
        self.out_length = self.natural if out_length is None else int(out_length)
        self.buffer: torch.Tensor | None = None  # input samples from buffer_start on
        self.buffer_start = -self.context
        self.received = self.done = self.emitted = 0

    def _emit(self, end: int) -> torch.Tensor:
        """Output for input samples ``done .. end`` (multiples of the period ``down``)."""
        lo = self.done - self.context - self.buffer_start
        segment = self.buffer[..., lo : lo + end - self.done + 2 * self.context]
        out = resample(segment, self.orig_rate, self.new_rate)
        skip = self.context * self.up // self.down
        out = out[..., skip : skip + (end - self.done) * self.up // self.down]
        keep = end - self.context - self.buffer_start
        self.buffer, self.buffer_start, self.done = self.buffer[..., keep:], end - self.context, end
        return out

    def _resample(self, chunk: torch.Tensor) -> torch.Tensor:
        """Buffer ``chunk``; resample the blocks whose kernel context is complete."""
        if self.buffer is None:
            self.buffer = chunk.new_zeros(*chunk.shape[:-1], self.context)
        self.buffer = torch.cat([self.buffer, chunk], -1)
        if self.received >= self.total:
            end = self.down * math.ceil(self.total / self.down)
            pad = end + self.context - (self.buffer_start + self.buffer.shape[-1])
            self.buffer = torch.nn.functional.pad(self.buffer, (0, pad))
        else:
            end = self.down * ((self.received - self.context) // self.down)
        return self._emit(end) if end > self.done else chunk.new_zeros(*chunk.shape[:-1], 0)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add the next ``(..., n)`` input samples; return the output they complete."""
        self.received += chunk.shape[-1]
        same_rate = self.orig_rate == self.new_rate  # then only the length may change
        out = chunk if same_rate else self._resample(chunk)
        out = out[..., : max(0, min(self.natural, self.out_length) - self.emitted)]
        if self.received >= self.total and self.emitted + out.shape[-1] < self.out_length:
            out = torch.nn.functional.pad(out, (0, self.out_length - self.emitted - out.shape[-1]))
        self.emitted += out.shape[-1]
        return out


def _set_channels(audio: torch.Tensor, channels: int | None, path: Path) -> torch.Tensor:
    have = audio.shape[0]
    if channels is None or have == channels:
        return audio
    if channels == 1:
        return audio.mean(0, keepdim=True)
    if channels == 2 and have == 1:
        return audio.expand(2, -1).clone()
    raise LongsepError(
        f"{path}: has {have} channels, expected {channels} (load with channels=None to keep them)"
    )


def _as_frames(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(channels, samples)`` tensor or array to soundfile's ``(samples, channels)``."""
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    data = np.atleast_2d(data.astype(np.float32, copy=False))
    if data.ndim != 2:
        raise LongsepError(f"audio to save must be (channels, samples), got shape {data.shape}")
    return data.T


def _remove(path: Path) -> None:
    """Delete ``path`` if it exists; a path that cannot exist (its parent is a file) is fine."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.debug("could not remove %s", path)


def parse_bitrate(bitrate: str | int | float | None) -> int | None:
    """A bitrate in kbps from ``320``, ``"320k"`` or ``320000`` (bits/s); None stays None."""
    if bitrate in (None, ""):
        return None
    text = str(bitrate).strip().lower()
    scale = 1
    if text.endswith("k"):
        text, scale = text[:-1], 1000
    try:
        value = float(text) * scale
    except ValueError:
        raise LongsepError(f"bitrate={bitrate}: use kbps such as 320, 320k or 320000") from None
    kbps = value / 1000 if value >= 1000 else value
    if not 8 <= kbps <= 640:
        raise LongsepError(f"bitrate={bitrate}: expected 8 to 640 kbps (e.g. 320k)")
    return int(round(kbps))


def check_codec(codec: str, bitrate: str | int | None = None) -> int | None:
    """Refuse an unknown ``codec`` or a malformed ``bitrate``; return the bitrate in kbps."""
    if str(codec).lower() not in CODECS:
        raise LongsepError(f"codec={codec}: use one of {', '.join(CODECS)}")
    return parse_bitrate(bitrate)


class AudioWriter:
    """Write ``(channels, samples)`` chunks to one file that appears only when complete.

    The audio goes to a temporary file beside ``path``; :meth:`commit` renames it into
    place and :meth:`abort` deletes it, so a failed or interrupted write never leaves a
    half-written file. As a context manager it commits on success and aborts on an error.
    ``codec`` (wav / flac / ogg / mp3) defaults to the extension. wav keeps float values as
    they are; integer and lossy formats clip to [-1, 1] with a warning. ``bitrate`` (kbps)
    sets the mp3 / ogg quality.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        channels: int,
        codec: str | None = None,
        bitrate: str | int | None = None,
        subtype: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.codec = (codec or self.path.suffix.lstrip(".")).lower()
        if self.codec not in CODECS:
            raise LongsepError(
                f"{self.path}: cannot write codec {self.codec!r} (use one of {list(CODECS)})"
            )
        fmt, default_subtype, keeps_floats = CODECS[self.codec]
        subtype = subtype or default_subtype
        self.clips = not (keeps_floats and subtype in ("FLOAT", "DOUBLE"))
        self.peak = 0.0
        extra = {}
        bitrate = parse_bitrate(bitrate)
        if bitrate is not None and self.codec in ("mp3", "ogg"):
            extra["compression_level"] = float(np.clip(1 - (bitrate - 32) / (320 - 32), 0.0, 1.0))
            if self.codec == "mp3":
                extra["bitrate_mode"] = "CONSTANT"
        unique = f"{os.getpid()}-{threading.get_ident()}"
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp-{unique}.{self.codec}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = sf.SoundFile(
                str(self.tmp), "w", int(sample_rate), int(channels), subtype, format=fmt, **extra
            )
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            _remove(self.tmp)
            raise LongsepError(f"{self.path}: cannot write audio ({_reason(exc)})") from None

    def write(self, audio: torch.Tensor | np.ndarray) -> None:
        """Append ``(channels, samples)`` audio."""
        data = _as_frames(audio)
        if data.size:
            self.peak = max(self.peak, float(np.abs(data).max()))
        if self.clips and self.peak > 1.0:
            data = np.clip(data, -1.0, 1.0)
        try:
            self.file.write(data)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            self.abort()
            raise LongsepError(f"{self.path}: cannot write audio ({_reason(exc)})") from None

    def commit(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        try:
            self.file.close()
            os.replace(self.tmp, self.path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            self.abort()
            raise LongsepError(f"{self.path}: cannot write audio ({_reason(exc)})") from None
        if self.clips and self.peak > 1.0:
            log.warning("%s: peak %.3f clipped to [-1, 1] for %s", self.path, self.peak, self.codec)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self.file.close()
        except (sf.LibsndfileError, RuntimeError, OSError):
            log.debug("closing %s failed while aborting", self.tmp)
        _remove(self.tmp)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def save(
    path: str | Path,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int = 44100,
    codec: str | None = None,
    bitrate: int | None = None,
    subtype: str | None = None,
) -> Path:
    """Write ``(channels, samples)`` audio atomically (see :class:`AudioWriter`)."""
    data = _as_frames(audio)
    with AudioWriter(path, sample_rate, data.shape[1], codec, bitrate, subtype) as writer:
        writer.write(data.T)
    return writer.path
