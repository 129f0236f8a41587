"""Chunks of cached tracks: sampler keys, targets, mixing recipes and batch items.

An item is a dict

- ``mixture``: ``(channels, samples)``, the sum of the (augmented) sources, or the input
  file of an aligned data set,
- ``target``:  ``(channels, samples)``, one source or the sum of several,
- ``sources``: ``(n_sources, channels, samples)`` when ``return_sources=True``.

A :class:`Mixer` says how a data set's chunks are drawn from its cached tracks. Training
chunks come from a generator seeded by ``(seed, epoch, index)``, so a resumed run sees the
same data; validation chunks are fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from longsep.data.augment import Augment
from longsep.data.cache import CachedTrack
from longsep.errors import LongsepError

ACCOMPANIMENT = "accompaniment"
NO_AUGMENT = Augment(gain=None, channel_swap=False)
Item = dict[str, torch.Tensor]
Pieces = tuple[list[np.ndarray], np.ndarray | None]  # sources, explicit mixture (None: sum)


def target_name(src: str | Sequence[str]) -> str:
    """The one-word name of a target: ``vocals``, ``accompaniment``, ``[drums, bass]`` ->
    ``drums+bass`` (the name of its model file)."""
    return src if isinstance(src, str) else "+".join(str(s) for s in src)


def target_stems(src: str | Sequence[str], stems: Sequence[str]) -> tuple[str, ...]:
    """The stems summed into the target ``src``: a stem, ``accompaniment`` (every stem but
    vocals, as musdb defines it), ``a+b`` or a list of stems."""
    name = target_name(src)
    if name == ACCOMPANIMENT and ACCOMPANIMENT not in stems:
        if "vocals" not in stems:
            raise LongsepError(f"src={name!r} needs a vocals stem; this data set has {list(stems)}")
        return tuple(s for s in stems if s != "vocals")
    parts = tuple(dict.fromkeys(name.split("+")))
    unknown = [p for p in parts if p not in stems]
    if unknown:
        raise LongsepError(
            f"src={name!r}: {unknown[0]!r} is not a stem of this data set {list(stems)} "
            f"(or {ACCOMPANIMENT!r})"
        )
    return parts


def random_start(track: CachedTrack, length: int, rng: np.random.Generator) -> int:
    """A random offset of a ``length``-sample chunk in ``track`` (0 for a short track)."""
    return int(rng.integers(0, max(1, track.samples - length + 1)))


class Mixer(Protocol):
    """How a data set turns cached tracks into the sources of one chunk."""

    names: tuple[str, ...]  # the sources of an item, in order
    target: tuple[int, ...]  # which of them sum to the target

    def draw(
        self,
        tracks: Sequence[CachedTrack],
        home: int,
        rng: np.random.Generator,
        length: int,
        augment: Augment,
    ) -> Pieces:
        """A random training chunk of the item whose own track is ``tracks[home]``."""

    def at(self, track: CachedTrack, start: int, length: int) -> Pieces:
        """The unaugmented chunk of ``track`` from sample ``start``."""


class StemMixer:
    """Multitrack stems (MUSDB18, track folders): the mixture is the sum of the stems. With
    ``random_mix`` each training stem comes from a random track at its own random offset;
    without it the chunk is a real excerpt of the item's track (one offset for all stems, so
    what plays together in the song plays together in the chunk). ``anchor_target`` keeps
    the target stems on the item's own track (so an epoch visits every track's target, as
    Open-Unmix's ``trackfolder_fix``)."""

    def __init__(
        self,
        names: Sequence[str],
        target: Sequence[str],
        random_mix: bool,
        anchor_target: bool = False,
    ) -> None:
        self.names = tuple(names)
        self.target = tuple(self.names.index(t) for t in target)
        self.random_mix, self.anchor_target = random_mix, anchor_target

    def draw(
        self,
        tracks: Sequence[CachedTrack],
        home: int,
        rng: np.random.Generator,
        length: int,
        augment: Augment,
    ) -> Pieces:
        if not self.random_mix:
            start = random_start(tracks[home], length, rng)
            pieces = self.at(tracks[home], start, length)[0]
            return [augment(piece, rng) for piece in pieces], None
        stems = []
        for i, name in enumerate(self.names):
            own = self.anchor_target and i in self.target
            track = tracks[home] if own else tracks[rng.integers(len(tracks))]
            start = random_start(track, length, rng)
            stems.append(augment(track.chunk(name, start, length), rng))
        return stems, None

    def at(self, track: CachedTrack, start: int, length: int) -> Pieces:
        return [track.chunk(n, start, length) for n in self.names], None


