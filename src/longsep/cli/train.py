"""``train.py``: build data, network, module and trainer from the config, fit, export."""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from longsep.cli.common import pick_accelerator, seconds
from longsep.data import instantiate_data
from longsep.data.chunks import target_name
from longsep.errors import LongsepError, one_line
from longsep.evaluation.evaluate import ScoringOptions, evaluate_model
from longsep.inference.options import InferenceOptions
from longsep.models.build import (
    instantiate_network,
    is_no_attention,
    is_valid_combination,
    network_config,
)
from longsep.spectral import STFTConfig
from longsep.store import (
    InitWeights,
    StoreEntry,
    init_network,
    load_state,
    network_state,
    read_checkpoint,
    read_init_weights,
    resolve_model,
    save_store,
)
from longsep.study import records
from longsep.training import runs
from longsep.training.callbacks import LastCheckpoint, PlainProgress, StepTimer
from longsep.training.interrupts import Interrupted, InterruptRequest
from longsep.training.memory import PeakMemory
from longsep.training.module import SeparationModule, input_statistics, set_input_statistics

log = logging.getLogger(__name__)

# keys of evaluate_after besides the inference and scoring settings
EVALUATE_AFTER_KEYS = {"enabled", "targets", "tracks", "out_dir"}
INIT_STATS = ("keep", "recompute")


def _choices() -> dict[str, Any]:
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _is_multirun() -> bool:
    mode = HydraConfig.get().mode if HydraConfig.initialized() else None
    return mode is not None and mode.name == "MULTIRUN"


def _continue_in(cfg: DictConfig, run_dir: Path) -> Path:
    """Make a resumed run write into its earlier directory ``run_dir``: the config's
    paths, the log file (what was logged so far appended), and Hydra's record of this
    invocation (``.hydra/resumed-<time>/``); the directory Hydra made for it is removed."""
    new_dir = Path(cfg.paths.output_dir)
    if new_dir.resolve() == run_dir.resolve():
        return run_dir
    cfg.paths.output_dir = str(run_dir)
    if (new_dir / ".hydra").is_dir():
        shutil.move(new_dir / ".hydra", run_dir / ".hydra" / f"resumed-{new_dir.name}")
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.FileHandler):
                old = Path(handler.baseFilename)
                if old.parent.resolve() == new_dir.resolve():
                    handler.close()
                    with open(run_dir / old.name, "a") as out:
                        out.write(old.read_text() if old.exists() else "")
                    handler.baseFilename, handler.mode = str(run_dir / old.name), "a"
    shutil.rmtree(new_dir, ignore_errors=True)
    return run_dir


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> tuple[str | None, Path]:
    """The checkpoint to resume from and the run's directory.

    ``ckpt_path=last``: the ``last.ckpt`` of the newest earlier run of the same identity
    (:mod:`longsep.training.runs`), continued in that run's directory; a path: that file,
    in a new directory; in a sweep, the job's own ``last.ckpt`` if a killed run left one.
    The file is checked to be readable before any long work.
    """
    ckpt_path, earlier = cfg.get("ckpt_path"), None
    own = output_dir / runs.LAST
    if ckpt_path == "last":
        config = OmegaConf.to_container(cfg, resolve=True)
        earlier = runs.find_resumable(Path(cfg.paths.log_dir), cfg.run_name, config)
        ckpt_path = earlier / runs.LAST
    elif ckpt_path is None and _is_multirun() and own.is_file():
        ckpt_path = own
    if ckpt_path is None:
        return None, output_dir
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise LongsepError(f"ckpt_path={ckpt_path} does not exist: give a .ckpt file or last")
    read_checkpoint(path)  # a truncated or foreign file fails here in one line
    if earlier is not None:
        output_dir = _continue_in(cfg, earlier)
    log.info("resuming from %s", path)
    return str(path), output_dir


def _callbacks(cfg: DictConfig) -> list[pl.Callback]:
    # the timer first: a step's time ends before other callbacks write checkpoints
    callbacks = [StepTimer()]
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if sys.stdout.isatty():
        callbacks.append(pl.callbacks.RichProgressBar())
    else:
        callbacks.append(PlainProgress(every_n_steps=int(cfg.trainer.get("log_every_n_steps", 10))))
    return callbacks


