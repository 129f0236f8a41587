"""What every entry point shares: one-line user errors, device choice, run names."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import OmegaConf

from longsep import config
from longsep.data.chunks import target_name
from longsep.errors import LongsepError
from longsep.models.build import is_no_attention
from longsep.training.interrupts import Interrupted

log = logging.getLogger("longsep")


def run_name(
    separator: str, attention: str | None, src: Any, seq_len: float, reach: Any = None
) -> str:
    """``umx_transformer-qkvg1D-vocals-30s``: the directory name of a training run
    (a target summed from stems, ``src=[drums,bass]``, reads ``drums+bass``; a limited
    ``reach`` adds ``-reach7.5s``).

    Hydra resolves it before the job starts, where an error would be a traceback: a bad
    ``seq_len`` is kept as typed here and refused in one line by the job (:func:`seconds`).
    """
    parts = [separator] + ([] if is_no_attention(attention) else [attention])
    parts += [target_name(src), f"{_as_seconds(seq_len)}s"]
    if reach is not None:
        parts.append(f"reach{_as_seconds(reach)}s")
    return "-".join(parts)


def _as_seconds(value: Any) -> str:
    """``30`` for 30.0, the value as typed when it is not a number."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def seconds(value: Any, key: str) -> float:
    """``value`` as a positive number of seconds; a one-line error naming ``key`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise LongsepError(f"{key}={value}: give a positive number of seconds")
    return number


def names(value: Any) -> list[str] | None:
    """A list of names from a Hydra value: ``x`` or ``[x,y]`` (never split into letters);
    None for null or empty."""
    if not value:
        return None
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def register_resolvers() -> None:
    """Resolvers the entry-point configs use (idempotent)."""
    config.register_resolvers()
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name)


def _to_log_files(level: int, message: str) -> None:
    """``message`` into the run's log files only: the console gets it once, from print."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report a :class:`LongsepError` as one line and exit 2 (traceback if
    HYDRA_FULL_ERROR=1); an interrupted run as one line and exit 128 + the signal's number
    (130 for SIGINT, 143 for SIGTERM)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as exc:
            where = "before training" if exc.step is None else f"at step {exc.step}"
            message = f"interrupted by {exc.name} {where}; the same command resumes it"
            message += " (a single run: add ckpt_path=last)"
            _to_log_files(logging.WARNING, message)
            print(message, file=sys.stderr)
            sys.exit(exc.exit_code)
        except LongsepError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _to_log_files(logging.ERROR, f"error: {exc}")
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def pick_accelerator(gpu: int | None) -> dict[str, Any]:
    """Trainer device arguments for the ``gpu`` key (None: first GPU if any, else CPU)."""
    count = torch.cuda.device_count()
    if gpu is None:
        return {"accelerator": "gpu" if count else "cpu"}
    if not 0 <= int(gpu) < count:
        raise LongsepError(
            f"gpu={gpu} but {count} CUDA device(s) are visible: use gpu=null for automatic choice"
        )
    return {"accelerator": "gpu", "devices": [int(gpu)]}
