"""Arm C's reach limit: a network with ``reach`` cannot see past its piece."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train
from hydra.utils import instantiate

import longsep
from longsep.config import reach_frames
from longsep.errors import LongsepError
from longsep.models.build import instantiate_network
from longsep.models.layers import reach_pieces

STFT = {"n_fft": 1024, "hop_length": 256, "center": True, "sample_rate": 16000}
SMALL = {"stft": STFT, "bandwidth": 8000, "nb_channels": 1}


@pytest.mark.parametrize("frames, reach", [(1876, 469), (10, 4), (8, 4), (5, 4), (4, 4), (3, 9)])
def test_pieces_tile_the_input_with_one_full_piece_centred(frames, reach):
    pieces = reach_pieces(frames, reach)
    assert pieces[0][0] == 0 and pieces[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
    assert all(0 < b - a <= reach for a, b in pieces)
    if frames > reach:  # every piece but the two at the edges is full, one is centred
        assert all(b - a == reach for a, b in pieces[1:-1])
        start = frames // 2 - reach // 2
        assert (start, start + reach) in pieces


def test_reach_of_arm_c_is_7_5_seconds_at_the_cpu_recipe_stft():
    assert reach_frames(7.5, STFT) == 469  # 7.5 s x 62.5 frames a second, rounded
    assert reach_frames(None, STFT) is None
    with pytest.raises(LongsepError, match="reach=-1"):
        reach_frames(-1, STFT)


@pytest.mark.parametrize(
    "separator, attention", [("umx_small", None), ("umx_transformer_small", "qkvg1D")]
)
def test_arm_c_centre_is_blind_to_audio_farther_than_its_piece(separator, attention):
    """The centre piece's output is unchanged when every frame outside it changes; with
    full reach (arm B) the same change moves the centre's output."""
    torch.manual_seed(0)
    limited = longsep.build_network(separator, attention, seq_len=30, reach=7.5, **SMALL)
    full = longsep.build_network(separator, attention, seq_len=30, **SMALL)
    full.load_state_dict(limited.state_dict())
    limited.eval(), full.eval()
    frames = 1876  # a 30-s window at 16 kHz, hop 256
    mag = torch.rand(1, 1, 513, frames)
    other = torch.rand(1, 1, 513, frames)
    start = frames // 2 - limited.reach // 2
    centre = slice(start, start + limited.reach)
    changed = other.clone()
    changed[..., centre] = mag[..., centre]  # the centre kept, everything else replaced
    with torch.no_grad():
        a, b = limited(mag)[..., centre], limited(changed)[..., centre]
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        c, d = full(mag)[..., centre], full(changed)[..., centre]
    assert (c - d).abs().max() > 1e-3


def test_arm_c_output_equals_the_network_run_on_each_piece_alone():
    torch.manual_seed(1)
    limited = longsep.build_network("umx_small", None, seq_len=30, reach=2.0, **SMALL)
    full = longsep.build_network("umx_small", None, seq_len=30, **SMALL)
    full.load_state_dict(limited.state_dict())
    limited.eval(), full.eval()
    mag = torch.rand(2, 1, 513, 300)
    with torch.no_grad():
        whole = limited(mag)
        parts = torch.cat([full(mag[..., a:b]) for a, b in reach_pieces(300, limited.reach)], -1)
    torch.testing.assert_close(whole, parts)


def test_training_run_name_says_the_reach():
    from longsep.cli.common import run_name

    assert run_name("umx_small", "default", "vocals", 30.0, 7.5) == "umx_small-vocals-30s-reach7.5s"
    assert run_name("umx_small", None, "vocals", 30.0) == "umx_small-vocals-30s"


@pytest.mark.parametrize("arm, seq_len, reach", [("A", 7, None), ("B", 30, None), ("C", 30, 469)])
def test_arms_compose_into_the_registered_chunks_batches_and_reach(tmp_path, arm, seq_len, reach):

    cfg = compose_train(
        ["+experiment=context_study_rendered", f"arm={arm}"], tmp_path / "r", tmp_path
    )
    assert cfg.seq_len == seq_len and not cfg.data.random_mix
    assert instantiate(cfg.data).batch_size == {7: 17, 30: 4}[seq_len]
    assert instantiate_network(cfg).reach == reach
    assert cfg.run_name.endswith("-reach7.5s" if reach else f"-{seq_len}s")
