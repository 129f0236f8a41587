"""Lightning callbacks: validation media, plain progress, step timer, the last checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from longsep import audio
from longsep.io import temp_sibling
from longsep.spectral import magnitude
from longsep.training.interrupts import Interrupted, InterruptRequest
from longsep.viz import spectrogram_figure

log = logging.getLogger(__name__)


class ValidationMedia(pl.Callback):
    """Every ``every_n_epochs``, log a figure and audio of the first validation chunk.

    W&B and TensorBoard get them through their APIs; every run also keeps them as
    files under ``<run dir>/media/`` (PNG and WAV), whatever the logger.
    """

    def __init__(self, every_n_epochs: int = 5, seconds: float = 6.0) -> None:
        self.every_n_epochs = every_n_epochs
        self.seconds = seconds

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        epoch = trainer.current_epoch
        if batch_idx != 0 or trainer.sanity_checking or epoch % self.every_n_epochs:
            return
        if not trainer.is_global_zero:
            return
        cfg = pl_module.stft_config
        length = min(batch["mixture"].shape[-1], round(self.seconds * cfg.sample_rate))
        mixture, target = batch["mixture"][:1, :, :length], batch["target"][:1, :, :length]
        with torch.no_grad():
            est_mag, mix_stft = pl_module(mixture)
            estimate = pl_module._estimate_audio(est_mag, mix_stft, length)
        clips = {"mixture": mixture[0], "target": target[0], "estimate": estimate[0]}
        clips = {k: v.float().cpu() for k, v in clips.items()}
        mags = {k: magnitude(pl_module.stft(v)).mean(0).numpy() for k, v in clips.items()}
        title = f"{pl_module.target}, epoch {epoch}"
        fig = spectrogram_figure(mags, cfg.sample_rate, cfg.hop_length, title)
        self._write(trainer, fig, clips, cfg.sample_rate, epoch)
        plt.close(fig)

    def _write(self, trainer, fig, clips, rate: int, epoch: int) -> None:
        media = Path(trainer.default_root_dir) / "media"
        media.mkdir(parents=True, exist_ok=True)
        fig.savefig(media / f"epoch{epoch:04d}.png", dpi=80)
        for name, clip in clips.items():
            audio.save(media / f"epoch{epoch:04d}_{name}.wav", clip, rate)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("val/spectrogram", fig, epoch)
                for name, clip in clips.items():
                    mono = clip.mean(0, keepdim=True)
                    logger.experiment.add_audio(f"val/{name}", mono, epoch, sample_rate=rate)
            elif isinstance(logger, WandbLogger):
                import wandb

                logger.log_image("val/spectrogram", [wandb.Image(fig)], step=trainer.global_step)
                tracks = {
                    f"val/{n}": wandb.Audio(c.numpy().T, sample_rate=rate) for n, c in clips.items()
                }
                logger.experiment.log(tracks, step=trainer.global_step)


class PlainProgress(pl.Callback):
    """One log line every ``every_n_steps`` steps and per validation: for logs and CI."""

    def __init__(self, every_n_steps: int = 10) -> None:
        self.every_n_steps = every_n_steps
        self._start = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0:
            loss = trainer.callback_metrics.get("train/loss_step")
            value = float(loss) if loss is not None else np.nan
            elapsed = time.monotonic() - self._start
            log.info(
                "epoch %d step %d loss %.5f (%.0f s)", trainer.current_epoch, step, value, elapsed
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        text = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        log.info("epoch %d validation: %s", trainer.current_epoch, text)


class StepTimer(pl.Callback):
    """Wall time of a run's training, summed over the processes that resumed it.

    ``mean``: mean seconds of a training step, forward, backward and optimizer, from
    ``on_train_batch_start`` to ``on_train_batch_end`` (data loading, validation and
    checkpoint writing excluded; CUDA synchronised); each process's first step (kernel
    selection, allocator warm-up) is left out when it timed more. ``elapsed``: seconds from
    ``on_fit_start`` to now. Both carry the earlier processes' share through ``last.ckpt``
    (:meth:`state_dict`), so a run killed and resumed reports its whole cost; the steps
    between the last checkpoint and the kill are redone and counted once.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start: float | None = None
        self._fit_start: float | None = None
        self._earlier = {"seconds": 0.0, "step_seconds": 0.0, "steps": 0}

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is None:
            return
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._start)
        self._start = None

    def _timed(self) -> list[float]:
        return self.times[1:] if len(self.times) > 1 else self.times

    @property
    def mean(self) -> float | None:
        """Mean seconds per step over the whole run (None before the first step)."""
        steps = self._earlier["steps"] + len(self._timed())
        total = self._earlier["step_seconds"] + sum(self._timed())
        return float(total / steps) if steps else None

    @property
    def elapsed(self) -> float:
        """Seconds of training over the whole run, this process's share up to now."""
        now = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return float(self._earlier["seconds"] + now)

    def state_dict(self) -> dict[str, float | int]:
        """What ``last.ckpt`` keeps for a resumed process (see the class docstring)."""
        timed = self._timed()
        return {
            "seconds": self.elapsed,
            "step_seconds": self._earlier["step_seconds"] + float(sum(timed)),
            "steps": self._earlier["steps"] + len(timed),
        }

    def load_state_dict(self, state_dict: dict[str, float | int]) -> None:
        """Take over the earlier processes' share from a resumed checkpoint."""
        self._earlier = {
            "seconds": float(state_dict["seconds"]),
            "step_seconds": float(state_dict["step_seconds"]),
            "steps": int(state_dict["steps"]),
        }


class LastCheckpoint(pl.Callback):
    """The one ``last.ckpt`` of a run, always the newest state, never half-written.

    It is written every ``every_n_train_steps`` optimizer steps, every ``every_n_minutes``
    of wall time, at the end of training, and when the run is interrupted (``request``,
    set by ``train.py``: SIGINT / SIGTERM noted during a step); always at a batch end, the
    point Lightning resumes from exactly, to a temporary file renamed over
    ``<dirpath>/last.ckpt`` once complete, so a run killed at any moment leaves the
    previous complete checkpoint. ``ckpt_path=last`` resumes from it (optimizer, scheduler,
    step, RNG, position in the epoch).
    """

    FILENAME = "last.ckpt"

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int = 50,
        every_n_minutes: float | None = 10.0,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps or 0)
        self.every_n_seconds = 60.0 * float(every_n_minutes or 0)
        self.request: InterruptRequest | None = None
        self._saved_step: int | None = None
        self._saved_at = time.monotonic()

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def save(self, trainer: pl.Trainer) -> None:
        """Write the trainer's state to ``last.ckpt`` atomically (once per global step)."""
        if trainer.sanity_checking or self._saved_step == trainer.global_step:
            return
        tmp = temp_sibling(self.path) if trainer.is_global_zero else None
        tmp = trainer.strategy.broadcast(tmp)
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, to resume from
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")
        self._saved_step = trainer.global_step
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_at = time.monotonic()
        if self.request is not None:
            self.request.take_over()  # Lightning has installed its SIGTERM handler by now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_train_steps
        due = every > 0 and trainer.global_step % every == 0
        late = 0 < self.every_n_seconds <= time.monotonic() - self._saved_at
        late = trainer.strategy.broadcast(late)  # every rank saves at the same step
        noted = self.request is not None and self.request.signum is not None
        interrupted = trainer.strategy.reduce_boolean_decision(noted, all=False)
        if due or late or interrupted:
            self.save(trainer)
        if interrupted:
            signum = self.request.signum if noted else signal.SIGTERM
            raise Interrupted(signum, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)
