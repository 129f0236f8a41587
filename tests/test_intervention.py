"""The far-context intervention and the control's scoring, on models with known reach."""

from __future__ import annotations

import math

import pytest
import torch

from longsep.inference.separator import Separator
from longsep.models.build import compose_network, network_config, network_from_node
from longsep.models.layers import reach_pieces
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, save_store
from longsep.study import control, intervention
from longsep.study.intervention import ScoredSong, centre_range, intervene, track_effects

STFT = STFTConfig(n_fft=1024, hop_length=256, center=True, sample_rate=16000)
STFT_NODE = {"n_fft": 1024, "hop_length": 256, "center": True, "sample_rate": 16000}


def _separator(tmp_path, name, reach):
    torch.manual_seed(0)  # the same weights with and without the reach limit
    cfg = compose_network(
        "umx_transformer_small", "qkvg1D", seq_len=8, reach=reach, stft=STFT_NODE, bandwidth=8000
    )
    node = network_config(cfg)
    model = network_from_node(node, "test")
    with torch.no_grad():  # masks that depend on the core's output (random weights don't)
        hidden = model.hidden_size
        model.fc2.weight[:, hidden:] *= 20.0
        model.output_scale.fill_(3.0)
        model.output_mean.zero_()
    store = save_store(tmp_path / name, model, StoreEntry("vocals", node, STFT, seq_len=8))
    return Separator.from_pretrained(store, ["vocals"], niter=0, residual=True, segment=None)


def _songs(count=3, seconds=12):
    generator = torch.Generator().manual_seed(1)
    songs = []
    for i in range(count):
        level = 0.05 * 4**i  # songs of different loudness: replacing the surroundings shows
        target = level * torch.randn(2, seconds * 16000, generator=generator)
        other = level * torch.randn(2, seconds * 16000, generator=generator)
        songs.append(ScoredSong(f"song {i}", target + other, target))
    return songs


