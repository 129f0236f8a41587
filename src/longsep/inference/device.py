"""Where inference runs: a torch device from what a user types."""

from __future__ import annotations

import torch

from longsep.errors import LongsepError


def resolve_device(device: str | int | None) -> torch.device:
    """A torch device from ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / an int."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) or str(device).isdigit():
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise LongsepError(f"device={device!r} is not a torch device: {exc}") from exc
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise LongsepError(
            f"device={device} but {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return dev
