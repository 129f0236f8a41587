"""MUSDB18 / MUSDB18-HQ (and the built-in sets in its layout): splits, tracks, decoding.

Splits follow the ``musdb`` package: train = ``subsets='train', split='train'``,
valid = ``subsets='train', split='valid'``, test = ``subsets='test'``.
:class:`MUSDBTracks` lists them (what evaluation reads, without Lightning);
:class:`~longsep.data.datamodules.MUSDBDataModule` trains on them through the
decoded-audio cache (:func:`cache_musdb_track`); :func:`read_track_audio` reads a track as
musdb does, for scoring.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torchaudio.functional import resample

from longsep import TARGETS, audio
from longsep.data.cache import TrackCache
from longsep.errors import LongsepError
from longsep.io import file_lock, hold_for_reading

SPLITS = {
    "train": {"subsets": "train", "split": "train"},
    "valid": {"subsets": "train", "split": "valid"},
    "test": {"subsets": "test", "split": None},
}


def import_musdb():
    """Import ``musdb``, turning its missing-ffmpeg crash into a one-line error."""
    try:
        import musdb
    except RuntimeError as exc:  # stempeg raises at import time without ffmpeg
        raise LongsepError(
            "the musdb package needs ffmpeg and ffprobe on PATH: install ffmpeg "
            "(apt-get install ffmpeg, brew install ffmpeg or conda install ffmpeg)"
        ) from exc
    return musdb


def open_musdb(
    root: str | Path | None,
    split: str,
    is_wav: bool = True,
    download: bool = False,
    setup_file: str | None = None,
) -> list:
    """The ``musdb`` tracks of one split (``train`` / ``valid`` / ``test``) under ``root``."""
    if split not in SPLITS:
        raise LongsepError(f"split={split!r} is not one of {list(SPLITS)}")
    if root is not None and not download and not Path(root).expanduser().is_dir():
        raise LongsepError(
            f"data.root={root} does not exist: point it at your MUSDB18 folder "
            "(or use data=synth for the built-in data set)"
        )
    musdb = import_musdb()
    kwargs = {"root": None if root is None else str(Path(root).expanduser())}
    try:
        db = musdb.DB(
            **kwargs, is_wav=is_wav, download=download, setup_file=setup_file, **SPLITS[split]
        )
    except (OSError, RuntimeError) as exc:
        raise LongsepError(f"cannot open MUSDB18 at data.root={root}: {exc}") from exc
    if not db.tracks and split != "valid":
        layout = "<root>/train/<track>/mixture.wav" if is_wav else "<root>/train/<track>.stem.mp4"
        raise LongsepError(
            f"no {split} tracks in data.root={db.root}: expected the MUSDB18 layout "
            f"{layout} (set data.is_wav={not is_wav} if your copy is the other format)"
        )
    return db.tracks


def decode_musdb(track: Any, source: str, sample_rate: int) -> np.ndarray:
    """Float32 ``(channels, samples)`` of one source of a ``musdb`` track at ``sample_rate``.

    Wav stems are read exactly through :mod:`longsep.audio` (musdb would round them to
    16 bit); ``.stem.mp4`` streams are decoded by musdb (stempeg/ffmpeg).
    """
    if track.is_wav:
        return audio.load(track.sources[source].path, sample_rate=sample_rate).numpy()
    try:
        data = np.asarray(track.sources[source].audio, dtype=np.float32).T
    except Exception as exc:  # stempeg/ffmpeg raise many types
        raise LongsepError(f"cannot decode {source} of {track.path}: {exc}") from exc
    if track.rate != sample_rate:
        data = resample(torch.from_numpy(data), int(track.rate), sample_rate).numpy()
    return data


def read_track_audio(track: Any) -> np.ndarray:
    """``(samples, channels)`` float32 of a track or source (musdb's or a folder's), as musdb
    reads it: for evaluation, where MUSDB18 scores are computed on musdb's audio.

    A 16-bit wav file of MUSDB18-HQ layout is read with soundfile: the values musdb's
    ffmpeg ``s16le`` decoding gives, without an ffmpeg process per file (that was most
    of an oracle evaluation's I/O). Anything else is read by the track itself.
    """
    path = getattr(track, "path", None)
    owner = getattr(track, "multitrack", track)  # a musdb source belongs to its track
    if getattr(owner, "is_wav", False) and str(path).endswith(".wav"):
        with sf.SoundFile(str(path)) as f:
            if f.subtype == "PCM_16":
                return f.read(dtype="float32", always_2d=True)
    return np.asarray(track.audio, dtype=np.float32)


def cache_musdb_track(cache: TrackCache, track: Any) -> None:
    """Decode a ``musdb`` track into ``cache``, sources in our order (vocals, drums, bass,
    other, then any other), whatever musdb's setup lists."""
    known = [n for n in TARGETS if n in track.sources]
    names = (*known, *(n for n in track.sources if n not in known))
    files = {n: track.sources[n].path for n in names}
    decode = partial(decode_musdb, track, sample_rate=cache.sample_rate)
    cache.ensure(track.subset, track.name, files, decode)


class MUSDBTracks:
    """The splits of a MUSDB18-layout data set, as ``musdb`` tracks (what evaluation reads
    and :class:`~longsep.data.datamodules.MUSDBDataModule` trains on); ``generate`` names
    the parameters of a synthetic set written on first use."""

    valid_hint = "the musdb setup file lists none of its tracks (set data.setup_file)"

    def __init__(
        self,
        root: str | None,
        is_wav: bool = True,
        download: bool = False,
        setup_file: str | None = None,
        generate: Mapping[str, Any] | None = None,
    ) -> None:
        if not root and not download:
            raise LongsepError(
                "data.root is not set: give data.root=/path/to/musdb18 (or data.download=true "
                "for musdb's 7-s previews)"
            )
        self.root, self.is_wav, self.download, self.setup_file = root, is_wav, download, setup_file
        self.generate = dict(generate) if generate else None

    def prepare(self) -> None:
        """Write the synthetic set named by ``generate`` unless it is complete (once, before
        :meth:`tracks`; training calls it on one process only)."""
        if self.generate is not None:
            from longsep.data.synth import ensure_dataset

            root = Path(str(self.root)).expanduser()
            with file_lock(root.parent / f".{root.name}.lock"):  # jobs of a sweep at once
                ensure_dataset(self.root, **self.generate)
                hold_for_reading(root)  # no other process regenerates it under this one

    def tracks(self, split: str) -> list:
        """The ``musdb`` track objects of ``split``."""
        return open_musdb(self.root, split, self.is_wav, self.download, self.setup_file)
