"""Writing separated stems to files while a song is separated (a worker thread a song)."""

from __future__ import annotations

import logging
import queue
import string
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from torch import Tensor

from longsep import audio
from longsep.errors import LongsepError

log = logging.getLogger(__name__)

FORMAT_KEYS = ("track", "target", "codec", "filename", "instrument", "foldername")
PathLike = str | Path


def track_name(path: PathLike) -> str:
    """The ``{track}`` of an input: its stem, or its folder for ``<track>/mixture.<ext>``."""
    path = Path(path)
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


def check_filename_format(filename_format: str) -> None:
    """Refuse a ``filename_format`` that uses keys other than :data:`FORMAT_KEYS`."""
    try:
        keys = {field for _, field, _, _ in string.Formatter().parse(filename_format) if field}
    except ValueError as exc:
        raise LongsepError(f"filename_format={filename_format!r} is malformed: {exc}") from exc
    unknown = keys - set(FORMAT_KEYS)
    if unknown:
        raise LongsepError(
            f"filename_format={filename_format!r} uses unknown key(s) {sorted(unknown)}: "
            "use " + ", ".join(f"{{{key}}}" for key in FORMAT_KEYS)
        )


def output_path(
    out_dir: PathLike, filename_format: str, input_path: PathLike, target: str, codec: str
) -> Path:
    """Where ``target`` of ``input_path`` is written: ``out_dir / filename_format`` filled in.

    Keys: ``{track}`` (:func:`track_name`), ``{target}``, ``{codec}``, and Spleeter's
    ``{filename}`` (the input's file name without extension), ``{instrument}`` (= target)
    and ``{foldername}`` (the input's folder name).
    """
    path = Path(input_path)
    name = filename_format.format(
        track=track_name(path),
        target=target,
        codec=codec,
        filename=path.stem,
        instrument=target,
        foldername=path.resolve().parent.name,
    )
    return Path(out_dir) / name


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
        self.queue: queue.Queue = queue.Queue(maxsize=2)

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
        if item is None:
            return {}  # aborted by the producer: nothing written
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


class ExportError(LongsepError):
    """Background exports failed; ``inputs`` are the songs whose files were not written."""

    def __init__(self, failures: Mapping[Path, str]) -> None:
        self.inputs = list(failures)
        details = "; ".join(f"{path}: {message}" for path, message in failures.items())
        super().__init__(f"export failed for {len(failures)} song(s): {details}")


class ExportQueue:
    """Songs whose files are being written in worker threads, at most ``depth`` in flight.

    :meth:`submit` starts a song's :meth:`SongExport.run`; :meth:`join` waits for all and
    raises one :class:`ExportError` naming every song that failed.
    """

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Path, Future]] = deque()
        self._failures: dict[Path, str] = {}

    def submit(self, song: Path, run: Callable[[], dict[str, Path]]) -> Future:
        """Run ``run`` in a worker once fewer than ``depth`` songs are in flight."""
        while len(self._pending) >= self.depth:
            self._settle(*self._pending.popleft())
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.depth, thread_name_prefix="export")
        future = self._executor.submit(run)
        self._pending.append((song, future))
        return future

    def _settle(self, song: Path, future: Future) -> None:
        wait([future])
        if future.exception() is not None:
            self._failures[song] = str(future.exception())

    def join(self) -> None:
        """Wait for every export; raise :class:`ExportError` if any failed."""
        while self._pending:
            self._settle(*self._pending.popleft())
        failures, self._failures = self._failures, {}
        if failures:
            raise ExportError(failures)
