"""SeparationModule: the LightningModule that trains one network for one target.

Batches come from a :mod:`longsep.data` data module (``mixture`` and
``target`` audio, ``(batch, channels, samples)``); the module takes the STFT,
feeds the mixture magnitude ``(batch, channels, bins, frames)`` to the network
and compares the estimate with the target magnitude (Open-Unmix's MSE by
default; L1 or a time-domain SI-SDR loss through the mixture phase as options).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longsep.errors import LongsepError
from longsep.evaluation.metrics import neg_si_sdr_loss
from longsep.io import atomic_write
from longsep.spectral import STFTConfig, magnitude, make_transforms
from longsep.store import current_state_keys

log = logging.getLogger(__name__)

LOSSES = ("mse", "l1", "sisdr")


def sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Plain SDR in dB over the last two axes ``(channels, samples)``: one value per item."""
    num = reference.pow(2).sum((-2, -1))
    den = (reference - estimate).pow(2).sum((-2, -1))
    return 10 * torch.log10((num + eps) / (den + eps))


def set_input_statistics(network: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """Initialise a UMX-style front end (``input_mean``/``input_scale``) from data statistics.

    Open-Unmix stores the negated mean and the inverse standard deviation.
    """
    if not (hasattr(network, "input_mean") and hasattr(network, "input_scale")):
        raise LongsepError(f"{type(network).__name__} has no input_mean/input_scale to set")
    n = network.input_mean.shape[0]
    with torch.no_grad():
        network.input_mean.copy_(torch.as_tensor(-mean[:n], dtype=torch.float32))
        network.input_scale.copy_(torch.as_tensor(1.0 / std[:n], dtype=torch.float32))


def input_statistics(
    mixtures: Iterable[np.ndarray], stft: STFTConfig, cache_file: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std of the mono magnitude of the training mixtures.

    ``mixtures`` are float32 ``(channels, samples)`` pieces of the unaugmented training
    mixtures (``ChunkDataModule.train_mixtures``); they are read only when the results
    are not yet cached in ``cache_file`` (npz).
    """
    if cache_file is not None and cache_file.exists():
        data = np.load(cache_file)
        return data["mean"], data["std"]
    transform, _ = make_transforms(stft)
    total = np.zeros(stft.nb_bins)
    total_sq = np.zeros(stft.nb_bins)
    count = 0
    for mix in mixtures:
        mag = magnitude(transform(torch.from_numpy(mix))).mean(0).double()  # (bins, frames)
        total += mag.sum(-1).numpy()
        total_sq += mag.pow(2).sum(-1).numpy()
        count += mag.shape[-1]
    if count == 0:
        raise LongsepError("no training audio to compute input statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.maximum(std, 1e-4)
    if cache_file is not None:
        atomic_write(cache_file, lambda p: np.savez(p, mean=mean, std=std), suffix=".npz")
    return mean, std


class SeparationModule(pl.LightningModule):
    """Train ``network`` (built from ``conf/separator``) to estimate ``target`` magnitudes
    from mixture magnitudes."""

    def __init__(
        self,
        network: nn.Module,
        target: str,
        stft: dict | STFTConfig | None = None,
        loss: str = "mse",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/loss",
        gradient_checkpointing: bool = False,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise LongsepError(f"module.loss={loss!r} is not one of {list(LOSSES)}")
        self.network = network
        self.target = target
        self.stft_config = stft if isinstance(stft, STFTConfig) else STFTConfig(**(stft or {}))
        self.stft, self.istft = make_transforms(self.stft_config)
        self.loss_name = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.config = config or {}
        self._val_sdrs: list[Tensor] = []
        self._validations = self._stepped_after = 0  # plateau stepping (lr_scheduler_step)
        if gradient_checkpointing:
            if not hasattr(network, "gradient_checkpointing"):
                raise LongsepError(
                    f"module.gradient_checkpointing=true but {type(network).__name__} "
                    "does not support it"
                )
            network.gradient_checkpointing = True

    def forward(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """Mixture audio ``(batch, channels, samples)`` to (estimated magnitude, mixture STFT)."""
        mix_stft = self.stft(mixture)
        return self.network(magnitude(mix_stft)), mix_stft

    def _estimate_audio(self, est_mag: Tensor, mix_stft: Tensor, length: int) -> Tensor:
        phase = torch.polar(torch.ones_like(est_mag), torch.angle(mix_stft))
        return self.istft(est_mag * phase, length=length)

    def _step(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        mixture, target = batch["mixture"], batch["target"]
        est_mag, mix_stft = self(mixture)
        if self.loss_name == "sisdr":
            estimate = self._estimate_audio(est_mag, mix_stft, target.shape[-1])
            loss = neg_si_sdr_loss(estimate, target)
        else:
            target_mag = magnitude(self.stft(target))
            fn = F.mse_loss if self.loss_name == "mse" else F.l1_loss
            loss = fn(est_mag, target_mag)
        return loss, est_mag, mix_stft

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, est_mag, mix_stft = self._step(batch)
        estimate = self._estimate_audio(est_mag, mix_stft, batch["target"].shape[-1])
        self._val_sdrs.append(sdr(estimate.float(), batch["target"].float()).detach().cpu())
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(estimate))

    def on_validation_epoch_end(self) -> None:
        if self._val_sdrs:
            values = torch.cat(self._val_sdrs)
            self.log("val/sdr", values.nanmedian(), prog_bar=True, sync_dist=True)
        self._val_sdrs.clear()

    def configure_optimizers(self) -> dict:
        factory = self.optimizer_factory or (
            lambda params: torch.optim.Adam(params, lr=1e-3, weight_decay=1e-5)
        )
        optimizer = factory(self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"}
        trainer = self._trainer
        if trainer is not None and trainer.check_val_every_n_epoch is None:
            # validation every val_check_interval steps: Lightning offers the scheduler a step
            # after every batch (once validation, if any, has logged); lr_scheduler_step
            # takes it only right after a validation, so it follows the validation cadence
            config.update(interval="step", frequency=1, strict=False)
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._validations += 1

    def lr_scheduler_step(self, scheduler: Any, metric: Any = None) -> None:
        """Step the scheduler; a plateau scheduler only once after each validation."""
        if metric is None:
            scheduler.step()
            return
        if self._validations == self._stepped_after:
            return  # no validation since the last step: the metric is not new
        self._stepped_after = self._validations
        scheduler.step(metric)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["longsep"] = {
            "config": self.config,
            "target": self.target,
            "stft": self.stft_config.to_dict(),
        }
        # dropout draws from torch's global generators: keep them so a resumed run
        # continues exactly (the data pipeline has its own seeded generators)
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "state_dict" in checkpoint:  # Lightning loads it after this hook
            checkpoint["state_dict"] = current_state_keys(checkpoint["state_dict"])
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