def build_trainer(cfg: DictConfig, output_dir: Path) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` with callbacks, loggers and device choice."""
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if not node:
            continue
        try:
            loggers.append(instantiate(node))
        except Exception as exc:  # Hydra wraps the logger's ImportError
            missing = exc.__cause__ or exc.__context__ or exc
            if isinstance(missing, ModuleNotFoundError) or "not installed" in str(missing):
                raise LongsepError(
                    f"logger={name} needs a package that is not installed: "
                    f"pip install 'longsep[{name}]'"
                ) from exc
            raise
    kwargs: dict[str, Any] = {"callbacks": _callbacks(cfg), "logger": loggers or False}
    if "accelerator" not in cfg.trainer:
        kwargs.update(pick_accelerator(cfg.get("gpu")))
    kwargs["enable_progress_bar"] = sys.stdout.isatty()
    return instantiate(cfg.trainer, **kwargs, default_root_dir=str(output_dir))


def export_best(cfg: DictConfig, trainer: pl.Trainer, module: SeparationModule) -> Path:
    """Write the best (else last) weights of the run to the model store ``cfg.store_dir``;
    its ``info`` names the step and the validation score of the weights written."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") or ""
    step = trainer.global_step
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if best and Path(best).exists():
        checkpoint = read_checkpoint(best)
        load_state(module.network, network_state(checkpoint, best), best)
        step = int(checkpoint.get("global_step", step))
        score = getattr(callback, "best_model_score", None)  # the last validation's are not its
        metrics = {} if score is None else {str(callback.monitor): float(score)}
    entry = StoreEntry(
        target=target_name(cfg.src),
        separator=network_config(cfg),
        stft=STFTConfig(**cfg.stft),
        seq_len=float(cfg.seq_len),
        nb_channels=int(cfg.nb_channels),
        info={"checkpoint": best or None, "global_step": step, "metrics": metrics},
    )
    if cfg.get("init_from"):
        entry.info["init_from"] = str(cfg.init_from)
    return save_store(cfg.store_dir, module.network.cpu(), entry, cfg.get("store_dtype", "float32"))


def _attention_choice(value: Any) -> str:
    """An attention choice for ``exclude`` matching: null / default -> ``default``."""
    return "default" if is_no_attention(value) else str(value)


def excluded_by(cfg: DictConfig, separator: str, attention: str | None) -> str | None:
    """The ``exclude`` pattern (``separator:attention``, fnmatch wildcards) matching this
    pair, or None. A missing attention choice and ``default`` are the same (``default``)."""
    patterns = cfg.get("exclude") or []
    if isinstance(patterns, str):
        patterns = [patterns]
    pair = f"{separator}:{_attention_choice(attention)}"
    for pattern in patterns:
        sep, colon, att = str(pattern).partition(":")
        if not colon or not sep or not att:
            raise LongsepError(
                f"exclude: {pattern!r} is not a separator:attention pair (e.g. umx:default)"
            )
        if fnmatch.fnmatchcase(pair, f"{sep}:{_attention_choice(att)}"):
            return str(pattern)
    return None


def _skip_reason(cfg: DictConfig, separator: str, attention: str | None) -> str | None:
    """Why this run is skipped (an excluded pair, or an invalid one in a sweep), or None.

    An invalid pair outside a sweep (or with ``skip_invalid=false``) is an error.
    """
    pattern = excluded_by(cfg, separator, attention)
    if pattern:
        return f"separator={separator} attention={attention} matches exclude {pattern}"
    if not is_valid_combination(separator, attention):
        message = f"separator={separator} has no attention; drop attention={attention}"
        if cfg.get("skip_invalid") and _is_multirun():
            return f"invalid sweep combination: {message}"
        raise LongsepError(message)
    return None


def _base_record(cfg: DictConfig, choices: dict[str, Any]) -> dict[str, Any]:
    """The fields of result.json known before training."""
    separator = str(choices.get("separator") or "")
    attention = choices.get("attention")
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return records.new_record(
        separator=separator,
        attention=records.effective_attention(separator, attention) if separator else None,
        src=target_name(cfg.src),
        seq_len=float(cfg.seq_len),
        arm=choices.get("arm"),
        reach=None if cfg.get("reach") is None else float(cfg.reach),
        seed=int(cfg.seed),
        max_steps=int(cfg.trainer.get("max_steps", -1)),
        data=choices.get("data"),
        run_name=str(cfg.get("run_name")),
        run_dir=str(Path(cfg.paths.output_dir)),
        overrides=overrides,
        identity=runs.identity(OmegaConf.to_container(cfg, resolve=True)),
    )


def _free_memory() -> None:
    """Release what a failed run left behind before the next job of the sweep."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(cfg: DictConfig) -> float | None:
    """Train one separator, then evaluate it if ``evaluate_after.enabled``; write
    ``<run>/result.json`` (:mod:`longsep.study.records`); return the best validation loss.

    Skipped pairs (``exclude``, invalid ones in a sweep) are recorded as ``skipped``. An
    exception is recorded as ``failed`` with a one-line error; in a multirun it is logged
    and the job returns None so the other jobs go on, a single run raises it (and, when it
    came before training wrote anything, removes the directory Hydra made for it). SIGINT
    and SIGTERM save ``last.ckpt`` at the end of the current step, record ``interrupted``
    and raise :class:`~longsep.training.interrupts.Interrupted` (the entry point exits
    130 / 143), also in a sweep. A sweep job whose directory already holds an ``ok`` result
    is not run again, and one that holds a ``last.ckpt`` resumes from it: re-running a
    killed sweep with a fixed sweep dir (the study presets) finishes it. A job whose
    directory holds another config's run stops the sweep with a one-line error
    (:func:`~longsep.training.runs.check_job_dir`).
    """
    choices = _choices()
    output_dir = Path(cfg.paths.output_dir)
    if _is_multirun():  # before the try: a failed record would overwrite the other run's
        runs.check_job_dir(output_dir, OmegaConf.to_container(cfg, resolve=True))
    record: dict[str, Any] = {}
    request = InterruptRequest()
    with request.installed():
        try:
            seconds(cfg.seq_len, "seq_len")
            if _is_multirun() and (output_dir / records.RESULT_FILE).is_file():
                done = records.read_result(output_dir)
                if done["status"] == "ok":
                    log.info("%s is done (result.json): not training it again", output_dir)
                    return done.get("best_val_loss")
                # run again: until it ends it has no record (collectors see it as running)
                (output_dir / records.RESULT_FILE).unlink()
            ckpt_path, output_dir = resume_checkpoint(cfg, output_dir)
            record = _base_record(cfg, choices)
            reason = _skip_reason(cfg, record["separator"], choices.get("attention"))
            if reason:
                log.warning("skipping %s", reason)
                record.update(status="skipped", reason=reason)
                records.write_result(output_dir, record)
                return None
            pick_accelerator(cfg.get("gpu"))  # a missing GPU: before data generation
            weights = init_weights(cfg)
            log.info("run %s, identity %s", output_dir, record["identity"])
            return _train(cfg, output_dir, record, ckpt_path, weights, request)
        except Interrupted as exc:
            record = record or records.new_record(run_dir=str(output_dir))
            step = exc.step if exc.step is not None else record.get("global_step")
            record.update(status="interrupted", signal=exc.name, global_step=step)
            if rank_zero_only.rank == 0 and output_dir.is_dir():
                records.write_result(output_dir, record)
            raise
        except Exception as exc:
            if not _is_multirun() and _discard_unused(cfg, output_dir):
                raise
            record = record or records.new_record(run_dir=str(output_dir))
            record.update(status="failed", error=one_line(exc))
            if rank_zero_only.rank == 0:
                records.write_result(output_dir, record)
            if not _is_multirun():
                raise
            log.error(
                "run %s failed, the sweep goes on: %s",
                output_dir,
                record["error"],
                exc_info=not isinstance(exc, LongsepError),  # a traceback for unexpected errors
            )
            _free_memory()
            return None


def _discard_unused(cfg: DictConfig, output_dir: Path) -> bool:
    """Remove the directory Hydra made for this single run when the run failed before it
    wrote anything of its own (a config error): True if removed. A resumed run's earlier
    directory, or one with checkpoints, is kept."""
    made = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if made is None or output_dir.resolve() != made.resolve():
        return False
    if (output_dir / "checkpoints").exists() or (output_dir / "model").exists():
        return False
    shutil.rmtree(output_dir, ignore_errors=True)
    log_dir = Path(cfg.paths.log_dir).resolve()
    parent = output_dir.resolve().parent
    while parent != log_dir and log_dir in parent.parents and not any(parent.iterdir()):
        parent.rmdir()  # the run name's folder, when this was its only run
        parent = parent.parent
    return True


def evaluate_run(cfg: DictConfig, model: Path) -> dict[str, Any]:
    """Evaluate the target this run trained, from its exported model store, as
    ``evaluate.py ckpt=<model> targets=<src>`` would (with a residual), with the run's data
    set and the settings of ``cfg.evaluate_after`` (conf/inference and conf/evaluation),
    into the run's ``eval/<data>/<split>`` (a store shared by several runs holds other
    targets and evaluations); return the summary."""
    options = OmegaConf.to_container(cfg.evaluate_after, resolve=True)
    known = {*EVALUATE_AFTER_KEYS, *InferenceOptions.names(), *ScoringOptions.names()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LongsepError(
            f"evaluate_after.{unknown[0]} is not an option: use {', '.join(sorted(known))}"
        )
    if options.get("device") in (None, "auto") and cfg.get("gpu") is not None:
        options["device"] = f"cuda:{int(cfg.gpu)}"
    scoring = ScoringOptions.of(options)
    data_name = _choices().get("data") or "data"
    out_dir = (
        options.get("out_dir") or Path(cfg.paths.output_dir) / "eval" / data_name / scoring.split
    )
    return evaluate_model(
        resolve_model(model),
        cfg.data,
        out_dir,
        inference=InferenceOptions.of(options),
        scoring=scoring,
        targets=options.get("targets") or [target_name(cfg.src)],
        tracks=options.get("tracks"),
        data_name=data_name,
        progress=False,
    )


def init_weights(cfg: DictConfig) -> InitWeights | None:
    """``cfg.init_from``'s weights, read and checked before any long work (None without)."""
    stats = str(cfg.get("init_from_stats") or "keep")
    if stats not in INIT_STATS:
        raise LongsepError(f"init_from_stats={stats} is not one of {', '.join(INIT_STATS)}")
    init_from = cfg.get("init_from")
    return read_init_weights(str(init_from), target_name(cfg.src)) if init_from else None


def initialise(
    cfg: DictConfig, network: torch.nn.Module, stft: STFTConfig, weights: InitWeights | None
) -> bool:
    """Load the ``init_from`` weights into ``network``; True when their input statistics
    are kept (``init_from_stats=keep``), False when the run computes them from the data."""
    if weights is None:
        return False
    src = target_name(cfg.src)
    found = init_network(network, weights, stft)
    if found != src:
        log.info("fine-tuning %s weights from %s for src=%s", found, cfg.init_from, src)
    return str(cfg.get("init_from_stats") or "keep") == "keep"


def _train(
    cfg: DictConfig,
    output_dir: Path,
    record: dict[str, Any],
    ckpt_path: str | None,
    weights: InitWeights | None,
    request: InterruptRequest,
) -> float | None:
    """Fit, export, evaluate and record one run (see :func:`train`)."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate_data(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    stft = STFTConfig(**cfg.stft)
    network = instantiate_network(cfg)
    if not initialise(cfg, network, stft, weights):
        stats_file = datamodule.stats_dir / f"stats-train-{stft.n_fft}-{stft.hop_length}.npz"
        mean, std = input_statistics(datamodule.train_mixtures(), stft, stats_file)
        set_input_statistics(network, mean, std)

    module = SeparationModule(
        network=network,
        target=target_name(cfg.src),
        stft=stft,
        loss=cfg.module.loss,
        optimizer=instantiate(cfg.module.optimizer),
        scheduler=instantiate(cfg.module.scheduler) if cfg.module.get("scheduler") else None,
        monitor=cfg.module.monitor,
        gradient_checkpointing=cfg.module.gradient_checkpointing,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    trainer = build_trainer(cfg, output_dir)
    memory = PeakMemory(trainer.strategy.root_device)
    memory.start()
    last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    if last is not None:  # it saves at a step's end and stops the run
        last.request = request
    timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))  # see _callbacks
    with request.deferred() if last is not None else contextlib.nullcontext():
        # read_checkpoint has loaded it with weights_only=True: no pickle is executed
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    train_seconds = timer.elapsed  # with the share of the processes this run resumed from
    if request.signum is not None:  # noted after the last step (a final validation)
        raise Interrupted(request.signum, trainer.global_step)
    if trainer.interrupted:
        raise LongsepError("training stopped before its end: not exporting a model")
    score = getattr(trainer.checkpoint_callback, "best_model_score", None)
    score = float(score) if isinstance(score, torch.Tensor) else None
    if not trainer.is_global_zero:
        return score
    records.add_training(
        record,
        global_step=trainer.global_step,
        batch_size=datamodule.batch_size,
        world_size=trainer.world_size,
        seq_len=float(cfg.seq_len),
        train_seconds=train_seconds,
        step_seconds=timer.mean,
        peak_memory=memory.read(),
        device=str(trainer.strategy.root_device),
        best_val_loss=score,
    )
    store = export_best(cfg, trainer, module)
    log.info("model store: %s", store)
    if cfg.get("evaluate_after") and cfg.evaluate_after.get("enabled"):
        started = time.perf_counter()
        summary = evaluate_run(cfg, store)
        records.add_evaluation(record, summary, time.perf_counter() - started)
        src = target_name(cfg.src)
        log.info("test medians of %s: %s", src, summary["median"].get(src))
    record["status"] = "ok"
    records.write_result(output_dir, record)
    return score
