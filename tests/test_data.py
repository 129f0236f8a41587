"""MUSDBDataModule, decoded-audio cache and augmentation on a small MUSDB-HQ layout."""

import numpy as np
import pytest
import soundfile as sf
import torch
from musdb_layout import write_musdb

from longsep.data.augment import Augment, eq_curve, random_channel_swap, random_eq, random_gain
from longsep.data.chunks import EpochSampler
from longsep.data.datamodules import MUSDBDataModule
from longsep.data.musdb import open_musdb
from longsep.errors import LongsepError

RATE = 44100


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("musdb")
    return write_musdb(
        base,
        train={"A": 62.0, "B": 30.0, "C": 8.0},
        valid={"V": 12.0},
        test={"T": 5.0},
    )


def make_dm(root, tmp_path, **kwargs):
    params = dict(
        root=str(root),
        target="vocals",
        seq_len=7.0,
        is_wav=True,
        setup_file="setup.yaml",
        batch_size=2,
        samples_per_track=2,
        cache_dir=str(tmp_path / "cache"),
        cache_dtype="float32",
        return_sources=True,
    )
    params.update(kwargs)
    dm = MUSDBDataModule(**params)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_musdb_splits(root):
    assert [t.name for t in open_musdb(root, "train", setup_file="setup.yaml")] == ["A", "B", "C"]
    assert [t.name for t in open_musdb(root, "valid", setup_file="setup.yaml")] == ["V"]
    assert [t.name for t in open_musdb(root, "test", setup_file="setup.yaml")] == ["T"]


@pytest.mark.parametrize("dtype, tol", [("float32", 0.0), ("float16", 2e-3), ("int16", 1e-4)])
def test_cache_matches_file(root, tmp_path, dtype, tol):
    dm = make_dm(root, tmp_path, cache_dtype=dtype)
    track = dm.cache.open("train", "B")
    audio, rate = sf.read(
        root / "train" / "B" / "drums.wav", start=1000, frames=5000, dtype="float32"
    )
    assert rate == RATE
    np.testing.assert_allclose(track.chunk("drums", 1000, 5000), audio.T, atol=tol, rtol=0)


@pytest.mark.parametrize("seq_len", [7.0, 60.0])
def test_train_batches_shape_and_mixture(root, tmp_path, seq_len):
    dm = make_dm(root, tmp_path, seq_len=seq_len)
    batch = next(iter(dm.train_dataloader()))
    samples = round(seq_len * RATE)
    assert batch["mixture"].shape == (2, 2, samples)
    assert batch["target"].shape == (2, 2, samples)
    assert batch["sources"].shape == (2, 4, 2, samples)
    assert torch.equal(batch["mixture"], batch["sources"].sum(1))
    assert torch.equal(batch["target"], batch["sources"][:, 0])


def test_augmentation_changes_sources_within_gain_range(root, tmp_path):
    dm = make_dm(
        root, tmp_path, random_mix=False, augment={"gain": [0.5, 0.5], "channel_swap": False}
    )
    item = dm.train_set[(0, 0)]
    plain = make_dm(
        root, tmp_path, random_mix=False, augment={"gain": [1, 1], "channel_swap": False}
    )
    ref = plain.train_set[(0, 0)]
    torch.testing.assert_close(item["sources"], 0.5 * ref["sources"])


def test_random_eq_scales_each_anchor_by_its_drawn_level():
    """Nine anchors sit on octaves of Nyquist (2^-8 ... 1); with 2 * 256 * m samples each is
    an exact rfft bin, so a sinusoid there comes out scaled by exactly its anchor's level,
    drawn from the same generator state."""
    m, max_db, bands = 64, 12.0, 9
    n = 2 * 256 * m
    t = np.arange(n)
    octaves = range(bands - 1)  # anchors below Nyquist: bins m * 2^j
    tones = [np.sin(2 * np.pi * m * 2**j * t / n) for j in octaves]
    audio = np.stack([sum(tones), sum(tones)]).astype(np.float32)
    levels = np.random.default_rng(7).uniform(-max_db, max_db, bands)
    out = random_eq(audio, np.random.default_rng(7), max_db, bands)
    assert out.dtype == np.float32 and out.shape == audio.shape
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64), axis=-1)) / (n / 2)
    for j in octaves:
        gain_db = 20 * np.log10(spectrum[:, m * 2**j])
        np.testing.assert_allclose(gain_db, levels[j], atol=1e-3)
    np.testing.assert_allclose(out[0], out[1])  # every channel alike


