"""Writing audio files atomically (temporary file, then rename), streamed in chunks."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from longsep.audio.decode import _reason
from longsep.errors import LongsepError
from longsep.io import temp_sibling

log = logging.getLogger(__name__)

CODECS = {  # codec -> (libsndfile format, default subtype, float-capable)
    "wav": ("WAV", "FLOAT", True),
    "flac": ("FLAC", "PCM_24", False),
    "ogg": ("OGG", "VORBIS", False),
    "mp3": ("MP3", "MPEG_LAYER_III", False),
}


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


FULL_DISK_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full


def _write_reason(exc: BaseException, folder: Path) -> str:
    """Why writing into ``folder`` failed, in words: libsndfile reports a full disk only
    as "System error.", so the free space is looked at."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on device"
    try:
        full = shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        full = False
    return "no space left on device" if full else _reason(exc)


SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile's sndfile.h


def _no_peak_chunk(file: sf.SoundFile) -> None:
    """Tell libsndfile not to add the PEAK chunk to a float file: it holds the time of
    writing, so the same audio written twice would never be byte-identical. soundfile does
    not wrap ``sf_command``; its cffi handles do (an older soundfile without them: a
    warning, the files are still correct)."""
    lib, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    handle = getattr(file, "_file", None)
    if lib is None or ffi is None or handle is None:
        log.warning("%s: this soundfile cannot drop the PEAK chunk (a timestamp)", file.name)
        return
    lib.sf_command(handle, SFC_SET_ADD_PEAK_CHUNK, ffi.NULL, 0)


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
        self.tmp = temp_sibling(self.path, f".{self.codec}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = sf.SoundFile(
                str(self.tmp), "w", int(sample_rate), int(channels), subtype, format=fmt, **extra
            )
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            _remove(self.tmp)
            reason = _write_reason(exc, self.path.parent)
            raise LongsepError(f"{self.path}: cannot write audio ({reason})") from None
        if not self.clips:
            _no_peak_chunk(self.file)

    def write(self, audio: torch.Tensor | np.ndarray) -> None:
        """Append ``(channels, samples)`` audio."""
        data = _as_frames(audio)
        if self.clips and data.size:  # float wav keeps every value: no peak to watch
            self.peak = max(self.peak, float(np.abs(data).max()))
            if self.peak > 1.0:
                data = np.clip(data, -1.0, 1.0)
        try:
            self.file.write(data)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            self.abort()
            reason = _write_reason(exc, self.tmp.parent)
            raise LongsepError(f"{self.path}: cannot write audio ({reason})") from None

    def commit(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        try:
            self.file.close()
            os.replace(self.tmp, self.path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            self.abort()
            reason = _write_reason(exc, self.tmp.parent)
            raise LongsepError(f"{self.path}: cannot write audio ({reason})") from None
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
