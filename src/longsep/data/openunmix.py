"""Open-Unmix's data set types (``openunmix/data.py``): their splits and tracks.

Each reads ``root/train`` and ``root/valid`` (``root/test`` is optional); the data modules
of :mod:`longsep.data.datamodules` train on them with the cache, augmentation, seeded
chunks and batches of :class:`~longsep.data.module.TrackDataModule`:

- ``aligned``: track folders with an input and an output file (``input_file``,
  ``output_file``, glob patterns); the mixture is the input, the target the output.
- ``sourcefolder``: one folder per source, ``<split>/<source>/*.wav``; a chunk sums a
  random excerpt of a random file of ``target_dir`` and of each of ``interferer_dirs``;
  ``nb_train_samples`` / ``nb_valid_samples`` chunks per epoch (valid: fixed draws).
- ``trackfolder_fix``: track folders holding ``target_file`` and every one of
  ``interferer_files``; tracks missing one are left out. With ``random_mix`` the
  interferers come from random tracks, the target from the item's own.
- ``trackfolder_var``: track folders holding ``target_file`` and any other ``ext`` files,
  summed into the interferers (from a random track with ``random_mix``); a track without
  the target file is left out, or trained on as a silent target with ``silence_missing``.

Files named ``mixture.*`` are never taken as sources.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from longsep.data.folder import (
    MIXTURE,
    FileTrack,
    FolderTracks,
    audio_files,
    check_root,
    track_folders,
)
from longsep.errors import LongsepError

log = logging.getLogger(__name__)


def stem_of(file_name: str) -> str:
    """The stem name of a source file name (``vocals.wav`` -> ``vocals``)."""
    return Path(file_name).name.split(".")[0]


def _no_tracks(root: Path, split: str, layout: str) -> LongsepError:
    return LongsepError(f"no {split} tracks in data.root={root}: expected the layout {layout}")


class AlignedTracks:
    """Input / output file pairs per track folder (Open-Unmix ``aligned``); the target is
    named after the output file."""

    layout = "<root>/train/<track>/{input_file, output_file}"
    valid_hint = "add <root>/valid/<track>/ folders with both files"

    def __init__(
        self, root: str | None, input_file: str = "mixture.wav", output_file: str = "vocals.wav"
    ) -> None:
        self.folder = check_root(root, self.layout)
        self.input_file, self.output_file = input_file, output_file
        self.target = stem_of(output_file)

    def tracks(self, split: str) -> list[FileTrack]:
        out = []
        for folder in track_folders(self.folder, split):
            found = [sorted(folder.glob(p)) for p in (self.input_file, self.output_file)]
            if not all(found):
                log.warning("%s: no %s or %s, left out", folder, self.input_file, self.output_file)
                continue
            files = {self.target: found[1][0], MIXTURE: found[0][0]}
            out.append(FileTrack(folder.name, split, folder, files, mixture=MIXTURE))
        if not out and split == "train":
            raise _no_tracks(self.folder, split, self.layout)
        return out


class SourceFolderTracks:
    """One folder of files per source (Open-Unmix ``sourcefolder``): each file is a
    single-source track."""

    layout = "<root>/train/<source>/*.wav"
    valid_hint = "add <root>/valid/<source>/ folders"

    def __init__(
        self,
        root: str | None,
        target_dir: str = "vocals",
        interferer_dirs: Sequence[str] = ("bass", "drums"),
        ext: str = ".wav",
    ) -> None:
        self.folder = check_root(root, self.layout)
        if target_dir in interferer_dirs:
            raise LongsepError(f"data.interferer_dirs lists the target_dir {target_dir!r}")
        self.sources, self.target, self.ext = (*interferer_dirs, target_dir), target_dir, ext

    def tracks(self, split: str) -> list[FileTrack]:
        """One single-source track per file, of subset ``<split>/<source>``."""
        out = []
        for source in self.sources:
            folder = self.folder / split / source
            files = sorted(folder.glob(f"*{self.ext}")) if folder.is_dir() else []
            if not files and (split == "train" or (self.folder / split).is_dir()):
                raise LongsepError(f"{folder}: no *{self.ext} files of source {source!r}")
            out += [FileTrack(f.stem, f"{split}/{source}", f, {source: f}) for f in files]
        return out


class TrackFolderFixTracks(FolderTracks):
    """Track folders with a fixed set of source files (Open-Unmix ``trackfolder_fix``);
    tracks missing one are left out."""

    layout = "<root>/train/<track>/{target_file, interferer_files}"

    def __init__(
        self,
        root: str | None,
        target_file: str = "vocals.wav",
        interferer_files: Sequence[str] = ("bass.wav", "drums.wav"),
    ) -> None:
        self.file_names = (target_file, *interferer_files)
        super().__init__(root, [stem_of(f) for f in self.file_names])

    def track_files(self, folder: Path) -> dict[str, Path] | None:
        missing = [f for f in self.file_names if not (folder / f).is_file()]
        if missing:
            log.warning("%s: no %s, left out", folder, missing[0])
            return None
        return {stem_of(f): folder / f for f in self.file_names}


class TrackFolderVarTracks:
    """Track folders with a variable set of sources (Open-Unmix ``trackfolder_var``)."""

    layout = "<root>/train/<track>/{target_file, other sources}"
    valid_hint = "add <root>/valid/<track>/ folders"

    def __init__(
        self,
        root: str | None,
        target_file: str = "vocals.wav",
        ext: str = ".wav",
        silence_missing: bool = False,
    ) -> None:
        self.folder = check_root(root, self.layout)
        self.target_file, self.target, self.ext = target_file, stem_of(target_file), ext
        self.silence_missing = silence_missing

    def tracks(self, split: str) -> list[FileTrack]:
        out = []
        for folder in track_folders(self.folder, split):
            files = {
                s: p
                for s, p in audio_files(folder).items()
                if s != MIXTURE and p.name.endswith(self.ext)
            }
            if not files or (self.target not in files and not self.silence_missing):
                log.warning("%s: no %s, left out", folder, self.target_file)
                continue
            out.append(FileTrack(folder.name, split, folder, files))
        if not out and split == "train":
            raise _no_tracks(self.folder, split, self.layout)
        return out
