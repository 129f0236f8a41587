"""Data: MUSDB18, folders of stems, Open-Unmix layouts, combined data sets, the synthetic
set, the decoded-audio cache, augmentation.

A data config's ``_target_`` is a LightningDataModule of :mod:`longsep.data.datamodules`
(or :mod:`longsep.data.combined`); :data:`TRACK_SETS` names the class that lists its
tracks alone, which evaluation uses so that it does not import Lightning (seconds).
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from longsep.errors import LongsepError

_TRACK_SETS = {  # data module (in datamodules.py) -> its track set
    "MUSDBDataModule": "musdb.MUSDBTracks",
    "FolderDataModule": "folder.FolderTracks",
    "AlignedDataModule": "openunmix.AlignedTracks",
    "SourceFolderDataModule": "openunmix.SourceFolderTracks",
    "TrackFolderFixDataModule": "openunmix.TrackFolderFixTracks",
    "TrackFolderVarDataModule": "openunmix.TrackFolderVarTracks",
}
TRACK_SETS = {
    f"longsep.data.datamodules.{module}": f"longsep.data.{tracks}"
    for module, tracks in _TRACK_SETS.items()
}


def instantiate_data(data: Any, where: str = "data") -> Any:
    """The LightningDataModule of a ``data`` config node (``where`` names it in errors); an
    option its class does not take is a one-line LongsepError, and so is a LongsepError its
    constructor raised (Hydra wraps that in an InstantiationException)."""
    check_options(data, where)
    try:
        return instantiate(data, _recursive_=False)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, LongsepError):
            raise exc.__cause__ from exc
        raise


def check_options(data: Any, where: str = "data") -> None:
    """Every key of ``data``, and of each data set under its ``datasets``, is an argument of
    its ``_target_`` (e.g. a preset's ``data.samples_per_track`` under ``data=combined``,
    which sets it per data set); else a one-line LongsepError naming the key."""
    cls = get_class(data["_target_"])
    accepted = _options(cls)
    unknown = sorted(k for k in data if not k.startswith("_") and k not in accepted)
    if unknown:
        raise LongsepError(
            f"{where}.{unknown[0]}: {cls.__name__} takes no such option "
            f"(it takes {', '.join(accepted)})"
        )
    for name, node in (data.get("datasets") or {}).items():
        if isinstance(node, (dict, DictConfig)):
            check_options(node, f"{where}.datasets.{name}")


def _options(cls: type) -> list[str]:
    """The keyword arguments ``cls(...)`` takes: its ``__init__``'s, and where that passes
    ``**options`` on, those of the ``__init__`` of the classes it inherits from."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # no self
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names += [p.name for p in params if p.kind in named and p.name not in names]
        if all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return names


def instantiate_tracks(data: Any) -> Any:
    """The track set of a ``data`` config node (its ``tracks(split)``), built from the
    options it takes; the data module's training options are not read."""
    node = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else data
    target = node.get("_target_")
    if target not in TRACK_SETS:
        raise LongsepError(f"data={target}: evaluate each of its data sets alone")
    tracks = get_class(TRACK_SETS[target])
    accepted = inspect.signature(tracks).parameters
    return tracks(**{k: v for k, v in node.items() if k in accepted})
