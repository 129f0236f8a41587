"""Writing separated stems to files while a song is separated (a worker thread a song)."""

from __future__ import annotations

import queue
import string
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from longsep import audio
from longsep.errors import LongsepError

FORMAT_KEYS = ("track", "target", "codec")
PathLike = str | Path


def track_name(path: PathLike) -> str:
    """The ``{track}`` of an input: its stem, or its folder for ``<track>/mixture.<ext>``."""
    path = Path(path)
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


def check_filename_format(filename_format: str) -> None:
    """Refuse a ``filename_format`` that uses keys other than track, target and codec."""
    try:
        keys = {field for _, field, _, _ in string.Formatter().parse(filename_format) if field}
    except ValueError as exc:
        raise LongsepError(f"filename_format={filename_format!r} is malformed: {exc}") from exc
    unknown = keys - set(FORMAT_KEYS)
    if unknown:
        raise LongsepError(
            f"filename_format={filename_format!r} uses unknown key(s) {sorted(unknown)}: "
            f"use {{track}}, {{target}} and {{codec}}"
        )


class SongExport:
    """Writes one song's target files from separated chunks, in a worker thread.

    The producer passes ``(targets, channels, n)`` chunks at the model rate to :meth:`put`,
    then :attr:`END` (commit every file) or ``None`` (abort: delete the partial files). The
    worker resamples each target to the file's rate, writes it, and raises the first
    write error once the producer has finished (it keeps draining the queue so the
    producer never blocks on a dead consumer).
    """

    END = "end"

    def __init__(
        self,
        outputs: Mapping[str, Path],
        sample_rate: int,
        channels: int,
        codec: str,
        bitrate: str | int | None,
        length: int,
    ) -> None:
        self.outputs, self.sample_rate, self.channels = dict(outputs), sample_rate, channels
        self.codec, self.length = codec, length
        self.bitrate = audio.parse_bitrate(bitrate)
        self.queue: queue.Queue = queue.Queue(maxsize=4)

    def put(self, item: Tensor | str | None) -> None:
        """Queue a chunk, :attr:`END` or ``None`` (blocks while the worker is behind)."""
        self.queue.put(item)

    def run(self, model_rate: int, model_samples: int) -> dict[str, Path]:
        """Consume the queue until END or abort; return the files written."""
        writers: dict[str, audio.AudioWriter] = {}
        error: BaseException | None = None
        try:
            for target, out in self.outputs.items():
                writers[target] = audio.AudioWriter(
                    out, self.sample_rate, self.channels, self.codec, self.bitrate
                )
            resamplers = {
                target: audio.StreamResampler(
                    model_rate, self.sample_rate, model_samples, out_length=self.length
                )
                for target in self.outputs
            }
        except Exception as exc:  # re-raised once the queue is drained
            error = exc
        while (item := self.queue.get()) is not None and item is not self.END:
            if error is not None:
                continue
            try:
                for chunk, (target, writer) in zip(item, writers.items(), strict=True):
                    writer.write(resamplers[target].push(chunk))
            except Exception as exc:  # re-raised once the queue is drained
                error = exc
        if item is None or error is not None:
            for writer in writers.values():
                writer.abort()
        if error is not None:
            raise error
        written = {}
        try:
            for target, writer in writers.items():
                written[target] = writer.commit()
        except LongsepError:
            for target, writer in writers.items():
                if target not in written:
                    writer.abort()
            raise
        return written
