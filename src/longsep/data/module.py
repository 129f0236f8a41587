"""The LightningDataModule shared by every data set, generic over where tracks come from.

:class:`ChunkDataModule` owns batching: the batch size (derived from ``seconds_budget``
when not given), resumable training loaders (:class:`~longsep.data.chunks.EpochSampler`)
and fixed validation loaders. :class:`TrackDataModule` adds tracks: a subclass lists the
tracks of a split (:meth:`TrackDataModule.tracks`) and says how their chunks are mixed
(:meth:`TrackDataModule.mixer`); decoding (:class:`~longsep.data.cache.TrackCache`),
random ``seq_len`` chunks and augmentation (:class:`~longsep.data.augment.Augment`) are
shared. Batches are those of :mod:`longsep.data.chunks` with a leading batch axis.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from longsep.data.augment import Augment
from longsep.data.cache import CachedTrack, TrackCache
from longsep.data.chunks import EpochSampler, Mixer, TrainChunks, ValidChunks, mixture_of
from longsep.errors import LongsepError
from longsep.io import file_lock

log = logging.getLogger(__name__)


class ResumableLoader(DataLoader):
    """A training loader whose position in the epoch travels with a checkpoint: Lightning
    saves :meth:`state_dict` and hands it back on resume, where ``epoch_sampler`` skips
    the chunks already seen. It is a constructor argument, not ``self.sampler``: under DDP
    Lightning rebuilds the loader with its distributed sampler wrapped around this one."""

    def __init__(self, *args: Any, epoch_sampler: EpochSampler, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_sampler = epoch_sampler

    def state_dict(self) -> dict[str, int]:
        sampler = self.epoch_sampler
        return {"epoch": sampler.epoch, "consumed": sampler.consumed()}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch_sampler.resume(int(state["epoch"]), int(state["consumed"]))


class ChunkDataModule(pl.LightningDataModule):
    """Batches of ``train_set`` / ``valid_set`` (set by :meth:`setup` of a subclass).

    ``batch_size=None`` derives the batch from ``seconds_budget`` (audio seconds per
    batch, 16 x 6 s by default as Open-Unmix), so that long ``seq_len`` fits.
    """

    def __init__(
        self,
        seq_len: float,
        batch_size: int | None,
        seconds_budget: float,
        num_workers: int,
        seed: int,
    ) -> None:
        super().__init__()
        if seq_len <= 0:
            raise LongsepError(f"seq_len={seq_len} must be a positive number of seconds")
        self.seq_len = float(seq_len)
        self.batch_size = batch_size or max(1, math.floor(seconds_budget / self.seq_len))
        self.num_workers, self.seed = num_workers, seed
        self.train_set: Dataset | None = None
        self.valid_set: Dataset | None = None

    @property
    def stats_dir(self) -> Path:
        """Where statistics of the training data (the model's input scaling) are cached."""
        raise NotImplementedError

    def train_mixtures(self, seconds: float = 30.0) -> Iterator[np.ndarray]:
        """Unaugmented training mixtures ``(channels, samples)``, ``seconds`` at a time."""
        raise NotImplementedError

    def _loader(self, dataset: Dataset, sampler: Sampler | None, batch_size: int) -> DataLoader:
        resumable = {"epoch_sampler": sampler} if isinstance(sampler, EpochSampler) else {}
        return (ResumableLoader if resumable else DataLoader)(
            dataset,
            **resumable,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # a private generator: creating an iterator must not draw from torch's global
            # one, or dropout after a resume would differ from the uninterrupted run
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        sampler = EpochSampler(len(self.train_set), self.seed, shuffle=True, skip=self._consumed)
        return self._loader(self.train_set, sampler, self.batch_size)

    def _consumed(self) -> int:
        """Training chunks already seen in the current epoch. A checkpoint written at a
        batch end has the batch processed but not yet completed (Lightning completes it
        when it restores): the larger count is the batches whose step has run."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        current = trainer.fit_loop.epoch_loop.batch_progress.current
        return max(current.completed, current.processed) * self.batch_size

    def val_dataloader(self) -> DataLoader:
        if self.valid_set is None:
            self.setup("validate")
        return self._loader(self.valid_set, None, self.batch_size)


class TrackDataModule(ChunkDataModule):
    """Train / valid chunks of ``seq_len`` seconds from the tracks of one data set.

    Subclasses set :attr:`source`, the track set listing the tracks of a split
    (``train`` / ``valid`` / ``test``, :meth:`tracks`; its ``valid_hint`` says what to do
    when ``valid`` is empty), and implement :meth:`mixer`; a track object has ``subset``,
    ``name`` and ``files`` (source -> audio file) unless the subclass overrides
    :meth:`cache_track`. Training draws ``samples_per_track`` chunks per track and epoch.
    """

    source: Any  # the track set (longsep.data.musdb.MUSDBTracks, ...)

    def __init__(
        self,
        root: str | None,
        target: str | Sequence[str] = "vocals",
        seq_len: float = 6.0,
        batch_size: int | None = None,
        seconds_budget: float = 96.0,
        samples_per_track: int = 64,
        valid_chunks_per_track: int = 1,
        augment: Mapping[str, Any] | None = None,
        short_tracks: str = "pad",
        num_workers: int = 0,
        cache_dir: str = ".cache/longsep",
        cache_dtype: str = "int16",
        sample_rate: int = 44100,
        seed: int = 42,
        return_sources: bool = False,
    ) -> None:
        super().__init__(seq_len, batch_size, seconds_budget, num_workers, seed)
        if short_tracks not in ("pad", "skip"):
            raise LongsepError(f"data.short_tracks={short_tracks!r} must be 'pad' or 'skip'")
        self.root, self.target = root, target
        self.samples_per_track = samples_per_track
        self.valid_chunks_per_track = valid_chunks_per_track
        self.augment = Augment(**(augment or {}))
        self.short_tracks, self.sample_rate = short_tracks, sample_rate
        self.return_sources = return_sources
        self.cache = TrackCache(cache_dir, root or "musdb-download", sample_rate, cache_dtype)
        self.seq_samples = round(self.seq_len * sample_rate)

    def tracks(self, split: str) -> list:
        """The tracks of ``split`` (those of :attr:`source`)."""
        return self.source.tracks(split)

    def mixer(self, tracks: Sequence[CachedTrack]) -> Mixer:
        """How chunks of these cached tracks are mixed."""
        raise NotImplementedError

    def cache_track(self, track: Any) -> None:
        """Decode ``track`` into the cache unless it is there."""
        self.cache.ensure(track.subset, track.name, track.files)

    @property
    def stats_dir(self) -> Path:
        """One per kind of data set and set of mixed sources (what makes the mixture)."""
        if self.train_set is None:
            self.setup("fit")
        key = f"{type(self).__name__}:{'+'.join(self.train_set.sources)}"
        return self.cache.dir / f"stats-{hashlib.sha1(key.encode()).hexdigest()[:10]}"

    def prepare_data(self) -> None:
        """Fill the decoded-audio cache with the train and valid tracks (one process at a
        time per cache: the jobs of a sweep start together)."""
        with file_lock(self.cache.dir.parent / f".{self.cache.dir.name}.lock"):
            for split in ("train", "valid"):
                for track in self.tracks(split):
                    self.cache_track(track)

    def _open(self, split: str) -> list[CachedTrack]:
        return [self.cache.open(t.subset, t.name) for t in self.tracks(split)]

    def _usable(self, tracks: list[CachedTrack]) -> list[CachedTrack]:
        long_enough = [t for t in tracks if t.samples >= self.seq_samples]
        if not long_enough:
            longest = max(t.duration for t in tracks)
            raise LongsepError(
                f"seq_len={self.seq_len:g} s is longer than every training track "
                f"(longest {longest:.1f} s in {self.root}); lower seq_len"
            )
        short = [t.name for t in tracks if t.samples < self.seq_samples]
        if short:
            action = "zero-padded" if self.short_tracks == "pad" else "skipped"
            log.warning(
                "%d tracks shorter than seq_len=%gs are %s", len(short), self.seq_len, action
            )
        return tracks if self.short_tracks == "pad" else long_enough

    def train_chunks(self, tracks: list[CachedTrack]) -> Dataset:
        """The training set over ``tracks``."""
        return TrainChunks(
            tracks,
            self.mixer(tracks),
            self.seq_samples,
            len(tracks) * self.samples_per_track,
            self.augment,
            self.seed,
            self.return_sources,
        )

    def valid_chunks(self, tracks: list[CachedTrack]) -> Dataset:
        """The validation set over ``tracks``."""
        return ValidChunks(
            tracks,
            self.mixer(tracks),
            self.seq_samples,
            self.valid_chunks_per_track,
            self.return_sources,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.train_chunks(self._usable(self._open("train")))
        if stage in (None, "fit", "validate") and self.valid_set is None:
            valid = self._open("valid")
            if not valid:
                raise LongsepError(
                    f"no validation tracks in data.root={self.root}: {self.source.valid_hint}"
                )
            self.valid_set = self.valid_chunks(valid)

    def train_mixtures(self, seconds: float = 30.0) -> Iterator[np.ndarray]:
        if self.train_set is None:
            self.setup("fit")
        step = round(seconds * self.sample_rate)
        for track in self.train_set.tracks:
            for start in range(0, track.samples, step):
                length = min(step, track.samples - start)
                yield mixture_of(self.train_set.mixer.at(track, start, length))
