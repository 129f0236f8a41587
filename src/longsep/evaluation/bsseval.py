"""BSSEval v4 with two backends: museval (the reference) and an exact, fast torch one.

BSSEval v4 is the MUSDB18 / SiSEC 2018 protocol: ``museval.evaluate`` in ``"v4"`` mode,
i.e. ``museval.metrics.bss_eval(..., compute_permutation=False, filters_len=512,
framewise_filters=False, bsseval_sources_version=False)`` with 1-s windows and hops.

- ``backend="museval"`` calls museval itself (the reference).
- ``backend="fast"`` is our own torch implementation of the same quantities. The
  distortion filters (512 taps, all reference channels) are fitted once on the whole
  track from lagged auto/cross-correlations, which are accumulated blockwise in the
  frequency domain; the Gram system is factorised once for all estimates. The per-window
  projections and energy ratios are then computed for many windows at once with FFT
  convolutions. Everything runs in float64, on the GPU when one is present.

Both backends agree to rounding wherever BSSEval is well posed. Where the references
are linearly dependent only up to rounding (e.g. float32 stems panned from one mono,
band-limited signal) the projections, and museval's own ISR / SIR / SAR, depend on
rounding; 16-bit audio such as MUSDB18, or exactly dual-mono stems, are fine.

Layouts: inputs are museval's ``(nsrc, samples, channels)``; framewise outputs are
``(nsrc, nwin)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import scipy.fft
import scipy.linalg
import torch
from torch import Tensor

from longsep.errors import LongsepError
from longsep.heap import Workspace, reuse_freed_blocks

log = logging.getLogger(__name__)

BSS_METRICS: tuple[str, ...] = ("SDR", "ISR", "SIR", "SAR")  # museval's order
FILTERS_LEN = 512
_EPS64 = float(np.finfo(np.float64).eps)
_CORR_FFT = 1 << 14
_CHUNK_BYTES = 1 << 25
# windows scored together, so the filter spectra (46 MB: 4 stereo sources) stream once a batch
_WINDOW_BATCH_BYTES = 160 << 20

ArrayLike = np.ndarray | Tensor


# ---------------------------------------------------------------------------- inputs


Sources = list[np.ndarray]
_SILENCE_BLOCK = 1 << 16


def _as_array(x: ArrayLike) -> np.ndarray:
    """Numpy view of ``x``; float32 stays float32 (the fast backend converts block by block
    to float64, so no whole-track float64 copy is made), other dtypes become float64."""
    x = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _as_sources(x: ArrayLike | list | tuple, name: str) -> Sources:
    """One ``(samples, channels)`` array per source.

    ``x`` is ``(nsrc, samples, channels)`` (1-D and 2-D input promoted like museval) or a
    list of per-source ``(samples, channels)`` (or ``(samples,)``) arrays, which are used
    as they are: the sources of a track are never stacked into one copy.
    """
    if isinstance(x, list | tuple):
        sources = [_as_array(s) for s in x]
        if any(s.ndim > 2 for s in sources):
            raise LongsepError(f"{name}: expected (samples, channels) arrays per source")
        sources = [s[:, None] if s.ndim == 1 else s for s in sources]
        if len({s.shape for s in sources}) > 1:
            shapes = ", ".join(str(s.shape) for s in sources)
            raise LongsepError(f"{name}: sources of different shapes ({shapes})")
        return sources
    x = _as_array(x)
    if x.ndim > 3:
        raise LongsepError(f"{name}: expected (nsrc, samples, channels), got shape {x.shape}")
    return list(np.atleast_3d(x))


def _shape(sources: Sources) -> tuple[int, ...]:
    return (len(sources), *sources[0].shape) if sources else (0,)


def _is_silent(source: np.ndarray) -> bool:
    """Whether the channel sum of ``(samples, channels)`` is zero at every sample (museval).

    Channels are added in order and in float64, as museval's ``np.sum`` does, block by
    block, stopping at the first block that is not silent.
    """
    for lo in range(0, len(source), _SILENCE_BLOCK):
        block = source[lo : lo + _SILENCE_BLOCK]
        total = block[:, 0].astype(np.float64)
        for c in range(1, block.shape[1]):
            total += block[:, c]
        if total.any():
            return False
    return True


def _validated(references: ArrayLike, estimates: ArrayLike) -> tuple[Sources, Sources]:
    refs = _as_sources(references, "references")
    ests = _as_sources(estimates, "estimates")
    if _shape(refs) != _shape(ests):
        raise LongsepError(
            f"references {_shape(refs)} and estimates {_shape(ests)} differ: "
            "pass (nsrc, samples, channels) arrays of the same shape"
        )
    if not refs or refs[0].size == 0:
        raise LongsepError("references are empty: pass (nsrc, samples, channels) audio")
    for name, sources in (("references", refs), ("estimates", ests)):
        silent = [i for i, x in enumerate(sources) if _is_silent(x)]
        if silent:
            raise LongsepError(
                f"{name}: source(s) {silent} are all zeros; "
                "BSSEval needs every source to be non-silent"
            )
    return refs, ests


def _integral(value: float, name: str) -> int:
    if not math.isfinite(value) or value <= 0 or value != int(value):
        raise LongsepError(f"{name}={value}: use a positive whole number of samples")
    return int(value)


def _framing(window: float, hop: float, length: int) -> tuple[int, int, int]:
    """``(nwin, window, hop)`` in samples, as museval's ``Framing`` cuts a signal."""
    if window >= length:
        return 1, length, length
    window, hop = _integral(window, "window"), _integral(hop, "hop")
    return (length - window + hop) // hop, window, hop


