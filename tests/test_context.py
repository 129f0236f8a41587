"""Context analyses: reach statistics on known weights, and both analyses on a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_train

from longsep.cli.train import train
from longsep.spectral import STFTConfig
from longsep.study import context

STFT = STFTConfig(n_fft=512, hop_length=100, sample_rate=1000)  # 0.1 s per frame


def test_reach_of_known_weights():
    frames = 10
    labels = np.array([[0, 0]] * 5 + [[1, 0]] * 5)  # two occurrences of the same section
    identity = torch.eye(frames)
    row = context._reach(identity, frames, STFT, labels)
    assert row["mean_distance_s"] == 0 and row["same_occurrence"] == 1.0
    assert row["other_occurrence_same_kind"] == 0.0
    shifted = torch.roll(torch.eye(frames), 5, dims=1)  # each frame attends 5 frames away
    row = context._reach(shifted, frames, STFT, labels)
    assert row["mean_distance_s"] == pytest.approx(0.5)
    assert row["other_occurrence_same_kind"] == 1.0 and row["same_occurrence"] == 0.0
    uniform = torch.full((frames, frames), 1 / frames)
    expected = np.abs(np.arange(10)[:, None] - np.arange(10)[None]).mean() * 0.1
    assert context._reach(uniform, frames, STFT, None)["mean_distance_s"] == pytest.approx(expected)


def test_strided_keys_are_placed_on_their_frames():
    """4 queries, 2 keys (stride 2): key j sits on frame 2j."""
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    row = context._reach(weights, 4, STFT, None)
    assert row["keys"] == 2 and row["mean_distance_s"] == pytest.approx((0 + 1 + 0 + 1) / 4 * 0.1)


def test_section_labels_from_the_manifest(tmp_path):
    manifest = tmp_path / "synth.json"
    sections = [["verse", 0, 400, []], ["chorus", 400, 400, []], ["verse", 800, 400, []]]
    tracks = {"test": [{"name": "s", "samples": 1200, "sections": sections}]}
    manifest.write_text(json.dumps({"params": {"sample_rate": 1000}, "tracks": tracks}))
    labels = context.section_labels(manifest, "s", 13, STFT)
    assert labels[:4].tolist() == [[0, 0]] * 4 and labels[4:8].tolist() == [[1, 1]] * 4
    assert labels[8:12].tolist() == [[2, 0]] * 4 and labels[12].tolist() == [-1, -1]


@pytest.mark.slow
def test_both_analyses_on_a_trained_run(tmp_path, tiny_data_dir):
    run = tmp_path / "run"
    overrides = [
        "data.generate.n_train=2",
        "data.generate.n_valid=1",
        "data.generate.n_test=1",
        "data.generate.min_seconds=9",
        "data.generate.max_seconds=10",
        "data.samples_per_track=2",
        "separator=umx_transformer_small",
        "attention=qkvg1D",
        "seq_len=2",
        "trainer.max_steps=2",
        "callbacks.media=null",
    ]
    train(compose_train(overrides, run, tiny_data_dir))
    (found,) = context.trained_runs(tmp_path)
    assert found.seq_len == 2.0 and found.model == "umx_transformer_small:qkvg1D"
    rows = context.window_sweep(found, windows=(1.0, None))
    assert [r["window"] for r in rows] == ["1s", "song"]
    assert all(np.isfinite(r["sdr"]) for r in rows)
    assert (run / "context" / "window-1s" / "test" / "summary.json").is_file()
    reach = context.attention_reach(found)
    layers = reach["layers"]
    assert len(layers) == 2  # umx_transformer_small: 2 layers
    assert all(0 <= layer["mean_distance_s"] <= 2.0 for layer in layers)
    for layer in layers:  # the built-in set's sections cover the song
        shares = layer["same_occurrence"] + layer["other_occurrence_same_kind"]
        assert 0 < shares <= 1 + 1e-6
        assert layer["keys"] == -(-layer["queries"] // 4)  # qkvg1D: stride-4 keys
    assert reach["attention_map"].shape[0] == reach["self_similarity"].shape[0]
    written = context.write_context_report(rows, [reach], tmp_path / "report")
    text = (tmp_path / "report" / "context.md").read_text()
    assert "| vocals | umx_transformer_small:qkvg1D | 2 s |" in text
    assert "| umx_transformer_small:qkvg1D | vocals | 2 s | 1 |" in text
    assert any(p.suffix == ".png" for p in written)

    # the command: study report and context analyses in one go (evaluations are reused)
    from longsep.cli.study import main

    assert (
        main([str(tmp_path), "--out", str(tmp_path / "cli"), "--context", "--windows", "1", "song"])
        == 0
    )
    assert (tmp_path / "cli" / "results.md").is_file()
    assert "| 1s | song |" in (tmp_path / "cli" / "context" / "context.md").read_text()
