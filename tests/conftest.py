"""Shared fixtures: composed training configs over a tiny synthetic data set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from longsep.cli.common import register_resolvers

# One intra-op thread per test process (subprocess CLIs inherit it through the env):
# on a 2-core machine oversubscribed threads made small LSTM / Wiener tests 10-30x slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

TINY_SYNTH = [
    "data.generate.n_train=2",
    "data.generate.n_valid=1",
    "data.generate.n_test=1",
    "data.generate.min_seconds=9",
    "data.generate.max_seconds=10",
    "data.samples_per_track=2",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests first, the README's longest chains of commands first among them
    (stable otherwise): pytest-xdist's workers (`make test`: `-n auto`) then do not end with
    one worker running a long test alone."""

    def chain(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        return len(callspec.params.get("chain", ())) if callspec else 0

    items.sort(key=lambda item: (item.get_closest_marker("integration") is None, -chain(item)))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """Shared data/cache root, so the tiny synthetic set is generated once per session."""
    return tmp_path_factory.mktemp("data")


def compose_train(
    overrides: list[str], run_dir: Path, data_dir: Path, name: str = "train"
) -> DictConfig:
    """Compose ``conf/train.yaml`` like ``@hydra.main`` would, with paths under tmp dirs."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(data_dir)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir.parent)
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