def test_eq_curve_is_bounded_smooth_and_flat_when_off():
    rng = np.random.default_rng(0)
    curves = np.stack([20 * np.log10(eq_curve(2049, rng, 6.0)) for _ in range(50)])
    assert curves.min() >= -6.0 - 1e-4 and curves.max() <= 6.0 + 1e-4
    assert curves.std(axis=0).mean() > 2.0  # drawn afresh each time
    # straight lines in dB over log frequency: no jump between neighbouring bins above 86 Hz
    assert np.abs(np.diff(curves[:, 100:], axis=1)).max() < 0.5
    audio = np.random.default_rng(1).standard_normal((2, 4410)).astype(np.float32)
    np.testing.assert_allclose(random_eq(audio, rng, 0.0), audio, atol=1e-5)


def test_eq_augmentation_keeps_mixture_the_sum_of_sources(root, tmp_path):
    augment = {"gain": [1, 1], "channel_swap": False, "eq_db": 12.0}
    dm = make_dm(root, tmp_path, random_mix=False, augment=augment)
    item = dm.train_set[(0, 0)]
    plain = make_dm(
        root, tmp_path, random_mix=False, augment={"gain": [1, 1], "channel_swap": False}
    )
    ref = plain.train_set[(0, 0)]
    torch.testing.assert_close(item["mixture"], item["sources"].sum(0))
    ratio = item["sources"].square().sum((-1, -2)) / ref["sources"].square().sum((-1, -2))
    assert not torch.allclose(ratio, torch.ones_like(ratio), rtol=0.05)  # filtered, per source
    with pytest.raises(LongsepError, match="eq_db"):
        Augment(eq_db=-3.0)
    with pytest.raises(LongsepError, match="eq_bands"):
        Augment(eq_db=6.0, eq_bands=1)
    with pytest.raises(LongsepError, match="eq_db='loud' must be"):
        Augment(eq_db="loud")  # a typo on the command line, not a TypeError


def test_valid_batches_identical_across_epochs(root, tmp_path):
    dm = make_dm(root, tmp_path, valid_chunks_per_track=2)
    first = [b["mixture"] for b in dm.val_dataloader()]
    second = [b["mixture"] for b in dm.val_dataloader()]
    assert len(first) == 1 and first[0].shape[0] == 2
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_train_chunks_reproducible_per_epoch(root, tmp_path):
    dm = make_dm(root, tmp_path)
    ds = dm.train_set
    assert torch.equal(ds[(3, 1)]["mixture"], ds[(3, 1)]["mixture"])
    assert not torch.equal(ds[(3, 1)]["mixture"], ds[(4, 1)]["mixture"])
    sampler = EpochSampler(len(ds), seed=1)
    order0 = list(sampler)
    sampler.set_epoch(1)
    assert sorted(order0) != sorted(sampler) and len(order0) == len(ds)


def test_batch_size_scales_with_seq_len(root, tmp_path):
    sizes = {
        s: MUSDBDataModule(str(root), seq_len=s, seconds_budget=96).batch_size for s in (6, 30, 60)
    }
    assert sizes == {6: 16, 30: 3, 60: 1}


def test_short_tracks_skip_and_pad(root, tmp_path):
    pad = make_dm(root, tmp_path, seq_len=20.0, short_tracks="pad")
    skip = make_dm(root, tmp_path, seq_len=20.0, short_tracks="skip")
    assert [t.name for t in pad.train_set.tracks] == ["A", "B", "C"]
    assert [t.name for t in skip.train_set.tracks] == ["A", "B"]


def test_seq_len_longer_than_every_track(root, tmp_path):
    with pytest.raises(LongsepError, match="longer than every training track"):
        make_dm(root, tmp_path, seq_len=70.0)


def test_missing_root_and_wrong_layout(tmp_path):
    with pytest.raises(LongsepError, match="does not exist"):
        open_musdb(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LongsepError, match="no train tracks"):
        open_musdb(tmp_path / "empty", "train")


def test_bad_target_and_seq_len(root):
    with pytest.raises(LongsepError, match="src='piano'"):
        MUSDBDataModule(str(root), target="piano")
    with pytest.raises(LongsepError, match="seq_len"):
        MUSDBDataModule(str(root), seq_len=0)


def test_augment_primitives():
    rng = np.random.default_rng(0)
    audio = np.stack([np.ones(10), np.zeros(10)]).astype(np.float32)
    gains = [random_gain(audio, rng, 0.25, 1.25)[0, 0] for _ in range(200)]
    assert min(gains) >= 0.25 and max(gains) < 1.25
    swapped = [random_channel_swap(audio, rng)[0, 0] == 0 for _ in range(200)]
    assert 50 < sum(swapped) < 150
    with pytest.raises(LongsepError):
        Augment(gain=(1.0, 0.5))
