"""``evaluate.py``: score a model or an oracle on a data set split, or compare evaluations.

- ``ckpt=<path>``: separate every song of ``split`` with the model and score it (BSSEval v4
  and SI-SDR); results and summary go to ``out_dir`` (:mod:`longsep.evaluation`).
- ``oracle=irm1|irm2|ibm|mwf``: the same for an oracle method (:mod:`longsep.oracle`).
- ``compare=[dirA,dirB]``: side-by-side table and box plots (:mod:`longsep.report`).

Each returns the text to show; the entry point prints it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from longsep.checkpoints import store_targets
from longsep.config import conf_dir
from longsep.errors import LongsepError
from longsep.evaluation import (
    ModelEstimator,
    ResultStore,
    evaluate_songs,
    format_summary,
    summarize,
)
from longsep.oracle import ORACLES, OracleEstimator

log = logging.getLogger(__name__)

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([_T]\d{2}-\d{2}-\d{2})?$")
_SEPARATOR_KEYS = (
    "targets",
    "niter",
    "softmask",
    "alpha",
    "residual",
    "wiener_win_len",
    "segment",
    "overlap",
    "device",
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model is read from and where its evaluations go by default."""

    model: Path
    eval_root: Path
    label: str


def _is_model_dir(folder: Path) -> bool:
    return bool(store_targets(folder)) or (folder / "separator.json").is_file()


def _run_label(run: Path) -> str:
    """``umx-vocals-6s@2024-05-01_12-00-00`` for Hydra's ``<run name>/<timestamp>`` dirs."""
    run = run.resolve()
    if _TIMESTAMP.match(run.name) and run.parent.name:
        return f"{run.parent.name}@{run.name}"
    return run.name


def _run_checkpoint(folder: Path) -> Path:
    """The best checkpoint of a run's ``checkpoints/`` (newest non-last), else ``last.ckpt``."""
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    best = [p for p in found if not p.name.startswith("last")]
    if best or found:
        return (best or found)[-1]
    raise LongsepError(f"ckpt={folder.parent}: its checkpoints/ folder holds no .ckpt file")


def resolve_ckpt(ckpt: str | Path) -> ModelSource:
    """The model of ``ckpt``: a model store / Open-Unmix dir, a checkpoint or a run dir.

    A training run dir (``model/`` + ``checkpoints/``) gives its exported ``model/`` store,
    else its best checkpoint. Evaluations default to ``<run dir>/eval``.
    """
    path = Path(str(ckpt)).expanduser()
    if not path.exists():
        raise LongsepError(
            f"ckpt={ckpt} does not exist: give a model store, a checkpoint (.ckpt), "
            "a training run directory or an Open-Unmix model directory"
        )
    if path.is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return ModelSource(path, run / "eval" / path.stem, f"{_run_label(run)}:{path.stem}")
    if _is_model_dir(path / "model"):
        return ModelSource(path / "model", path / "eval", _run_label(path))
    if _is_model_dir(path):
        in_run = path.name == "model" and (path.parent / "checkpoints").is_dir()
        run = path.parent if in_run else path
        return ModelSource(path, run / "eval", _run_label(run))
    if (path / "checkpoints").is_dir():
        checkpoint = _run_checkpoint(path / "checkpoints")
        log.info("run %s has no exported model/: evaluating %s", path, checkpoint.name)
        return ModelSource(checkpoint, path / "eval", f"{_run_label(path)}:{checkpoint.stem}")
    raise LongsepError(
        f"ckpt={ckpt} holds no model: expected a model store (<target>.safetensors + "
        "<target>.yaml), an Open-Unmix dir (separator.json), or a run dir with model/ "
        "or checkpoints/"
    )


def _data_name(cfg: DictConfig) -> str:
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("data")
        if choice:
            return str(choice)
    return Path(str(cfg.data.get("root") or "data")).name or "data"


def _names(value: Any) -> list[str] | None:
    """A list of names from a Hydra value: ``x``, ``[x,y]`` or null."""
    if not value:
        return None
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def load_tracks(cfg: DictConfig) -> list:
    """The musdb tracks of ``cfg.split`` (generating the synthetic set if configured)."""
    datamodule = instantiate(cfg.data, _recursive_=False)
    if datamodule.generate is not None:
        from longsep.data.synth import ensure_dataset

        ensure_dataset(datamodule.root, **datamodule.generate)
    tracks = list(datamodule.tracks(cfg.split))
    if not tracks:
        raise LongsepError(f"split={cfg.split} of data.root={datamodule.root} holds no tracks")
    wanted = _names(cfg.get("tracks"))
    if wanted:
        names = {t.name for t in tracks}
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise LongsepError(
                f"tracks: {unknown} are not in split={cfg.split} "
                f"(e.g. {', '.join(sorted(names)[:3])})"
            )
        tracks = [t for t in tracks if t.name in set(wanted)]
    return tracks


def _model_estimator(cfg: DictConfig, source: ModelSource) -> ModelEstimator:
    from longsep.cli.separate import build_separator

    options = {k: cfg.get(k) for k in _SEPARATOR_KEYS} | {"targets": _names(cfg.get("targets"))}
    separator = build_separator(OmegaConf.create({**options, "model": str(source.model)}))
    settings = {
        "model": str(source.model.resolve()),
        "targets": list(separator.targets),
        "niter": separator.niter,
        "softmask": separator.softmask,
        "alpha": separator.alpha,
        "wiener_win_len": separator.wiener_win_len,
        "segment": separator.segment,
        "overlap": separator.overlap,
    }
    log.info(
        "model %s: targets %s, segment %s s, device %s",
        source.model,
        ", ".join(separator.targets),
        separator.segment,
        separator.device,
    )
    return ModelEstimator(separator, settings)


