"""glibc heap policy (longsep.heap), each check in a fresh interpreter: a heap that earlier
tests grew would serve the blocks and hide what the policy does."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PRELUDE = """
import resource
import torch
from longsep.heap import reuse_freed_blocks, unmap_large_blocks

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def faulted_mb(fn):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * 4096 / 2**20

if not unmap_large_blocks():
    print("not glibc")
    raise SystemExit(0)
"""

_UNMAP = """
large = torch.ones(6 * 2**20)
del large  # 24 MB freed: glibc alone would now raise its threshold above 16 MB
before = rss_mb()
block = torch.ones(4 * 2**20)
grown = rss_mb() - before
del block
print(round(grown), round(rss_mb() - before))
"""

_REUSE = """
def windows():  # 16-MB tensors, used and freed, as each BSSEval window does
    for _ in range(4):
        torch.ones(4 * 2**20).sum()

windows()
outside = faulted_mb(windows)
before = rss_mb()
with reuse_freed_blocks() as applied:
    windows()  # glibc's aligned allocations settle in the heap within a few rounds
    windows()
    inside = faulted_mb(windows)
    held = rss_mb() - before
print(int(applied), round(outside), round(inside), round(held), round(rss_mb() - before))
"""


def _run(body: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + body], capture_output=True, text=True, check=True
    ).stdout.split()
    if out == ["not", "glibc"]:
        pytest.skip("the C library is not glibc: nothing to change")
    return list(map(int, out))


@pytest.mark.integration
def test_unmap_large_blocks_returns_freed_tensors_to_the_os():
    """After unmap_large_blocks, a freed 16-MB tensor leaves the resident set even after a
    larger block was freed, which raises glibc's default (dynamic) mmap threshold above it and
    would keep it in the heap (separate_to_file calls it, so window tensors do not pile up)."""
    grown, left = _run(_UNMAP)
    assert grown >= 12 and left <= 4


@pytest.mark.integration
def test_reuse_freed_blocks_reuses_pages_then_restores_the_policy():
    """Inside reuse_freed_blocks, once the heap has settled, freed 16-MB tensors' pages serve
    the next ones (no new page faults, against 16 MB a tensor outside) and stay resident; on
    exit the heap is trimmed, so the resident set is back where it was."""
    applied, outside, inside, held, left = _run(_REUSE)
    assert applied == 1
    assert outside >= 56 and inside <= 4
    assert held >= 14
    assert left <= 4
