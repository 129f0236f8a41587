"""The commands and wall time a study report ends with (longsep.study.provenance)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from longsep.study.provenance import (
    compute_markdown,
    parallel_jobs,
    sweep_command,
    training_seconds,
)

COMMITTED = ROOT / "experiments" / "results" / "context_control" / "runs"


def _record(job: str, train: float, steps: int, step: float, scoring: float) -> dict:
    return {
        "status": "ok", "job": job, "train_seconds": train, "global_step": steps,
        "step_seconds": step, "eval_seconds": scoring,
        "overrides": ["seed=42", "arm=B", "+experiment=context_control_arms_cpu"],
    }  # fmt: skip


def test_the_sweep_command_is_the_one_the_makefile_ran():
    """Hydra's own multirun.yaml of the committed first control gives back the Makefile's
    line (less its OMP_NUM_THREADS and the $(BIN) / $(SCRIPTS) paths)."""
    makefile = (ROOT / "Makefile").read_text()
    jobs = re.search(r"^JOBLIB2\s*:?=\s*(.+)$", makefile, re.M).group(1).strip()
    assert (
        sweep_command(COMMITTED) == f"python train.py +experiment=context_control_arms_cpu {jobs}"
    )
    assert parallel_jobs(COMMITTED) == 2


def test_a_sweep_without_its_multirun_record_has_no_command(tmp_path):
    assert sweep_command(tmp_path) is None
    assert parallel_jobs(tmp_path) == 1
    assert "No finished runs yet." in compute_markdown(tmp_path, [])


def test_a_run_resumed_under_old_code_is_estimated_and_marked():
    whole = _record("a", 3600.0, 2400, 1.5, 60.0)
    resumed = _record("b", 600.0, 2400, 1.5, 60.0)  # only its last process's seconds
    assert training_seconds(whole) == (3600.0, False)
    assert training_seconds(resumed) == (pytest.approx(3600.0), True)


def test_totals_rows_and_commands(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  launcher:\n    n_jobs: 2\n  overrides:\n"
        "    hydra: [hydra/launcher=joblib, hydra.launcher.n_jobs=2]\n"
        '    task: [+experiment=x, "seq_len=7,30"]\n'
    )
    records = [
        _record("a", 3600.0, 2400, 1.5, 60.0),
        _record("b", 600.0, 2400, 1.5, 60.0),
        {"status": "failed", "job": "c", "error": "boom"},
    ]
    text = compute_markdown(tmp_path, records)
    assert "python train.py +experiment=x seq_len=7,30 hydra/launcher=joblib" in text
    rows = [
        line for line in text.splitlines() if line.startswith("| a |") or line.startswith("| b |")
    ]
    assert len(rows) == 2 and "| c |" not in text
    assert "`python train.py seed=42 arm=B +experiment=context_control_arms_cpu`" in rows[0]
    assert rows[0].endswith("| 1.00 | 1.0 |") and rows[1].endswith("| 1.00 est. | 1.0 |")
    assert "2 runs, 2.0 h of training and 2 min of scoring" in text
    assert "with 2 side by side ≈ 1.0 h elapsed" in text
