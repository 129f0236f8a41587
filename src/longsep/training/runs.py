"""Run identity: which earlier run ``ckpt_path=last`` may continue.

A run's identity is a hash of its resolved config without the keys that do not change what
it trains (:data:`NOT_IDENTITY`: where files go, logging, checkpoint cadence, the device,
evaluation after training), with its own directory and the project root written as
placeholders so that the same run started elsewhere has the same identity. Runs written
before identities existed are matched through their ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from longsep.errors import LongsepError

CONFIG_FILE = "config.yaml"
LAST = Path("checkpoints") / "last.ckpt"

# dotted keys (a key and everything under it) that do not change what a run trains
NOT_IDENTITY = (
    "ckpt_path",
    "paths",
    "logger",
    "gpu",
    "evaluate_after",
    "store_dir",
    "store_dtype",
    "run_name",
    "exclude",
    "skip_invalid",
    "callbacks.model_checkpoint",
    "callbacks.last_checkpoint",
    "callbacks.media",
    "callbacks.learning_rate",
    "data.num_workers",
    "data.cache_dir",
    "trainer.default_root_dir",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
)


def _placeholders(value: Any, replace: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _placeholders(v, replace) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, replace) for v in value]
    if isinstance(value, str):
        for old, new in replace:
            value = value.replace(old, new)
    return value


def identity_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` that defines a run (see :data:`NOT_IDENTITY`)."""
    paths = config.get("paths") or {}
    replace = [
        (str(paths[key]), f"<{key}>")
        for key in ("output_dir", "root_dir")
        if paths.get(key) not in (None, "")
    ]
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if prefix and any(prefix == k or prefix.startswith(k + ".") for k in NOT_IDENTITY):
            return
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(_placeholders(config, replace), "")
    return flat


def identity(config: dict[str, Any]) -> str:
    """A short hash of :func:`identity_fields`."""
    text = json.dumps(identity_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differences(
    wanted: dict[str, Any], found: dict[str, Any], limit: int = 3, common_only: bool = False
) -> str:
    """``seed: 7 here, 42 there; ...``: the first identity keys that differ (``common_only``:
    among the keys both configs have, as a key only one has came with another longsep
    version, a new option at its default, and does not tell two runs apart)."""
    a, b = identity_fields(wanted), identity_fields(found)
    keys = set(a) & set(b) if common_only else set(a) | set(b)
    keys = sorted(k for k in keys if a.get(k, "<unset>") != b.get(k, "<unset>"))
    parts = [f"{k}: {a.get(k, '<unset>')} here, {b.get(k, '<unset>')} there" for k in keys]
    return "; ".join(parts[:limit]) + (" ..." if len(keys) > limit else "")


def check_job_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """Raise a one-line error when a sweep job's directory ``run_dir`` holds another run
    than ``config`` (its ``config.yaml`` differs in a key both have, :func:`differences`).

    Sweep jobs are named ``<job number>-<run name>`` and skip a done run / resume a killed
    one found there; a sweep re-run into a fixed ``hydra.sweep.dir`` with other value lists
    numbers its jobs differently, and a job must not take another config's run for its own.
    """
    found = read_config(run_dir)
    diff = "" if found is None else differences(config, found, common_only=True)
    if diff:
        raise LongsepError(
            f"{run_dir} holds another run ({diff}): this sweep numbers its jobs unlike the "
            "one that wrote it; give the sweep a new hydra.sweep.dir (or remove that run)"
        )


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config a run wrote, or None when it has none (or an unreadable one)."""
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def find_resumable(log_dir: Path, name: str, config: dict[str, Any]) -> Path:
    """The directory of the newest run named ``name`` under ``log_dir`` (single runs and
    sweeps) with a ``last.ckpt`` and the identity of ``config``.

    A one-line error when there is none: naming how the nearest run of that name differs.
    """
    candidates = list((log_dir / name).glob(f"*/{LAST}"))
    sweeps = log_dir / "multirun"  # a sweep job: <time>/<job number>-<name> (hydra/default.yaml)
    candidates += [*sweeps.glob(f"*/{name}/{LAST}"), *sweeps.glob(f"*/[0-9]*-{name}/{LAST}")]
    candidates.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        raise LongsepError(f"ckpt_path=last but no last.ckpt for run {name!r} under {log_dir}")
    wanted = identity(config)
    others = []
    for ckpt in candidates:
        run_dir = ckpt.parent.parent
        found = read_config(run_dir)
        if found is None:
            continue
        if identity(found) == wanted:
            return run_dir
        others.append((run_dir, found))
    if not others:
        raise LongsepError(f"ckpt_path=last: no run {name!r} under {log_dir} has a config.yaml")
    run_dir, found = others[0]
    raise LongsepError(
        f"ckpt_path=last: {len(others)} run(s) named {name!r} but none with this config "
        f"(newest {run_dir}: {differences(config, found)}); give ckpt_path=<file> to resume "
        "one anyway"
    )
