"""Shared helpers of plmsae._util that no stage test reaches on its own."""

from __future__ import annotations

import os
import sys

import pytest

from plmsae._util import _malloc_trim, release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only"
)
def test_freed_heap_pages_go_back_to_the_system():
    # 300 MB of 10 kB blocks (below glibc's mmap threshold: they live on the heap), freed
    # under a block that stays: glibc keeps the pages until they are trimmed
    blocks = [bytearray(10_000) for _ in range(30_000)]
    stays = bytearray(10_000)
    del blocks
    freed = _rss_mib()
    release_freed_memory()
    assert freed - _rss_mib() > 200
    assert len(stays) == 10_000
