"""Peak memory of a training run (CUDA allocator or the process's resident set)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class PeakMemory:
    """Peak memory of this process between :meth:`start` and :meth:`read`.

    On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensors only). On CPU: the
    peak resident set size; Linux lets us reset it (``/proc/self/clear_refs``) and read
    ``VmHWM``, elsewhere ``resource.getrusage`` gives the peak since the process started
    (an upper bound when several runs share a process). Data-loader worker processes are
    not counted.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._reset = False

    def start(self) -> None:
        """Reset the peak."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._reset = _status_kib("VmHWM") is not None
        except OSError:
            self._reset = False

    def read(self) -> tuple[float, str]:
        """(peak in MB, how it was measured)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_max_allocated"
        if self._reset:
            return (_status_kib("VmHWM") or 0) / 1024, "rss_peak"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return peak / scale, "rss_peak_process"
