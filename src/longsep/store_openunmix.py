"""Open-Unmix model files, read by :mod:`longsep.store` (this module does not import it).

Open-Unmix distributes a model as ``<target>-<sha256 prefix>.pth`` (the state dict) plus
``<target>.json`` (the training ``args``: nfft, nhop, nb_channels, ...); a ``separator.json``
(nfft, nhop, sample_rate, nb_channels) may be there too. Both layouts load without any
hand-written file. The published names (:data:`OPENUNMIX_MODELS`: ``umxhq``, ``umxl``,
``umx``) are read from torch hub's cache (``<torch.hub.get_dir()>/checkpoints``, where
``openunmix`` itself puts them), downloaded there when missing, and checked against the
SHA-256 prefix in their file names. Weights are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch

from longsep import order_targets
from longsep.errors import LongsepError, one_line
from longsep.models.umx import UMX
from longsep.spectral import STFTConfig
from longsep.store_format import PathLike, StoreEntry, refusal

log = logging.getLogger(__name__)

# Open-Unmix's published music models (URLs copied from openunmix 1.3.0 ``__init__.py``)
OPENUNMIX_MODELS: dict[str, dict[str, str]] = {
    "umxhq": {
        "bass": "https://zenodo.org/records/3370489/files/bass-8d85a5bd.pth",
        "drums": "https://zenodo.org/records/3370489/files/drums-9619578f.pth",
        "other": "https://zenodo.org/records/3370489/files/other-b52fbbf7.pth",
        "vocals": "https://zenodo.org/records/3370489/files/vocals-b62c91ce.pth",
    },
    "umxl": {
        "bass": "https://zenodo.org/records/5069601/files/bass-2ca1ce51.pth",
        "drums": "https://zenodo.org/records/5069601/files/drums-69e0ebd4.pth",
        "other": "https://zenodo.org/records/5069601/files/other-c8c5b3e6.pth",
        "vocals": "https://zenodo.org/records/5069601/files/vocals-bccbd9aa.pth",
    },
    "umx": {
        "bass": "https://zenodo.org/records/3370486/files/bass-646024d3.pth",
        "drums": "https://zenodo.org/records/3370486/files/drums-5a48008b.pth",
        "other": "https://zenodo.org/records/3370486/files/other-f8e132cc.pth",
        "vocals": "https://zenodo.org/records/3370486/files/vocals-c8df74a5.pth",
    },
}
# the STFT and channels of every published music model (``openunmix.umxhq()`` etc.)
PUBLISHED_SETTINGS = {"nfft": 4096, "nhop": 1024, "sample_rate": 44100, "nb_channels": 2}
DEFAULT_RATE = 44100  # openunmix.model.Separator's default, when no file gives a rate
SETTING_KEYS = ("nfft", "nhop", "sample_rate", "nb_channels")
_WEIGHTS = re.compile(r"^(?P<target>[A-Za-z0-9_]+?)(-(?P<hash>[0-9a-f]+))?\.pth$")


def openunmix_targets(folder: PathLike) -> list[str]:
    """Targets of an Open-Unmix model directory (``<target>.pth`` or ``<target>-<hash>.pth``)."""
    found = [_WEIGHTS.match(p.name) for p in Path(folder).glob("*.pth")]
    return order_targets([m["target"] for m in found if m])


def weights_target(weights: Path) -> str:
    """The target of ``<target>[-<hash>].pth`` (the file's stem when it has another name)."""
    match = _WEIGHTS.match(weights.name)
    return match["target"] if match else weights.stem


def is_openunmix_dir(folder: PathLike) -> bool:
    """A ``separator.json``, or weights with their ``<target>.json`` (the distributed layout)."""
    folder = Path(folder)
    if (folder / "separator.json").is_file():
        return True
    return any((folder / f"{t}.json").is_file() for t in openunmix_targets(folder))


def _weights_file(folder: Path, target: str) -> Path:
    for p in sorted(folder.glob(f"{target}*.pth")):
        match = _WEIGHTS.match(p.name)
        if match and match["target"] == target:
            return p
    have = ", ".join(openunmix_targets(folder)) or "none"
    raise LongsepError(f"Open-Unmix model {folder} has no target {target!r} (has: {have})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LongsepError(f"cannot read {path}: {one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise LongsepError(f"{path} is not an Open-Unmix json file (expected an object)")
    return data


def dir_settings(folder: Path, target: str) -> dict[str, int]:
    """nfft, nhop, sample_rate (and nb_channels when given) of ``target``: the ``args`` of
    ``<target>.json``, else ``separator.json``; two files that disagree are an error."""
    sources = []
    if (folder / f"{target}.json").is_file():
        args = _read_json(folder / f"{target}.json").get("args") or {}
        sources.append((folder / f"{target}.json", args))
    if (folder / "separator.json").is_file():
        sources.append((folder / "separator.json", _read_json(folder / "separator.json")))
    settings: dict[str, int] = {}
    origin: dict[str, Path] = {}
    for path, data in sources:
        for key in SETTING_KEYS:
            if data.get(key) is None:
                continue
            value = int(data[key])
            if key in settings and settings[key] != value:
                raise LongsepError(
                    f"{path}: {key}={value} disagrees with {origin[key]} ({settings[key]})"
                )
            settings.setdefault(key, value)
            origin.setdefault(key, path)
    missing = [k for k in ("nfft", "nhop") if k not in settings]
    if missing:
        raise LongsepError(
            f"Open-Unmix model {folder}: no {missing[0]} for {target!r} "
            f"(expected in {target}.json args or separator.json)"
        )
    if "sample_rate" not in settings:
        log.info("%s: no sample rate in its json files, using %d Hz", folder, DEFAULT_RATE)
        settings["sample_rate"] = DEFAULT_RATE
    return settings


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The state dict of an Open-Unmix ``.pth`` file (``weights_only``)."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise LongsepError(f"cannot read Open-Unmix weights {weights}: {refusal(exc)}") from exc
    if not isinstance(state, dict):
        raise LongsepError(f"{weights} is not an Open-Unmix state dict")
    return state


def umx_from_state(state: dict[str, torch.Tensor], source: Path) -> tuple[UMX, dict[str, Any]]:
    """A UMX with the architecture read from Open-Unmix weights' shapes, holding them."""
    try:
        max_bin = state["input_mean"].shape[0]
        hidden_size, inputs = state["fc1.weight"].shape
        nb_channels = inputs // max_bin
        args = {
            "nb_bins": state["fc3.weight"].shape[0] // nb_channels,
            "nb_channels": nb_channels,
            "hidden_size": hidden_size,
            "nb_layers": sum(1 for k in state if re.fullmatch(r"lstm\.weight_ih_l\d+", k)),
            "unidirectional": "lstm.weight_ih_l0_reverse" not in state,
            "max_bin": max_bin,
        }
    except (KeyError, ValueError, AttributeError) as exc:
        raise LongsepError(f"{source} is not an Open-Unmix model: {one_line(exc)}") from exc
    model = UMX(**args)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise LongsepError(f"{source} is not an Open-Unmix model: missing {missing[0]!r}")
    model.load_state_dict({k: state[k] for k in own})
    return model.eval(), args


def load_openunmix_file(
    weights: Path, target: str, settings: dict[str, int]
) -> tuple[UMX, StoreEntry]:
    """Rebuild one Open-Unmix target as UMX; ``settings`` give the STFT and channels."""
    model, args = umx_from_state(read_weights(weights), weights)
    stft = STFTConfig(
        n_fft=settings["nfft"], hop_length=settings["nhop"], sample_rate=settings["sample_rate"]
    )
    if args["nb_bins"] != stft.nb_bins:
        raise LongsepError(f"{weights} has {args['nb_bins']} bins but nfft={stft.n_fft}")
    if args["nb_channels"] != settings.get("nb_channels", args["nb_channels"]):
        raise LongsepError(
            f"{weights} has {args['nb_channels']} channels, its json {settings['nb_channels']}"
        )
    entry = StoreEntry(
        target=target,
        separator={"_target_": "longsep.models.umx.UMX", **args},
        stft=stft,
        nb_channels=args["nb_channels"],
        info={"openunmix": str(weights)},
    )
    return model, entry


def load_openunmix(folder: PathLike, target: str) -> tuple[UMX, StoreEntry]:
    """Rebuild ``target`` of an Open-Unmix model directory as UMX."""
    folder = Path(folder)
    return load_openunmix_file(_weights_file(folder, target), target, dir_settings(folder, target))


def same_settings(loaded: list[tuple[UMX, StoreEntry]], source: str) -> None:
    """Targets loaded together must share the STFT and channels (one line otherwise)."""
    first = loaded[0][1]
    for _, entry in loaded[1:]:
        if (entry.stft, entry.nb_channels) != (first.stft, first.nb_channels):
            raise LongsepError(
                f"{source}: {first.target} and {entry.target} use different STFT settings "
                f"or channels ({first.stft}, {first.nb_channels} vs {entry.stft}, "
                f"{entry.nb_channels})"
            )


def check_hash(path: Path, downloaded: bool = False) -> None:
    """Compare the SHA-256 prefix in ``<name>-<prefix>.pth`` with the file's hash; a
    mismatch is one line naming the file (a file just downloaded is deleted)."""
    prefix = _WEIGHTS.match(path.name)["hash"]  # type: ignore[index]
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        if downloaded:
            path.unlink()
        what = "the download was deleted, try again" if downloaded else "delete it and retry"
        raise LongsepError(
            f"{path}: SHA-256 {digest.hexdigest()[:8]} does not match {prefix} in its name ({what})"
        )


def published_files(name: str, targets: list[str]) -> dict[str, Path]:
    """The cached weights of published model ``name`` for ``targets``, downloaded when
    missing; without network, one line listing the URLs and the folder they go in."""
    urls = OPENUNMIX_MODELS[name]
    unknown = [t for t in targets if t not in urls]
    if unknown:
        raise LongsepError(f"model={name} has no target {unknown[0]!r} (has: {', '.join(urls)})")
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    files = {t: folder / urls[t].rsplit("/", 1)[-1] for t in targets}
    for target, path in files.items():
        if path.is_file():
            check_hash(path)
            continue
        log.info("model=%s: downloading %s to %s", name, urls[target], folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(urls[target], str(path), progress=sys.stderr.isatty())
        except OSError as exc:  # URLError, HTTPError, timeouts, a read-only cache dir
            todo = " ".join(urls[t] for t, p in files.items() if not p.is_file())
            raise LongsepError(
                f"model={name}: cannot download ({one_line(exc)}); fetch {todo} into {folder}"
            ) from exc
        check_hash(path, downloaded=True)
    return files


def load_published(name: str, targets: list[str] | None) -> list[tuple[UMX, StoreEntry]]:
    """The targets of a published Open-Unmix model (all four by default)."""
    wanted = list(dict.fromkeys(targets)) if targets else order_targets(OPENUNMIX_MODELS[name])
    files = published_files(name, wanted)
    return [load_openunmix_file(files[t], t, PUBLISHED_SETTINGS) for t in wanted]
