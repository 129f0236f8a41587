"""Data: MUSDB18, folders of stems, Open-Unmix layouts, combined data sets, the synthetic
set, the decoded-audio cache, augmentation."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from longsep.errors import LongsepError


def instantiate_data(data: Any) -> Any:
    """The LightningDataModule of a ``data`` config node; a LongsepError its constructor
    raised is re-raised as is (Hydra wraps it in an InstantiationException)."""
    try:
        return instantiate(data, _recursive_=False)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, LongsepError):
            raise exc.__cause__ from exc
        raise
