"""STFT / ISTFT: exact round trip for any length, shapes, and Open-Unmix's transform."""

import pytest
import torch

from longsep.spectral import ISTFT, STFT, STFTConfig, bandwidth_to_max_bin, make_transforms


@pytest.mark.parametrize("length", [1, 100, 2048, 2049, 4096, 44100, 44100 * 3 + 17])
def test_round_trip_any_length(length):
    stft, istft = make_transforms()
    audio = torch.randn(2, 2, length, dtype=torch.float64)
    spec = stft(audio)
    assert spec.shape == (2, 2, 2049, length // 1024 + 1)
    back = istft(spec, length=length)
    assert back.shape == audio.shape
    assert (back - audio).abs().max() < 1e-5


def test_round_trip_float32_batch_layout():
    stft, istft = make_transforms(STFTConfig(n_fft=1024, hop_length=256))
    audio = torch.rand(3, 1, 10_000) * 2 - 1
    spec = stft(audio)
    assert spec.shape == (3, 1, 513, 10_000 // 256 + 1)
    assert (istft(spec, length=10_000) - audio).abs().max() < 1e-5


def test_matches_openunmix_transform():
    from openunmix.transforms import TorchSTFT

    audio = torch.randn(2, 2, 30_000)
    ours = STFT()(audio)
    theirs = TorchSTFT(n_fft=4096, n_hop=1024, center=True)(audio)
    assert torch.allclose(ours, torch.view_as_complex(theirs), atol=1e-4)


def test_frames_and_bins():
    cfg = STFTConfig()
    assert cfg.nb_bins == 2049
    assert cfg.frames(44100 * 60) == 44100 * 60 // 1024 + 1
    assert cfg.seconds_to_frames(60) == cfg.frames(2_646_000)
    assert STFTConfig(center=False).frames(4096) == 1


def test_bandwidth_to_max_bin_matches_openunmix():
    from openunmix.utils import bandwidth_to_max_bin as ref

    assert bandwidth_to_max_bin(44100, 4096, 16000) == int(ref(44100, 4096, 16000))
    assert bandwidth_to_max_bin(44100, 4096, None) == 2049


def test_istft_accepts_module_layout():
    istft = ISTFT()
    spec = torch.zeros(1, 2, 2049, 5, dtype=torch.complex64)
    assert istft(spec, length=4096).shape == (1, 2, 4096)
