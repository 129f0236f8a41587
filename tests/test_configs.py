"""Hydra configs compose for every entry point, group and launcher."""

from __future__ import annotations

import shlex

import pytest
from conftest import CONF, ROOT, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra


@pytest.mark.parametrize(
    "overrides",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
        ["trainer=ddp"],
        ["logger=wandb"],
        ["logger=tensorboard"],
        ["data=musdb", "data.root=/data/musdb18"],
        ["+experiment=quickstart"],
    ],
)
def test_train_config_composes(tmp_path, overrides):
    cfg = compose_train(overrides, tmp_path / "run", tmp_path)
    assert cfg.seq_len > 0 and cfg.src == "vocals"
    if "logger=wandb" in overrides:
        assert cfg.logger.wandb.offline is True


def test_slurm_launcher_resources(tmp_path):
    cfg = compose_train(["hydra/launcher=slurm"], tmp_path / "run", tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min == 1440


@pytest.mark.parametrize("name", ["separate", "evaluate"])
def test_entry_configs_compose(name):
    if not (CONF / f"{name}.yaml").exists():
        pytest.fail(f"conf/{name}.yaml is missing")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name)
    assert cfg is not None


def test_every_data_module_names_the_track_set_it_uses(tmp_path):
    """Evaluation lists tracks through TRACK_SETS: each data config's module is there, and
    it is the class the data module itself lists its tracks with."""
    import inspect

    from hydra.utils import get_class

    from longsep.data import TRACK_SETS, datamodules
    from longsep.data.module import TrackDataModule

    modules = {
        f"{cls.__module__}.{name}"
        for name, cls in inspect.getmembers(datamodules, inspect.isclass)
        if issubclass(cls, TrackDataModule) and cls is not TrackDataModule
    }
    assert set(TRACK_SETS) == modules
    for path in sorted((CONF / "data").glob("*.yaml")):
        target = compose_train([f"data={path.stem}"], tmp_path / "run", tmp_path).data._target_
        assert target in TRACK_SETS or target.endswith("CombinedDataModule"), path.name
    for module, tracks in TRACK_SETS.items():
        source = inspect.getsource(get_class(module).__init__)
        assert f"{tracks.rsplit('.', 1)[1]}(" in source, module


def test_every_data_config_sets_only_options_its_module_takes(tmp_path):
    """Each data choice alone and under each experiment preset (which sets data.* keys for
    the data it names) passes the check that makes an unknown option a one-line error."""
    from longsep.data import check_options

    presets = [None, *sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))]
    for preset in presets:
        overrides = [] if preset is None else [f"+experiment={preset}"]
        cfg = compose_train(overrides, tmp_path / "run", tmp_path)
        check_options(cfg.data)  # the preset's own data choice
    for path in sorted((CONF / "data").glob("*.yaml")):
        cfg = compose_train([f"data={path.stem}"], tmp_path / "run", tmp_path)
        check_options(cfg.data, f"data={path.stem}: data")


def test_the_synthetic_set_attempt_composes_as_models_readme_runs_it(tmp_path):
    """models/README.md, attempt 6: the preset's per-set options moved under each data set."""
    from longsep.data import check_options

    text = (ROOT / "models" / "README.md").read_text()
    command = text[text.index("python train.py -m seed=42") :].split("```")[0]
    words = shlex.split(command.replace("\\\n", " "))[2:]
    overrides = [w for w in words if w != "-m" and not w.startswith(("hydra.", "store_dir="))]
    cfg = compose_train(overrides, tmp_path / "run", tmp_path)
    check_options(cfg.data)
    assert cfg.data.weights.synth == 0.25 and cfg.trainer.max_steps == 4800
    assert cfg.data.datasets.rendered.samples_per_track == 64


def test_documented_trainer_keys_are_set_without_a_plus(tmp_path):
    """`trainer.val_check_interval=3` and `trainer.limit_val_batches=2`, as the README
    writes them, compose (they used to need `+trainer.`); unset, Lightning's defaults."""
    from conftest import compose_train
    from hydra.utils import instantiate

    cfg = compose_train(
        ["trainer.val_check_interval=3", "trainer.limit_val_batches=2"], tmp_path / "r", tmp_path
    )
    assert cfg.trainer.val_check_interval == 3 and cfg.trainer.limit_val_batches == 2
    default = compose_train([], tmp_path / "d", tmp_path)
    trainer = instantiate(default.trainer, logger=False, enable_checkpointing=False)
    assert trainer.val_check_interval == 1.0 and trainer.limit_val_batches == 1.0
