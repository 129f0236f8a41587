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
hop 1024, as our models; sigsep used n_fft 2048). Layouts: audio ``(channels, samples)``;
spectrograms ``(nsrc, channels, bins, frames)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from longsep.errors import LongsepError
from longsep.heap import reuse_freed_blocks
from longsep.spectral import STFTConfig, make_transforms

log = logging.getLogger(__name__)

ORACLES: tuple[str, ...] = ("irm1", "irm2", "ibm", "mwf")
EPS = float(np.finfo(np.float64).eps)
_BIN_CHUNK = 64
_MASK_BINS = 128


def _masked(sources: Tensor, mixture: Tensor, mask: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``sources`` overwritten by ``mixture * mask(sources, mixture)``, on blocks of bins.

    Whole-song temporaries of a few hundred MB each cost more in page faults than in
    arithmetic; blocks of bins keep them small and reused, and the estimates take the
    place of the source spectrograms.
    """
    with reuse_freed_blocks():
        for lo in range(0, sources.shape[-2], _MASK_BINS):
            block = slice(lo, lo + _MASK_BINS)
            mix = mixture[:, block]
            torch.mul(mix, mask(sources[:, :, block], mix), out=sources[:, :, block])
    return sources


def _power(spec: Tensor, power: float) -> Tensor:
    """``|spec| ** power``; for ``power == 2`` as ``spec * conj(spec)``, without a root."""
    if power == 2.0:
        return torch.mul(spec, spec.conj()).real
    return spec.abs().pow_(power)


def ratio_mask(sources: Tensor, mixture: Tensor, power: float, eps: float = EPS) -> Tensor:
    """Ideal ratio mask filtering: ``mixture * |S_j|^power / (eps + sum_k |S_k|^power)``.

    ``sources``: complex ``(nsrc, channels, bins, frames)``, overwritten by the result;
    ``mixture``: complex ``(channels, bins, frames)``.
    """

    def mask(src: Tensor, _: Tensor) -> Tensor:
        weights = _power(src, power)
        return weights.div_(weights.sum(0).add_(eps))

    return _masked(sources, mixture, mask)


def binary_mask(
    sources: Tensor, mixture: Tensor, alpha: float = 1.0, theta: float = 0.5, eps: float = EPS
) -> Tensor:
    """Ideal binary mask filtering: keep bins where ``|S_j|^a / (eps + |X|^a) >= theta``.

    Shapes as :func:`ratio_mask` (``sources`` is overwritten). With ``theta = 0.5`` and
    ``alpha = 1`` a bin goes to the source that holds at least half of the mixture
    magnitude there (possibly none).
    """

    def mask(src: Tensor, mix: Tensor) -> Tensor:
        return _power(src, alpha).div_(_power(mix, alpha).add_(eps)) >= theta

    return _masked(sources, mixture, mask)


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


def _spatial_model(source: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Spatial covariance ``(bins, ch, ch)`` and PSD ``(bins, frames)`` of one true source.

    ``source``: complex128 ``(channels, bins, frames)``. The covariance is the time average
    of ``s s^H / (eps + mean_c |s_c|^2)``, scaled to trace ``channels`` (identity where the
    source is silent) plus ``eps * I``; the PSD is then ``s^H R^-1 s / channels``.
    """
    channels, _, frames = source.shape
    eye = torch.eye(channels, dtype=source.dtype, device=source.device)
    naive = source.abs().pow(2).mean(0)
    weighted = source / (eps + naive)
    cov = torch.einsum("ift,jft->fij", weighted, source.conj()) / frames
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1).real
    silent = (trace <= 0)[:, None, None]
    cov = torch.where(silent, eye, cov * (channels / trace.clamp_min(eps))[:, None, None])
    cov = cov + eps * eye
    frames_first = source.permute(1, 2, 0)
    whitened = _apply(_inverse(cov)[:, None], frames_first)
    psd = (frames_first.conj() * whitened).sum(-1).real / channels
    return cov, psd.clamp_min(0.0)


def multichannel_wiener(sources: Tensor, mixture: Tensor, eps: float = EPS) -> Tensor:
    """Oracle multichannel Wiener filter (time-invariant spatial covariances).

    Shapes as :func:`ratio_mask` (``sources`` is overwritten). Works in complex128 over
    chunks of frequency bins, so memory beyond the inputs stays small.
    """
    nsrc, channels, bins, frames = sources.shape
    eye = torch.eye(channels, dtype=torch.complex128, device=sources.device)
    for lo in range(0, bins, _BIN_CHUNK):
        hi = min(bins, lo + _BIN_CHUNK)
        block = sources[:, :, lo:hi].to(torch.complex128)
        models = [_spatial_model(block[j], eps) for j in range(nsrc)]
        mix_cov = sum(psd[..., None, None] * cov[:, None] for cov, psd in models) + eps * eye
        x = mixture[:, lo:hi].to(torch.complex128).permute(1, 2, 0)
        z = _apply(_inverse(mix_cov), x)
        for j, (cov, psd) in enumerate(models):
            y = psd[..., None] * _apply(cov[:, None], z)
            sources[j, :, lo:hi] = y.permute(2, 0, 1).to(sources.dtype)
    return sources


def oracle_filter(method: str, sources: Tensor, mixture: Tensor) -> Tensor:
    """Apply oracle ``method`` (one of :data:`ORACLES`) to complex spectrograms; the
    estimates overwrite ``sources`` (shapes as :func:`ratio_mask`)."""
    if method == "irm1":
        return ratio_mask(sources, mixture, power=1.0)
    if method == "irm2":
        return ratio_mask(sources, mixture, power=2.0)
    if method == "ibm":
        return binary_mask(sources, mixture)
    if method == "mwf":
        return multichannel_wiener(sources, mixture)
    raise LongsepError(f"oracle={method!r}: use one of {', '.join(ORACLES)}")


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
    all sources) are returned, in float32 with the mixture's length.
    """
    if method not in ORACLES:
        raise LongsepError(f"oracle={method!r}: use one of {', '.join(ORACLES)}")
    names = list(sources)
    targets = list(targets) if targets else names
    missing = [t for t in targets if t not in sources]
    if missing:
        raise LongsepError(f"targets {missing} are not sources of the track ({names})")
    forward, inverse = make_transforms(stft or STFTConfig())
    length = mixture.shape[-1]
    mix_spec = forward(mixture.float())
    src_spec = forward(torch.stack([sources[n].float() for n in names]))
    estimates = oracle_filter(method, src_spec, mix_spec)
    # one target at a time: the inverse STFT's whole-song frame buffers stay smaller
    return {t: inverse(estimates[names.index(t)], length=length) for t in targets}


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
        if n_fft < 2 or not 0 < hop_length <= n_fft:
            raise LongsepError(
                f"oracle_n_fft={n_fft}, oracle_hop={hop_length}: need 0 < hop <= n_fft"
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
