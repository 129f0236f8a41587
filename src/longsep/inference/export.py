"""Writing separated stems to files while a song is separated (a worker thread a song)."""

from __future__ import annotations

import logging
import queue
import string
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import torch
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


def check_filename_format(filename_format: str, targets: Sequence[str] | None = None) -> None:
    """Refuse a ``filename_format`` that uses keys other than :data:`FORMAT_KEYS`, that is
    absolute or climbs out of ``out_dir`` (``..``), or that names no target while more than
    one of ``targets`` is written (they would overwrite each other)."""
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
    if Path(filename_format).is_absolute() or filename_format.startswith("~"):
        raise LongsepError(
            f"filename_format={filename_format!r} is absolute: give a path relative to out_dir"
        )
    if ".." in Path(filename_format).parts:
        raise LongsepError(f"filename_format={filename_format!r} climbs out of out_dir ('..')")
    if targets is not None and len(targets) > 1 and not keys & {"target", "instrument"}:
        raise LongsepError(
            f"filename_format={filename_format!r} has no {{target}}: the {len(targets)} "
            "targets would be written to one file"
        )


def safe_part(value: str) -> str:
    """A file-name value that stays one path component: separators become ``_``, and an
    empty, ``.`` or ``..`` name becomes underscores."""
    value = value.replace("/", "_").replace("\\", "_").replace("\0", "_")
    return "_" * max(1, len(value)) if value in ("", ".", "..") else value


def output_path(
    out_dir: PathLike, filename_format: str, input_path: PathLike, target: str, codec: str
) -> Path:
    """Where ``target`` of ``input_path`` is written: ``out_dir / filename_format`` filled in.

    Keys: ``{track}`` (:func:`track_name`), ``{target}``, ``{codec}``, and Spleeter's
    ``{filename}`` (the input's file name without extension), ``{instrument}`` (= target)
    and ``{foldername}`` (the input's folder name).
    Every value is made one safe path component (:func:`safe_part`) and the result must lie
    inside ``out_dir``: nothing is written elsewhere, whatever the input is called.
    """
    path = Path(input_path)
    name = filename_format.format(
        track=safe_part(track_name(path)),
        target=safe_part(target),
        codec=safe_part(codec),
        filename=safe_part(path.stem),
        instrument=safe_part(target),
        foldername=safe_part(path.resolve().parent.name),
    )
    out = Path(out_dir) / name
    root = Path(out_dir).resolve()
    if not out.resolve().is_relative_to(root) or out.resolve() == root:
        raise LongsepError(f"{path}: its output {out} would lie outside out_dir={out_dir}")
    return out


def plan_outputs(
    inputs: Sequence[PathLike],
    out_dir: PathLike,
    filename_format: str,
    targets: Sequence[str],
    codec: str,
) -> dict[Path, dict[str, Path]]:
    """Every output path of a run, computed before anything is separated; two inputs (or
    targets) that would write one file are a one-line error naming both."""
    check_filename_format(filename_format, targets)
    plan: dict[Path, dict[str, Path]] = {}
    owner: dict[Path, tuple[Path, str]] = {}
    for item in inputs:
        source = Path(item)
        plan[source] = {}
        for target in targets:
            out = output_path(out_dir, filename_format, source, target, codec)
            key = out.resolve()
            if key in owner:
                other, other_target = owner[key]
                raise LongsepError(
                    f"{source} ({target}) and {other} ({other_target}) would both be written "
                    f"to {out}: separate them into different out_dir, or put {{foldername}} "
                    "in filename_format"
                )
            owner[key] = (source, target)
            plan[source][target] = out
    return plan


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
        complete: tuple[Callable[[Tensor, Tensor], Tensor], audio.SeekableAudio] | None = None,
    ) -> None:
        self.outputs, self.sample_rate, self.channels = dict(outputs), sample_rate, channels
        self.codec, self.length = codec, length
        # (add_the_rest(estimates, input), the input at the file's rate): closed by run()
        self.complete = complete
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
        done = 0  # samples written at the file's rate
        while (item := self.queue.get()) is not None and item is not self.END:
            if error is not None:
                continue
            try:
                chunks = [resamplers[t].push(c) for c, t in zip(item, writers, strict=True)]
                if self.complete is not None and chunks[0].shape[-1]:
                    add_the_rest, source = self.complete
                    n = chunks[0].shape[-1]
                    chunks = list(add_the_rest(torch.stack(chunks), source.read(done, done + n)))
                    done += n
                for chunk, writer in zip(chunks, writers.values(), strict=True):
                    writer.write(chunk)
            except Exception as exc:  # re-raised once the queue is drained
                error = exc
        if self.complete is not None:
            self.complete[1].close()
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
