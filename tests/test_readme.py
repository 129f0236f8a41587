"""Every command of README.md and experiments/README.md runs as typed; every interval they
quote is in a committed report.

The fenced ``bash`` blocks are parsed; each command is either run below exactly as written,
from a fresh working directory, with only shrinking overrides appended (tiny data, one or
two steps, narrower sweeps), or listed in :data:`NOT_HERE` with the reason it cannot run on
a CPU-only machine without MUSDB18. A command added to a README without either fails
:func:`test_every_documented_command_is_covered`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_SYNTH
from folder_layout import write_folder
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from musdb_layout import write_musdb
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file
from test_separator import save_openunmix

from longsep import audio
from longsep.cli.common import pick_accelerator, register_resolvers
from longsep.errors import LongsepError
from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store import StoreEntry, save_store

READMES = (ROOT / "README.md", ROOT / "experiments" / "README.md")
SYNTH_SHRINK = [  # the built-in set, 4 songs just longer than the longest seq_len typed
    *TINY_SYNTH[:3],
    "data.generate.min_seconds=31",
    "data.generate.max_seconds=32",
    "data.samples_per_track=2",
]
TRAIN_SHRINK = [
    *SYNTH_SHRINK,
    "++trainer.max_steps=1",
    "++trainer.limit_val_batches=1",
    "data.batch_size=1",
    "data.valid_chunks_per_track=1",
    "callbacks.media=null",
]
EVAL_SHRINK = SYNTH_SHRINK[:5]  # the data.generate.* overrides
STUDY_SHRINK = [  # the study's sweep narrowed to 2 points, one step each
    "hydra.sweeper.params.separator='umx,umx_transformer'",
    "hydra.sweeper.params.attention='default,qkvg1D'",
    "hydra.sweeper.params.seq_len=7",
    "hydra.sweeper.params.src=vocals",
    "hydra.sweeper.params.seed=42",
    *TRAIN_SHRINK[len(SYNTH_SHRINK) :],
    "trainer.val_check_interval=1",
    "evaluate_after.workers=1",
]
OWN_SHRINK = TRAIN_SHRINK[len(SYNTH_SHRINK) :]  # data=folder and Open-Unmix layouts
COMBINED_SHRINK = [*TRAIN_SHRINK[len(SYNTH_SHRINK) : -2], "callbacks.media=null",
                   "data.datasets.musdb.is_wav=true"]  # fmt: skip
RENDER_SHRINK = ["--limit", "3", "--valid-tracks", "1", "--test-tracks", "1"]  # 3 songs
MODELS = ("hydra.sweeper.params.separator", "hydra.sweeper.params.attention")
CONTROL_SHRINK = [  # both control sets with 3 songs of 48 s (the shortest a control song is)
    *(o for o in STUDY_SHRINK if not o.startswith(MODELS)), *TINY_SYNTH[:3],
    "hydra.sweeper.params.separator=umx", "hydra.sweeper.params.attention=default",
    "data.generate.min_seconds=48", "data.generate.max_seconds=49",
]  # fmt: skip
# arm C (reach 7.5 s) on 8-s chunks: the reach limit and the intervention on tiny songs
ARM_C_SHRINK = [*(o for o in STUDY_SHRINK if "seq_len" not in o and not o.startswith(MODELS)),
                "hydra.sweeper.params.separator=umx_transformer",
                "hydra.sweeper.params.attention=qkvg1D",
                "hydra.sweeper.params.arm=C", "+hydra.sweeper.params.seq_len=8"]  # fmt: skip
# seq_len_study sweeps arms, not seq_len: arm A (7 s) alone
ARM_A_SHRINK = [*(o for o in STUDY_SHRINK if "seq_len" not in o), "hydra.sweeper.params.arm=A"]
CONTROL_ARMS_SHRINK = [  # one seed of both arms on both control sets, 1 step each
    *(o for o in CONTROL_SHRINK if not o.startswith(tuple(
        f"hydra.sweeper.params.{k}" for k in ("separator", "attention", "seq_len")))),
]  # fmt: skip
CONTROL_NEAR_SHRINK = [  # the same on the second design's sets, songs of its least length
    *(o for o in CONTROL_ARMS_SHRINK if "_seconds=" not in o),
    "data.generate.min_seconds=41", "data.generate.max_seconds=42",
]  # fmt: skip
CONTROL_WHOLE_SHRINK = [  # the same on the third design's sets, songs of 30-31 s
    *(o for o in CONTROL_ARMS_SHRINK if "_seconds=" not in o),
    "data.generate.min_seconds=30", "data.generate.max_seconds=31",
]  # fmt: skip
CONTEXT_SHRINK = [  # one seed of umx_small x 3 arms on the 3-song rendered set, 1 step each
    "hydra.sweeper.params.seed=42", "hydra.sweeper.params.separator=umx_small",
    *TRAIN_SHRINK[len(SYNTH_SHRINK) :],
    "trainer.val_check_interval=1", "evaluate_after.workers=1",
]  # fmt: skip
# MUSDB18 is stem.mp4, which cannot be downloaded here: the tests' ~/musdb18 holds the same
# layout as wav stems, so commands naming it get data.is_wav=true appended
WAV = ["data.is_wav=true"]
SLOW = pytest.mark.slow
RENDER_MULTI = (  # README, Data: two SoundFonts a song (models/README.md, the two-SoundFont try)
    "python -m longsep.data.render --out data/rendered_multi --sample-rate 22050 --workers 2 "
    "--soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/OPL-3_FM_128M.sf2"
)
# command -> overrides appended to shrink it (pytest.param with marks for the long ones)
RUN_HERE = [
    ("python train.py separator=umx_transformer attention=qkvg1D seq_len=30 src=vocals",
     TRAIN_SHRINK),
    ("python train.py -m separator=umx,umx_transformer attention=qkv1D,qkvg1D seq_len=7,30 "
     "src=vocals", TRAIN_SHRINK),
    pytest.param("python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seq_len=7,15",
                 TRAIN_SHRINK, marks=SLOW),
    pytest.param("python train.py data=musdb data.root=$HOME/musdb18 separator=umx",
                 [*WAV, *TRAIN_SHRINK[len(SYNTH_SHRINK) :]], marks=SLOW),
    ("python train.py data=musdb data.root=$HOME/musdb18hq data.is_wav=true",
     TRAIN_SHRINK[len(SYNTH_SHRINK) :]),
    ("python train.py +experiment=seq_len_study data.root=$HOME/musdb18",
     [*WAV, *ARM_C_SHRINK]),
    ("python -m longsep.study runs/multirun/seq_len_study --arms --out experiments/results/musdb "
     "--context", ["--windows", "3.5", "7"]),
    pytest.param("python train.py +experiment=seq_len_study data.root=$HOME/musdb18hq "
                 "data.is_wav=true", ARM_A_SHRINK, marks=SLOW),
    pytest.param("python train.py +experiment=seq_len_study data.root=$HOME/musdb18 "
                 "hydra/launcher=joblib hydra.launcher.n_jobs=2", [*WAV, *ARM_A_SHRINK],
                 marks=SLOW),
    ("python -m longsep.data.render --out data/rendered --sample-rate 22050 --workers 2",
     RENDER_SHRINK),
    ("python evaluate.py data=rendered oracle=irm2 stft.sample_rate=16000 oracle_n_fft=1024 "
     "oracle_hop=256 backend=fast out_dir=experiments/results/rendered_cpu/oracle_irm2", []),
    ("python train.py +experiment=seq_len_study_rendered", STUDY_SHRINK),
    ("python -m longsep.study runs/multirun/seq_len_study_rendered --out "
     "experiments/results/rendered_cpu --oracle experiments/results/rendered_cpu/oracle_irm2",
     []),
    ("python train.py +experiment=context_control_cpu", CONTROL_SHRINK),
    ("python train.py +experiment=context_control_arms_cpu hydra/launcher=joblib "
     "hydra.launcher.n_jobs=2", CONTROL_ARMS_SHRINK),
    ("python -m longsep.study.control runs/multirun/context_control_arms_cpu --out "
     "experiments/results/context_control", []),
    ("python train.py +experiment=context_control_near_arms_cpu hydra/launcher=joblib "
     "hydra.launcher.n_jobs=2", CONTROL_NEAR_SHRINK),
    ("python -m longsep.study.control runs/multirun/context_control_near_arms_cpu --out "
     "experiments/results/context_control_near", []),
    ("python train.py +experiment=context_study_rendered hydra/launcher=joblib "
     "hydra.launcher.n_jobs=2", CONTEXT_SHRINK),
    ("python train.py +experiment=context_control_whole_arms_cpu hydra/launcher=joblib "
     "hydra.launcher.n_jobs=2", CONTROL_WHOLE_SHRINK),
    ("python -m longsep.study.control runs/multirun/context_control_whole_arms_cpu --out "
     "experiments/results/context_control_whole", []),
    ("python -m longsep.study runs/multirun/context_study_rendered --arms --out "
     "experiments/results/context_rendered --oracle experiments/results/rendered_cpu/oracle_irm2 "
     "--control experiments/results/context_control_whole", []),
    ("python -m longsep.study.collect runs/multirun/context_study_rendered "
     "experiments/results/context_rendered/runs --score intervention", []),
    ("python -m longsep.study runs/multirun/context_control_cpu/synth_positive --out "
     "experiments/results/rendered_cpu/control_positive", []),
    ("python -m longsep.study runs/multirun/context_control_cpu/synth_negative --out "
     "experiments/results/rendered_cpu/control_negative", []),
    (RENDER_MULTI, RENDER_SHRINK),
    ("python train.py +experiment=default_model", STUDY_SHRINK[3:]),
    ("python separate.py input=song.mp3", []),
    ("python separate.py model=runs/quickstart/model input=song.mp3 out_dir=separated", []),
    ("python separate.py model=path/to/store input=\"'songs/*.flac'\" codec=mp3 bitrate=320 "
     "niter=1", []),
    ("python separate.py model=path/to/umxhq input=songs/ targets=[vocals] residual=true", []),
    ("python -m longsep separate song.mp3 songs/one.flac -o separated -t vocals,drums", []),
    ("python evaluate.py ckpt=runs/quickstart", EVAL_SHRINK),
    pytest.param("python evaluate.py ckpt=path/to/store data=musdb data.root=$HOME/musdb18 "
                 "workers=4", WAV, marks=SLOW),
    ("python evaluate.py oracle=irm1", EVAL_SHRINK),
    ("python evaluate.py compare=[dirA,dirB]", []),
    ("python train.py data=folder data.root=$HOME/mystems src=accompaniment", OWN_SHRINK),
    ("python train.py data=folder data.root=$HOME/mystems 'src=[guitar,keys]'", OWN_SHRINK),
    ("python evaluate.py ckpt=path/to/store data=folder data.root=$HOME/mystems", []),
    ("python train.py data=trackfolder_var data.root=$HOME/mystems src=vocals "
     "data.random_mix=true", OWN_SHRINK),
    ("python train.py data=combined data.datasets.musdb.root=$HOME/musdb18 "
     "data.datasets.folder.root=$HOME/mystems data.weights.folder=2", COMBINED_SHRINK),
]  # fmt: skip
# Commands that read what another command wrote (its runs, its data set, its oracle) run in
# one test, in README order, so that pytest-xdist (`make test`: `-n auto`) cannot split them
# over workers; every other command is a test of its own.
SHARED_WORK = {
    # the study's report reads the third control's verdict (--control)
    "rendered": ("data/rendered ", "data=rendered ", "seq_len_study_rendered",
                 "context_study_rendered", "context_control_whole_arms_cpu",
                 "+experiment=default_model"),  # the default model trains on data/rendered
    "musdb_study": ("+experiment=seq_len_study data.root", "runs/multirun/seq_len_study "),
    "control": ("context_control_cpu",),
    "control_arms": ("context_control_arms_cpu",),
    "control_near": ("context_control_near_arms_cpu",),
    "rendered_multi": ("data/rendered_multi ",),
}  # fmt: skip


def _chains() -> list:
    """:data:`RUN_HERE` as chains of ``(command, extra)`` run in order by one test: the
    commands of each :data:`SHARED_WORK` group together, every other command alone (the
    slow ones, given as ``pytest.param`` with their marks, too)."""
    chains: dict[str, list] = {}
    alone = []
    for entry in RUN_HERE:
        if hasattr(entry, "values"):
            alone.append(pytest.param([entry.values], marks=entry.marks, id=entry.values[0]))
            continue
        group = next((g for g, words in SHARED_WORK.items()
                      if any(word in entry[0] for word in words)), entry[0])  # fmt: skip
        chains.setdefault(group, []).append(entry)
    return [*(pytest.param(chain, id=chain[0][0]) for chain in chains.values()), *alone]


# commands that need GPUs or a cluster: composed and resolved as typed (`--cfg job`), which
# is where the sweep commands used to crash, but not run
COMPOSE_ONLY: dict[str, str] = {
    "python train.py separator=umx seq_len=7 src=drums gpu=1": "needs two GPUs",
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu seq_len=7,15,30,60": (
        "needs a Slurm cluster"
    ),
    "python train.py trainer=ddp trainer.devices=4": "needs 4 GPUs (DDP on CPU: test_train.py)",
    "python train.py +experiment=seq_len_study data.root=$HOME/musdb18 hydra/launcher=slurm "
    "hydra.launcher.partition=gpu": "needs a Slurm cluster",
    "python train.py +experiment=seq_len_study data.root=$HOME/musdb18 src=vocals gpu=0 &": (
        "needs GPUs"
    ),
    "python train.py +experiment=seq_len_study data.root=$HOME/musdb18 src=drums gpu=1 &": (
        "needs two GPUs"
    ),
}
NOT_HERE: dict[str, str] = {
    "make quickstart": "creates a venv and trains for 2 minutes: CI's fresh-clone job",
    "make test": "this test suite itself",
    "make study-cpu": "the 20-minute CPU study; tests/test_resume.py runs its sweep narrowed",
    "make study-rendered": "hours on 2 cores; its commands are run here one by one, narrowed",
    "make study-context": "days on 2 cores; its commands are run here one by one, narrowed",
    "make study-context-pinned": "make study-context from a git worktree; the same commands",
    "make default-model": "2 hours; `python train.py +experiment=default_model` runs here",
    "python train.py ... ckpt_path=last": "a pattern; tests/test_resume.py kills and resumes",
    "python benchmarks/seq_len_scaling.py --device cuda > seq_len_scaling.jsonl": "needs a GPU",
    "python -m longsep.study runs/multirun/seq_len_study --out experiments/results/musdb "
    "--scaling seq_len_scaling.jsonl": "needs the GPU benchmark's output",
}


def _command(entry) -> str:
    return entry.values[0] if hasattr(entry, "values") else entry[0]


def documented_commands() -> list[str]:
    """The commands of the READMEs' ``bash`` blocks (continuations joined, comments cut)."""
    commands = []
    for readme in READMES:
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = re.split(r"\s{2,}#", line)[0].strip()
                if command and not command.startswith("#"):
                    commands.append(" ".join(command.split()))
    return commands


