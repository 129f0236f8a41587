"""Open-Unmix's data set types (aligned, sourcefolder, trackfolder_fix / _var) as data=."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from folder_layout import RATE, train_cli, write_files

from longsep.data.datamodules import (
    AlignedDataModule,
    SourceFolderDataModule,
    TrackFolderFixDataModule,
    TrackFolderVarDataModule,
)
from longsep.errors import LongsepError

COMMON = dict(
    seq_len=1.0, batch_size=2, samples_per_track=2, cache_dtype="float32", return_sources=True
)


def build(cls, root, tmp_path, **kwargs):
    dm = cls(str(root), **{**COMMON, "cache_dir": str(tmp_path / "cache"), **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("ou")
    for split, tracks in {"train": {"a": 3.0, "b": 2.0}, "valid": {"v": 2.0}}.items():
        for seed, (name, seconds) in enumerate(tracks.items()):
            write_files(
                base / "aligned" / split / name, {"mixture": seconds, "vocals": seconds}, seed=seed
            )
            fix = {"vocals": seconds, "bass": seconds, "drums": seconds}
            write_files(base / "fix" / split / name, fix, seed=seed + 10)
            var = {"vocals": seconds, "guitar": seconds, **({"piano": seconds} if seed else {})}
            write_files(base / "var" / split / name, var, seed=seed + 20)
    write_files(base / "fix" / "train" / "partial", {"vocals": 2.0, "bass": 2.0})  # no drums
    write_files(base / "var" / "train" / "novocals", {"guitar": 2.0, "bass": 2.0}, seed=30)
    for split, count in (("train", 3), ("valid", 1)):
        for source, seconds in (("speech", 2.0), ("noise", 1.5)):
            lengths = {f"{source}{i}": seconds + i for i in range(count)}
            write_files(base / "sources" / split / source, lengths, seed=len(source))
    return base


def test_aligned_input_is_mixture_output_is_target(roots, tmp_path):
    plain = build(
        AlignedDataModule,
        roots / "aligned",
        tmp_path,
        augment={"gain": None, "channel_swap": False},
    )
    assert plain.target == "vocals" and [t.name for t in plain.train_set.tracks] == ["a", "b"]
    track = plain.valid_set.tracks[0]
    item, start = plain.valid_set[0], plain.valid_set.items[0][1]
    assert torch.equal(item["mixture"], torch.from_numpy(track.chunk("mixture", start, RATE)))
    assert torch.equal(item["target"], torch.from_numpy(track.chunk("vocals", start, RATE)))
    augmented = build(AlignedDataModule, roots / "aligned", tmp_path)
    for index in range(4):  # one gain and swap for input and output: the pair stays aligned
        got, ref = augmented.train_set[(0, index)], plain.train_set[(0, index)]
        gain = float(got["target"].norm() / ref["target"].norm())
        assert 0.25 <= gain < 1.25
        for key in ("mixture", "target"):
            candidates = (ref[key] * gain, (ref[key] * gain).flip(0))
            assert any(torch.allclose(got[key], c, atol=1e-5) for c in candidates)
        swapped = not torch.allclose(got["target"], ref["target"] * gain, atol=1e-5)
        assert swapped == (not torch.allclose(got["mixture"], ref["mixture"] * gain, atol=1e-5))


def test_sourcefolder_mixes_random_files_fixed_epoch(roots, tmp_path):
    dm = build(
        SourceFolderDataModule, roots / "sources", tmp_path, target_dir="speech",
        interferer_dirs=["noise"], nb_train_samples=7, nb_valid_samples=3,
    )  # fmt: skip
    assert len(dm.train_set) == 7 and len(dm.valid_set) == 3
    assert dm.train_set.sources == ("noise", "speech")
    item = dm.train_set[(0, 0)]
    assert torch.equal(item["target"], item["sources"][1])
    assert torch.equal(item["mixture"], item["sources"].sum(0))
    first = [dm.valid_set[i]["mixture"] for i in range(3)]
    assert all(torch.equal(a, dm.valid_set[i]["mixture"]) for i, a in enumerate(first))
    used = {float(dm.train_set[(e, 0)]["sources"][1].abs().sum()) for e in range(20)}
    assert len(used) > 3  # different files and offsets over epochs
    with pytest.raises(LongsepError, match="no \\*.wav files of source 'drums'"):
        SourceFolderDataModule(str(roots / "sources"), interferer_dirs=["drums"]).tracks("train")


def test_trackfolder_fix_leaves_out_incomplete_tracks(roots, tmp_path):
    dm = build(
        TrackFolderFixDataModule, roots / "fix", tmp_path, target_file="vocals.wav",
        interferer_files=["bass.wav", "drums.wav"], random_mix=True,
        augment={"gain": None, "channel_swap": False},
    )  # fmt: skip
    assert [t.name for t in dm.train_set.tracks] == ["a", "b"]
    assert dm.train_set.sources == ("vocals", "bass", "drums")
    home = dm.train_set.tracks[1]  # item 3 of 2 tracks x 2 chunks: its own track is b
    rng = np.random.default_rng([dm.seed, 0, 3])  # the target's draw: its own track
    start = int(rng.integers(0, home.samples - RATE + 1))
    expected = torch.from_numpy(home.chunk("vocals", start, RATE))
    assert torch.equal(dm.train_set[(0, 3)]["target"], expected)


def test_trackfolder_var_sums_whatever_sources_a_track_has(roots, tmp_path):
    dm = build(TrackFolderVarDataModule, roots / "var", tmp_path, target_file="vocals.wav")
    assert [t.name for t in dm.train_set.tracks] == ["a", "b"]  # novocals left out
    assert dm.train_set.sources == ("vocals", "interferers")
    track = dm.valid_set.tracks[0]
    assert track.sources == ("guitar", "vocals")
    item, start = dm.valid_set[0], dm.valid_set.items[0][1]
    assert torch.equal(item["sources"][1], torch.from_numpy(track.chunk("guitar", start, RATE)))
    b = dm.train_set.tracks[1]
    assert set(b.sources) == {"guitar", "piano", "vocals"}
    both = b.chunk("guitar", 0, RATE) + b.chunk("piano", 0, RATE)
    assert np.array_equal(dm.train_set.mixer.at(b, 0, RATE)[0][1], both)
    silent = build(
        TrackFolderVarDataModule, roots / "var", tmp_path, target_file="vocals.wav",
        silence_missing=True, random_mix=True,
    )  # fmt: skip
    names = [t.name for t in silent.train_set.tracks]
    assert names == ["a", "b", "novocals"]
    item = silent.train_set[(0, len(silent.train_set) - 1)]  # its own track: novocals
    assert float(item["target"].abs().max()) == 0.0 and float(item["mixture"].abs().max()) > 0


@pytest.mark.parametrize(
    "folder, args",
    [
        pytest.param(
            "aligned",
            ["data=aligned", "src=vocals", "data.samples_per_track=1"],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "sources",
            [
                "data=sourcefolder",
                "src=speech",
                "data.interferer_dirs=[noise]",
                "data.nb_train_samples=4",
                "data.nb_valid_samples=2",
            ],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "fix",
            [
                "data=trackfolder_fix",
                "src=vocals",
                "data.random_mix=true",
                "data.samples_per_track=1",
            ],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "var",
            [
                "data=trackfolder_var",
                "src=vocals",
                "data.random_mix=true",
                "data.silence_missing=true",
                "data.samples_per_track=1",
            ],
            marks=pytest.mark.slow,
        ),
    ],
)  # fmt: skip  (the fast tier trains on one layout; each layout's tracks are read in-process above)
def test_train_cli_on_openunmix_layouts(roots, tmp_path, folder, args):
    run = train_cli(tmp_path, f"data.root={roots / folder}", *args)
    target = args[1].split("=")[1]
    assert (run / "model" / f"{target}.safetensors").is_file()
