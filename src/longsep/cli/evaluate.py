"""``evaluate.py``: score a model or an oracle on a data set split, or compare evaluations.

- ``ckpt=<path>``: separate every song of ``split`` with the model and score it (BSSEval v4
  and SI-SDR); results and summary go to ``out_dir`` (:mod:`longsep.evaluation`).
- ``oracle=irm1|irm2|ibm|mwf``: the same for an oracle method
  (:mod:`longsep.evaluation.oracle`).
- ``estimates=<dir>``: score another system's ``<dir>/<track>/<target>.wav`` the same way
  (:class:`longsep.evaluation.evaluate.FolderEstimator`).
- ``compare=[dirA,dirB]``: side-by-side table and box plots
  (:mod:`longsep.evaluation.compare`).

Each returns the text to show; the entry point prints it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from longsep.cli.common import names
from longsep.errors import LongsepError
from longsep.evaluation.evaluate import (
    FolderEstimator,
    ScoringOptions,
    evaluate_model,
    evaluate_tracks,
    load_tracks,
)
from longsep.evaluation.oracle import ORACLES, OracleEstimator
from longsep.evaluation.results import format_summary
from longsep.inference.options import InferenceOptions
from longsep.store import resolve_model
from longsep.training import runs

log = logging.getLogger(__name__)


def _data_name(cfg: DictConfig) -> str:
    if cfg.get("data_name"):  # the evaluated run's data choice
        return str(cfg.data_name)
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("data")
        if choice:
            return str(choice)
    return Path(str(cfg.data.get("root") or "data")).name or "data"


def _data_overridden() -> bool:
    """Whether the command line sets anything of the data group (``data=``, ``data.x=``)."""
    if not HydraConfig.initialized():
        return True
    return any(
        o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "data"
        for o in HydraConfig.get().overrides.task
    )


def use_run_data(cfg: DictConfig, run: Path | None) -> None:
    """Evaluate a training run's model on the run's own data set: without ``data`` keys on
    the command line, ``cfg.data`` becomes the data node of the run's ``config.yaml`` (a
    synthetic set is then never generated anew with other parameters)."""
    if run is None or _data_overridden():
        return
    node = (runs.read_config(run) or {}).get("data")
    if not isinstance(node, dict):
        return
    hydra = run / ".hydra" / "hydra.yaml"
    name = None
    if hydra.is_file():
        choices = OmegaConf.select(OmegaConf.load(hydra), "hydra.runtime.choices", default={})
        name = choices.get("data") if choices else None
    with open_dict(cfg):
        cfg.data = OmegaConf.create(node)
        cfg.data_name = name
    log.info("data: the run's own (%s, %s)", name or "data", node.get("root"))


def _plan(cfg: DictConfig) -> tuple[Callable[[], Any], Path, str]:
    """(estimator builder, default out_dir, name) for ``oracle=`` or ``estimates=``."""
    data, split = _data_name(cfg), str(cfg.split)
    targets = names(cfg.get("targets"))
    if cfg.get("estimates"):
        root = Path(str(cfg.estimates))
        folder = FolderEstimator(root, targets)
        return lambda: folder, root / "eval" / data / split, root.resolve().name
    method = str(cfg.oracle).lower()
    estimator = OracleEstimator(method, cfg.oracle_n_fft, cfg.oracle_hop, targets)
    out = Path(cfg.paths.root_dir) / "eval" / f"oracle-{method}" / data / split
    return lambda: estimator, out, f"oracle-{method}"


def run_evaluation(cfg: DictConfig) -> str:
    """Evaluate ``cfg.ckpt``, ``cfg.oracle`` or ``cfg.estimates`` on ``cfg.split``; return
    the summary table."""
    given = [key for key in ("ckpt", "oracle", "estimates") if cfg.get(key)]
    if len(given) > 1:
        raise LongsepError(f"{' and '.join(given)} given: use one of ckpt, oracle, estimates")
    if not given:
        raise LongsepError(
            "ckpt=... is required (a model store, a checkpoint or a training run dir); "
            f"or oracle={'|'.join(ORACLES)}, estimates=<dir>, or compare=[dirA,dirB]"
        )
    scoring = ScoringOptions.of(cfg)
    if cfg.get("ckpt"):
        source = resolve_model(cfg.ckpt)
        use_run_data(cfg, source.run)
        default_out = source.eval_root / _data_name(cfg) / scoring.split
        summary = evaluate_model(
            source,
            cfg.data,
            Path(str(cfg.out_dir)) if cfg.get("out_dir") else default_out,
            inference=InferenceOptions.of(cfg),
            scoring=scoring,
            targets=names(cfg.get("targets")),
            tracks=names(cfg.get("tracks")),
            name=cfg.get("name"),
            data_name=_data_name(cfg),
            progress=bool(cfg.get("progress", True)),
        )
        return format_summary(summary)
    build, default_out, name = _plan(cfg)
    estimator = build()
    tracks = load_tracks(cfg.data, scoring.split, names(cfg.get("tracks")))
    if isinstance(estimator, FolderEstimator):  # every file there before any is scored
        estimator.check([t.name for t in tracks])
    summary = evaluate_tracks(
        tracks,
        estimator,
        Path(str(cfg.out_dir)) if cfg.get("out_dir") else default_out,
        name=str(cfg.get("name") or name),
        meta={"root": cfg.data.get("root"), "split": scoring.split, "data": _data_name(cfg)},
        backend=scoring.backend,
        workers=scoring.workers,
        overwrite=scoring.overwrite,
        save_estimates=scoring.save_estimates,
        progress=bool(cfg.get("progress", True)),
    )
    return format_summary(summary)


def run_compare(cfg: DictConfig) -> str:
    """Compare the evaluation dirs of ``cfg.compare``; return the table."""
    from longsep.evaluation.compare import compare

    dirs = names(cfg.compare)
    text, figures = compare(dirs, cfg.compare_out, metric=str(cfg.compare_metric))
    return text + f"\nfigures: {', '.join(str(p) for p in figures)}"


def evaluate(cfg: DictConfig) -> str:
    """The ``evaluate.py`` command: compare, or evaluate a model / an oracle / estimates."""
    if cfg.get("compare"):
        if cfg.get("ckpt") or cfg.get("oracle") or cfg.get("estimates"):
            raise LongsepError(
                "compare=[...] reads finished evaluations: drop ckpt / oracle / estimates"
            )
        return run_compare(cfg)
    return run_evaluation(cfg)
