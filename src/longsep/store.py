"""Model files: the one place that turns a path or a name into separators and settings.

A model store is a directory with, per target, ``<target>.safetensors`` (the separator's
state dict) and ``<target>.yaml`` (everything needed to rebuild it: the separator config
with its ``_target_``, the STFT, ``seq_len``, rate, channels and where it came from).
Several targets trained in separate runs can share one store. Lightning checkpoints are
read with ``torch.load(weights_only=True)``; Open-Unmix model directories
(``<target>[-<hash>].pth`` + ``<target>.json`` and/or ``separator.json``) and the published
names ``umxhq`` / ``umxl`` / ``umx`` are rebuilt as :class:`~longsep.models.UMX` by
:mod:`longsep.store_openunmix`.

Model files are data: configs are built by :func:`longsep.models.network_from_node`,
which only accepts longsep's separator and attention classes by exact name, so a model
received from someone else cannot run code. :func:`resolve_model` maps what a user types
(a store, a checkpoint, a training run dir, an Open-Unmix dir or name) to the model to
load; :func:`read_init_weights` reads any of them and :func:`init_network` loads them into a
separator built elsewhere (fine-tuning).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from longsep import order_targets
from longsep import store_openunmix as umx_files
from longsep.errors import LongsepError, one_line
from longsep.io import atomic_write
from longsep.models.build import network_from_node
from longsep.spectral import STFTConfig
from longsep.store_format import (
    PathLike,
    StoreEntry,
    refusal,
)

log = logging.getLogger(__name__)

STATE_PREFIX = "network."  # SeparationModule's attribute holding the network
FORMER_STATE_PREFIX = "separator."  # its name in checkpoints written before 2026-12-06
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([_T]\d{2}-\d{2}-\d{2})?$")


STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_MODEL = "umx_small_rendered"  # models/<name>: used by separate.py without model=


def default_model() -> Path:
    """The model store shipped in the repository's ``models/`` (a clone or editable install)."""
    store = Path(__file__).resolve().parent / "pretrained" / DEFAULT_MODEL
    if not is_model_dir(store):
        raise LongsepError(
            f"model=... is not given and the default model {store} is not in this installation "
            "(it ships with a clone of the repository): pass model=<store dir | checkpoint | umxhq>"
        )
    return store


