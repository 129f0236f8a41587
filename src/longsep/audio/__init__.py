"""Audio files in and out: the only module that touches audio files.

``load`` returns ``(channels, samples)`` float32 tensors; wav / flac / ogg / mp3 (and
anything else libsndfile opens) are read with ``soundfile``, seeking to ``start`` so
only the requested part is decoded; m4a / aac / mp4 / MUSDB ``.stem.mp4`` are decoded
by the ``ffmpeg`` binary when it is installed. ``save`` writes wav / flac / ogg / mp3
atomically (temporary file, then rename). Problems with a file raise a one-line
:class:`~longsep.errors.LongsepError` naming it.
"""

from __future__ import annotations

from longsep.audio.decode import (
    AUDIO_EXTENSIONS,
    FFMPEG_EXTENSIONS,
    READ_BLOCK,
    SOUNDFILE_EXTENSIONS,
    AudioInfo,
    SeekableAudio,
    info,
    is_audio_file,
    load,
)
from longsep.audio.encode import CODECS, AudioWriter, check_codec, parse_bitrate, save
from longsep.audio.resampling import StreamResampler, resample

__all__ = [
    "AUDIO_EXTENSIONS",
    "CODECS",
    "FFMPEG_EXTENSIONS",
    "READ_BLOCK",
    "SOUNDFILE_EXTENSIONS",
    "AudioInfo",
    "AudioWriter",
    "SeekableAudio",
    "StreamResampler",
    "check_codec",
    "info",
    "is_audio_file",
    "load",
    "parse_bitrate",
    "resample",
    "save",
]
