"""Peak resident memory of a piece of work (Linux): reset the high-water mark, run, read it
back; :func:`in_fresh_process` runs the work in its own process, so that its time and peak are
its own. A torch CPU allocation does not pass through Python's allocator, so tracemalloc misses
it; the resident set sees it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any


def resident_mib(key: str) -> float:
    """This process's resident set from /proc/self/status: ``VmRSS`` (now) or ``VmHWM`` (its peak
    since the start or the last :func:`reset_peak`), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"key must be a memory field of /proc/self/status (VmRSS, VmHWM), got {key!r}")


def reset_peak() -> None:
    """Restart the peak resident set (VmHWM) from the current one (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def in_fresh_process(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` in a new (spawned) Python process; ``work`` must be importable by name."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(work, args)

