"""The LightningDataModules of each data set: MUSDB18 (and the built-in sets), folders of
stems, Open-Unmix's layouts.

Each pairs a track set, which lists a split's tracks (:mod:`longsep.data.musdb`,
:mod:`longsep.data.folder`, :mod:`longsep.data.openunmix`; evaluation reads those alone,
without Lightning), with :class:`~longsep.data.module.TrackDataModule`: tracks are decoded
once into a :class:`~longsep.data.cache.TrackCache` and batches are dicts

- ``mixture``: ``(batch, channels, samples)``, the sum of the (augmented) sources,
- ``target``:  ``(batch, channels, samples)``, the ``target`` source (or ``accompaniment``,
  the sum of all but vocals),
- ``sources``: ``(batch, n_sources, channels, samples)`` when ``return_sources=True``,

with ``samples = round(seq_len * sample_rate)``. Training chunks are random (offset,
track per source, gain, channel swap) yet reproducible: each is drawn from a generator
seeded by ``(seed, epoch, index)``, so a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longsep import TARGETS
from longsep.data.cache import CachedTrack
from longsep.data.chunks import (
    NO_AUGMENT,
    AlignedMixer,
    PoolMixer,
    StemMixer,
    TrainChunks,
    VariableMixer,
    target_stems,
)
from longsep.data.folder import MIXTURE, FolderTracks
from longsep.data.module import TrackDataModule
from longsep.data.musdb import MUSDBTracks, cache_musdb_track
from longsep.data.openunmix import (
    AlignedTracks,
    SourceFolderTracks,
    TrackFolderFixTracks,
    TrackFolderVarTracks,
    stem_of,
)
from longsep.errors import LongsepError


class MUSDBDataModule(TrackDataModule):
    """Train / valid chunks of ``seq_len`` seconds from a MUSDB18-layout data set
    (:class:`~longsep.data.musdb.MUSDBTracks`; options of
    :class:`~longsep.data.module.TrackDataModule`); each stem of a training chunk comes
    from a random track when ``random_mix``."""

    def __init__(
        self,
        root: str | None,
        target: str | Sequence[str] = "vocals",
        is_wav: bool = True,
        download: bool = False,
        setup_file: str | None = None,
        generate: Mapping[str, Any] | None = None,
        random_mix: bool = True,
        **options: Any,
    ) -> None:
        self.target_stems = target_stems(target, TARGETS)
        self.source = MUSDBTracks(root, is_wav, download, setup_file, generate)
        super().__init__(root, target, **options)
        self.random_mix = random_mix

    @property
    def stats_dir(self) -> Path:
        return self.cache.dir  # always the four sources

    def cache_track(self, track: Any) -> None:
        cache_musdb_track(self.cache, track)

    def prepare_data(self) -> None:
        """Generate the synthetic set if configured, then fill the decoded-audio cache."""
        self.source.prepare()
        super().prepare_data()

    def mixer(self, tracks: Sequence[CachedTrack]) -> StemMixer:
        return StemMixer(tracks[0].sources, self.target_stems, self.random_mix)


class FolderDataModule(TrackDataModule):
    """Chunks from track folders of named stems (:class:`~longsep.data.folder.FolderTracks`;
    options of :class:`~longsep.data.module.TrackDataModule`)."""

    anchor_target = False  # keep the target stems on the item's own track

    def __init__(
        self,
        root: str | None,
        target: str | Sequence[str] = "vocals",
        stems: Sequence[str] | None = None,
        random_mix: bool = True,
        **options: Any,
    ) -> None:
        self._with_stems(FolderTracks(root, stems), root, target, random_mix, options)

    def _with_stems(
        self, source: FolderTracks, root: str | None, target: Any, random_mix: bool, options: dict
    ) -> None:
        self.source, self.stems = source, source.stems
        self.target_stems = target_stems(target, self.stems)
        self.random_mix = random_mix
        TrackDataModule.__init__(self, root, target, **options)

    def mixer(self, tracks: Sequence[CachedTrack]) -> StemMixer:
        return StemMixer(self.stems, self.target_stems, self.random_mix, self.anchor_target)


class TrackFolderFixDataModule(FolderDataModule):
    """Track folders with a fixed set of source files (Open-Unmix ``trackfolder_fix``,
    :class:`~longsep.data.openunmix.TrackFolderFixTracks`); with ``random_mix`` the
    interferers come from random tracks, the target from the item's own."""

    anchor_target = True

    def __init__(
        self,
        root: str | None,
        target_file: str = "vocals.wav",
        interferer_files: Sequence[str] = ("bass.wav", "drums.wav"),
        random_mix: bool = False,
        **options: Any,
    ) -> None:
        source = TrackFolderFixTracks(root, target_file, interferer_files)
        self._with_stems(source, root, stem_of(target_file), random_mix, options)


