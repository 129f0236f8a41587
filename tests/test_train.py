"""train.py: composed configs run end to end on a tiny synthetic set."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_SYNTH, compose_train
from omegaconf import open_dict

from longsep.cli.common import run_name
from longsep.cli.train import build_trainer, init_weights, initialise, train
from longsep.errors import LongsepError
from longsep.models import valid_combinations
from longsep.models.attention import ATTENTIONS
from longsep.models.build import instantiate_network
from longsep.spectral import STFTConfig
from longsep.store import load_checkpoint, load_models, load_store, read_checkpoint

FAST = [*TINY_SYNTH, "seq_len=2", "logger=csv", "callbacks.media.every_n_epochs=1"]


def small(separator: str) -> str:
    return f"separator={separator}_small"


def test_run_name():
    assert (
        run_name("umx_transformer", "qkvg1D", "vocals", 30) == "umx_transformer-qkvg1D-vocals-30s"
    )
    assert run_name("umx", None, "drums", 7.5) == "umx-drums-7.5s"


FAMILY_RUNS = {("umx", None), ("umx_transformer", "qkvg1D"), ("auto_transformer", "qkv2D")}


@pytest.mark.parametrize(
    "separator, attention",
    [
        pytest.param(*pair, marks=() if pair in FAMILY_RUNS else pytest.mark.slow)
        for pair in valid_combinations(["umx", "umx_transformer", "auto_transformer"])
    ],
)
def test_fast_dev_run_every_combination(tmp_path, tiny_data_dir, separator, attention):
    overrides = [*FAST, small(separator), "+trainer.fast_dev_run=true"]
    if attention:
        overrides.append(f"attention={attention}")
    run = tmp_path / "run"
    cfg = compose_train(overrides, run, tiny_data_dir)
    train(cfg)
    assert json.loads((run / "result.json").read_text())["status"] == "ok"
    model, entry = load_store(run / "model", "vocals")
    assert type(model).__name__ == entry.separator["_target_"].rsplit(".", 1)[-1]
    kinds = {type(m) for m in model.modules() if type(m) in ATTENTIONS.values()}
    expected = set() if separator == "umx" else {ATTENTIONS[attention or "mha"]}
    assert kinds == expected


def test_short_run_exports_store_and_checkpoints(tmp_path, tiny_data_dir):
    run = tmp_path / "run"
    cfg = compose_train([*FAST, small("umx"), "trainer.max_steps=3"], run, tiny_data_dir)
    train(cfg)
    assert (run / "config.yaml").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert list((run / "media").glob("*.png"))
    model, entry = load_store(run / "model", "vocals")
    assert entry.seq_len == 2.0 and entry.target == "vocals"
    ckpt_model, _ = load_checkpoint(run / "checkpoints" / "last.ckpt")
    mag = torch.rand(1, 2, 2049, 9)
    assert model(mag).shape == mag.shape
    assert ckpt_model(mag).shape == mag.shape


def test_store_names_the_step_and_score_of_the_weights_it_holds(tmp_path, tiny_data_dir):
    """The store holds the best validation's weights: its info gives that checkpoint's step
    and the best val/loss the CSV log recorded, not the last validation's."""
    run = tmp_path / "run"
    overrides = [*FAST, small("umx"), "trainer.max_steps=6", "trainer.val_check_interval=1"]
    train(compose_train(overrides, run, tiny_data_dir))
    _, entry = load_store(run / "model", "vocals")
    (metrics_csv,) = run.glob("csv/**/metrics.csv")
    losses = [float(r["val/loss"]) for r in csv.DictReader(metrics_csv.open()) if r["val/loss"]]
    assert len(losses) >= 3
    assert entry.info["metrics"] == {"val/loss": pytest.approx(min(losses), rel=1e-6)}
    best = read_checkpoint(entry.info["checkpoint"])
    assert entry.info["global_step"] == best["global_step"]


