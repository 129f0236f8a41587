"""Reading audio files: metadata, whole or partial loads, and block-wise decoding.

wav / flac / ogg / mp3 (anything libsndfile opens) are read with ``soundfile``, seeking to
``start`` so only the requested part is decoded; m4a / aac / mp4 / MUSDB ``.stem.mp4`` are
decoded by the ``ffmpeg`` binary.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from longsep.audio.resampling import StreamResampler, resample
from longsep.errors import LongsepError

log = logging.getLogger(__name__)

SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"})
FFMPEG_EXTENSIONS = frozenset({".m4a", ".aac", ".mp4", ".opus", ".wma", ".webm"})
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
READ_BLOCK = 1 << 18  # frames decoded at a time


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


def _ffmpeg_blocks(
    path: Path, start: float, duration: float | None, channels: int, block: int
) -> Iterator[np.ndarray]:
    """Decode with ffmpeg through a pipe: ``(channels, n)`` float32 blocks, bounded memory."""
    cmd = [_require_ffmpeg(path), "-v", "error", "-nostdin", "-ss", f"{start:.6f}"]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-i", str(path), "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    frame_bytes = 4 * channels
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        while chunk := proc.stdout.read(block * frame_bytes):
            usable = len(chunk) - len(chunk) % frame_bytes
            yield np.frombuffer(chunk[:usable], np.float32).reshape(-1, channels).T.copy()
        error = proc.stderr.read().decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise LongsepError(f"{path}: ffmpeg cannot decode it ({error[-1] if error else '?'})")


SEEKABLE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64"})


class SeekableAudio:
    """Random access to ``[start, start + duration)`` of a file at ``sample_rate``, in
    bounded memory, as ``(channels, n)`` float32 blocks.

    A wav / flac / aiff file at that rate is read in place by seeking. Anything else (another
    rate, lossy or ffmpeg formats) is decoded once in blocks into a temporary raw float32
    file at ``sample_rate`` (resampled on the fly, exactly as :func:`resample` of the whole
    signal), which is then read by seeking and deleted by :meth:`close`. Either way the
    samples are checked to be finite block by block before any is used. ``length`` is the
    selected range in samples at the file's own rate, ``samples`` at ``sample_rate``.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        start: float = 0.0,
        duration: float | None = None,
        block: int | None = None,
    ) -> None:
        self.path, self.sample_rate = Path(path), int(sample_rate)
        self.block = int(block or READ_BLOCK)
        meta = info(self.path)
        if start < 0 or (duration is not None and duration <= 0):
            raise LongsepError(f"{self.path}: start must be >= 0 and duration > 0 seconds")
        self.channels, self.file_rate = meta.channels, meta.sample_rate
        first = round(start * meta.sample_rate)
        if meta.frames and first >= meta.frames:
            raise LongsepError(
                f"{self.path}: start={start:g} s is past the end ({meta.duration:.2f} s)"
            )
        self._tmp: Path | None = None
        direct = (
            not _needs_ffmpeg(self.path)
            and meta.sample_rate == self.sample_rate
            and str(meta.format).upper() in SEEKABLE_FORMATS
        )
        if direct:
            count = meta.frames - first
            if duration is not None:
                count = min(count, round(duration * meta.sample_rate))
            self.length, self._offset, self._file = count, first, self._open(self.path)
            self._check_finite()
        else:
            self._decode_to_raw(start, duration)
        self.samples = self._file.frames - self._offset if not direct else self.length
        if self.samples <= 0:
            self.close()
            raise LongsepError(f"{self.path}: no audio samples in the requested range")

    def _open(self, path: Path, **raw: object) -> sf.SoundFile:
        try:
            return sf.SoundFile(str(path), **raw)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise LongsepError(f"{self.path}: not a readable audio file ({_reason(exc)})") from None

    def _blocks(self, start: float, duration: float | None) -> Iterator[np.ndarray]:
        """The selected range decoded at the file's rate, ``(channels, n)`` blocks."""
        if _needs_ffmpeg(self.path):
            yield from _ffmpeg_blocks(self.path, start, duration, self.channels, self.block)
            return
        with self._open(self.path) as f:
            first = round(start * f.samplerate)
            if first:
                f.seek(first)
            count = -1 if duration is None else round(duration * f.samplerate)
            for block in f.blocks(self.block, frames=count, dtype="float32", always_2d=True):
                yield block.T

    def _decode_to_raw(self, start: float, duration: float | None) -> None:
        """Decode, resample and write the range into a temporary raw float32 file."""
        raw = {"samplerate": self.sample_rate, "channels": self.channels, "subtype": "FLOAT"}
        raw |= {"format": "RAW", "endian": "LITTLE"}
        descriptor, name = tempfile.mkstemp(prefix="longsep-", suffix=".f32")
        os.close(descriptor)
        self._tmp = Path(name)
        try:
            total = self._count(start, duration)
            resampler = StreamResampler(self.file_rate, self.sample_rate, total)
            with sf.SoundFile(str(self._tmp), "w", **raw) as out:
                for block in self._blocks(start, duration):
                    self._check_block(block)
                    out.write(resampler.push(torch.from_numpy(block)).numpy().T)
            self.length, self._offset = total, 0
            self._file = sf.SoundFile(str(self._tmp), **raw)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _count(self, start: float, duration: float | None) -> int:
        """Samples of the range at the file's rate (one counting pass for ffmpeg formats)."""
        if not _needs_ffmpeg(self.path):
            meta = info(self.path)
            count = meta.frames - round(start * meta.sample_rate)
            return count if duration is None else min(count, round(duration * meta.sample_rate))
        return sum(block.shape[1] for block in self._blocks(start, duration))

    def _check_block(self, block: np.ndarray) -> None:
        if not np.isfinite(block).all():
            raise LongsepError(f"{self.path}: audio contains NaN or infinite samples")

    def _check_finite(self) -> None:
        self._file.seek(self._offset)
        for block in self._file.blocks(
            self.block, frames=self.length, dtype="float32", always_2d=True
        ):
            self._check_block(block)

    def read(self, lo: int, hi: int) -> torch.Tensor:
        """Samples ``lo .. hi - 1`` (``0 <= lo <= hi <= samples``) as ``(channels, n)``."""
        self._file.seek(self._offset + lo)
        data = self._file.read(hi - lo, dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T))

    def close(self) -> None:
        """Close the file and delete the temporary one, if any."""
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> SeekableAudio:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
