"""Advancing a DNS through physical time with a progress bar and a solver stopwatch."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm import tqdm


class TimedRun:
    """Advance ``solver`` (any object with ``advance(state, duration)``) towards ``total_time``,
    showing progress in physical time units and summing the wall-clock spent in the solver."""

    def __init__(self, solver: Any, total_time: float, description: str, progress: bool):
        self.solver, self.total_time = solver, total_time
        self.seconds, self.clock = 0.0, 0.0
        self.timed_from = 0.0  # the physical time at which the stopwatch was last restarted
        self.bar = tqdm(total=total_time, desc=description, disable=not progress,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} time units [{elapsed}<{remaining}]")

    def advance(self, state: torch.Tensor, duration: float) -> torch.Tensor:
        start = time.perf_counter()
        state = self.solver.advance(state, duration)
        self.seconds += time.perf_counter() - start
        self.clock += duration
        self.bar.update(min(self.clock, self.total_time) - self.bar.n)
        return state

    def spin_up(self, state: torch.Tensor, spinup_time: float, snapshot_dt: float) -> torch.Tensor:
        """Advance through ``spinup_time`` in chunks no longer than ``snapshot_dt``."""
        chunks = math.ceil(spinup_time / snapshot_dt - 1e-9)
        for _ in range(chunks):
            state = self.advance(state, spinup_time / chunks)
        return state

    def restart_stopwatch(self) -> None:
        """Time the solver from here on (e.g. after a spin-up on a coarser grid)."""
        self.seconds, self.timed_from = 0.0, self.clock

    def seconds_per_time_unit(self) -> float:
        """Solver wall-clock per unit of physical time advanced since the stopwatch started."""
        timed = self.clock - self.timed_from
        return self.seconds / timed if timed > 0 else float("nan")

    def close(self) -> None:
        self.bar.close()