class PoolMixer:
    """One pool of single-source files per source (Open-Unmix ``sourcefolder``): every
    source of a chunk is a random excerpt of a random file of its pool."""

    def __init__(
        self, names: Sequence[str], target: Sequence[str], pools: Sequence[Sequence[int]]
    ) -> None:
        self.names = tuple(names)
        self.target = tuple(self.names.index(t) for t in target)
        self.pools = [tuple(p) for p in pools]

    def draw(
        self,
        tracks: Sequence[CachedTrack],
        home: int,
        rng: np.random.Generator,
        length: int,
        augment: Augment,
    ) -> Pieces:
        stems = []
        for name, pool in zip(self.names, self.pools, strict=True):
            track = tracks[pool[rng.integers(len(pool))]]
            start = random_start(track, length, rng)
            stems.append(augment(track.chunk(name, start, length), rng))
        return stems, None

    def at(self, track: CachedTrack, start: int, length: int) -> Pieces:
        piece = track.chunk(track.sources[0], start, length)
        return [piece if n in track.sources else np.zeros_like(piece) for n in self.names], None


class AlignedMixer:
    """Input / output file pairs (Open-Unmix ``aligned``): the mixture is the input, the
    target the output, at one offset of the item's track; one gain and channel swap are
    drawn per chunk and applied to both."""

    target = (0,)

    def __init__(self, output: str, input: str) -> None:
        self.names = (output,)
        self.input = input

    def draw(
        self,
        tracks: Sequence[CachedTrack],
        home: int,
        rng: np.random.Generator,
        length: int,
        augment: Augment,
    ) -> Pieces:
        track = tracks[home]
        start = random_start(track, length, rng)
        seed = int(rng.integers(2**63))
        output, mixture = (
            augment(track.chunk(n, start, length), np.random.default_rng(seed))
            for n in (self.names[0], self.input)
        )
        return [output], mixture

    def at(self, track: CachedTrack, start: int, length: int) -> Pieces:
        return [track.chunk(self.names[0], start, length)], track.chunk(self.input, start, length)


class VariableMixer:
    """Track folders with a variable set of sources (Open-Unmix ``trackfolder_var``): the
    target file of the item's track, and every other file of one track (a random one with
    ``random_mix``) summed into ``interferers``; a track without the target file gives
    silence."""

    target = (0,)

    def __init__(self, target: str, random_mix: bool) -> None:
        self.names = (target, "interferers")
        self.random_mix = random_mix

    def _target(self, track: CachedTrack, start: int, length: int) -> np.ndarray:
        if self.names[0] in track.sources:
            return track.chunk(self.names[0], start, length)
        return np.zeros((track.audio.shape[1], length), np.float32)

    def _others(
        self,
        track: CachedTrack,
        start: int,
        length: int,
        augment: Augment,
        rng: np.random.Generator | None,
    ) -> np.ndarray:
        out = np.zeros((track.audio.shape[1], length), np.float32)
        for name in track.sources:
            if name != self.names[0]:
                out += augment(track.chunk(name, start, length), rng)
        return out

    def draw(
        self,
        tracks: Sequence[CachedTrack],
        home: int,
        rng: np.random.Generator,
        length: int,
        augment: Augment,
    ) -> Pieces:
        start = random_start(tracks[home], length, rng)
        target = augment(self._target(tracks[home], start, length), rng)
        other = tracks[rng.integers(len(tracks))] if self.random_mix else tracks[home]
        other_start = random_start(other, length, rng) if self.random_mix else start
        return [target, self._others(other, other_start, length, augment, rng)], None

    def at(self, track: CachedTrack, start: int, length: int) -> Pieces:
        rest = self._others(track, start, length, NO_AUGMENT, None)
        return [self._target(track, start, length), rest], None


