"""data=folder: track folders of any stem names, targets summed from stems, as a user trains."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from folder_layout import RATE, train_cli, write_files, write_folder
from omegaconf import OmegaConf

from longsep.data import cache as cache_module
from longsep.data.datamodules import FolderDataModule
from longsep.errors import LongsepError
from longsep.evaluation.evaluate import Song, load_tracks

STEMS = ("guitar", "keys", "vocals")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("stems") / "stems"
    write_folder(
        base,
        {"train": {"a": 3.0, "b": 2.0}, "valid": {"v": 2.0}, "test": {"t": 1.5}},
        STEMS,
    )
    write_files(base / "train" / "c", {s: 1.5 for s in STEMS}, ext="flac", seed=9)
    write_files(base / "train" / "a", {"mixture": 3.0}, seed=7)  # ignored: mixture = sum
    return base


def make_dm(root, tmp_path, **kwargs) -> FolderDataModule:
    params = dict(
        root=str(root),
        target="vocals",
        seq_len=1.0,
        batch_size=2,
        samples_per_track=2,
        cache_dir=str(tmp_path / "cache"),
        cache_dtype="float32",
        return_sources=True,
    )
    params.update(kwargs)
    dm = FolderDataModule(**params)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def read(path, start: int, frames: int) -> np.ndarray:
    data, rate = sf.read(path, start=start, frames=frames, dtype="float32")
    assert rate == RATE
    return data.T


def test_stems_found_on_disk_or_listed(root, tmp_path):
    dm = make_dm(root, tmp_path)
    assert dm.stems == STEMS  # mixture.wav is no stem
    assert [t.name for t in dm.train_set.tracks] == ["a", "b", "c"]
    listed = make_dm(root, tmp_path, stems=["keys", "vocals"])
    assert listed.train_set.sources == ("keys", "vocals")
    assert listed.cache.open("train", "a").sources == ("keys", "vocals")


@pytest.mark.parametrize(
    "src, summed",
    [
        ("accompaniment", ("guitar", "keys")),
        (["guitar", "keys"], ("guitar", "keys")),
        ("keys+vocals", ("keys", "vocals")),
        ("keys", ("keys",)),
    ],
)
def test_target_is_exact_sum_of_decoded_stems(root, tmp_path, src, summed):
    dm = make_dm(root, tmp_path, target=src)
    item = dm.valid_set[0]
    start = dm.valid_set.items[0][1]
    stems = [read(root / "valid" / "v" / f"{s}.wav", start, RATE) for s in summed]
    expected = stems[0] if len(stems) == 1 else stems[0] + stems[1]
    assert torch.equal(item["target"], torch.from_numpy(expected))
    mixture = sum(read(root / "valid" / "v" / f"{s}.wav", start, RATE) for s in STEMS)
    torch.testing.assert_close(item["mixture"], torch.from_numpy(mixture))
    batch = next(iter(dm.train_dataloader()))  # augmented training chunks: the same sums
    index = [STEMS.index(s) for s in summed]
    assert torch.equal(batch["target"], batch["sources"][:, index].sum(1))
    assert torch.equal(batch["mixture"], batch["sources"].sum(1))


def test_unknown_target_names_the_stems(root, tmp_path):
    with pytest.raises(LongsepError, match=r"src='drums'.*'guitar', 'keys', 'vocals'"):
        make_dm(root, tmp_path, target="drums")
    with pytest.raises(LongsepError, match="src='accompaniment' needs a vocals stem"):
        make_dm(root, tmp_path, target="accompaniment", stems=["guitar", "keys"])


def test_missing_stem_is_one_line_error_naming_the_file(root, tmp_path):
    broken = tmp_path / "broken"
    write_folder(broken, {"train": {"a": 1.5}, "valid": {"v": 1.5}}, STEMS)
    (broken / "valid" / "v" / "keys.wav").unlink()
    with pytest.raises(LongsepError) as info:
        make_dm(broken, tmp_path, stems=list(STEMS))
    message = str(info.value)
    assert "\n" not in message
    assert str(broken / "valid" / "v") in message and "keys.wav" in message
    with pytest.raises(LongsepError, match="does not exist"):
        FolderDataModule(str(tmp_path / "nowhere"))


def test_tracks_of_different_lengths(root, tmp_path):
    dm = make_dm(root, tmp_path)
    lengths = {t.name: t.samples for t in dm.train_set.tracks}
    assert lengths == {"a": 3 * RATE, "b": 2 * RATE, "c": round(1.5 * RATE)}
    for index in range(len(dm.train_set)):
        assert dm.train_set[(1, index)]["mixture"].shape == (2, RATE)
    skip = make_dm(root, tmp_path, seq_len=2.5, short_tracks="skip")
    assert [t.name for t in skip.train_set.tracks] == ["a"]
    pad = make_dm(root, tmp_path, seq_len=2.5, short_tracks="pad")
    assert pad.valid_set[0]["mixture"].shape == (2, round(2.5 * RATE))
    assert float(pad.valid_set[0]["mixture"][:, 2 * RATE :].abs().max()) == 0.0  # zero-padded


def test_unequal_stems_of_one_track_are_cut_to_the_shortest(tmp_path):
    root = write_folder(tmp_path / "s", {"train": {"a": 2.0}, "valid": {"v": 2.0}}, STEMS)
    write_files(root / "train" / "a", {"keys": 1.5})
    dm = make_dm(root, tmp_path)
    assert dm.train_set.tracks[0].samples == round(1.5 * RATE)


def test_cache_hit_on_second_use(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "s", {"train": {"a": 1.0, "b": 2.0}, "valid": {"v": 1.0}}, STEMS)
    make_dm(root, tmp_path)
    calls = []
    load = cache_module.audio.load
    monkeypatch.setattr(
        cache_module.audio, "load", lambda *a, **k: calls.append(a) or load(*a, **k)
    )
    again = make_dm(root, tmp_path)
    assert calls == [] and len(again.train_set.tracks) == 2
    write_files(root / "train" / "b", {"keys": 1.5}, seed=5)  # a changed file: decoded again
    make_dm(root, tmp_path)
    assert len(calls) == len(STEMS)


def test_augmentation_applied(root, tmp_path):
    half = make_dm(root, tmp_path, augment={"gain": [0.5, 0.5], "channel_swap": False})
    plain = make_dm(root, tmp_path, augment={"gain": [1, 1], "channel_swap": False})
    torch.testing.assert_close(
        half.train_set[(0, 3)]["sources"], 0.5 * plain.train_set[(0, 3)]["sources"]
    )
    swap = make_dm(root, tmp_path, augment={"gain": None, "channel_swap": True})
    tracks, flips = swap.train_set.tracks, 0
    for index in range(len(swap.train_set)):
        item = swap.train_set[(0, index)]
        rng = np.random.default_rng([swap.seed, 0, index])  # the draws of StemMixer
        for stem, got in zip(STEMS, item["sources"], strict=True):
            track = tracks[rng.integers(len(tracks))]
            start = int(rng.integers(0, max(1, track.samples - RATE + 1)))
            chunk = track.chunk(stem, start, RATE)
            flipped = rng.random() < 0.5
            flips += flipped
            assert torch.equal(got, torch.from_numpy(chunk[::-1].copy() if flipped else chunk))
    assert 0 < flips < 3 * len(swap.train_set)


def test_batches_reproducible_per_seed_epoch_index(root, tmp_path):
    one, two = make_dm(root, tmp_path), make_dm(root, tmp_path)
    assert torch.equal(one.train_set[(2, 5)]["mixture"], two.train_set[(2, 5)]["mixture"])
    assert not torch.equal(one.train_set[(2, 5)]["mixture"], one.train_set[(3, 5)]["mixture"])


def test_evaluation_reads_folder_tracks(root, tmp_path):
    data = OmegaConf.create(
        {
            "_target_": "longsep.data.datamodules.FolderDataModule",
            "root": str(root),
            "target": "keys",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    (track,) = load_tracks(data, "test")
    song = Song.from_track(track)
    assert song.rate == RATE and list(song.sources) == ["vocals", "guitar", "keys"]
    assert song.mixture.shape == (round(1.5 * RATE), 2)
    summed = song.reference("guitar+keys", [])
    np.testing.assert_allclose(summed, song.sources["guitar"] + song.sources["keys"], atol=1e-6)


@pytest.mark.parametrize(
    "src, store",
    [
        ("[guitar,keys]", "guitar+keys"),
        pytest.param("accompaniment", "accompaniment", marks=pytest.mark.slow),
    ],
)
def test_train_cli_on_own_stems(root, tmp_path, src, store):
    run = train_cli(tmp_path, "data=folder", f"data.root={root}", f"src={src}")
    assert run.parent.name == f"umx_small-{store}-1s"
    assert (run / "model" / f"{store}.safetensors").is_file()


def test_without_random_mix_chunks_are_real_excerpts(tmp_path):
    """random_mix=false: every stem of a training chunk starts at the same sample, so the
    chunk holds what plays together in the song."""
    t = np.arange(4 * RATE, dtype=np.float32) / (4 * RATE)
    ramp = np.stack([t, -t], axis=1)
    for split in ("train", "valid"):
        for stem in STEMS:
            folder = tmp_path / "ramps" / split / "song"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{stem}.wav", ramp, RATE, subtype="FLOAT")
    no_augment = {"gain": None, "channel_swap": False}
    dm = make_dm(tmp_path / "ramps", tmp_path, random_mix=False, augment=no_augment)
    for index in range(len(dm.train_set)):
        sources = dm.train_set[(0, index)]["sources"]
        assert all(torch.equal(sources[0], s) for s in sources[1:])
