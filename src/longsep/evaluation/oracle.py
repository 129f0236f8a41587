"""Oracle separation: upper bounds computed from the true sources (sigsep-mus-oracle).

Given the true sources of a song, each method builds a filter and applies it to the
mixture STFT; the result is what a separator with perfect estimates of that kind could
reach. Definitions follow sigsep's ``sigsep-mus-oracle`` (SiSEC 2018):

- ``irm1`` / ``irm2``: ideal ratio masks ``|S_j|^p / (eps + sum_k |S_k|^p)`` with
  ``p = 1`` (magnitude) or ``p = 2`` (power), per channel.
- ``ibm``: ideal binary mask, ``1`` where ``|S_j|^alpha / (eps + |X|^alpha) >= theta``
  (``alpha = 1``, ``theta = 0.5``: the source holds at least half the mixture magnitude).
- ``mwf``: multichannel Wiener filter of the local Gaussian model with a time-invariant
  spatial covariance ``R_j(f)`` and a PSD ``v_j(f, t)`` learnt from each true source;
  ``Y_j = v_j R_j (sum_k v_k R_k)^-1 X``.

All methods use the same STFT (:class:`longsep.spectral.STFTConfig`, default n_fft 4096,
hop 1024, as our models; sigsep used n_fft 2048). Songs are processed a block of frames
at a time. Layouts: audio ``(channels, samples)``; spectra ``(nsrc, channels, bins,
frames)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from longsep.errors import LongsepError
from longsep.heap import reuse_freed_blocks
from longsep.inference.streaming import MixtureFrames, OverlapAdd, TensorSource
from longsep.spectral import STFTConfig

log = logging.getLogger(__name__)

ORACLES: tuple[str, ...] = ("irm1", "irm2", "ibm", "mwf")
EPS = float(np.finfo(np.float64).eps)
_BLOCK_FRAMES = 128


def _power(spec: Tensor, power: float) -> Tensor:
    """``|spec| ** power``; for ``power == 2`` as ``spec * conj(spec)``, without a root."""
    if power == 2.0:
        return torch.mul(spec, spec.conj()).real
    return spec.abs().pow_(power)


def ratio_mask(sources: Tensor, mixture: Tensor, power: float, eps: float = EPS) -> Tensor:
    """Ideal ratio mask filtering: ``mixture * |S_j|^power / (eps + sum_k |S_k|^power)``.

    ``sources``: complex ``(nsrc, channels, ...)``, overwritten by the result;
    ``mixture``: complex ``(channels, ...)`` (any trailing time-frequency layout).
    """
    weights = _power(sources, power)
    weights.div_(weights.sum(0).add_(eps))
    return torch.mul(mixture, weights, out=sources)


def binary_mask(
    sources: Tensor, mixture: Tensor, alpha: float = 1.0, theta: float = 0.5, eps: float = EPS
) -> Tensor:
    """Ideal binary mask filtering: keep bins where ``|S_j|^a / (eps + |X|^a) >= theta``.

    Shapes as :func:`ratio_mask` (``sources`` is overwritten). With ``theta = 0.5`` and
    ``alpha = 1`` a bin goes to the source that holds at least half of the mixture
    magnitude there (possibly none).
    """
    keep = _power(sources, alpha).div_(_power(mixture, alpha).add_(eps)) >= theta
    return torch.mul(mixture, keep, out=sources)


def _inverse(matrix: Tensor) -> Tensor:
    """Inverse of ``(..., C, C)`` matrices; closed form for ``C <= 2``.

    Many tiny matrices are inverted elementwise: batched LAPACK calls are slow for them.
    """
    size = matrix.shape[-1]
    if size == 1:
        return 1 / matrix
    if size == 2:
        a, b = matrix[..., 0, 0], matrix[..., 0, 1]
        c, d = matrix[..., 1, 0], matrix[..., 1, 1]
        rows = [torch.stack([d, -b], dim=-1), torch.stack([-c, a], dim=-1)]
        return torch.stack(rows, dim=-2) / (a * d - b * c)[..., None, None]
    return torch.linalg.inv(matrix)


def _apply(matrix: Tensor, vector: Tensor) -> Tensor:
    """``matrix @ vector`` for ``(..., C, C)`` and ``(..., C)`` (broadcast, elementwise)."""
    rows = []
    for i in range(matrix.shape[-1]):
        row = matrix[..., i, 0] * vector[..., 0]
        for j in range(1, matrix.shape[-1]):
            row = row + matrix[..., i, j] * vector[..., j]
        rows.append(row)
    return torch.stack(rows, dim=-1)


class SpatialModels:
    """Oracle multichannel Wiener filter of the local Gaussian model.

    Each true source ``j`` has a time-invariant spatial covariance ``R_j(f)``: the time
    average of ``s s^H / (eps + mean_c |s_c|^2)``, scaled to trace ``channels`` (identity
    where the source is silent) plus ``eps * I``, accumulated over blocks of frames
    (:meth:`add`). Its PSD is ``v_j = s^H R_j^-1 s / channels``, and :meth:`filter` gives
    ``Y_j = v_j R_j (sum_k v_k R_k + eps I)^-1 X``. Spectra are ``(nsrc, channels, bins,
    frames)`` blocks; computations are in complex128.
    """

    def __init__(self, eps: float = EPS) -> None:
        self.eps = eps
        self.sums: Tensor | None = None
        self.frames = 0

    def add(self, sources: Tensor) -> None:
        """Accumulate the spatial statistics of a block of source spectra."""
        s = sources.to(torch.complex128)
        weighted = s / (self.eps + _power(s, 2.0).mean(1, keepdim=True))
        block = torch.einsum("nift,njft->nfij", weighted, s.conj())
        self.sums = block if self.sums is None else self.sums.add_(block)
        self.frames += s.shape[-1]

    def finish(self) -> None:
        """Turn the sums into covariances ``R_j(f)`` (and their inverses)."""
        channels = self.sums.shape[-1]
        eye = torch.eye(channels, dtype=torch.complex128)
        cov = self.sums / max(self.frames, 1)
        trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1).real
        silent = (trace <= 0)[..., None, None]
        scale = (channels / trace.clamp_min(self.eps))[..., None, None]
        self.cov = torch.where(silent, eye, cov * scale) + self.eps * eye
        self.inv = _inverse(self.cov)

    def filter(self, sources: Tensor, mixture: Tensor) -> Tensor:
        """Estimates of a block, written over ``sources`` (``mixture``: ``(channels, bins,
        frames)``)."""
        channels = mixture.shape[0]
        eye = torch.eye(channels, dtype=torch.complex128)
        vectors = sources.to(torch.complex128).permute(0, 2, 3, 1)  # (nsrc, bins, frames, C)
        cov = self.cov[:, :, None]
        psd = (vectors.conj() * _apply(self.inv[:, :, None], vectors)).sum(-1).real
        psd = psd.div_(channels).clamp_min_(0.0)[..., None, None]
        mix_cov = (psd * cov).sum(0) + self.eps * eye
        z = _apply(_inverse(mix_cov), mixture.to(torch.complex128).permute(1, 2, 0))
        estimates = psd[..., 0] * _apply(cov, z)
        sources.copy_(estimates.permute(0, 3, 1, 2))
        return sources


@torch.no_grad()
def oracle_separate(
    method: str,
    mixture: Tensor,
    sources: Mapping[str, Tensor],
    stft: STFTConfig | None = None,
    targets: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Oracle estimates ``{target: (channels, samples)}`` of ``mixture (channels, samples)``.

    ``sources`` maps every source name to its true ``(channels, samples)`` audio; all of
    them enter the masks' denominators and the mixture model, and ``targets`` (default:
    all sources) are returned, in float32 with the mixture's length. The song is
    transformed, filtered and resynthesised a block of frames at a time (the streaming
    STFT of :mod:`longsep.inference.streaming`), so no spectrogram of the whole song is
    held; ``mwf`` reads the sources twice, first for its spatial covariances.
    """
    if method not in ORACLES:
        raise LongsepError(f"oracle={method!r}: use one of {', '.join(ORACLES)}")
    names = list(sources)
    targets = list(targets) if targets else names
    missing = [t for t in targets if t not in sources]
    if missing:
        raise LongsepError(f"targets {missing} are not sources of the track ({names})")
    config, length = stft or STFTConfig(), mixture.shape[-1]
    if not 0 < config.hop_length < config.n_fft or length <= config.n_fft // 2:
        raise LongsepError(
            f"{length} samples with n_fft={config.n_fft}, hop={config.hop_length}: need "
            "0 < hop < n_fft (the Hann windows must overlap) and more than n_fft / 2 samples"
        )
    cpu = torch.device("cpu")

    def frames_of(audio: Tensor) -> MixtureFrames:
        return MixtureFrames(TensorSource(audio[None]), config, cpu)

    mix, true = frames_of(mixture), [frames_of(sources[n]) for n in names]
    total = config.frames(length)
    blocks = [(t0, min(total, t0 + _BLOCK_FRAMES)) for t0 in range(0, total, _BLOCK_FRAMES)]
    models = SpatialModels() if method == "mwf" else None
    if models is not None:
        for t0, t1 in blocks:
            models.add(torch.cat([frames(t0, t1) for frames in true]))
        models.finish()
    picked = [names.index(t) for t in targets]
    out = torch.empty(len(targets), *mixture.shape)
    istft = OverlapAdd(config, total, cpu)
    with reuse_freed_blocks():
        for t0, t1 in blocks:
            src, mix_spec = torch.cat([frames(t0, t1) for frames in true]), mix(t0, t1)[0]
            if models is not None:
                estimates = models.filter(src, mix_spec)
            elif method == "ibm":
                estimates = binary_mask(src, mix_spec)
            else:
                estimates = ratio_mask(src, mix_spec, power=1.0 if method == "irm1" else 2.0)
            first, chunk = istft.push(estimates[picked], t0)
            lo, hi = max(first, 0), min(first + chunk.shape[-1], length)
            if hi > lo:
                out[..., lo:hi] = chunk[..., lo - first : hi - first]
    return dict(zip(targets, out, strict=True))


