"""Atomic file writes, strict JSON and inter-process locks: the one implementation every
module uses.

A file written through :func:`atomic_write` appears complete or not at all: the content
goes to a hidden temporary sibling that is renamed over the target only once written.
:func:`file_lock` serialises work on shared files (a data set generated or cached by two
jobs of a sweep at once) between processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from longsep.errors import LongsepError

log = logging.getLogger(__name__)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block;
    a second process blocks until the first leaves it (released if the holder dies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_READING: dict[Path, Any] = {}  # folder -> the handle of this process's shared lock on it

_UMASK = os.umask(0o022)  # read once, at import: os.umask only reads by setting, which
os.umask(_UMASK)  # would race with files that other threads create


def _readers_lock(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.readers.lock"


def hold_for_reading(folder: str | Path) -> None:
    """Mark ``folder`` as read by this process until it ends (a shared ``flock``, released
    when the process dies): :func:`exclusive_use` in another process then refuses to
    change it. Waits while another process changes it."""
    folder = Path(folder).expanduser().resolve()
    if folder in _READING:
        return
    path = _readers_lock(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    _READING[folder] = handle


@contextmanager
def exclusive_use(folder: str | Path, why: str) -> Iterator[None]:
    """Hold ``folder`` alone for a change that would break its readers (deleting files);
    a one-line error, without waiting, when another process reads it
    (:func:`hold_for_reading`). This process's own reading does not count."""
    folder = Path(folder).expanduser().resolve()
    own = _READING.get(folder)
    handle = own or _readers_lock(folder).open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LongsepError(
                f"{folder} is in use by another process, and {why}: wait for it to end, "
                "or use another folder"
            ) from None
        yield
    finally:
        if own is None:
            handle.close()
        else:
            fcntl.flock(handle, fcntl.LOCK_SH)  # back to reading


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden, unique temporary name next to ``path`` (``.<name>.tmp-<pid>-<id><suffix>``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def check_writable(folder: str | Path, key: str) -> None:
    """Check that a file can be written in ``folder`` (a one-line error naming ``key``
    otherwise), before long work whose results would go there. Folders it had to create
    for the check are removed again."""
    folder = Path(folder)
    created = []
    parent = folder
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_sibling(folder / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LongsepError(f"{key}={folder} is not writable: {reason}") from None
    finally:
        for made in created:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()


def atomic_write(path: str | Path, write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary sibling, then rename it.

    ``suffix`` ends the temporary name, for writers that pick a format by extension
    (``np.save`` appends ``.npy`` otherwise). The file gets the permissions ``open()`` gives
    (``0o666`` less the umask; safetensors writes ``0o600``). On any error the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, suffix)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would: some writers make 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def replace_dir(staging: Path, final: Path) -> Path:
    """Move the fully written folder ``staging`` to ``final``, replacing an older one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def json_safe(value: Any) -> Any:
    """NaN / inf floats to None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented strict JSON (NaN as null), atomically."""
    return write_text(path, json.dumps(json_safe(data), indent=2) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON content of ``path``, or None if it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[0-9a-f]+")  # temp_sibling's names


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_dir: str | Path) -> int:
    """Delete the hidden temporary files (:func:`temp_sibling`) that killed runs left under
    ``out_dir``, those whose writing process is gone; return how many were removed."""
    root = Path(out_dir)
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.rglob(".*.tmp-*"):
        match = _TEMPORARY.match(path.name)
        if match and path.is_file() and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) of an interrupted run under %s", removed, root)
    return removed
