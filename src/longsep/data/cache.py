"""Decoded-audio cache: every track's stems decoded once into a memory-mapped array.

A MUSDB ``.stem.mp4`` costs an AAC decode per read; a random 60-s chunk from the
cache costs a slice copy. Any data set's tracks are cached the same way: a track is a
name in a subset with one audio file (or stream) per source. Layout on disk, one pair per track::

    <cache_dir>/<dataset key>/<subset>/<track name>.npy   int16 or float16 or float32,
                                                          shape (sources, channels, samples)
    <cache_dir>/<dataset key>/<subset>/<track name>.json  sources, rate, scale, source files

int16 entries are scaled by the track's peak (``scale``), so nothing clips.
Files are written to a temporary name and renamed, so an interrupted fill never
leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longsep import audio
from longsep.errors import LongsepError
from longsep.io import atomic_write, write_text

log = logging.getLogger(__name__)

CACHE_DTYPES = ("int16", "float16", "float32")
_FORMAT_VERSION = 1


def dataset_key(root: str | Path, sample_rate: int, dtype: str) -> str:
    """Directory name that identifies one data set at one rate and precision."""
    digest = hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:10]
    return f"{Path(root).name or 'root'}-{digest}-{sample_rate}-{dtype}"


def _fingerprint(paths: list[str]) -> list[list]:
    """(path, size, mtime) of each source file, to notice a changed data set."""
    out = []
    for p in sorted(set(paths)):
        st = os.stat(p)
        out.append([p, st.st_size, int(st.st_mtime)])
    return out


@dataclass
class CachedTrack:
    """A read-only memory-mapped track: ``audio`` is ``(sources, channels, samples)``."""

    name: str
    sources: tuple[str, ...]
    sample_rate: int
    audio: np.ndarray
    scale: float

    @property
    def samples(self) -> int:
        return self.audio.shape[-1]

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    def chunk(self, source: str, start: int, length: int) -> np.ndarray:
        """Float32 ``(channels, length)`` of one source from sample ``start`` (zero padded)."""
        idx = self.sources.index(source)
        piece = self.audio[idx, :, max(start, 0) : max(start, 0) + length]
        out = piece.astype(np.float32)
        if self.scale != 1.0:
            out *= self.scale
        if out.shape[-1] < length:
            out = np.pad(out, ((0, 0), (0, length - out.shape[-1])))
        return out


class TrackCache:
    """Fills and opens cached tracks for one data set (root, rate, dtype)."""

    def __init__(self, cache_dir: str | Path, root: str | Path, sample_rate: int, dtype: str):
        if dtype not in CACHE_DTYPES:
            raise LongsepError(f"data.cache_dtype={dtype!r} is not one of {list(CACHE_DTYPES)}")
        self.dir = Path(cache_dir).expanduser() / dataset_key(root, sample_rate, dtype)
        self.sample_rate = sample_rate
        self.dtype = dtype

    def _paths(self, subset: str, name: str) -> tuple[Path, Path]:
        base = self.dir / subset / name
        return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")

    def _meta_ok(self, meta_path: Path, files: list[str]) -> bool:
        if not meta_path.exists():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return meta.get("version") == _FORMAT_VERSION and meta.get("files") == _fingerprint(files)

    def ensure(
        self,
        subset: str,
        name: str,
        files: Mapping[str, str | Path],
        decode: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        """Decode one track into the cache unless already there.

        ``files`` maps each source, in the order to keep, to its audio file; ``decode``
        gives a source as float32 ``(channels, samples)`` at the cache's rate (default:
        its file through :func:`longsep.audio.load`). Sources of unequal length are cut
        to the shortest.
        """
        npy, meta_path = self._paths(subset, name)
        paths = [str(p) for p in files.values()]
        if npy.exists() and self._meta_ok(meta_path, paths):
            return
        log.info("caching %s/%s", subset, name)
        read = decode or (lambda s: audio.load(files[s], sample_rate=self.sample_rate).numpy())
        stems = [read(s) for s in files]
        samples = min(s.shape[-1] for s in stems)
        data = np.stack([s[:, :samples] for s in stems])
        scale = 1.0
        if self.dtype == "int16":
            peak = float(np.abs(data).max()) if data.size else 0.0
            scale = max(peak, 1e-8) / 32767.0
            data = np.round(data / scale).astype(np.int16)
        else:
            data = data.astype(self.dtype)
        atomic_write(npy, lambda p: np.save(p, data), suffix=".npy")
        meta = {
            "version": _FORMAT_VERSION,
            "sources": list(files),
            "sample_rate": self.sample_rate,
            "scale": scale,
            "files": _fingerprint(paths),
        }
        write_text(meta_path, json.dumps(meta))

    def open(self, subset: str, name: str) -> CachedTrack:
        """Memory-map a cached track (call :meth:`ensure` first)."""
        npy, meta_path = self._paths(subset, name)
        if not npy.exists() or not meta_path.exists():
            raise LongsepError(f"track {name!r} is not in the cache {self.dir}; run prepare_data()")
        meta = json.loads(meta_path.read_text())
        return CachedTrack(
            name=name,
            sources=tuple(meta["sources"]),
            sample_rate=meta["sample_rate"],
            audio=np.load(npy, mmap_mode="r"),
            scale=float(meta["scale"]),
        )
