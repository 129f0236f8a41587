"""``train.py``: build data, separator, module and trainer from the config, fit, export."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from longsep.callbacks import PlainProgress
from longsep.checkpoints import StoreEntry, read_checkpoint, save_store
from longsep.cli.common import pick_accelerator
from longsep.errors import LongsepError
from longsep.models import instantiate_separator, is_valid_combination, separator_config
from longsep.spectral import STFTConfig
from longsep.training import SeparationModule, input_statistics, set_input_statistics

log = logging.getLogger(__name__)


def _choices() -> dict[str, Any]:
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _is_multirun() -> bool:
    mode = HydraConfig.get().mode if HydraConfig.initialized() else None
    return mode is not None and mode.name == "MULTIRUN"


def find_last_checkpoint(output_dir: Path, log_dir: Path, name: str) -> Path:
    """``last.ckpt`` of this run, else of the newest earlier run with the same name."""
    own = output_dir / "checkpoints" / "last.ckpt"
    if own.exists():
        return own
    candidates = sorted((log_dir / name).glob("*/checkpoints/last.ckpt"))
    candidates += sorted((log_dir / "multirun").glob(f"*/{name}/checkpoints/last.ckpt"))
    if not candidates:
        raise LongsepError(f"ckpt_path=last but no last.ckpt for run {name!r} under {log_dir}")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if sys.stdout.isatty():
        callbacks.append(pl.callbacks.RichProgressBar())
    else:
        callbacks.append(PlainProgress(every_n_steps=int(cfg.trainer.get("log_every_n_steps", 10))))
    return callbacks


def build_trainer(cfg: DictConfig, output_dir: Path) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` with callbacks, loggers and device choice."""
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    kwargs: dict[str, Any] = {"callbacks": _callbacks(cfg), "logger": loggers or False}
    if "accelerator" not in cfg.trainer:
        kwargs.update(pick_accelerator(cfg.get("gpu")))
    kwargs["enable_progress_bar"] = sys.stdout.isatty()
    return instantiate(cfg.trainer, **kwargs, default_root_dir=str(output_dir))


def export_best(cfg: DictConfig, trainer: pl.Trainer, module: SeparationModule) -> Path:
    """Write the best (else last) weights of the run to the model store ``cfg.store_dir``."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
    if best and Path(best).exists():
        state = read_checkpoint(best)["state_dict"]
        prefix = "separator."
        module.separator.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    entry = StoreEntry(
        target=cfg.src,
        separator=separator_config(cfg),
        stft=STFTConfig(**cfg.stft),
        seq_len=float(cfg.seq_len),
        nb_channels=int(cfg.nb_channels),
        info={"checkpoint": best or None, "global_step": trainer.global_step, "metrics": metrics},
    )
    return save_store(cfg.store_dir, module.separator.cpu(), entry)


def train(cfg: DictConfig) -> float | None:
    """Train one separator; return the best validation loss (for sweepers)."""
    choices = _choices()
    attention = choices.get("attention")
    if not is_valid_combination(choices.get("separator", ""), attention):
        message = (
            f"separator={choices.get('separator')} has no attention; drop attention={attention}"
        )
        if cfg.get("skip_invalid") and _is_multirun():
            log.warning("skipping invalid sweep combination: %s", message)
            return None
        raise LongsepError(message)
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    stft = STFTConfig(**cfg.stft)
    separator = instantiate_separator(cfg)
    stats_file = datamodule.cache.dir / f"stats-train-{stft.n_fft}-{stft.hop_length}.npz"
    mean, std = input_statistics(datamodule.train_set.tracks, stft, stats_file)
    set_input_statistics(separator, mean, std)

    module = SeparationModule(
        separator=separator,
        target=cfg.src,
        stft=stft,
        loss=cfg.module.loss,
        optimizer=instantiate(cfg.module.optimizer),
        scheduler=instantiate(cfg.module.scheduler) if cfg.module.get("scheduler") else None,
        monitor=cfg.module.monitor,
        gradient_checkpointing=cfg.module.gradient_checkpointing,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    trainer = build_trainer(cfg, output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(find_last_checkpoint(output_dir, Path(cfg.paths.log_dir), cfg.run_name))
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.interrupted:
        log.warning("training interrupted: not exporting a model")
        return None
    if trainer.is_global_zero:
        store = export_best(cfg, trainer, module)
        log.info("model store: %s", store)
    score = getattr(trainer.checkpoint_callback, "best_model_score", None)
    return float(score) if isinstance(score, torch.Tensor) else None
