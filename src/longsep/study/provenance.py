"""What a sweep ran and what it cost: the commands and wall time a study report ends with.

:func:`compute_markdown` writes, from a sweep dir (or its committed copy) and its records:

- the sweep's command, rebuilt from ``<sweep>/multirun.yaml`` (Hydra's record of the task
  and launcher overrides);
- per finished run, the command that trains it alone (``python train.py`` and the job's
  overrides), its steps, mean step time, and its training and scoring wall time;
- the totals, and the elapsed time they make with the launcher's parallel jobs.

A run resumed under code that kept only its last process's seconds (before the step timer
carried its share through ``last.ckpt``) records too little training time; there the
training time is steps x mean step time, marked ``est.``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

MULTIRUN_FILE = "multirun.yaml"
_SHORT = 0.9  # recorded training seconds below this share of steps x step time: resumed


def sweep_command(sweep_dir: str | Path) -> str | None:
    """``python train.py <task overrides> <hydra overrides>`` of a multirun, or None."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        return None
    overrides = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("overrides", {})
    words = [*(overrides.get("task") or []), *(overrides.get("hydra") or [])]
    return " ".join(["python train.py", *(shlex.quote(str(w)) for w in words)])


def parallel_jobs(sweep_dir: str | Path) -> int:
    """How many jobs the sweep's launcher ran side by side (``hydra.launcher.n_jobs``)."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        return 1
    launcher = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("launcher") or {}
    n_jobs = launcher.get("n_jobs") if isinstance(launcher, Mapping) else None
    return max(1, int(n_jobs)) if isinstance(n_jobs, int) else 1


def training_seconds(record: Mapping[str, Any]) -> tuple[float, bool]:
    """A run's training wall time and whether it is estimated (see the module docstring)."""
    recorded = float(record.get("train_seconds") or 0.0)
    steps, step = record.get("global_step"), record.get("step_seconds")
    estimate = float(steps) * float(step) if steps and step else 0.0
    if recorded < _SHORT * estimate:
        return estimate, True
    return recorded, False


def _run_command(record: Mapping[str, Any]) -> str:
    words = [str(w) for w in record.get("overrides") or []]
    return " ".join(["python train.py", *(shlex.quote(w) for w in words)])


def compute_markdown(sweep_dir: str | Path, records: Sequence[Mapping[str, Any]]) -> str:
    """The report's "Commands and compute" section (see the module docstring)."""
    done = [r for r in records if r.get("status") == "ok"]
    lines = ["## Commands and compute", ""]
    command = sweep_command(sweep_dir)
    if command:
        lines += ["The sweep (Hydra multirun; it resumes where it was cut off):", ""]
        lines += ["```text", command, "```", ""]
    if not done:
        return "\n".join([*lines, "No finished runs yet.", ""])
    lines += [
        "Each finished run and the command that runs it alone (a multirun of this one job):",
        "",
        "| run | command | steps | s / step | training (h) | scoring (min) |",
        "|---|---|---|---|---|---|",
    ]
    train_total = eval_total = 0.0
    estimated = False
    for record in done:
        seconds, est = training_seconds(record)
        scoring = float(record.get("eval_seconds") or 0.0)
        train_total, eval_total = train_total + seconds, eval_total + scoring
        estimated = estimated or est
        step = record.get("step_seconds")
        lines.append(
            f"| {record.get('job', record.get('run_name', ''))} | `{_run_command(record)}` | "
            f"{record.get('global_step', '')} | {f'{step:.2f}' if step else ''} | "
            f"{seconds / 3600:.2f}{' est.' if est else ''} | {scoring / 60:.1f} |"
        )
    jobs = parallel_jobs(sweep_dir)
    total = train_total + eval_total
    lines += [
        "",
        f"Total: {len(done)} runs, {train_total / 3600:.1f} h of training and "
        f"{eval_total / 60:.0f} min of scoring, one process each; with {jobs} side by side "
        f"≈ {total / 3600 / jobs:.1f} h elapsed.",
    ]
    if estimated:
        lines.append(
            "`est.`: a run resumed under code that recorded only its last process's "
            "seconds; steps × mean step time of that process instead."
        )
    return "\n".join([*lines, ""])
