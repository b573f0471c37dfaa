"""The run's metric log: ``metrics.csv`` in long form (step, phase, name, value), plus
optional TensorBoard events."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from flowsci.atomic import atomic_open
from flowsci.errors import ConfigError

HEADER = ["step", "phase", "name", "value"]


class MetricsLog:
    """Append-only CSV of scalars; ``phase`` is 'train' or 'eval'."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None):
        self.path = Path(path)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(HEADER)
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.tensorboard=true needs the tensorboard package: "
                                  "pip install 'flowsci[tensorboard]'") from None
            self._writer = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, phase: str, values: dict[str, float]) -> None:
        with self.path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            for name, value in values.items():
                writer.writerow([step, phase, name, repr(float(value))])
        if self._writer is not None:
            for name, value in values.items():
                if math.isfinite(value):
                    self._writer.add_scalar(f"{phase}/{name}", value, step)
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (used on resume: they belong to the lost run)."""
        rows = read_metrics(self.path)
        with atomic_open(self.path, "w") as fh:
            writer = csv.writer(fh)
            writer.writerow(HEADER)
            for row in rows:
                if row[0] <= step:
                    writer.writerow([row[0], row[1], row[2], repr(row[3])])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> list[tuple[int, str, str, float]]:
    """Rows of a metrics.csv as (step, phase, name, value); a half-written last line is skipped."""
    rows = []
    with Path(path).open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            if len(row) != 4:
                continue
            try:
                rows.append((int(row[0]), row[1], row[2], float(row[3])))
            except ValueError:
                continue
    return rows


def format_metrics(metrics: dict[str, float]) -> str:
    """``name=value`` pairs (4 significant digits) on one line."""
    return "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
