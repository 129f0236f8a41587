"""LightningDataModule over MUSDB18 / MUSDB18-HQ splits (and the built-in synthetic set).

Splits follow the ``musdb`` package: train = ``subsets='train', split='train'``,
valid = ``subsets='train', split='valid'``, test = ``subsets='test'``. Tracks are
decoded once into a :class:`~longsep.data.cache.TrackCache`; batches are dicts

- ``mixture``: ``(batch, channels, samples)``, the sum of the (augmented) sources,
- ``target``:  ``(batch, channels, samples)``, the ``target`` source,
- ``sources``: ``(batch, n_sources, channels, samples)`` when ``return_sources=True``,

with ``samples = round(seq_len * sample_rate)``. Training chunks are random (offset,
track per source, gain, channel swap) yet reproducible: each is drawn from a generator
seeded by ``(seed, epoch, index)``, so a resumed run sees the same data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from longsep import TARGETS
from longsep.data.augment import Augment
from longsep.data.cache import CachedTrack, TrackCache
from longsep.errors import LongsepError

log = logging.getLogger(__name__)

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


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys, shuffled per epoch; Lightning calls ``set_epoch``.

    ``skip`` (called when iteration starts) gives how many keys of this epoch were
    already consumed, so a run resumed mid-epoch continues with the unseen chunks.
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True, skip: Callable[[], int] | None = None
    ) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.size)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        start = self.skip() if self.skip is not None else 0
        return iter((self.epoch, int(i)) for i in order[start:])


class _ChunkBase(Dataset):
    """Shared assembly of a chunk from per-source pieces."""

    def __init__(
        self,
        tracks: Sequence[CachedTrack],
        target: str,
        seq_samples: int,
        return_sources: bool,
    ) -> None:
        if not tracks:
            raise LongsepError("no tracks to draw chunks from")
        self.tracks = list(tracks)
        self.sources = self.tracks[0].sources
        if target not in self.sources:
            raise LongsepError(f"src={target!r} is not a source of this data set {self.sources}")
        self.target = target
        self.seq_samples = seq_samples
        self.return_sources = return_sources

    def _assemble(self, stems: list[np.ndarray]) -> dict[str, torch.Tensor]:
        sources = torch.from_numpy(np.stack(stems))
        out = {
            "mixture": sources.sum(0),
            "target": sources[self.sources.index(self.target)].clone(),
        }
        if self.return_sources:
            out["sources"] = sources
        return out


class TrainChunks(_ChunkBase):
    """Random training chunks; ``len = tracks * samples_per_track``; keys from EpochSampler."""

    def __init__(
        self,
        tracks: Sequence[CachedTrack],
        target: str,
        seq_samples: int,
        samples_per_track: int,
        augment: Augment,
        random_mix: bool,
        seed: int,
        return_sources: bool = False,
    ) -> None:
        super().__init__(tracks, target, seq_samples, return_sources)
        self.samples_per_track = samples_per_track
        self.augment = augment
        self.random_mix = random_mix
        self.seed = seed

    def __len__(self) -> int:
        return len(self.tracks) * self.samples_per_track

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        home = self.tracks[index // self.samples_per_track]
        stems = []
        for source in self.sources:
            track = self.tracks[rng.integers(len(self.tracks))] if self.random_mix else home
            start = int(rng.integers(0, max(1, track.samples - self.seq_samples + 1)))
            stems.append(self.augment(track.chunk(source, start, self.seq_samples), rng))
        return self._assemble(stems)


class ValidChunks(_ChunkBase):
    """Deterministic validation chunks: ``chunks_per_track`` evenly spaced offsets."""

    def __init__(
        self,
        tracks: Sequence[CachedTrack],
        target: str,
        seq_samples: int,
        chunks_per_track: int = 1,
        return_sources: bool = False,
    ) -> None:
        super().__init__(tracks, target, seq_samples, return_sources)
        self.items: list[tuple[int, int]] = []
        for t, track in enumerate(self.tracks):
            span = max(0, track.samples - seq_samples)
            n = chunks_per_track if span > 0 else 1
            for k in range(n):
                self.items.append((t, (span * (2 * k + 1)) // (2 * n)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t, start = self.items[index]
        track = self.tracks[t]
        return self._assemble([track.chunk(s, start, self.seq_samples) for s in self.sources])


class MUSDBDataModule(pl.LightningDataModule):
    """Train / valid chunks of ``seq_len`` seconds from a MUSDB18-layout data set.

    ``batch_size=None`` derives the batch from ``seconds_budget`` (audio seconds per
    batch, 16 x 6 s by default as Open-Unmix), so that long ``seq_len`` fits.
    """

    def __init__(
        self,
        root: str | None,
        target: str = "vocals",
        seq_len: float = 6.0,
        is_wav: bool = True,
        download: bool = False,
        setup_file: str | None = None,
        generate: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        seconds_budget: float = 96.0,
        samples_per_track: int = 64,
        valid_chunks_per_track: int = 1,
        augment: Mapping[str, Any] | None = None,
        random_mix: bool = True,
        short_tracks: str = "pad",
        num_workers: int = 0,
        cache_dir: str = ".cache/longsep",
        cache_dtype: str = "int16",
        sample_rate: int = 44100,
        seed: int = 42,
        return_sources: bool = False,
    ) -> None:
        super().__init__()
        if target not in TARGETS:
            raise LongsepError(f"src={target!r} is not one of {list(TARGETS)}")
        if seq_len <= 0:
            raise LongsepError(f"seq_len={seq_len} must be a positive number of seconds")
        if short_tracks not in ("pad", "skip"):
            raise LongsepError(f"data.short_tracks={short_tracks!r} must be 'pad' or 'skip'")
        if not root and not download:
            raise LongsepError(
                "data.root is not set: give data.root=/path/to/musdb18 (or data.download=true "
                "for musdb's 7-s previews)"
            )
        self.root, self.target, self.seq_len = root, target, float(seq_len)
        self.is_wav, self.download, self.setup_file = is_wav, download, setup_file
        self.generate = dict(generate) if generate else None
        self.batch_size = batch_size or max(1, math.floor(seconds_budget / self.seq_len))
        self.samples_per_track = samples_per_track
        self.valid_chunks_per_track = valid_chunks_per_track
        self.augment = Augment(**(augment or {}))
        self.random_mix, self.short_tracks = random_mix, short_tracks
        self.num_workers, self.sample_rate, self.seed = num_workers, sample_rate, seed
        self.return_sources = return_sources
        self.cache = TrackCache(cache_dir, root or "musdb-download", sample_rate, cache_dtype)
        self.seq_samples = round(self.seq_len * sample_rate)
        self.train_set: TrainChunks | None = None
        self.valid_set: ValidChunks | None = None

    def tracks(self, split: str) -> list:
        """The ``musdb`` track objects of ``split`` (used by evaluation as well)."""
        return open_musdb(self.root, split, self.is_wav, self.download, self.setup_file)

    def prepare_data(self) -> None:
        """Generate the synthetic set if configured, then fill the decoded-audio cache."""
        if self.generate is not None:
            from longsep.data.synth import ensure_dataset

            ensure_dataset(self.root, **self.generate)
        for split in ("train", "valid"):
            for track in self.tracks(split):
                self.cache.ensure(track)

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

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = TrainChunks(
                self._usable(self._open("train")),
                self.target,
                self.seq_samples,
                self.samples_per_track,
                self.augment,
                self.random_mix,
                self.seed,
                self.return_sources,
            )
        if stage in (None, "fit", "validate") and self.valid_set is None:
            valid = self._open("valid")
            if not valid:
                raise LongsepError(
                    f"no validation tracks in data.root={self.root}: the musdb setup file "
                    "lists none of its tracks (set data.setup_file)"
                )
            self.valid_set = ValidChunks(
                valid,
                self.target,
                self.seq_samples,
                self.valid_chunks_per_track,
                self.return_sources,
            )

    def _loader(self, dataset: Dataset, sampler: Sampler | None, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
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
        """Training chunks already seen in the current epoch (non-zero only when resuming)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.completed * self.batch_size

    def val_dataloader(self) -> DataLoader:
        if self.valid_set is None:
            self.setup("validate")
        return self._loader(self.valid_set, None, self.batch_size)
