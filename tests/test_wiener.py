"""Wiener filter against norbert (numpy reference) and Open-Unmix's torch version."""

from __future__ import annotations

import norbert
import numpy as np
import pytest
import torch
from openunmix import filtering

from longsep.errors import LongsepError
from longsep.inference.wiener import apply_wiener, softmask, wiener


def random_case(frames=12, bins=9, channels=2, sources=3, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.0, 1.0, (frames, bins, channels, sources)) ** 2
    x = rng.standard_normal((frames, bins, channels)) + 1j * rng.standard_normal(
        (frames, bins, channels)
    )
    return v, x


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize("use_softmask", [True, False])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_matches_norbert(iterations, use_softmask, channels):
    v, x = random_case(channels=channels, seed=iterations + 3 * channels)
    eps = np.finfo(np.float64).eps
    ref = norbert.wiener(v, x, iterations=iterations, use_softmask=use_softmask, eps=eps)
    ours = wiener(
        torch.from_numpy(v), torch.from_numpy(x), iterations, softmask=use_softmask, eps=eps
    )
    assert rel_err(ours.numpy(), ref) < 1e-4


def test_softmask_matches_norbert():
    v, x = random_case()
    ours = softmask(torch.from_numpy(v), torch.from_numpy(x), eps=1e-10)
    assert rel_err(ours.numpy(), norbert.softmask(v, x, eps=1e-10)) < 1e-6


def _ours_layout(v, x):
    """norbert (frames, bins, channels, sources) -> ours (1, sources, channels, bins, frames)."""
    mags = torch.from_numpy(v).permute(3, 2, 1, 0)[None].float()
    mix = torch.from_numpy(x).permute(2, 1, 0)[None].to(torch.complex64)
    return mags, mix


@pytest.mark.parametrize("niter", [0, 1, 2])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("use_softmask", [False, True])
def test_apply_wiener_matches_openunmix_windows(niter, residual, use_softmask):
    v, x = random_case(frames=25, sources=2, seed=niter)
    mags, mix = _ours_layout(np.sqrt(v), x)
    ours = apply_wiener(mags, mix, niter, use_softmask, 1.0, residual, wiener_win_len=10)
    pieces = []
    for start in range(0, 25, 10):
        t = slice(start, start + 10)
        spec = torch.from_numpy(np.sqrt(v[t])).double()
        stft = torch.view_as_real(torch.from_numpy(x[t]))
        y = filtering.wiener(spec, stft, niter, softmask=use_softmask, residual=residual)
        pieces.append(torch.view_as_complex(y.permute(0, 1, 2, 4, 3).contiguous()))
    ref = torch.cat(pieces).permute(3, 2, 1, 0)[None].numpy()
    assert ours.shape == ref.shape
    assert rel_err(ours.numpy(), ref) < 1e-4


def test_all_sources_sum_to_mixture():
    v, x = random_case(frames=40, sources=4, seed=7)
    mags, mix = _ours_layout(np.sqrt(v), x)
    for niter in (1, 2):
        out = apply_wiener(mags, mix, niter=niter)
        assert rel_err(out.sum(1).numpy(), mix.numpy()) < 1e-3


def test_silence_is_finite_zero():
    mags = torch.zeros(1, 3, 2, 5, 8)
    mix = torch.zeros(1, 2, 5, 8, dtype=torch.complex64)
    for use_softmask in (False, True):
        out = apply_wiener(mags, mix, niter=2, softmask=use_softmask, residual=True)
        assert torch.isfinite(out.real).all() and torch.isfinite(out.imag).all()
        assert out.abs().max() == 0
    silent_targets = apply_wiener(mags, torch.ones(1, 2, 5, 8, dtype=torch.complex64), niter=1)
    assert torch.isfinite(silent_targets.abs()).all()


def test_alpha_is_a_softmask_exponent():
    v, x = random_case(sources=2)
    mags, mix = _ours_layout(v, x)
    sharp = apply_wiener(mags, mix, niter=0, softmask=True, alpha=2.0)
    ref = apply_wiener(mags**2, mix, niter=0, softmask=True)
    torch.testing.assert_close(sharp, ref)
    plain = apply_wiener(mags, mix, niter=0, softmask=False, alpha=2.0)
    torch.testing.assert_close(plain.abs(), mags.expand_as(plain.abs()), rtol=1e-5, atol=1e-6)


