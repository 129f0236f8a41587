"""Several data sets in one training run, each drawn in proportion to its weight.

``datasets`` maps a name to a data config (any ``data=`` choice: MUSDB18, a folder of
stems, an Open-Unmix layout, ...). Training item ``(epoch, index)`` picks a data set with
probability proportional to its weight, then one of its training chunks, from a generator
seeded by ``(seed, epoch, index)``, so a resumed run sees the same data; validation runs
over the validation chunks of every data set. They must share ``seq_len`` and the sample
rate (checked) and the target (the configs interpolate ``src``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from longsep.data import instantiate_data
from longsep.data.chunks import Item
from longsep.data.module import ChunkDataModule, TrackDataModule
from longsep.errors import LongsepError


class WeightedChunks(Dataset):
    """``size`` training items per epoch, each from one of ``parts`` (datasets keyed by
    ``(epoch, index)``) drawn with probabilities proportional to ``weights``."""

    def __init__(
        self, parts: Sequence[Dataset], weights: Sequence[float], size: int, seed: int
    ) -> None:
        self.parts, self.size, self.seed = list(parts), size, seed
        total = float(sum(weights))
        self.probabilities = np.asarray(weights, dtype=np.float64) / total

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int] | int) -> Item:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        part = self.parts[int(rng.choice(len(self.parts), p=self.probabilities))]
        return part[(epoch, int(rng.integers(len(part))))]


class CombinedDataModule(ChunkDataModule):
    """Training chunks from several data sets by weight, validation over all of them.

    ``datasets``: name -> data config (or a built data module); ``weights``: name ->
    weight (1 when not given); ``samples_per_epoch``: null for the data sets' own epochs
    summed.
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        weights: Mapping[str, float] | None = None,
        samples_per_epoch: int | None = None,
        seq_len: float = 6.0,
        batch_size: int | None = None,
        seconds_budget: float = 96.0,
        num_workers: int = 0,
        cache_dir: str = ".cache/longsep",
        seed: int = 42,
    ) -> None:
        super().__init__(seq_len, batch_size, seconds_budget, num_workers, seed)
        if not datasets:
            raise LongsepError("data.datasets is empty: name at least one data set")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(datasets))
        if unknown:
            raise LongsepError(f"data.weights.{unknown[0]}: no such data set in data.datasets")
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise LongsepError(f"data.weights.{name}={weight!r} must be a number >= 0")
        self.weights = [float(weights.get(name, 1.0)) for name in datasets]
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise LongsepError(f"data.weights={weights}: give weights >= 0, not all zero")
        self.children: dict[str, TrackDataModule] = {
            name: node
            if isinstance(node, ChunkDataModule)
            else instantiate_data(node, f"data.datasets.{name}")
            for name, node in datasets.items()
        }
        self._check_alike()
        self.samples_per_epoch = samples_per_epoch
        self.cache_dir = Path(cache_dir).expanduser()

    def _check_alike(self) -> None:
        first_name, first = next(iter(self.children.items()))
        for name, child in self.children.items():
            for key in ("seq_samples", "sample_rate"):
                if getattr(child, key) != getattr(first, key):
                    raise LongsepError(
                        f"data.datasets.{name}: {key}={getattr(child, key)} differs from "
                        f"data.datasets.{first_name}'s {getattr(first, key)}"
                    )

    @property
    def stats_dir(self) -> Path:
        keys = sorted(f"{n}:{c.stats_dir}" for n, c in self.children.items())
        digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:10]
        return self.cache_dir / f"combined-{digest}"

    def prepare_data(self) -> None:
        for child in self.children.values():
            child.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for child in self.children.values():
            child.setup(stage)
        if stage in (None, "fit") and self.train_set is None:
            parts = [c.train_set for c in self.children.values()]
            size = self.samples_per_epoch or sum(len(p) for p in parts)
            self.train_set = WeightedChunks(parts, self.weights, size, self.seed)
        if stage in (None, "fit", "validate") and self.valid_set is None:
            self.valid_set = ConcatDataset([c.valid_set for c in self.children.values()])

    def train_mixtures(self, seconds: float = 30.0) -> Iterator[np.ndarray]:
        return itertools.chain.from_iterable(
            c.train_mixtures(seconds) for c in self.children.values()
        )