def test_invalid_combination_is_an_error(tmp_path, tiny_data_dir):
    cfg = compose_train([*FAST, "separator=umx", "attention=qkv1D"], tmp_path / "r", tiny_data_dir)
    with pytest.raises(LongsepError, match="has no attention"):
        train(cfg)


def test_missing_gpu_is_one_line_error(tmp_path, tiny_data_dir):
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    cfg = compose_train([*FAST, small("umx"), "gpu=7"], tmp_path / "r", tiny_data_dir)
    with pytest.raises(LongsepError, match="gpu=7"):
        train(cfg)


def _multirun(tmp_path, tiny_data_dir, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        *overrides,
        *FAST,
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        f"paths.root_dir={tiny_data_dir}",
        f"hydra.sweep.dir={tmp_path / 'multi'}",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.integration
def test_cli_multirun_sweep(tmp_path, tiny_data_dir):
    """A 2x2 sweep gives 4 run directories, each with config, checkpoint and model store."""
    sweep = ["separator=umx_transformer_small,auto_transformer_small", "attention=qkv1D,qkvg1D"]
    result = _multirun(tmp_path, tiny_data_dir, *sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "multi").iterdir() if p.is_dir())
    assert sorted(p.name.split("-", 1)[1] for p in runs) == [  # <job number>-<run name>
        "auto_transformer_small-qkv1D-vocals-2s",
        "auto_transformer_small-qkvg1D-vocals-2s",
        "umx_transformer_small-qkv1D-vocals-2s",
        "umx_transformer_small-qkvg1D-vocals-2s",
    ]
    for run in runs:
        assert (run / "config.yaml").exists()
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert (run / "model" / "vocals.safetensors").exists()


@pytest.mark.integration
def test_cli_multirun_over_seeds_trains_each_seed(tmp_path, tiny_data_dir):
    """Jobs whose run names are equal (only the seed differs) get their own directories:
    neither skips nor resumes the other's run."""
    result = _multirun(tmp_path, tiny_data_dir, "separator=umx_small", "seed=1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    results = sorted((tmp_path / "multi").glob("*/result.json"))
    records = [json.loads(p.read_text()) for p in results]
    assert [(r["seed"], r["status"]) for r in records] == [(1, "ok"), (2, "ok")]
    assert "not training it again" not in result.stdout + result.stderr

    # the same sweep dir, other values: job 0 is seed=3 now and finds seed=1's run there
    again = _multirun(tmp_path, tiny_data_dir, "separator=umx_small", "seed=3,2")
    assert again.returncode != 0
    assert "holds another run (data.seed: 3 here, 1 there; seed: 3 here" in again.stderr
    assert "Traceback" not in again.stderr
    kept = [json.loads(p.read_text()) for p in results]  # nothing overwritten, nothing skipped
    assert [(r["seed"], r["status"]) for r in kept] == [(1, "ok"), (2, "ok")]


@pytest.mark.integration
def test_cli_multirun_skips_invalid_pairs(tmp_path, tiny_data_dir):
    result = _multirun(tmp_path, tiny_data_dir, "separator=umx_small", "attention=qkv1D")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping invalid sweep combination" in result.stdout + result.stderr
    assert not list((tmp_path / "multi").glob("*/model"))


@pytest.mark.parametrize("loss", ["l1", "sisdr"])
def test_loss_options_train(tmp_path, tiny_data_dir, loss):
    cfg = compose_train(
        [*FAST, small("umx"), f"module.loss={loss}", "+trainer.fast_dev_run=true"],
        tmp_path / "run",
        tiny_data_dir,
    )
    train(cfg)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny_data_dir):
    """trainer=ddp on CPU: 2 processes (gloo) train, rank 0 exports the model."""
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "train.py",
        "trainer=ddp",
        "+trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",
        small("umx"),
        *FAST,
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        f"paths.root_dir={tiny_data_dir}",
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gloo" in result.stdout + result.stderr or "GLOO" in result.stdout + result.stderr
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert (run / "model" / "vocals.safetensors").exists()


