"""Your own multitrack stems: ``root/{train,valid,test}/<track>/<stem>.wav`` (or .flac, ...).

Stems have any names: listed in the config (``stems: [guitar, keys, vocals]``) or found
on disk (``stems: null``: the union of the stem files of every track, each track must
then hold all of them). A file ``mixture.*`` is ignored: as in MUSDB18, the mixture is
the sum of the stems, so training can mix stems across tracks (``random_mix``). The
target (``src``) is a stem or a sum of stems (:func:`~longsep.data.chunks.target_stems`).
Tracks may differ in length; the stems of one track are cut to the shortest. ``test``
may be absent; ``valid`` holds at least one track.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longsep import audio
from longsep.errors import LongsepError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MIXTURE = "mixture"


@dataclass(frozen=True)
class FileSource:
    """One source of a :class:`FileTrack`, read like a ``musdb`` source."""

    path: Path
    rate: int
    samples: int

    @property
    def audio(self) -> np.ndarray:
        """``(samples, channels)`` float32 at the track's rate."""
        return audio.load(self.path, sample_rate=self.rate).numpy().T[: self.samples]


@dataclass(frozen=True)
class FileTrack:
    """A track folder with one audio file per source (``files``: source -> file).

    It reads like a ``musdb`` track for evaluation: ``rate`` (of its first file),
    ``sources`` (every file but ``mixture``'s), ``audio`` (the ``mixture`` file when
    named, else the sum of the sources), all cut to the shortest file.
    """

    name: str
    subset: str
    path: Path
    files: dict[str, Path]
    mixture: str | None = None

    @property
    def rate(self) -> int:
        return audio.info(next(iter(self.files.values()))).sample_rate

    @property
    def samples(self) -> int:
        """Length in samples at :attr:`rate` of the shortest file."""
        rate = self.rate
        lengths = []
        for path in self.files.values():
            meta = audio.info(path)
            lengths.append(meta.frames * rate // meta.sample_rate)
        return min(lengths)

    @property
    def sources(self) -> dict[str, FileSource]:
        rate, samples = self.rate, self.samples
        return {n: FileSource(p, rate, samples) for n, p in self.files.items() if n != self.mixture}

    @property
    def audio(self) -> np.ndarray:
        """The mixture, ``(samples, channels)`` float32."""
        if self.mixture is not None:
            return FileSource(self.files[self.mixture], self.rate, self.samples).audio
        return sum(s.audio for s in self.sources.values())


def audio_files(folder: Path) -> dict[str, Path]:
    """``{stem: file}`` of the audio files of a folder; two files of one stem are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not audio.is_audio_file(path):
            continue
        stem = path.stem
        if stem in found:
            raise LongsepError(f"{folder}: {found[stem].name} and {path.name} are the same stem")
        found[stem] = path
    return found


def track_folders(root: Path, split: str) -> list[Path]:
    """The track folders of ``root/split`` (none when it does not exist)."""
    base = root / split
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_root(root: str | None, layout: str) -> Path:
    """``data.root`` as an existing folder, else a one-line error showing ``layout``."""
    if not root:
        raise LongsepError(f"data.root is not set: give data.root=/path/to/folder ({layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise LongsepError(f"data.root={root} does not exist: expected the layout {layout}")
    return path


class FolderTracks:
    """The splits of a folder of track folders of named stems (module docstring): what
    evaluation reads and :class:`~longsep.data.datamodules.FolderDataModule` trains on.

    ``stems``: the stems of every track (None: found on disk).
    """

    layout = "<root>/train/<track>/<stem>.wav"
    valid_hint = "add <root>/valid/<track>/<stem>.wav folders"

    def __init__(self, root: str | None, stems: Sequence[str] | None = None) -> None:
        self.folder = check_root(root, self.layout)
        self.stems = tuple(stems) if stems else self._found_stems()

    def _found_stems(self) -> tuple[str, ...]:
        """The union of the stems of every track (``mixture`` aside)."""
        found: dict[str, None] = {}
        for split in SPLITS:
            for folder in track_folders(self.folder, split):
                found.update(dict.fromkeys(s for s in audio_files(folder) if s != MIXTURE))
        if not found:
            raise LongsepError(f"data.root={self.folder} holds no stems: expected {self.layout}")
        return tuple(found)

    def track_files(self, folder: Path) -> dict[str, Path] | None:
        """``{stem: file}`` of the stems of one track folder (None: leave the track out)."""
        files = audio_files(folder)
        for stem in self.stems:
            if stem not in files:
                raise LongsepError(
                    f"{folder}: no {stem}.wav (or .flac): every track needs the stems "
                    f"{', '.join(self.stems)}"
                )
        return {s: files[s] for s in self.stems}

    def tracks(self, split: str) -> list[FileTrack]:
        """The tracks of ``split``; an empty ``train`` split is an error."""
        out = []
        for folder in track_folders(self.folder, split):
            files = self.track_files(folder)
            if files is not None:
                out.append(FileTrack(folder.name, split, folder, files))
        if not out and split == "train":
            raise LongsepError(
                f"no train tracks in data.root={self.folder}: expected {self.layout}"
            )
        return out
