"""data=combined: several data sets in one run, drawn by weight, validated over all."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train
from folder_layout import RATE, train_cli, write_folder
from musdb_layout import write_musdb
from torch.utils.data import Dataset

from longsep.data import instantiate_data
from longsep.data.combined import CombinedDataModule, WeightedChunks
from longsep.data.datamodules import FolderDataModule, MUSDBDataModule
from longsep.errors import LongsepError

STEMS = ("guitar", "keys", "vocals")


class Tagged(Dataset):
    """``size`` items that say which part they come from."""

    def __init__(self, tag: int, size: int) -> None:
        self.tag, self.size = tag, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        return {"part": self.tag, "key": key}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("combined")
    musdb = write_musdb(base / "musdb", train={"A": 3.0, "B": 2.0}, valid={"V": 2.0}, test={})
    splits = {"train": {"a": 2.0}, "valid": {"v": 1.5, "w": 2.0}}
    return musdb, write_folder(base / "stems", splits, STEMS)


def children(roots, tmp_path, seq_len=1.0):
    options = dict(seq_len=seq_len, samples_per_track=2, cache_dir=str(tmp_path / "cache"))
    musdb = MUSDBDataModule(str(roots[0]), setup_file="setup.yaml", **options)
    return {"musdb": musdb, "folder": FolderDataModule(str(roots[1]), **options)}


def test_weights_respected_and_reproducible():
    chunks = WeightedChunks([Tagged(0, 10), Tagged(1, 1000)], [3.0, 1.0], size=4000, seed=1)
    parts = [chunks[(0, i)]["part"] for i in range(len(chunks))]
    assert abs(parts.count(0) / len(parts) - 0.75) < 0.03  # 4 sigma
    assert chunks[(2, 7)] == chunks[(2, 7)] and {chunks[(0, i)]["key"][0] for i in range(50)} == {0}
    epochs = [[chunks[(e, i)]["part"] for i in range(100)] for e in (0, 1)]
    assert epochs[0] != epochs[1]
    zero = WeightedChunks([Tagged(0, 5), Tagged(1, 5)], [0.0, 1.0], size=200, seed=0)
    assert {zero[(0, i)]["part"] for i in range(200)} == {1}


def test_combined_module_trains_on_both_validates_on_all(roots, tmp_path):
    dm = CombinedDataModule(
        children(roots, tmp_path), weights={"musdb": 1, "folder": 2}, batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 2 * 2 + 1 * 2  # the children's epochs summed
    assert len(dm.valid_set) == 1 + 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["mixture"].shape == (4, 2, RATE) and batch["target"].shape == (4, 2, RATE)
    valid = [b["mixture"] for b in dm.val_dataloader()]
    assert sum(len(b) for b in valid) == 3
    again = [b["mixture"] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(valid, again, strict=True))
    mixtures = list(dm.train_mixtures(seconds=1.0))
    assert len(mixtures) == 3 + 2 + 2 and mixtures[0].shape == (2, RATE)
    assert dm.stats_dir.parent == tmp_path / "cache"


def test_bad_combinations_are_one_line_errors(roots, tmp_path):
    with pytest.raises(LongsepError, match="data.weights.drums: no such data set"):
        CombinedDataModule(children(roots, tmp_path), weights={"drums": 1})
    with pytest.raises(LongsepError, match="not all zero"):
        CombinedDataModule(children(roots, tmp_path), weights={"musdb": 0, "folder": 0})
    with pytest.raises(LongsepError, match="data.weights.folder='lots' must be a number"):
        CombinedDataModule(children(roots, tmp_path), weights={"folder": "lots"})
    mixed = {**children(roots, tmp_path), "long": children(roots, tmp_path, 2.0)["folder"]}
    with pytest.raises(LongsepError, match="data.datasets.long: seq_samples"):
        CombinedDataModule(mixed)


def test_an_option_the_module_does_not_take_is_a_one_line_error(tmp_path):
    """A preset's data.samples_per_track under data=combined (which sets it per data set),
    and a data set's own unknown option, each named by its full key before anything loads."""
    cfg = compose_train(
        ["+experiment=default_model", "data=rendered_synth"], tmp_path / "r", tmp_path
    )
    with pytest.raises(LongsepError) as caught:
        instantiate_data(cfg.data)
    assert str(caught.value).startswith(
        "data.samples_per_track: CombinedDataModule takes no such option (it takes datasets,"
    )
    cfg = compose_train(
        ["data=combined", "+data.datasets.folder.bogus=1"], tmp_path / "r", tmp_path
    )
    with pytest.raises(LongsepError, match=r"^data\.datasets\.folder\.bogus: FolderDataModule "):
        instantiate_data(cfg.data)


@pytest.mark.slow
def test_train_cli_on_two_combined_data_sets(roots, tmp_path):
    musdb, stems = roots
    run = train_cli(
        tmp_path, "data=combined", f"data.datasets.musdb.root={musdb}",
        "data.datasets.musdb.is_wav=true", "data.datasets.musdb.setup_file=setup.yaml",
        f"data.datasets.folder.root={stems}", "data.weights.folder=3", "src=accompaniment",
        "data.datasets.musdb.samples_per_track=1", "data.datasets.folder.samples_per_track=1",
    )  # fmt: skip
    assert (run / "model" / "accompaniment.safetensors").is_file()
