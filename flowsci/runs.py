"""Run directories: ``config.yaml``, ``checkpoints/``, ``metrics.csv``, ``figures/``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flowsci.errors import RunError


@dataclass(frozen=True)
class RunDir:
    """The files of one run."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def load_config(self, overrides: Sequence[str] = ()):
        """The run's resolved config (with optional overrides)."""
        from flowsci.config import load_config

        return load_config(self.config, overrides)


def new_run_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name-YYYYmmdd-HHMMSS`` (with a numeric suffix if taken)."""
    base = Path(out_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def latest_run_path(out_dir: str | Path, name: str) -> Path:
    """The newest run directory of ``name`` in ``out_dir`` that has a checkpoint."""
    candidates = sorted(p for p in Path(out_dir).glob(f"{name}-*")
                        if p.is_dir() and any((p / "checkpoints").glob("step-*.pt")))
    if not candidates:
        raise RunError(f"--resume: no run of '{name}' with a checkpoint under {out_dir}; "
                       "pass the run directory with --out")
    return candidates[-1]


def open_run(path: str | Path) -> RunDir:
    """An existing run directory; RunError if it is not one."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunError(f"run directory not found: {run.path}")
    if not run.config.is_file():
        raise RunError(f"{run.path} is not a flowsci run directory (no config.yaml)")
    return run