def _plan(cfg: DictConfig) -> tuple[Callable[[], Any], Path, str]:
    """(estimator builder, default out_dir, name) for ``ckpt=`` or ``oracle=``.

    Arguments are checked here; the model itself is loaded by the builder.
    """
    data, split = _data_name(cfg), str(cfg.split)
    if cfg.get("oracle"):
        if cfg.get("ckpt"):
            raise LongsepError("give ckpt=... or oracle=..., not both")
        method = str(cfg.oracle).lower()
        estimator = OracleEstimator(
            method, cfg.oracle_n_fft, cfg.oracle_hop, _names(cfg.get("targets"))
        )
        out = Path(cfg.paths.root_dir) / "eval" / f"oracle-{method}" / data / split
        return lambda: estimator, out, f"oracle-{method}"
    if not cfg.get("ckpt"):
        raise LongsepError(
            "ckpt=... is required (a model store, a checkpoint or a training run dir); "
            f"or oracle={'|'.join(ORACLES)}, or compare=[dirA,dirB]"
        )
    source = resolve_ckpt(cfg.ckpt)
    return lambda: _model_estimator(cfg, source), source.eval_root / data / split, source.label


def evaluation_config(
    ckpt: str | Path, base: Mapping[str, Any], options: Mapping[str, Any]
) -> DictConfig:
    """The config of ``evaluate.py ckpt=<ckpt>``, built outside Hydra (e.g. after training).

    The keys of ``conf/evaluate.yaml`` with its values, then ``base`` (resolved nodes such
    as a training run's ``data`` and ``paths``), then ``options``, which may only set keys
    of ``conf/evaluate.yaml`` (``split``, ``backend``, ``segment``, ``niter``, ...).
    """
    defaults = OmegaConf.load(conf_dir() / "evaluate.yaml")
    for key in ("defaults", "hydra"):
        defaults.pop(key, None)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise LongsepError(
            f"{unknown[0]} is not an evaluate.py option: use keys of conf/evaluate.yaml"
        )
    return OmegaConf.merge(
        defaults, dict(base), dict(options), {"ckpt": str(ckpt), "oracle": None, "compare": None}
    )


def evaluation_summary(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` or ``cfg.oracle`` on ``cfg.split``; return the summary.

    ``cfg`` has the keys of ``conf/evaluate.yaml``. The summary is that of
    :func:`longsep.evaluation.summarize` (also written to ``<out_dir>/summary.json``);
    if some tracks fail, the others are summarized and a :class:`LongsepError` is raised.
    """
    workers = int(cfg.workers)
    if workers < 1:
        raise LongsepError(f"workers={cfg.workers}: use 1 or more")
    if cfg.backend not in ("fast", "museval"):
        raise LongsepError(f"backend={cfg.backend}: use fast or museval")
    build, default_out, name = _plan(cfg)
    tracks = load_tracks(cfg)
    estimator = build()
    store = ResultStore(Path(str(cfg.out_dir)) if cfg.get("out_dir") else default_out)
    data = {"root": str(cfg.data.get("root")), "split": str(cfg.split)}
    store.check_settings(
        {"estimator": estimator.settings(), "backend": cfg.backend, "data": data},
        overwrite=bool(cfg.overwrite),
    )
    log.info("evaluating %s on %d %s tracks into %s", name, len(tracks), cfg.split, store.dir)
    failure = None
    try:
        evaluate_songs(
            tracks,
            estimator,
            store,
            backend=str(cfg.backend),
            workers=workers,
            overwrite=bool(cfg.overwrite),
            save_estimates=bool(cfg.save_estimates),
            progress=bool(cfg.get("progress", True)),
        )
    except LongsepError as exc:  # some tracks failed: summarize the others, then report
        failure = exc
    summary = summarize(
        store,
        [t.name for t in tracks],
        str(cfg.get("name") or name),
        {"split": str(cfg.split), "data": _data_name(cfg), "backend": str(cfg.backend)},
    )
    if failure is not None:
        log.info("%s", format_summary(summary))
        raise failure
    return summary


def run_evaluation(cfg: DictConfig) -> str:
    """Evaluate ``cfg.ckpt`` or ``cfg.oracle`` on ``cfg.split``; return the summary table."""
    return format_summary(evaluation_summary(cfg))


def run_compare(cfg: DictConfig) -> str:
    """Compare the evaluation dirs of ``cfg.compare``; return the table."""
    from longsep.report import compare

    dirs = _names(cfg.compare)
    text, figures = compare(dirs, cfg.compare_out, metric=str(cfg.compare_metric))
    return text + f"\nfigures: {', '.join(str(p) for p in figures)}"


def evaluate(cfg: DictConfig) -> str:
    """The ``evaluate.py`` command: compare, or evaluate a model / an oracle."""
    if cfg.get("compare"):
        if cfg.get("ckpt") or cfg.get("oracle"):
            raise LongsepError("compare=[...] reads finished evaluations: drop ckpt / oracle")
        return run_compare(cfg)
    return run_evaluation(cfg)