def test_every_documented_command_is_covered():
    known = {" ".join(c.split()) for c in [*map(_command, RUN_HERE), *COMPOSE_ONLY, *NOT_HERE]}
    missing = [c for c in documented_commands() if c not in known]
    assert not missing, f"README commands neither run by a test nor excused: {missing}"


INTERVAL = re.compile(r"([+−-]?\d+\.\d+) \[([+−-]?\d+\.\d+), ([+−-]?\d+\.\d+)\]")


def _plain(text: str) -> str:
    """``text`` with ASCII minus signs and no plus signs, as the reports and the READMEs differ."""
    return text.replace("−", "-").replace("+", "")


def quoted_intervals(text: str) -> list[tuple[str, str, str]]:
    """Every ``estimate [low, high]`` of a document's prose (code spans and blocks are examples)."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.S)
    return [tuple(map(_plain, m.groups())) for m in INTERVAL.finditer(prose)]


def test_quoted_intervals_come_from_committed_reports():
    """A result quoted with its interval in a README is a line of a committed report."""
    lines = [
        _plain(line)
        for report in (ROOT / "experiments" / "results").rglob("*.md")
        for line in report.read_text().splitlines()
    ]
    missing = [
        (doc.name, est, low, high)
        for doc in (*READMES, ROOT / "models" / "README.md")
        for est, low, high in quoted_intervals(doc.read_text())
        if not any(
            f"[{low}, {high}]" in line and re.search(rf"(^|[\s|(]){re.escape(est)}([\s|]|$)", line)
            for line in lines
        )
    ]
    assert not missing, f"intervals quoted in a README but in no report: {missing}"


def test_quoted_intervals_are_read_from_prose_only():
    text = "B − C +0.42 [−0.38, +1.60] dB; an example `3.61 [1.80, 5.50]`\n```\n1.0 [0.5, 2.0]\n```"
    assert quoted_intervals(text) == [("0.42", "-0.38", "1.60")]


@pytest.fixture(scope="session")  # not module: under xdist a worker interleaves modules
def workspace(tmp_path_factory) -> Path:
    """A fresh working directory with what the commands name: a home with MUSDB18-HQ-layout
    folders and a folder of stems, a model store at runs/quickstart, songs, an Open-Unmix
    model directory."""
    cwd = tmp_path_factory.mktemp("user")
    home = cwd / "home"
    import musdb
    import yaml

    setup = yaml.safe_load((Path(musdb.__path__[0]) / "configs" / "mus.yaml").read_text())
    valid = setup["validation_tracks"][0]  # musdb's own split names it
    tracks = ({"a - x": 9.0, "b - y": 9.0}, {valid: 9.0}, {"d - z": 9.0})
    for name in ("musdb18", "musdb18hq"):
        write_musdb(home / name, *tracks)
    splits = {"train": {"one": 7.0, "two": 7.0}, "valid": {"three": 7.0}, "test": {"four": 7.0}}
    write_folder(home / "mystems", splits, ("guitar", "keys", "vocals"))
    stft = STFTConfig()
    node = {"_target_": "longsep.models.umx.UMX", "nb_bins": stft.nb_bins, "nb_channels": 2,
            "hidden_size": 16, "nb_layers": 1, "max_bin": 1487}  # fmt: skip
    for store in (cwd / "runs" / "quickstart" / "model", cwd / "path" / "to" / "store"):
        torch.manual_seed(0)
        for target in ("vocals", "drums"):
            model = UMX(**{k: v for k, v in node.items() if k != "_target_"})
            save_store(store, model, StoreEntry(target, node, stft, seq_len=6.0))
    (cwd / "runs" / "quickstart" / "checkpoints").mkdir()
    song = torch.from_numpy(np.random.default_rng(0).uniform(-0.3, 0.3, (2, 44100 * 3)))
    audio.save(cwd / "song.mp3", song.float(), 44100)
    for name in ("one", "two"):
        audio.save(cwd / "songs" / f"{name}.flac", song.float(), 44100)
    from openunmix.model import OpenUnmix

    umx = OpenUnmix(nb_bins=stft.nb_bins, nb_channels=2, hidden_size=16, max_bin=1487)
    save_openunmix(cwd / "path" / "to" / "umxhq", {"vocals": umx}, stft, 16)
    return cwd


def _run(command: str, extra: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd / "home"), "OMP_NUM_THREADS": "1"}
    argv = shlex.split(command.split(" #")[0])
    assert argv[0] == "python"
    argv = [sys.executable, *(a.replace("$HOME", env["HOME"]) for a in argv[1:])]  # as a shell
    if argv[1].endswith(".py"):
        argv[1] = str(ROOT / argv[1])  # the repository's script, run from the user's folder
    env.pop("LONGSEP_ROOT", None)
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(
        [*argv, *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("chain", _chains())
def test_command_runs_as_typed(chain, workspace):
    for command, extra in chain:
        _check(command, extra, workspace)


def _check(command: str, extra: list[str], workspace: Path) -> None:
    """Run ``command`` as typed (``extra`` appended) in ``workspace`` and check its output."""
    if "compare=" in command:
        for name, oracle in (("dirA", "irm1"), ("dirB", "ibm")):
            setup = f"python evaluate.py oracle={oracle} out_dir={name} backend=fast"
            _run(setup, EVAL_SHRINK, workspace)
    proc = _run(command, extra, workspace)
    if command.startswith("python train.py -m") or "+experiment=" in command:
        results = sorted(workspace.glob("runs/multirun/**/result.json"))
        statuses = [json.loads(p.read_text())["status"] for p in results]
        assert statuses and "failed" not in statuses, statuses
    elif command.startswith("python train.py"):
        assert sorted(workspace.glob("runs/*/*/model/*.safetensors"))
    elif command.startswith("python separate.py"):
        assert "separated" in proc.stdout + proc.stderr
    if "+experiment=default_model" in command:  # exported in half precision
        store = workspace / "src" / "longsep" / "pretrained" / "umx_small_rendered"
        weights = load_file(store / "vocals.safetensors")
        assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float16}
        # the run evaluates its own target, with a residual, into its own run dir
        (result,) = workspace.glob("runs/multirun/default_model/*/result.json")
        assert set(json.loads(result.read_text())["test"]) == {"vocals", "residual"}
        assert (result.parent / "eval" / "rendered" / "test" / "scores.csv").is_file()
        assert not (store / "eval").exists()
    if "--oracle" in command:
        out = command.split("--out ")[1].split()[0]
        text = (workspace / out / "results.md").read_text()
        assert "Oracle `oracle-irm2` on the same split" in text
    if "longsep.data.render" in command:
        out = command.split("--out ")[1].split()[0]
        assert (workspace / out / "render.json").is_file()
    if "--out experiments/results/musdb" in command:
        report = workspace / "experiments" / "results" / "musdb"
        assert (report / "results.md").is_file()
        assert "umx_transformer:qkvg1D" in (report / "context" / "context.md").read_text()
        assert "## Arm C: the intervention's negative control" in (report / "arms.md").read_text()
        assert sorted(workspace.glob("runs/multirun/seq_len_study/*reach7.5s*/intervention.csv"))
    if "longsep.study.control" in command:
        out = command.split("--out ")[1].split()[0]
        text = (workspace / out / "control.md").read_text()
        assert "| interaction |" in text and "| solo effect in B |" in text
        sweep = workspace / "runs" / "multirun" / command.split("multirun/")[1].split()[0]
        assert sorted(sweep.glob("synth_positive*/*/control_within.csv"))
        assert not sorted(sweep.glob("synth_negative*/*/control_within.csv"))
    if "--out experiments/results/context_rendered" in command:
        rows = (workspace / "experiments/results/context_rendered/contrasts.csv").read_text()
        assert "B - C" in rows and "intervention (C)" in rows
    if "longsep.study.collect" in command:
        landed = workspace / "experiments/results/context_rendered/runs"
        assert sorted(landed.glob("*/result.json")) and not sorted(landed.rglob("*.ckpt"))
        assert sorted(landed.glob("*reach7.5s*/intervention.csv"))  # scored before landing


def _first_of_sweep(override: str) -> str:
    """``key=a,b,c`` -> ``key=a`` (one point of a sweep); other overrides unchanged."""
    key, _, value = override.partition("=")
    if "," in value and not value.startswith(("[", "'", '"')):
        return f"{key}={value.split(',')[0]}"
    return override


@pytest.mark.parametrize("command", list(COMPOSE_ONLY))
def test_command_composes_as_typed(command, workspace, monkeypatch):
    """A GPU / cluster command: its config composes as typed, its sweep dir resolves before
    any job exists (where sweeps used to crash) and one job's config resolves fully."""
    argv = shlex.split(command.rstrip(" &"))[2:]
    home = str(workspace / "home")
    overrides = [_first_of_sweep(a.replace("$HOME", home)) for a in argv if a != "-m"]
    monkeypatch.chdir(workspace)
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    sweep_dir = Path(cfg.hydra.sweep.dir)  # resolved as Hydra's sweeper does: no HydraConfig
    assert sweep_dir.is_relative_to(workspace / "runs" / "multirun")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(sweep_dir / "0")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.to_container(cfg, resolve=True)
    assert job["paths"]["log_dir"] == str(workspace / "runs")
    if "gpu=" in command and torch.cuda.device_count() <= int(cfg.gpu):
        with pytest.raises(LongsepError, match=r"gpu=\d but 0 CUDA device"):
            pick_accelerator(cfg.gpu)
