"""Songs on disk through a :class:`~longsep.inference.separator.Separator`: the input read
window by window, the stems written while the song is separated, in worker threads, each
file atomically.

The separator itself only maps tensors to tensors; this layer owns the files, the codecs and
the export threads. The heap policy for long songs (:func:`longsep.heap.unmap_large_blocks`)
is the command line's choice (``separate.py`` sets it), not this layer's.
"""

from __future__ import annotations

from concurrent.futures import wait
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from longsep import audio
from longsep.errors import LongsepError
from longsep.inference.export import ExportQueue, SongExport, check_filename_format, output_path
from longsep.inference.streaming import MappedSource

if TYPE_CHECKING:
    from longsep.inference.separator import Separator

PathLike = str | Path


class FileSeparation:
    """Separates audio files with one separator and writes their stems; at most ``depth``
    songs are being written in the background at once (:meth:`join` waits for them)."""

    def __init__(self, depth: int = 2) -> None:
        self._exports = ExportQueue(depth=depth)

    def separate(
        self,
        separator: Separator,
        input_path: PathLike,
        out_dir: PathLike,
        codec: str = "wav",
        bitrate: str | int | None = None,
        filename_format: str = "{track}/{target}.{codec}",
        start: float = 0.0,
        duration: float | None = None,
        synchronous: bool = True,
    ) -> dict[str, Path]:
        """Separate ``input_path`` and write one file per target; return their paths.

        The input is read window by window (:class:`longsep.audio.SeekableAudio`: in place,
        or from a temporary raw file at the model rate) and the targets are written while
        the song is separated, chunk by chunk, by a background thread (resampled back to the
        file's rate on the fly), so memory holds neither the input nor the outputs. Files
        appear complete or not at all. With ``synchronous=False`` the call returns once the
        song is separated while its files are finished in the background (at most one
        earlier song stays in flight); :meth:`join` waits for them and raises export errors.
        """
        check_filename_format(filename_format, separator.targets)
        audio.check_codec(codec, bitrate)
        path = Path(input_path)
        with audio.SeekableAudio(path, separator.sample_rate, start, duration) as file:
            try:
                separator.check_length(file.channels, file.samples)
            except LongsepError as exc:
                raise LongsepError(f"{path}: {exc}") from exc
            outputs = {
                target: output_path(out_dir, filename_format, path, target, codec)
                for target in separator.targets
            }
            complete = None
            if file.file_rate != separator.sample_rate and separator.band_target is not None:
                native = audio.SeekableAudio(path, file.file_rate, start, duration)
                complete = (separator.complete, native)  # the band above the model's
            export = SongExport(
                outputs, file.file_rate, file.channels, codec, bitrate, file.length, complete
            )
            future = self._exports.submit(
                path, lambda: export.run(separator.sample_rate, file.samples)
            )
            try:
                with torch.inference_mode():
                    source = MappedSource(file, lambda x: x[None])
                    for _, chunk in separator.chunks(source, 1, file.channels):
                        export.put(chunk[0])
            except BaseException:
                export.put(None)
                wait([future])
                raise
            export.put(SongExport.END)
            if synchronous:
                self._exports.join()
        return outputs

    def join(self) -> None:
        """Wait for all background exports; raise one
        :class:`~longsep.inference.export.ExportError` naming every song whose files could
        not be written."""
        self._exports.join()