def test_em_needs_two_sources():
    mags, mix = _ours_layout(*random_case(sources=1))
    with pytest.raises(LongsepError, match="residual=true"):
        apply_wiener(mags, mix, niter=1)
    assert apply_wiener(mags, mix, niter=1, residual=True).shape[1] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    mags, mix = _ours_layout(*random_case(frames=30, sources=3))
    cpu = apply_wiener(mags, mix, niter=1)
    gpu = apply_wiener(mags.cuda(), mix.cuda(), niter=1).cpu()
    assert rel_err(gpu.numpy(), cpu.numpy()) < 1e-4


@pytest.mark.parametrize("channels", [1, 2])
def test_bin_blocks_change_memory_not_results(monkeypatch, channels):
    """apply_wiener filters bins in blocks (every bin is independent, the scaling is the
    window's): the result equals filtering all bins at once."""
    from longsep.inference import wiener as module

    gen = torch.Generator().manual_seed(3)
    mags = torch.rand(1, 3, channels, 301, 40, generator=gen)
    mix = torch.randn(1, channels, 301, 40, dtype=torch.complex64, generator=gen)
    monkeypatch.setattr(module, "BIN_BLOCK", 10**6)
    whole = apply_wiener(mags, mix, niter=2, residual=True, wiener_win_len=16)
    monkeypatch.setattr(module, "BIN_BLOCK", 7)
    blocked = apply_wiener(mags, mix, niter=2, residual=True, wiener_win_len=16)
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-7)


def _centre_panned_case(mono_mix: bool, seed: int = 5):
    """Magnitude estimates ``(1, 3, 2, F, T)`` equal in both channels (as a model gives for a
    centre-panned source) and a mixture whose vocals are centre-panned; with ``mono_mix``
    every source is, so each ``R_j`` is singular: the hardest case for a float32 solve."""
    gen = torch.Generator().manual_seed(seed)
    bins, frames = 129, 120
    sources = torch.randn(3, 2, bins, frames, dtype=torch.complex128, generator=gen)
    sources[0, 1] = sources[0, 0]  # vocals: centre-panned
    if mono_mix:
        sources[:, 1] = sources[:, 0]
    mags = sources.abs().mean(1, keepdim=True).expand(-1, 2, -1, -1)
    gain = torch.empty(3, 1, bins, frames, dtype=torch.float64).uniform_(0.7, 1.3, generator=gen)
    return (mags * gain)[None].float(), sources.sum(0)[None].to(torch.complex64)


def _float64_filter(mags, mix, window):
    """The reference: :func:`filter_window` in float64 on each window of the batch item."""
    from longsep.inference.wiener import SCALE_FACTOR, filter_window

    out = []
    for start in range(0, mix.shape[-1], window):
        t = slice(start, start + window)
        x = mix[0, ..., t].to(torch.complex128)
        max_abs = max(1.0, float(x.abs().max()) / SCALE_FACTOR)
        out.append(
            filter_window(mags[0, ..., t].double(), x, 1, residual=True, eps=1e-10, max_abs=max_abs)
        )
    return torch.cat(out, -1)


def _snr_db(estimate, reference) -> list[float]:
    error = (estimate.to(torch.complex128) - reference).abs().square().sum((1, 2, 3))
    return (10 * torch.log10(reference.abs().square().sum((1, 2, 3)) / error)).tolist()


@pytest.mark.parametrize("mono_mix", [False, True])
def test_float32_filter_keeps_60_db_against_float64(monkeypatch, mono_mix):
    """apply_wiener runs the stereo EM in float32 and redoes ill-conditioned bins in float64:
    every source stays >= 60 dB from the float64 filter on centre-panned and mono mixes.
    With only the vocals centre-panned no bin needs float64; on a mono mix every bin does,
    and without that fallback the float32 solve breaks down (NaN or < 60 dB)."""
    from longsep.inference import wiener as module

    redone = []
    check = module._ill_conditioned
    monkeypatch.setattr(
        module, "_ill_conditioned", lambda *a: redone.append(check(*a).float().mean()) or check(*a)
    )
    mags, mix = _centre_panned_case(mono_mix)
    reference = _float64_filter(mags, mix, window=60)
    guarded = apply_wiener(mags, mix, niter=1, residual=True, wiener_win_len=60)[0]
    assert guarded.dtype == torch.complex64
    assert min(_snr_db(guarded, reference)) >= 60.0
    assert float(torch.stack(redone).mean()) == (1.0 if mono_mix else 0.0)
    if mono_mix:
        monkeypatch.setattr(module, "MAX_CONDITION", float("inf"))
        unguarded = apply_wiener(mags, mix, niter=1, residual=True, wiener_win_len=60)[0]
        snr = torch.tensor(_snr_db(unguarded, reference))
        assert bool(snr.isnan().any()) or float(snr.min()) < 60.0