class OracleEstimator:
    """Evaluation estimator (:class:`longsep.evaluation.Estimator`) of an oracle method.

    Called with a song holding ``mixture`` and ``sources`` (``(samples, channels)`` arrays),
    it returns ``{target: (samples, channels) float32}`` for ``targets`` (default: every
    source of the song).
    """

    def __init__(
        self,
        method: str,
        n_fft: int = 4096,
        hop_length: int = 1024,
        targets: Sequence[str] | None = None,
    ) -> None:
        if method not in ORACLES:
            raise LongsepError(f"oracle={method!r}: use one of {', '.join(ORACLES)}")
        if n_fft < 2 or not 0 < hop_length < n_fft:
            raise LongsepError(
                f"oracle_n_fft={n_fft}, oracle_hop={hop_length}: need 0 < hop < n_fft"
            )
        self.method = method
        self.stft = STFTConfig(n_fft=int(n_fft), hop_length=int(hop_length))
        self.targets = list(targets) if targets else None

    def settings(self) -> dict:
        """What determines the estimates (stored with the results)."""
        return {
            "oracle": self.method,
            "n_fft": self.stft.n_fft,
            "hop_length": self.stft.hop_length,
            "targets": self.targets,
        }

    def __call__(self, song) -> dict[str, np.ndarray]:
        sources = {n: torch.from_numpy(a.T) for n, a in song.sources.items()}
        mixture = torch.from_numpy(song.mixture.T)
        out = oracle_separate(self.method, mixture, sources, self.stft, self.targets)
        return {name: signal.T.numpy() for name, signal in out.items()}
