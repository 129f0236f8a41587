"""Oracle ceilings: analytic cases of each mask / filter, and scores on synthetic songs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from longsep.data.musdb import open_musdb
from longsep.data.synth import ensure_dataset
from longsep.errors import LongsepError
from longsep.evaluation.evaluate import Song, evaluate_songs
from longsep.evaluation.metrics import si_sdr
from longsep.evaluation.oracle import ORACLES, OracleEstimator, oracle_separate
from longsep.evaluation.results import ResultStore, summarize
from longsep.spectral import STFTConfig, make_transforms

RATE = 44100
SMALL = STFTConfig(n_fft=1024, hop_length=256)


def _noise(seconds: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((2, round(seconds * RATE))).astype(np.float32))


def _db(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return float(si_sdr(estimate.flatten().double(), reference.flatten().double()))


@pytest.mark.parametrize("method", ["irm1", "irm2", "mwf"])
def test_soft_filters_sum_to_the_mixture(method):
    sources = {f"s{i}": 0.3 * _noise(1.0, i) for i in range(3)}
    mixture = sum(sources.values())
    out = oracle_separate(method, mixture, sources, SMALL)
    assert list(out) == list(sources)
    assert all(a.shape == mixture.shape for a in out.values())
    torch.testing.assert_close(sum(out.values()), mixture, atol=1e-4, rtol=0)


def test_masks_of_scaled_copies_are_analytic():
    """Sources ``a x`` and ``b x``: IRM1 gives them back exactly, IRM2 gives a^2/(a^2+b^2) x,
    IBM (theta 0.5) gives nothing to the smaller one and the mixture to the larger one."""
    x = _noise(1.0, 0)
    a, b = 0.4, 0.6
    sources = {"small": a * x, "large": b * x}
    irm1 = oracle_separate("irm1", x, sources, SMALL)
    torch.testing.assert_close(irm1["small"], a * x, atol=1e-4, rtol=0)
    irm2 = oracle_separate("irm2", x, sources, SMALL)
    torch.testing.assert_close(irm2["large"], b**2 / (a**2 + b**2) * x, atol=1e-4, rtol=0)
    ibm = oracle_separate("ibm", x, sources, SMALL)
    assert float(ibm["small"].abs().max()) == 0.0
    torch.testing.assert_close(ibm["large"], x, atol=1e-4, rtol=0)


def test_binary_mask_separates_disjoint_spectra():
    t = torch.arange(RATE) / RATE
    low = torch.stack([torch.sin(2 * math.pi * 300 * t), 0.5 * torch.sin(2 * math.pi * 300 * t)])
    high = 0.5 * torch.stack([torch.sin(2 * math.pi * 5000 * t)] * 2)
    out = oracle_separate("ibm", low + high, {"low": low, "high": high}, SMALL)
    assert _db(out["low"], low) > 30 and _db(out["high"], high) > 30


def test_multichannel_wiener_uses_the_spatial_images():
    """Two white noises panned apart: the spectra overlap fully, so masks reach ~10 dB,
    but the stereo Wiener filter steers a null on the other source."""
    sources = {}
    for i, (left, right) in enumerate([(1.0, 0.2), (0.3, 1.0)]):
        mono = _noise(2.0, i)[0]
        sensor_noise = 1e-2 * _noise(2.0, 10 + i)
        sources[f"s{i}"] = torch.stack([left * mono, right * mono]) + sensor_noise
    mixture = sum(sources.values())
    mwf = oracle_separate("mwf", mixture, sources, SMALL)
    irm = oracle_separate("irm1", mixture, sources, SMALL)
    for name, reference in sources.items():
        assert _db(mwf[name], reference) > 30
        assert _db(irm[name], reference) < 15


def _whole_song_oracle(method: str, mixture, sources: dict, config: STFTConfig) -> dict:
    """Reference: spectrograms of the whole song, each oracle written out in complex128."""
    stft, istft = make_transforms(config)
    x = stft(mixture).numpy().astype(np.complex128)  # (C, F, T)
    s = np.stack([stft(a).numpy() for a in sources.values()]).astype(np.complex128)
    eps = np.finfo(np.float64).eps
    if method in ("irm1", "irm2"):
        weights = np.abs(s) ** (1 if method == "irm1" else 2)
        y = x * weights / (eps + weights.sum(0))
    elif method == "ibm":
        y = x * (np.abs(s) / (eps + np.abs(x)) >= 0.5)
    else:
        channels, frames, eye = x.shape[0], x.shape[-1], np.eye(x.shape[0])
        cov = np.einsum(
            "nift,njft->nfij", s / (eps + np.mean(np.abs(s) ** 2, 1))[:, None], s.conj()
        )
        cov /= frames
        cov *= channels / np.einsum("nfii->nf", cov).real[..., None, None]
        cov += eps * eye
        psd = np.einsum("nift,nfij,njft->nft", s.conj(), np.linalg.inv(cov), s).real / channels
        psd = np.maximum(psd, 0)[..., None, None]
        mix_cov = (psd * cov[:, :, None]).sum(0) + eps * eye
        z = np.linalg.solve(mix_cov, x.transpose(1, 2, 0)[..., None])[..., 0]
        y = np.einsum("nftij,ftj->nift", psd * cov[:, :, None], z)
    out = istft(torch.from_numpy(y.astype(np.complex64)), length=mixture.shape[-1])
    return dict(zip(sources, out, strict=True))


@pytest.mark.parametrize("method", ORACLES)
def test_blockwise_oracles_equal_whole_song_spectrograms(method):
    """Blocks of frames (and mwf's two passes) give the whole-song filters' estimates."""
    gen = torch.Generator().manual_seed(3)
    sources = {}
    for i, cutoff in enumerate((0.05, 0.3, 1.0)):
        noise = torch.randn(2, 3 * RATE, generator=gen)
        spectrum = torch.fft.rfft(noise)
        spectrum[:, int(cutoff * spectrum.shape[-1]) :] *= 0.05
        sources[f"s{i}"] = (0.3 * torch.fft.irfft(spectrum, n=noise.shape[-1])).float()
    mixture = sum(sources.values())
    ours = oracle_separate(method, mixture, sources, SMALL)
    expected = _whole_song_oracle(method, mixture, sources, SMALL)
    for name in sources:
        if method == "ibm":  # a bin whose ratio rounds to the threshold may flip
            differ = (ours[name] - expected[name]).abs() > 1e-4
            assert float(differ.float().mean()) < 1e-3
        else:
            torch.testing.assert_close(ours[name], expected[name], atol=2e-5, rtol=0)


def test_targets_subset_and_bad_arguments():
    sources = {"vocals": _noise(0.5, 0), "other": _noise(0.5, 1)}
    mixture = sum(sources.values())
    out = oracle_separate("irm2", mixture, sources, SMALL, targets=["other"])
    assert list(out) == ["other"]
    with pytest.raises(LongsepError, match="oracle='nope'"):
        oracle_separate("nope", mixture, sources, SMALL)
    with pytest.raises(LongsepError, match="bass"):
        oracle_separate("irm1", mixture, sources, SMALL, targets=["bass"])
    with pytest.raises(LongsepError, match="oracle_hop"):
        OracleEstimator("irm1", n_fft=1024, hop_length=2048)
    with pytest.raises(LongsepError, match="hop < n_fft"):
        OracleEstimator("irm1", n_fft=1024, hop_length=1024)
    with pytest.raises(LongsepError, match="hop < n_fft"):
        oracle_separate("irm1", mixture, sources, STFTConfig(n_fft=1024, hop_length=1024))
    short = {name: audio[:, :500] for name, audio in sources.items()}
    with pytest.raises(LongsepError, match="500 samples"):
        oracle_separate("irm1", mixture[:, :500], short, SMALL)


@pytest.fixture(scope="module")
def synth_tracks(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("synth")
    ensure_dataset(root, n_train=1, n_valid=0, n_test=1, min_seconds=4, max_seconds=5)
    return open_musdb(root, "test", is_wav=True, setup_file="setup.yaml")


def test_oracles_on_synthetic_songs(synth_tracks, tmp_path: Path):
    medians = {}
    for method in ORACLES:
        store = ResultStore(tmp_path / method)
        evaluate_songs(synth_tracks, OracleEstimator(method), store, backend="fast")
        summary = summarize(store, [t.name for t in synth_tracks], method)
        assert summary["n_tracks"] == 1
        medians[method] = summary["median"]
        assert list(medians[method]) == ["vocals", "drums", "bass", "other"]
        values = [v for target in medians[method].values() for v in target.values()]
        assert all(math.isfinite(v) for v in values)
    assert medians["irm1"]["vocals"]["SDR"] > 10
    for method in ORACLES:
        assert all(medians[method][t]["SDR"] > 5 for t in medians[method])
    # the multichannel Wiener filter is the highest ceiling for vocals, as in SiSEC 2018
    assert medians["mwf"]["vocals"]["SDR"] > medians["ibm"]["vocals"]["SDR"]


def test_oracle_estimator_reads_every_source_of_a_song(synth_tracks):
    song = Song.from_track(synth_tracks[0])
    estimates = OracleEstimator("irm1", n_fft=2048, hop_length=512)(song)
    assert list(estimates) == ["vocals", "drums", "bass", "other"]
    total = np.sum(list(estimates.values()), axis=0)
    np.testing.assert_allclose(total, song.mixture, atol=1e-4)
    assert all(e.shape == song.mixture.shape and e.dtype == np.float32 for e in estimates.values())