@pytest.mark.parametrize(
    "logger, pattern",
    [
        ("tensorboard", "tensorboard/events.*"),
        pytest.param("wandb", "wandb/offline-run-*", marks=pytest.mark.slow),
    ],
)
def test_loggers_record_metrics_and_media(tmp_path, tiny_data_dir, monkeypatch, logger, pattern):
    """TensorBoard and W&B (offline: no login, no network) get metrics, figure and audio."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    overrides = [
        *FAST,
        small("umx"),
        f"logger={logger}",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
    ]
    train(compose_train(overrides, run, tiny_data_dir))
    assert list(run.glob(pattern)), sorted(str(p.relative_to(run)) for p in run.rglob("*"))[:30]


def test_plateau_scheduler_follows_step_validation_past_an_epoch_end(tmp_path, tiny_data_dir):
    """The study's cadence (validation every N steps) with the default ReduceLROnPlateau."""
    run = tmp_path / "run"
    overrides = [
        *FAST,
        small("umx"),
        "data.batch_size=2",
        "trainer.max_steps=9",
        "trainer.val_check_interval=3",
        "trainer.check_val_every_n_epoch=null",
        "module.scheduler.patience=0",
    ]
    train(compose_train(overrides, run, tiny_data_dir))
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 9  # epochs are 2 steps: several epoch ends passed
    (plateau,) = ckpt["lr_schedulers"]
    assert plateau["last_epoch"] == 3  # stepped once per validation (steps 3, 6, 9)


def _network_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable weights and scalings (BatchNorm running statistics move freely in a step)."""
    return {
        k: v for k, v in model.state_dict().items() if "running_" not in k and "batches" not in k
    }


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: str = "^$") -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if not re.match(skip, k))


def _openunmix_dir(folder, cfg) -> dict[str, torch.Tensor]:
    """An Open-Unmix-layout dir (``vocals-<hash>.pth`` + ``vocals.json``) matching ``cfg``'s
    separator, with input statistics no data set would give; returns its weights."""
    from openunmix.model import OpenUnmix

    max_bin = instantiate_network(cfg).input_mean.shape[0]
    model = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=128, nb_layers=2, max_bin=max_bin)
    with torch.no_grad():
        model.input_mean.fill_(5.0)
        model.input_scale.fill_(3.0)
    folder.mkdir()
    torch.save(model.state_dict(), folder / "tmp")
    digest = hashlib.sha256((folder / "tmp").read_bytes()).hexdigest()[:8]
    (folder / "tmp").rename(folder / f"vocals-{digest}.pth")
    args = {"nfft": 4096, "nhop": 1024, "nb_channels": 2, "hidden_size": 128}
    (folder / "vocals.json").write_text(json.dumps({"args": args}))
    return _network_state(model)


def initialise_from(cfg, separator, source) -> bool:
    """Run train.py's initialisation of ``separator`` with ``init_from=source``."""
    cfg.init_from = str(source)
    return initialise(cfg, separator, STFTConfig(**cfg.stft), init_weights(cfg))