# ---------------------------------------------------------------------------- fast backend


def _corr_fft(max_lag: int) -> tuple[int, int]:
    """``(nfft, step)``: FFT size and block hop of the blockwise lagged correlation."""
    nfft = max(_CORR_FFT, 1 << math.ceil(math.log2(8 * max_lag + 1)))
    return nfft, nfft - 2 * max_lag


def _padded_rfft(
    work: Workspace, name: str, signals: Tensor, nfft: int, order: tuple[int, int, int]
) -> Tensor:
    """Zero-padded ``rfft`` of ``(a, b, n)`` signals, permuted by ``order``, contiguous, in
    buffers of ``work``."""
    a, b, n = signals.shape
    padded = work.get(f"{name}.real", (a, b, nfft), torch.float64)
    padded[..., :n].copy_(signals)
    padded[..., n:].zero_()
    spec = torch.fft.rfft(padded)
    shape = tuple(spec.shape[i] for i in order)
    return work.get(name, shape, torch.complex128).copy_(spec.permute(order))


def _chunk(bytes_per_item: int, device: torch.device, budget: int = _CHUNK_BYTES) -> int:
    """Items per chunk: small on CPU, where reused buffers stay in cache; large on GPUs."""
    budget = budget if device.type == "cpu" else 32 * _CHUNK_BYTES
    return max(1, budget // bytes_per_item)


class _Channels:
    """Reference then estimate channels, ``2*K`` rows in source-major order, read by range.

    Sample ranges may reach before the start or past the end, where the signals are zero:
    the correlations and windows read only what they need, and no padded copy of the
    whole track is made.
    """

    def __init__(self, refs: Sources, ests: Sources, device: torch.device) -> None:
        self.sources = (refs, ests)
        self.nsrc, self.length, self.nchan = _shape(refs)
        self.device = device

    def __len__(self) -> int:
        return 2 * self.nsrc * self.nchan

    def read(self, start: int, stop: int) -> Tensor:
        """``(2*K, stop - start)`` float64 samples ``[start, stop)``."""
        out = torch.empty(len(self), stop - start, dtype=torch.float64, device=self.device)
        lo = max(start, 0)
        hi = max(min(stop, self.length), lo)  # lo == hi: the range misses the track
        out[:, : lo - start].zero_()
        out[:, hi - start :].zero_()
        rows = out.view(2, self.nsrc, self.nchan, -1)[..., lo - start : hi - start]
        for i, group in enumerate(self.sources):
            for j, x in enumerate(group):
                block = torch.from_numpy(x[lo:hi])
                for c in range(self.nchan):  # column by column: 3x faster than one .T copy
                    rows[i, j, c].copy_(block[:, c])
        return out


def _lagged_correlations(channels: _Channels, max_lag: int) -> Tensor:
    """``out[p, q, max_lag + k] = sum_n s[p, n] * s[q, n + k]``, ``p < K``, ``|k| <= max_lag``.

    ``s`` are the ``2*K`` channels (references first); returns ``(K, 2*K, 2*max_lag+1)``.
    Blocks of the references are correlated with blocks of all channels extended by
    ``max_lag`` on each side; the cross-spectra are summed over blocks by a batched matmul
    over frequencies, so memory does not grow with the length.
    """
    nx, nc = len(channels) // 2, len(channels)
    nfft, step = _corr_fft(max_lag)
    nblocks = -(-channels.length // step)
    chunk = _chunk((nx + nc) * nfft * 8, channels.device)
    spec = torch.zeros(nfft // 2 + 1, nx, nc, dtype=torch.complex128, device=channels.device)
    work = Workspace(channels.device)
    for b in range(0, nblocks, chunk):
        m = min(chunk, nblocks - b)
        span = channels.read(b * step - max_lag, (b + m - 1) * step - max_lag + nfft)
        xb = span[:nx, max_lag : max_lag + m * step].unfold(-1, step, step)
        xf = _padded_rfft(work, "x", xb, nfft, (2, 0, 1)).conj_physical_()
        yf = _padded_rfft(work, "y", span.unfold(-1, nfft, step), nfft, (2, 1, 0))
        spec.baddbmm_(xf, yf)
    return torch.fft.irfft(spec, n=nfft, dim=0)[: 2 * max_lag + 1].permute(1, 2, 0)


def _gram(corr: Tensor, taps: int) -> Tensor:
    """Regularised Gram matrix of all delayed reference channels, ``(K*taps, K*taps)``.

    ``corr``: ``(K, K, 2*taps-1)`` lagged correlations. Entry ``[(p, a), (q, b)]`` is
    ``<r_p delayed by a, r_q delayed by b>``; museval's ``eps`` is added on the diagonal.
    """
    k = corr.shape[0]
    lags = np.ascontiguousarray(corr.cpu().numpy())
    step = lags.itemsize
    # [p, a, q, b] = lags[p, q, taps - 1 + a - b]: a strided view copied once (3x a gather)
    toeplitz = np.lib.stride_tricks.as_strided(
        lags[:, :, taps - 1 :], (k, taps, k, taps), (lags.strides[0], step, lags.strides[1], -step)
    )
    gram = torch.from_numpy(np.ascontiguousarray(toeplitz).reshape(k * taps, -1)).to(corr.device)
    gram.diagonal().add_(_EPS64)
    return gram


def _cholesky_solve_in_place(matrices: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``(B, n, n)`` symmetric systems by LAPACK Cholesky, factorising in place.

    The transposed view of a C-ordered matrix is Fortran-ordered, so LAPACK overwrites
    it instead of copying 100+ MB; its upper triangle is the matrix's lower one, the
    triangle ``torch.linalg.cholesky`` reads. Raises ``LinAlgError`` if one is not
    positive definite.
    """
    out = np.empty_like(rhs)
    for i, (matrix, b) in enumerate(zip(matrices, rhs, strict=True)):
        factor = scipy.linalg.cho_factor(
            matrix.T, lower=False, overwrite_a=True, check_finite=False
        )
        out[i] = scipy.linalg.cho_solve(factor, b, check_finite=False)
    return out


def _solve_psd(build: Callable[[], Tensor], rhs: Tensor) -> Tensor:
    """Solve ``build() @ x = rhs`` (batched) for symmetric positive (semi)definite matrices.

    Cholesky first (in place on CPU, so ``build`` makes the matrices); LU (museval's
    solver) when rounding makes a matrix indefinite, as for dual-mono sources; least
    squares when one is singular (museval's own fallback).
    """
    matrix = build()
    if matrix.device.type == "cpu":
        shape = matrix.shape
        try:
            flat = _cholesky_solve_in_place(
                matrix.reshape(-1, *shape[-2:]).numpy(), rhs.reshape(-1, *rhs.shape[-2:]).numpy()
            )
            return torch.from_numpy(flat).view(rhs.shape)
        except np.linalg.LinAlgError:
            matrix = build()
    else:
        factor, info = torch.linalg.cholesky_ex(matrix)
        if not bool((info != 0).any()):
            return torch.cholesky_solve(rhs, factor)
    log.debug("Gram matrix is not positive definite to rounding: solving with LU")
    solution, info = torch.linalg.solve_ex(matrix, rhs)
    if bool((info != 0).any()):
        log.debug("Gram matrix is singular: solving by least squares")
        return torch.linalg.lstsq(matrix, rhs).solution
    return solution


def _distortion_filters(channels: _Channels, taps: int) -> Tensor:
    """Least-squares FIR filters from the references to each estimate, fitted on the track.

    ``channels``: references then estimates, ``K = nsrc*nchan`` channels each, in
    source-major order. Returns ``(K, 2*K, taps)`` (input reference channel, output
    channel, tap). Output ``(j, c)`` in ``[:K]``
    projects estimate ``j`` channel ``c`` on all references; the same output in ``[K:]``
    projects it on the channels of reference ``j`` only.
    """
    k, nsrc, nchan, device = len(channels) // 2, channels.nsrc, channels.nchan, channels.device
    corr = _lagged_correlations(channels, taps - 1)
    cross = corr[:, k:, taps - 1 :].permute(0, 2, 1).reshape(k * taps, k)
    filters = corr.new_zeros(k, 2 * k, taps)
    full = _solve_psd(lambda: _gram(corr[:, :k], taps), cross)
    filters[:, :k] = full.view(k, taps, k).permute(0, 2, 1)
    # each estimate projected on its own reference's channels only
    chans = torch.arange(k, device=device).view(nsrc, nchan)
    src = torch.arange(nsrc, device=device)
    own = _solve_psd(
        lambda: torch.stack([_gram(corr[c][:, c], taps) for c in chans]),
        cross.view(nsrc, nchan * taps, nsrc, nchan)[src, :, src],
    )
    own = own.view(nsrc, nchan, taps, nchan).permute(0, 1, 3, 2)
    filters.view(nsrc, nchan, 2, nsrc, nchan, taps)[src, :, 1, src] = own
    return filters


def _parseval_weights(nfft: int, device: torch.device) -> Tensor:
    """``(nfft//2+1,)`` weights so that ``weights @ |rfft(x)|^2 == sum(x^2)``."""
    weights = torch.full((nfft // 2 + 1,), 2.0 / nfft, dtype=torch.float64, device=device)
    weights[0] = 1.0 / nfft
    if nfft % 2 == 0:
        weights[-1] = 1.0 / nfft
    return weights


def _safe_db(num: Tensor, den: Tensor) -> Tensor:
    """``10 log10(num / den)``, ``+inf`` where ``den == 0`` (museval's convention)."""
    return torch.where(den == 0, torch.full_like(num, math.inf), 10 * torch.log10(num / den))


def _window_scores(
    windows: Tensor, filters: Tensor, nfft: int, nsrc: int, work: Workspace
) -> Tensor:
    """SDR, ISR, SIR, SAR ``(4, nw, nsrc)`` of a batch of windows.

    ``windows``: ``(2*K, nw, L)``, the reference then the estimate channels;
    ``filters``: ``(f, K, 2*K)`` spectra of the track-level filters at ``nfft >= L + taps
    - 1``. Each window's references are truncated to the window and projected, and all
    energies are taken over the ``L + taps - 1`` samples museval uses (Parseval's sum in
    the frequency domain).
    """
    k = len(windows) // 2
    nw = windows.shape[1]
    ref_w, est_w = windows[:k], windows[k:]
    spec = _padded_rfft(work, "windows", windows, nfft, (2, 1, 0))
    true, est = spec[..., :k], spec[..., k:]
    # P / P_own: estimate projected on all references / on its own reference only
    mixed = torch.matmul(true, filters, out=work.get("mixed", (len(spec), nw, 2 * k), spec.dtype))
    diffs = work.get("diffs", (len(spec), nw, 3, k), spec.dtype)
    proj, proj_own = mixed.view(-1, nw, 2, k).unbind(2)
    torch.sub(proj, proj_own, out=diffs[:, :, 0])
    torch.sub(proj_own, true, out=diffs[:, :, 1])
    torch.sub(est, proj, out=diffs[:, :, 2])
    weights = _parseval_weights(nfft, windows.device)

    def energies(spec: Tensor) -> tuple[Tensor, ...]:  # squares ``spec`` in place
        power = torch.view_as_real(spec).view(len(weights), -1).pow_(2)
        return (weights @ power).view(nw, -1, nsrc, 2 * (k // nsrc)).sum(-1).unbind(1)

    e_proj, e_own = energies(mixed)
    e_interf, e_spat, e_artif = energies(diffs)
    e_true = ref_w.pow(2).sum(-1).T.reshape(nw, nsrc, -1).sum(-1)
    e_dist = (est_w - ref_w).pow(2).sum(-1).T.reshape(nw, nsrc, -1).sum(-1)
    scores = torch.stack(
        [
            _safe_db(e_true, e_dist),
            _safe_db(e_true, e_spat),
            _safe_db(e_own, e_interf),
            _safe_db(e_proj, e_artif),
        ]
    )
    silent = torch.zeros(nw, dtype=torch.bool, device=windows.device)
    for x in (ref_w, est_w):
        silent |= (x.reshape(nsrc, -1, nw, x.shape[-1]).sum(1) == 0).all(-1).any(0)
    return scores.masked_fill(silent[None, :, None], math.nan)


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def _bss_eval_fast(
    refs: Sources, ests: Sources, window: float, hop: float, device: torch.device
) -> np.ndarray:
    """Framewise ``(4, nsrc, nwin)`` scores from our torch implementation."""
    nsrc, length, nchan = _shape(refs)
    k = nsrc * nchan
    nwin, win_len, hop = _framing(window, hop, length)
    channels = _Channels(refs, ests, device)
    filters = _distortion_filters(channels, FILTERS_LEN)
    nfft = scipy.fft.next_fast_len(win_len + FILTERS_LEN - 1, real=True)
    filters = torch.fft.rfft(filters, n=nfft).permute(2, 0, 1).contiguous()  # frequency first
    chunk = _chunk(12 * k * nfft * 8, device, _WINDOW_BATCH_BYTES)
    work = Workspace(device)
    parts = []
    for t in range(0, nwin, chunk):
        span = channels.read(t * hop, (min(t + chunk, nwin) - 1) * hop + win_len)
        parts.append(_window_scores(span.unfold(-1, win_len, hop), filters, nfft, nsrc, work))
    return torch.cat(parts, dim=1).permute(0, 2, 1).cpu().numpy()


def _bss_eval_museval(refs: Sources, ests: Sources, window: float, hop: float) -> np.ndarray:
    """Framewise ``(4, nsrc, nwin)`` scores from museval (BSSEval v4 settings)."""
    from museval.metrics import bss_eval as museval_bss_eval

    sdr, isr, sir, sar, _ = museval_bss_eval(
        np.stack(refs, dtype=np.float64),
        np.stack(ests, dtype=np.float64),
        window=window,
        hop=hop,
        compute_permutation=False,
        filters_len=FILTERS_LEN,
        framewise_filters=False,
        bsseval_sources_version=False,
    )
    return np.stack([sdr, isr, sir, sar])


def bss_eval(
    references: ArrayLike,
    estimates: ArrayLike,
    backend: str = "fast",
    window: float = 44100,
    hop: float = 44100,
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """BSSEval v4 framewise scores, as museval computes them for MUSDB18.

    ``references`` / ``estimates``: ``(nsrc, samples, channels)`` numpy or torch (1-D and
    2-D input is promoted like museval), or lists of ``(samples, channels)`` arrays, one
    per source (not stacked: no copy of the track). ``window`` / ``hop`` in samples
    (``window`` may be ``math.inf`` for one window over the whole track). Returns
    ``{"SDR", "ISR", "SIR", "SAR"}`` each ``(nsrc, nwin)`` in dB: ``nan`` in windows where
    any reference or estimate is silent, ``inf`` where the error energy is exactly zero.
    ``device`` is used by the ``fast`` backend only (default: CUDA when available).
    """
    refs, ests = _validated(references, estimates)
    if backend == "museval":
        scores = _bss_eval_museval(refs, ests, window, hop)
    elif backend == "fast":
        with reuse_freed_blocks():  # per-window tensors reuse pages instead of faulting
            scores = _bss_eval_fast(refs, ests, window, hop, _default_device(device))
    else:
        raise LongsepError(f"backend={backend!r}: use 'fast' or 'museval'")
    return dict(zip(BSS_METRICS, scores, strict=True))