def save_store(
    store_dir: PathLike, separator: nn.Module, entry: StoreEntry, dtype: str = "float32"
) -> Path:
    """Write ``<target>.safetensors`` + ``<target>.yaml`` into ``store_dir`` atomically.

    ``dtype`` (``float32`` / ``float16`` / ``bfloat16``) is the type floating-point weights
    are stored in; they are loaded back into float32 networks.
    """
    if dtype not in STORE_DTYPES:
        raise LongsepError(f"store_dtype={dtype} is not one of {', '.join(STORE_DTYPES)}")
    store = Path(store_dir)
    state = {
        k: (v.to(STORE_DTYPES[dtype]) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in separator.state_dict().items()
    }
    atomic_write(store / f"{entry.target}.safetensors", lambda p: save_file(state, str(p)))
    text = yaml.safe_dump(entry.to_dict(), sort_keys=False)
    atomic_write(store / f"{entry.target}.yaml", lambda p: p.write_text(text))
    log.info("exported %s to %s", entry.target, store)
    return store


def _store_yamls(store: Path) -> list[Path]:
    """The ``<target>.yaml`` files of a store dir (yaml files that describe a target)."""
    found = []
    for path in sorted(store.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            if path.with_suffix(".safetensors").is_file():  # a target's file, unreadable
                raise LongsepError(f"cannot read model {path}: {_yaml_problem(exc)}") from exc
            continue
        if isinstance(data, dict) and "target" in data and "separator" in data:
            found.append(path)
    return found


def store_targets(store_dir: PathLike) -> list[str]:
    """Targets of a model store directory; a ``<target>.yaml`` without its
    ``<target>.safetensors`` is an error naming the file."""
    store = Path(store_dir)
    if not store.is_dir():
        return []
    targets = []
    for meta in _store_yamls(store):
        if not meta.with_suffix(".safetensors").is_file():
            raise LongsepError(
                f"model store {meta} has no weights: {meta.with_suffix('.safetensors').name} "
                "is missing (copy it next to the yaml, or remove the yaml)"
            )
        targets.append(meta.stem)
    return order_targets(targets)


def is_model_dir(folder: PathLike) -> bool:
    """Whether ``folder`` is a model store or an Open-Unmix model directory."""
    return bool(_store_yamls(Path(folder))) or umx_files.is_openunmix_dir(folder)


def published_name(path: PathLike | Sequence[PathLike]) -> str | None:
    """The published Open-Unmix name (``umxhq``, ``umxl``, ``umx``) that ``path`` spells,
    unless a file or folder of that name exists."""
    if (
        isinstance(path, str | Path)
        and str(path) in umx_files.OPENUNMIX_MODELS
        and not Path(path).exists()
    ):
        return str(path)
    return None


def load_store(store_dir: PathLike, target: str) -> tuple[nn.Module, StoreEntry]:
    """Rebuild the separator of ``target`` from a model store (eval mode, CPU)."""
    store = Path(store_dir)
    meta, weights = store / f"{target}.yaml", store / f"{target}.safetensors"
    if not meta.exists() or not weights.exists():
        have = store_targets(store) if store.is_dir() else []
        raise LongsepError(
            f"model store {store} has no target {target!r} (has: {', '.join(have) or 'none'})"
        )
    try:
        entry = StoreEntry.from_dict(yaml.safe_load(meta.read_text()), str(meta))
    except (OSError, yaml.YAMLError) as exc:
        raise LongsepError(f"cannot read model {meta}: {_yaml_problem(exc)}") from exc
    try:
        with safe_open(str(weights), framework="pt") as file:
            shapes = {k: tuple(file.get_slice(k).get_shape()) for k in file.keys()}  # noqa: SIM118
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise LongsepError(f"cannot read weights {weights}: {one_line(exc)}") from exc
    model = build_for_weights(entry.separator, shapes, str(meta), str(weights))
    try:
        state = load_file(str(weights))
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise LongsepError(f"cannot read weights {weights}: {one_line(exc)}") from exc
    load_state(model, state, str(weights))
    return model.eval(), entry


def _yaml_problem(exc: BaseException) -> str:
    """A YAML error in one line, with where it is (a ``!!python/...`` tag included)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        return f"{exc.problem or exc.context or 'invalid YAML'}{where}"
    return one_line(exc)


def check_shapes(
    model: dict[str, tuple[int, ...]],
    weights: dict[str, tuple[int, ...]],
    source: str,
    model_name: str = "the model its config describes",
) -> None:
    """Same keys and shapes in ``model`` and ``weights``, else one line naming ``source``,
    the first key that differs and both shapes."""
    for key, shape in model.items():
        if key not in weights:
            raise LongsepError(f"{source}: the weights have no {key!r} ({model_name} has it)")
        if tuple(weights[key]) != tuple(shape):
            raise LongsepError(
                f"{source}: {key!r} is {tuple(weights[key])} in the weights, "
                f"{tuple(shape)} in {model_name}"
            )
    extra = sorted(set(weights) - set(model))
    if extra:
        raise LongsepError(f"{source}: {extra[0]!r} is in the weights but not in {model_name}")


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def build_for_weights(
    node: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str, weights: str
) -> nn.Module:
    """The separator of config ``node`` once it is known to fit weights of ``shapes``.

    It is first built on the meta device, which allocates nothing: a config that claims
    sizes its weights do not have (a 10^8 hidden size) is one line naming the key, never
    an allocation of hundreds of GB."""
    with torch.device("meta"):
        probe = network_from_node(node, source)
    check_shapes(_shapes(probe.state_dict()), shapes, weights)
    return network_from_node(node, source)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is one line naming ``source``."""
    check_shapes(_shapes(model.state_dict()), _shapes(state), source)
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a Lightning checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise LongsepError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise LongsepError(f"cannot read checkpoint {path}: {refusal(exc)}") from exc


def current_state_keys(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint's ``state_dict`` with the network's keys under
    :data:`STATE_PREFIX` (checkpoints of runs begun before the rename hold them under
    :data:`FORMER_STATE_PREFIX`; both resume and export)."""
    n = len(FORMER_STATE_PREFIX)
    return {
        STATE_PREFIX + k[n:] if k.startswith(FORMER_STATE_PREFIX) else k: v
        for k, v in state.items()
    }


def network_state(ckpt: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The network's weights inside a training checkpoint's ``state_dict``."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise LongsepError(f"{source} holds no state_dict: not a Lightning checkpoint")
    n = len(STATE_PREFIX)
    return {k[n:]: v for k, v in current_state_keys(state).items() if k.startswith(STATE_PREFIX)}


def entry_from_checkpoint(ckpt: dict[str, Any], source: str) -> StoreEntry:
    """The store entry described by a longsep Lightning checkpoint."""
    info = ckpt.get("longsep")
    if not info or "config" not in info:
        raise LongsepError(f"{source} is not a longsep training checkpoint")
    cfg = info["config"]
    return StoreEntry(
        target=info["target"],
        separator=cfg["separator"],
        stft=STFTConfig(**info["stft"]),
        seq_len=cfg.get("seq_len"),
        nb_channels=int(cfg.get("nb_channels", 2)),
        info={"checkpoint": str(source), "global_step": ckpt.get("global_step")},
    )


def load_checkpoint(path: PathLike) -> tuple[nn.Module, StoreEntry]:
    """Rebuild the separator stored in a longsep Lightning checkpoint."""
    ckpt = read_checkpoint(path)
    entry = entry_from_checkpoint(ckpt, str(path))
    state = network_state(ckpt, str(path))
    model = build_for_weights(entry.separator, _shapes(state), str(path), str(path))
    load_state(model, state, str(path))
    return model.eval(), entry


def load_models(
    path: PathLike | Sequence[PathLike], targets: Sequence[str] | None = None
) -> tuple[dict[str, nn.Module], list[StoreEntry]]:
    """Per-target models and their entries from a store, checkpoint(s), Open-Unmix dir or
    published Open-Unmix name."""
    name = published_name(path)
    if name:
        return _as_dicts(umx_files.load_published(name, list(targets or [])))
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    if not paths:
        raise LongsepError("model: no model path given")
    for p in paths:
        if not p.exists():
            raise LongsepError(f"model={p} does not exist")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if store_targets(folder):
            names = (
                list(dict.fromkeys(targets)) if targets else order_targets(store_targets(folder))
            )
            return _as_dicts([load_store(folder, t) for t in names])
        if umx_files.is_openunmix_dir(folder):
            names = list(dict.fromkeys(targets)) if targets else umx_files.openunmix_targets(folder)
            loaded = [umx_files.load_openunmix(folder, t) for t in names]
            umx_files.same_settings(loaded, f"model={folder}")
            return _as_dicts(loaded)
        raise LongsepError(
            f"model={folder} is neither a model store (<target>.safetensors + <target>.yaml) "
            "nor an Open-Unmix model directory (<target>.pth + <target>.json or separator.json)"
        )
    return _from_checkpoints(paths, targets)


def _as_dicts(loaded: list[tuple[nn.Module, StoreEntry]]) -> tuple[dict[str, nn.Module], list]:
    return {entry.target: model for model, entry in loaded}, [entry for _, entry in loaded]


def _from_checkpoints(
    paths: list[Path], targets: Sequence[str] | None
) -> tuple[dict[str, nn.Module], list[StoreEntry]]:
    loaded: dict[str, tuple[nn.Module, StoreEntry]] = {}
    for p in paths:
        if p.is_dir():
            raise LongsepError(f"model={p}: pass one directory, or checkpoint files only")
        model, entry = load_checkpoint(p)
        if entry.target in loaded:
            raise LongsepError(f"model={p}: a second checkpoint for target {entry.target!r}")
        loaded[entry.target] = (model, entry)
    wanted = list(dict.fromkeys(targets)) if targets else order_targets(loaded)
    for name in wanted:
        if name not in loaded:
            raise LongsepError(
                f"targets: no checkpoint for {name!r} (have: {', '.join(sorted(loaded))})"
            )
    return _as_dicts([loaded[name] for name in wanted])


@dataclass(frozen=True)
class InitWeights:
    """Weights a training run starts from (``init_from``), read before any long work."""

    state: dict[str, torch.Tensor]
    target: str
    file: str
    stft: STFTConfig | None


def read_init_weights(source: PathLike, target: str) -> InitWeights:
    """The weights of ``source`` for ``target``: a model store, a longsep checkpoint, an
    Open-Unmix model dir or ``.pth`` file, or a published name. Its ``target`` is taken,
    else its only target."""
    name = published_name(str(source))
    path = Path(str(source)).expanduser()
    if not name and not path.exists():
        raise LongsepError(
            f"init_from={source} does not exist: give a model store, a checkpoint, an "
            "Open-Unmix model dir or .pth file, or umxhq / umxl / umx"
        )
    if path.is_file() and path.suffix == ".pth":
        model, _ = umx_files.umx_from_state(umx_files.read_weights(path), path)
        return InitWeights(model.state_dict(), umx_files.weights_target(path), str(path), None)
    if name:
        have: list[str] = order_targets(umx_files.OPENUNMIX_MODELS[name])
    else:
        have = (store_targets(path) or umx_files.openunmix_targets(path)) if path.is_dir() else []
    if len(have) > 1 and target not in have:
        raise LongsepError(
            f"init_from={source} has targets {', '.join(have)} but not {target!r}: "
            "give a source with one target or with this one"
        )
    wanted = [target if target in have else have[0]] if have else None
    models, entries = load_models(name or path, wanted)
    (found, model), entry = next(iter(models.items())), entries[0]
    file = entry.info.get("openunmix") or (path / f"{found}.safetensors" if path.is_dir() else path)
    return InitWeights(model.state_dict(), found, str(file), entry.stft)


def init_network(network: nn.Module, weights: InitWeights, stft: STFTConfig | None = None) -> str:
    """Load ``weights`` into ``network`` (where fine-tuning starts): every key of the
    network must be there with the same shape and nothing else (one line naming the file
    and the first mismatching key otherwise). Returns the weights' target."""
    _load_matching(network, weights.state, weights.file)
    if stft is not None and weights.stft is not None and weights.stft != stft:
        log.warning(
            "init_from=%s was trained with %s, this run uses %s", weights.file, weights.stft, stft
        )
    log.info("initialised the network from %s (target %s)", weights.file, weights.target)
    return weights.target


def _load_matching(separator: nn.Module, state: dict[str, torch.Tensor], file: str) -> None:
    """Load ``state`` into ``separator``: same keys, same shapes, else one line."""
    check_shapes(
        _shapes(separator.state_dict()),
        _shapes(state),
        f"init_from={file}",
        "the separator to train",
    )
    separator.load_state_dict(state)


# --- what a user names -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where a model is read from and where its evaluations go by default."""

    model: Path
    eval_root: Path
    label: str
    run: Path | None = None  # the training run the model comes from, if any


def _if_run(folder: Path) -> Path | None:
    """``folder`` if it is a training run's directory (it holds the run's config.yaml)."""
    return folder if (folder / "config.yaml").is_file() else None


def _run_label(run: Path) -> str:
    """``umx-vocals-6s@2024-05-01_12-00-00`` for Hydra's ``<run name>/<timestamp>`` dirs."""
    run = run.resolve()
    if _TIMESTAMP.match(run.name) and run.parent.name:
        return f"{run.parent.name}@{run.name}"
    return run.name


def _run_checkpoint(folder: Path) -> Path:
    """The best checkpoint of a run's ``checkpoints/`` (newest non-last), else ``last.ckpt``."""
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    best = [p for p in found if not p.name.startswith("last")]
    if best or found:
        return (best or found)[-1]
    raise LongsepError(f"ckpt={folder.parent}: its checkpoints/ folder holds no .ckpt file")


def resolve_model(ckpt: str | Path) -> ModelSource:
    """The model of ``ckpt``: a model store / Open-Unmix dir, a checkpoint, a run dir or a
    published Open-Unmix name.

    A training run dir (``model/`` + ``checkpoints/``) gives its exported ``model/`` store,
    else its best checkpoint. Evaluations default to ``<run dir>/eval``, and to
    ``./eval/<name>`` for a store of its own or a published name (fetched when its targets
    are loaded): a model folder is never written into.
    """
    name = published_name(str(ckpt))
    if name:
        return ModelSource(Path(name), Path.cwd() / "eval" / name, name)
    path = Path(str(ckpt)).expanduser()
    if not path.exists():
        raise LongsepError(
            f"ckpt={ckpt} does not exist: give a model store, a checkpoint (.ckpt), "
            "a training run directory, an Open-Unmix model directory or umxhq / umxl / umx"
        )
    if path.is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        label = f"{_run_label(run)}:{path.stem}"
        return ModelSource(path, run / "eval" / path.stem, label, _if_run(run))
    if is_model_dir(path / "model"):
        return ModelSource(path / "model", path / "eval", _run_label(path), _if_run(path))
    if is_model_dir(path):
        if path.name == "model" and (path.parent / "checkpoints").is_dir():  # a run's store
            run = path.parent
            return ModelSource(path, run / "eval", _run_label(run), _if_run(run))
        # a store of its own (the shipped default model, a download): never written into
        return ModelSource(path, Path.cwd() / "eval" / path.name, _run_label(path))
    if (path / "checkpoints").is_dir():
        checkpoint = _run_checkpoint(path / "checkpoints")
        log.info("run %s has no exported model/: evaluating %s", path, checkpoint.name)
        label = f"{_run_label(path)}:{checkpoint.stem}"
        return ModelSource(checkpoint, path / "eval", label, _if_run(path))
    raise LongsepError(
        f"ckpt={ckpt} holds no model: expected a model store (<target>.safetensors + "
        "<target>.yaml), an Open-Unmix dir (<target>.pth + .json), or a run dir with model/ "
        "or checkpoints/"
    )