def test_init_from_loads_weights_before_training(tmp_path, tiny_data_dir):
    """The separator starts from the weights (keep: their statistics); drums may start
    from vocals weights; a shape mismatch is one line naming the file and the key."""
    cfg = compose_train([*FAST, small("umx"), "src=drums"], tmp_path / "r", tiny_data_dir)
    source = _openunmix_dir(tmp_path / "umx", cfg)
    separator = instantiate_network(cfg)
    assert initialise_from(cfg, separator, tmp_path / "umx") is True
    assert _distance(_network_state(separator), source) == 0.0
    separator = instantiate_network(cfg)
    cfg.init_from_stats = "recompute"
    assert initialise_from(cfg, separator, tmp_path / "umx") is False
    cfg.init_from_stats = "reuse"
    with pytest.raises(LongsepError, match="init_from_stats=reuse"):
        initialise_from(cfg, separator, tmp_path / "umx")
    wide = compose_train([*FAST, "separator=umx"], tmp_path / "w", tiny_data_dir)
    with pytest.raises(LongsepError, match=r"vocals-\w+\.pth: 'fc1.weight' is") as err:
        initialise_from(wide, instantiate_network(wide), tmp_path / "umx")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_init_from_trains_from_a_store_and_an_openunmix_dir(tmp_path, tiny_data_dir):
    """One step from the weights: close to them, far from a fresh start; keep leaves the
    source's input statistics, recompute replaces them by the data's."""
    base = [*FAST, small("umx"), "trainer.max_steps=1", "trainer.limit_val_batches=1"]
    first = tmp_path / "first"
    train(compose_train(base, first, tiny_data_dir))
    fresh, _ = load_store(first / "model", "vocals")
    fresh = _network_state(fresh)
    runs = {
        "store": [f"init_from={first / 'model'}", "seed=7"],  # a fresh start would differ
        "umx": [f"init_from={tmp_path / 'umx'}"],
        "recompute": [f"init_from={tmp_path / 'umx'}", "init_from_stats=recompute"],
    }
    _openunmix_dir(tmp_path / "umx", compose_train(base, tmp_path / "x", tiny_data_dir))
    umx = _network_state(load_models(tmp_path / "umx")[0]["vocals"])
    got = {}
    for name, overrides in runs.items():
        train(compose_train([*base, *overrides], tmp_path / name, tiny_data_dir))
        model, entry = load_store(tmp_path / name / "model", "vocals")
        assert entry.info["init_from"] == overrides[0].split("=", 1)[1]
        got[name] = _network_state(model)
    step = 5e-3  # one Adam step of lr 1e-3 moves each weight by about 1e-3
    assert _distance(got["store"], fresh) < step
    assert _distance(got["umx"], umx) < step < _distance(got["umx"], fresh)
    assert _distance(got["recompute"], umx, skip="input_") < step
    assert _distance(got["recompute"], fresh, skip="input_") > step
    for key in ("input_mean", "input_scale"):  # the data's statistics, as in the first run
        assert (got["recompute"][key] - fresh[key]).abs().max() < step
        assert (got["umx"][key] - umx[key]).abs().max() < step


class LoggerWithoutItsPackage:
    """Stands for a logger whose package is missing, as WandbLogger without wandb."""

    def __init__(self, **_):
        raise ModuleNotFoundError("`wandb` is not installed")


def test_a_logger_without_its_package_is_one_line_naming_the_extra(tmp_path, tiny_data_dir):
    cfg = compose_train([*FAST, small("umx")], tmp_path / "r", tiny_data_dir)
    with open_dict(cfg):
        cfg.logger = {"wandb": {"_target_": "test_train.LoggerWithoutItsPackage"}}
    with pytest.raises(
        LongsepError, match=r"^logger=wandb needs .*pip install 'longsep\[wandb\]'$"
    ):
        build_trainer(cfg, tmp_path / "r")


def test_a_checkpoint_from_before_the_rename_resumes_into_the_network():
    """Runs begun before SeparationModule's network was renamed hold its weights under
    ``separator.``: Lightning's resume (on_load_checkpoint, then load_state_dict) takes them."""
    from longsep.models import build_network
    from longsep.training.module import SeparationModule

    def module(seed: int) -> SeparationModule:
        torch.manual_seed(seed)
        return SeparationModule(build_network("umx_small", None, seq_len=1), target="vocals")

    trained, fresh = module(0), module(1)
    old = {"separator." + k[len("network.") :]: v for k, v in trained.state_dict().items()}
    checkpoint = {"state_dict": old}
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert not torch.equal(module(1).network.fc1.weight, trained.network.fc1.weight)