class AlignedDataModule(TrackDataModule):
    """Input / output file pairs per track folder (Open-Unmix ``aligned``,
    :class:`~longsep.data.openunmix.AlignedTracks`)."""

    def __init__(
        self,
        root: str | None,
        input_file: str = "mixture.wav",
        output_file: str = "vocals.wav",
        **options: Any,
    ) -> None:
        self.source = AlignedTracks(root, input_file, output_file)
        super().__init__(root, self.source.target, **options)

    def mixer(self, tracks: Sequence[CachedTrack]) -> AlignedMixer:
        return AlignedMixer(self.target, MIXTURE)


class SourceFolderDataModule(TrackDataModule):
    """One folder of files per source (Open-Unmix ``sourcefolder``,
    :class:`~longsep.data.openunmix.SourceFolderTracks`): random excerpts of random files
    mixed, ``nb_train_samples`` / ``nb_valid_samples`` chunks per epoch (valid: fixed
    draws); ``samples_per_track`` does not apply."""

    def __init__(
        self,
        root: str | None,
        target_dir: str = "vocals",
        interferer_dirs: Sequence[str] = ("bass", "drums"),
        ext: str = ".wav",
        nb_train_samples: int = 1000,
        nb_valid_samples: int = 100,
        **options: Any,
    ) -> None:
        self.source = SourceFolderTracks(root, target_dir, interferer_dirs, ext)
        self.nb_train, self.nb_valid = nb_train_samples, nb_valid_samples
        super().__init__(root, target_dir, **options)

    def mixer(self, tracks: Sequence[CachedTrack]) -> PoolMixer:
        sources = self.source.sources
        pools = [[i for i, t in enumerate(tracks) if t.sources[0] == s] for s in sources]
        for source, pool in zip(sources, pools, strict=True):
            if not pool:
                raise LongsepError(
                    f"{self.source.folder}/train/{source}: no file as long as "
                    f"seq_len={self.seq_len:g} s (lower seq_len or set data.short_tracks=pad)"
                )
        return PoolMixer(sources, (self.target,), pools)

    def train_chunks(self, tracks: list[CachedTrack]) -> TrainChunks:
        return TrainChunks(
            tracks,
            self.mixer(tracks),
            self.seq_samples,
            self.nb_train,
            self.augment,
            self.seed,
            self.return_sources,
        )

    def valid_chunks(self, tracks: list[CachedTrack]) -> TrainChunks:
        """``nb_valid_samples`` draws fixed by their index, without augmentation."""
        return TrainChunks(
            tracks,
            self.mixer(tracks),
            self.seq_samples,
            self.nb_valid,
            NO_AUGMENT,
            self.seed,
            self.return_sources,
        )


class TrackFolderVarDataModule(TrackDataModule):
    """Track folders with a variable set of sources (Open-Unmix ``trackfolder_var``,
    :class:`~longsep.data.openunmix.TrackFolderVarTracks`): the other files are summed
    into the interferers (from a random track with ``random_mix``); a track without the
    target file is left out, or trained on as a silent target with ``silence_missing``."""

    def __init__(
        self,
        root: str | None,
        target_file: str = "vocals.wav",
        ext: str = ".wav",
        random_mix: bool = False,
        silence_missing: bool = False,
        **options: Any,
    ) -> None:
        self.source = TrackFolderVarTracks(root, target_file, ext, silence_missing)
        self.random_mix = random_mix
        super().__init__(root, self.source.target, **options)

    def mixer(self, tracks: Sequence[CachedTrack]) -> VariableMixer:
        return VariableMixer(self.target, self.random_mix)
