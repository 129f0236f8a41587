"""Multichannel Wiener filtering with EM refinement (norbert / Open-Unmix semantics).

Two layouts:

- the filter core (:func:`wiener`, :func:`softmask`, :func:`expectation_maximization`)
  uses norbert's ``(frames, bins, channels, sources)`` with a complex mixture
  ``(frames, bins, channels)``;
- :func:`apply_wiener`, used by the Separator, takes our layouts
  ``(batch, targets, channels, bins, frames)`` and ``(batch, channels, bins, frames)``
  and filters frame windows of ``wiener_win_len`` to bound memory, as Open-Unmix does.

The EM step estimates, per source, a power spectral density ``v`` (mean over
channels of ``|y|^2``) and a spatial covariance ``R`` per bin (over all frames of
the window), then filters the mixture with ``v_j R_j (sum_k v_k R_k + reg)^-1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from longsep.errors import LongsepError


def _eps(x: Tensor, eps: float | None) -> float:
    return float(torch.finfo(x.real.dtype).eps) if eps is None else float(eps)


def softmask(v: Tensor, x: Tensor, eps: float | None = None) -> Tensor:
    """Ratio-mask estimates: ``x * v_j / (eps + sum_k v_k)``.

    ``v``: nonnegative ``(frames, bins, channels, sources)``; ``x``: complex
    ``(frames, bins, channels)``. Returns complex ``(frames, bins, channels, sources)``.
    """
    eps = _eps(x, eps)
    return x[..., None] * (v / (eps + v.sum(-1, keepdim=True))).to(x.real.dtype)


_softmask = softmask  # ``wiener``/``apply_wiener`` take a bool of that name (norbert's API)


def _invert(m: Tensor, eps: float) -> Tensor:
    """Inverse of ``(..., C, C)`` matrices; closed form for 1 and 2 channels."""
    channels = m.shape[-1]
    if channels == 1:
        return 1.0 / (m + eps)
    if channels == 2:
        a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
        inv_det = 1.0 / (a * d - b * c)
        top = torch.stack([d, -b], -1)
        bottom = torch.stack([-c, a], -1)
        return torch.stack([top, bottom], -2) * inv_det[..., None, None]
    return torch.linalg.pinv(m, rtol=eps)


def expectation_maximization(
    y: Tensor, x: Tensor, iterations: int = 2, eps: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Refine source estimates ``y`` of mixture ``x`` by ``iterations`` EM steps.

    ``y``: complex ``(frames, bins, channels, sources)``; ``x``: complex
    ``(frames, bins, channels)``. Returns ``(y, v, R)`` with PSDs ``v``
    ``(frames, bins, sources)`` and spatial covariances ``R`` ``(bins, C, C, sources)``.
    """
    eps = _eps(x, eps)
    channels = x.shape[-1]
    reg = (eps**0.5) * torch.eye(channels, dtype=x.dtype, device=x.device)
    v = y.new_zeros(y.shape[:2] + y.shape[-1:], dtype=x.real.dtype)
    covariance = y.new_zeros((x.shape[1], channels, channels, y.shape[-1]))
    for _ in range(iterations):
        v = y.abs().pow(2).mean(-2)
        weight = eps + v.sum(0)  # (bins, sources)
        covariance = torch.einsum("tfcj,tfdj->fcdj", y, y.conj()) / weight[:, None, None, :]
        mix_cov = torch.einsum("tfj,fcdj->tfcd", v.to(x.dtype), covariance) + reg
        filtered = torch.einsum("tfde,tfe->tfd", _invert(mix_cov, eps), x)
        y = v[:, :, None, :] * torch.einsum("fcdj,tfd->tfcj", covariance, filtered)
    return y, v, covariance


def wiener(
    targets_spectrograms: Tensor,
    mix_stft: Tensor,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    scale_factor: float = 10.0,
    eps: float | None = None,
) -> Tensor:
    """Wiener filter of one mixture window (norbert layout, see module docstring).

    ``iterations=0`` returns the initial estimates: a ratio mask of the mixture
    (``softmask=True``) or the target magnitudes with the mixture phase. With
    ``residual`` a source ``mixture - sum(targets)`` is appended before EM.
    """
    if softmask:
        y = _softmask(targets_spectrograms, mix_stft, eps)
    else:
        phase = torch.polar(torch.ones_like(mix_stft.real), mix_stft.angle())
        y = targets_spectrograms.to(mix_stft.real.dtype) * phase[..., None]
    if residual:
        y = torch.cat([y, (mix_stft - y.sum(-1))[..., None]], -1)
    if iterations == 0:
        return y
    max_abs = max(1.0, float(mix_stft.abs().max()) / scale_factor)
    y, _, _ = expectation_maximization(y / max_abs, mix_stft / max_abs, iterations, eps)
    return y * max_abs


def apply_wiener(
    target_mags: Tensor,
    mix_stft: Tensor,
    niter: int = 1,
    softmask: bool = False,
    alpha: float = 1.0,
    residual: bool = False,
    wiener_win_len: int | None = 300,
    eps: float = 1e-10,
) -> Tensor:
    """Filter a batch: our layouts, frame windows of ``wiener_win_len``.

    ``target_mags``: real ``(batch, targets, channels, bins, frames)`` (channels may
    be 1); ``mix_stft``: complex ``(batch, channels, bins, frames)``. Returns complex
    ``(batch, targets + residual, channels, bins, frames)``. With ``softmask`` the
    magnitudes are raised to ``alpha`` first (Open-Unmix). EM runs in float64.
    """
    nb_sources = target_mags.shape[1] + int(residual)
    if niter > 0 and nb_sources < 2:
        raise LongsepError(
            f"niter={niter} needs at least two sources: separate more targets or set "
            "residual=true (or niter=0)"
        )
    if softmask and alpha != 1.0:
        target_mags = target_mags.pow(alpha)
    frames = mix_stft.shape[-1]
    step = wiener_win_len or frames
    out = []
    for b in range(mix_stft.shape[0]):
        pieces = []
        for start in range(0, frames, step):
            window = slice(start, min(frames, start + step))
            v = target_mags[b, ..., window].permute(3, 2, 1, 0).double()
            x = mix_stft[b, ..., window].permute(2, 1, 0).to(torch.complex128)
            y = wiener(v, x, niter, softmask=softmask, residual=residual, eps=eps)
            pieces.append(y.permute(3, 2, 1, 0).to(mix_stft.dtype))
        out.append(torch.cat(pieces, -1))
    return torch.stack(out)
