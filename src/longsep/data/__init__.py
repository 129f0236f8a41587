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


def instantiate_data(data: Any) -> Any:
    """The LightningDataModule of a ``data`` config node; a LongsepError its constructor
    raised is re-raised as is (Hydra wraps it in an InstantiationException)."""
    try:
        return instantiate(data, _recursive_=False)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, LongsepError):
            raise exc.__cause__ from exc
        raise


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