def mixture_of(pieces: Pieces) -> np.ndarray:
    """The mixture of a chunk: its explicit mixture, else the sum of its sources."""
    sources, mixture = pieces
    return mixture if mixture is not None else sum(sources)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys, shuffled per epoch; Lightning calls ``set_epoch``.

    ``skip`` gives how many keys of this epoch were already consumed: a run resumed
    mid-epoch continues with the unseen chunks. :meth:`resume` sets the position a
    checkpoint saved; without one (checkpoints older than the loader's state) ``skip`` is
    asked when iteration starts.
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True, skip: Callable[[], int] | None = None
    ) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.skip = skip
        self._resume: tuple[int, int] | None = None

    def consumed(self) -> int:
        """Keys of the current epoch already consumed."""
        return self.skip() if self.skip is not None else 0

    def resume(self, epoch: int, consumed: int) -> None:
        """Start the next iteration of ``epoch`` after its first ``consumed`` keys."""
        self._resume = (int(epoch), int(consumed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.size)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        resume, self._resume = self._resume, None
        start = resume[1] if resume is not None and resume[0] == self.epoch else self.consumed()
        return iter((self.epoch, int(i)) for i in order[start:])


class _Chunks(Dataset):
    """Shared assembly of an item from a mixer's pieces."""

    def __init__(
        self, tracks: Sequence[CachedTrack], mixer: Mixer, seq_samples: int, return_sources: bool
    ) -> None:
        if not tracks:
            raise LongsepError("no tracks to draw chunks from")
        self.tracks = list(tracks)
        self.mixer = mixer
        self.sources = mixer.names
        self.seq_samples = seq_samples
        self.return_sources = return_sources

    def _assemble(self, pieces: Pieces) -> Item:
        stems, mixture = pieces
        sources = torch.from_numpy(np.stack(stems))
        target = list(self.mixer.target)
        out = {
            "mixture": sources.sum(0) if mixture is None else torch.from_numpy(mixture),
            "target": sources[target[0]].clone() if len(target) == 1 else sources[target].sum(0),
        }
        if self.return_sources:
            out["sources"] = sources
        return out


class TrainChunks(_Chunks):
    """``size`` random training chunks per epoch, keyed by EpochSampler's ``(epoch, index)``;
    item ``index``'s own track is ``tracks[index * len(tracks) // size]``."""

    def __init__(
        self,
        tracks: Sequence[CachedTrack],
        mixer: Mixer,
        seq_samples: int,
        size: int,
        augment: Augment,
        seed: int,
        return_sources: bool = False,
    ) -> None:
        super().__init__(tracks, mixer, seq_samples, return_sources)
        self.size, self.augment, self.seed = size, augment, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int] | int) -> Item:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        home = index * len(self.tracks) // self.size
        return self._assemble(
            self.mixer.draw(self.tracks, home, rng, self.seq_samples, self.augment)
        )


class ValidChunks(_Chunks):
    """Deterministic validation chunks: ``chunks_per_track`` evenly spaced offsets."""

    def __init__(
        self,
        tracks: Sequence[CachedTrack],
        mixer: Mixer,
        seq_samples: int,
        chunks_per_track: int = 1,
        return_sources: bool = False,
    ) -> None:
        super().__init__(tracks, mixer, seq_samples, return_sources)
        self.items: list[tuple[int, int]] = []
        for t, track in enumerate(self.tracks):
            span = max(0, track.samples - seq_samples)
            n = chunks_per_track if span > 0 else 1
            for k in range(n):
                self.items.append((t, (span * (2 * k + 1)) // (2 * n)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        t, start = self.items[index]
        return self._assemble(self.mixer.at(self.tracks[t], start, self.seq_samples))
