"""glibc heap policy: whether freed large blocks go back to the OS or stay for reuse.

Two workloads pull opposite ways. A streaming separation of a long song should hand its
freed window tensors back, so that its resident set stays at its working set. The fast
BSSEval backend allocates and frees tensors of a few MB for every 1-s window; served by
a fresh ``mmap`` each time, their page faults cost as much as the arithmetic. Both are
``mallopt`` settings of glibc; with another C library nothing changes. A
:class:`Workspace` keeps a loop's buffers between passes in the first place.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from collections.abc import Iterator

import torch
from torch import Tensor

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_DEFAULT_TRIM = 128 * 1024
_mmap_threshold: list[int] = []  # the value set by unmap_large_blocks, if any


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)  # the C library already loaded


def _mallopt(param: int, value: int) -> bool:
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt and mallopt(param, int(value)) == 1)


def unmap_large_blocks(threshold: int = 1 << 20) -> bool:
    """Have glibc serve allocations of ``threshold`` bytes or more with ``mmap``.

    Such blocks go back to the OS when freed. By default glibc raises its mmap threshold
    (up to 32 MiB) each time a large block is freed, after which window-sized tensors come
    from the heap, whose high-water mark stays resident: a long streaming separation then
    holds more than its working set. Returns False where the C library has no
    ``mallopt`` (not glibc), and nothing changes.
    """
    if not _mallopt(_M_MMAP_THRESHOLD, threshold):
        return False
    _mmap_threshold[:] = [threshold]
    return True


@contextlib.contextmanager
def reuse_freed_blocks(limit: int = 32 << 20) -> Iterator[bool]:
    """Inside, blocks up to ``limit`` bytes come from the heap and freed ones stay mapped.

    A loop that frees and allocates the same few-MB tensors then reuses resident pages
    instead of faulting in new ones. On exit the heap's free memory is returned to the
    OS (``malloc_trim``) and the mmap threshold set by :func:`unmap_large_blocks` is
    restored; without one it stays at ``limit`` (glibc's dynamic default, which grows up
    to 32 MiB by itself, cannot be switched back on). Yields whether the policy applies.
    """
    applied = _mallopt(_M_MMAP_THRESHOLD, limit) and _mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield applied
    finally:
        if applied:
            previous = _mmap_threshold[0] if _mmap_threshold else limit
            _mallopt(_M_MMAP_THRESHOLD, previous)
            _mallopt(_M_TRIM_THRESHOLD, max(_DEFAULT_TRIM, 2 * previous))
            _libc().malloc_trim(0)


class Workspace:
    """Named flat buffers reused by every pass of a loop, so their pages are faulted in once.

    Tens of MB freshly allocated per pass are mmapped and zero-filled by the kernel each
    time: on CPU that page-fault time was as large as the arithmetic of a BSSEval window.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._flat: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A contiguous ``shape`` view of buffer ``name`` (grown when too small)."""
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < size or flat.dtype != dtype:
            flat = torch.empty(size, dtype=dtype, device=self.device)
            self._flat[name] = flat
        return flat[:size].view(shape)