def test_centre_range_is_the_centre_piece_of_the_reach_layout():
    window = 30 * 16000
    a, b = centre_range(window, STFT)
    frames, reach = STFT.frames(window), round(7.5 * 16000 / 256)
    assert (a // 256, b // 256) in reach_pieces(frames, reach)
    assert (b - a) / 16000 == pytest.approx(7.5, abs=0.01)


def test_a_reach_limited_model_shows_no_effect_and_a_full_reach_model_does(tmp_path):
    """Arm C is the intervention's built-in negative: the scored samples of a model whose
    reach is the centre piece come from true audio only, whatever replaces the rest."""
    songs = _songs()
    rows_c = intervene(_separator(tmp_path, "c", 2.0), songs, 8.0, centre_seconds=2.0)
    rows_b = intervene(_separator(tmp_path, "b", None), songs, 8.0, centre_seconds=2.0)
    assert len(rows_c) == len(rows_b) == 3 * 20  # 20 windows a song
    assert {r[1] for r in rows_c[:20]} == {"song 1"}  # the next song is the donor
    effect_c = max(abs(r[3] - r[4]) for r in rows_c)
    effect_b = max(abs(r[3] - r[4]) for r in rows_b)
    assert effect_c < 1e-6 and effect_b > 1e-3  # random weights: small, but there
    path = tmp_path / "intervention.csv"
    intervention.write_rows(path, intervention.COLUMNS, rows_b)
    effects = track_effects(path)
    assert set(effects) == {"song 0", "song 1", "song 2"}
    first = [r[3] - r[4] for r in rows_b if r[0] == "song 0"]
    assert effects["song 0"] == pytest.approx(sum(first) / len(first), abs=1e-3)


def test_a_window_without_a_finite_difference_is_named_not_dropped_silently(tmp_path, caplog):
    path = tmp_path / "intervention.csv"
    rows = [("s", "d", 0.0, 5.0, 4.0), ("s", "d", 7.5, math.inf, 3.0), ("s", "d", 15.0, 6.0, 4.0)]
    intervention.write_rows(path, intervention.COLUMNS, rows)
    assert track_effects(path) == {"s": pytest.approx(1.5)}
    assert "s at 7.5000 s left out (SDR difference inf)" in caplog.text


def test_silent_centres_are_left_out(tmp_path):
    songs = _songs(2)
    songs[0].target[:, : 8 * 16000] = 0.0  # no target in the first windows' centres
    a, b = centre_range(8 * 16000, STFT, 2.0)
    assert not intervention.audible(songs[0].mixture[:, a:b], songs[0].target[:, a:b])
    assert intervention.audible(songs[1].mixture[:, a:b], songs[1].target[:, a:b])
    rows = intervene(_separator(tmp_path, "c", 2.0), songs, 8.0, centre_seconds=2.0)
    assert min(r[2] for r in rows if r[0] == "song 0") > 2.0  # centres after 3 s


def test_control_window_holds_the_solo_and_scores_the_same_music_in_both_songs():
    rate = 1000
    both = ["vocals", "drums", "distractor"]
    positive = {  # solo first: 0-12 s solo, 12-22 s break, 22-42 s shared singing
        "name": "s (positive)", "samples": 50000, "control": "positive",
        "sections": [["solo", 0, 12000, ["vocals"]], ["break", 12000, 10000, ["drums"]],
                     ["verse", 22000, 20000, both], ["outro", 42000, 8000, ["drums"]]],
    }  # fmt: skip
    start, ranges = control.scored_ranges(positive, rate, 2 * rate)
    assert start == 0 and ranges == [(44000, 60000)]  # 22-30 s of the first 30 s, at 2 kHz
    negative = {  # the same song, solo cut: shared singing from 10 s
        "name": "s (negative)", "samples": 38000, "control": "negative",
        "removed": ["solo", 0, 12000],
        "sections": [["break", 0, 10000, ["drums"]], ["verse", 10000, 20000, both],
                     ["outro", 30000, 8000, ["drums"]]],
    }  # fmt: skip
    start, ranges = control.scored_ranges(negative, rate, rate)
    assert start == 0 and ranges == [(10000, 18000)]  # the same 8 s of shared singing
    last = {  # solo last, then an outro: 0-20 s shared, 20-30 s break, 30-42 s solo
        "name": "t (positive)", "samples": 50000, "control": "positive",
        "sections": [["verse", 0, 20000, both], ["break", 20000, 10000, ["drums"]],
                     ["solo", 30000, 12000, ["vocals"]], ["outro", 42000, 8000, ["drums"]]],
    }  # fmt: skip
    start, ranges = control.scored_ranges(last, rate, rate)
    assert start == 12000 and ranges == [(0, 8000)]  # the window ends with the solo: 12-20 s
    cut = {
        "name": "t (negative)", "samples": 38000, "control": "negative",
        "removed": ["solo", 30000, 12000],
        "sections": [["verse", 0, 20000, both], ["break", 20000, 10000, ["drums"]],
                     ["outro", 30000, 8000, ["drums"]]],
    }  # fmt: skip
    start, ranges = control.scored_ranges(cut, rate, rate)
    assert start == 0 and ranges == [(12000, 20000)]  # the same 12-20 s, no solo after
    muted = {  # the third design's negative: the solo's voice taken out in place
        "name": "t (negative)", "samples": 50000, "control": "negative",
        "removed": ["solo", 30000, 12000],
        "sections": [["verse", 0, 20000, both], ["break", 20000, 10000, []],
                     ["solo", 30000, 12000, []], ["outro", 42000, 8000, []]],
    }  # fmt: skip
    assert control.scored_ranges(muted, rate, rate) == control.scored_ranges(last, rate, rate)
    assert control.song_key("s (negative)") == control.song_key("s (positive)") == "s"


def _control_separator(tmp_path, name, reach):
    """Random weights, 30-s inputs, with (arm C) or without (arm B) a reach limit."""
    torch.manual_seed(0)
    cfg = compose_network(
        "umx_transformer_small", "qkvg1D", seq_len=30, reach=reach, stft=STFT_NODE, bandwidth=8000
    )
    node = network_config(cfg)
    model = network_from_node(node, "test")
    with torch.no_grad():
        model.fc2.weight[:, model.hidden_size :] *= 20.0
        model.output_scale.fill_(3.0)
        model.output_mean.zero_()
    store = save_store(tmp_path / name, model, StoreEntry("vocals", node, STFT, seq_len=30))
    return Separator.from_pretrained(store, ["vocals"], niter=0, residual=True, segment=None)


@pytest.mark.parametrize("solo_last", [False, True], ids=["solo first", "solo last"])
def test_taking_the_solo_out_in_place_leaves_arm_c_exactly_unchanged(tmp_path, solo_last):
    """The exploratory within-model check: the solo's voice leaves the mixture, all else in
    place. Arm C (7.5-s pieces, an 8.5-s break) cannot tell; full reach can."""
    rate, generator = 16000, torch.Generator().manual_seed(3)
    both = ["vocals", "drums", "distractor"]
    sections = [["solo", 0, 6 * rate, ["vocals"]], ["break", 6 * rate, 8.5 * rate, ["drums"]],
                ["verse", 14.5 * rate, 25.5 * rate, both]]  # fmt: skip
    if solo_last:  # verse 0-25.5 s, break 25.5-34 s, solo 34-40 s
        sections = [["verse", 0, 25.5 * rate, both], ["break", 25.5 * rate, 8.5 * rate, ["drums"]],
                    ["solo", 34 * rate, 6 * rate, ["vocals"]]]  # fmt: skip
    entry = {"name": "s (positive)", "samples": 40 * rate, "control": "positive",
             "sections": [[n, int(a), int(b), stems] for n, a, b, stems in sections]}  # fmt: skip
    target = 0.1 * torch.randn(2, 40 * rate, generator=generator)
    other = 0.1 * torch.randn(2, 40 * rate, generator=generator)
    a, b = control.solo_range(entry, rate, rate)
    assert (b - a) == 6 * rate
    other[:, a:b] = 0.0  # the solo is the voice alone, loud: its removal shows in arm B
    target[:, a:b] *= 10.0
    song = ScoredSong("s (positive)", target + other, target)
    for arm, reach in (("C", 7.5), ("B", None)):
        separator = _control_separator(tmp_path, arm, reach)
        kept = control.score_song(separator, song, entry, rate)
        removed = control.score_song(separator, song, entry, rate, remove_solo=True)
        assert kept[:4] == removed[:4]  # the same window and the same scored samples
        effect = abs(kept[4] - removed[4])
        assert effect < 1e-6 if arm == "C" else effect > 1e-3, (arm, effect)
