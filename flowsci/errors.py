"""Errors that mean "the user gave something wrong" (exit code 2 in the CLI, no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Base class for errors caused by user input: files, keys, names, checkpoints."""


class ConfigError(UserError):
    """A configuration file or override is invalid."""


class PluginError(UserError):
    """A domain or model name is unknown, duplicated, or its plugin fails to load."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, or does not belong to this run."""


class DataError(UserError):
    """An HDF5 data file does not follow the flowsci schema."""


class RunError(UserError):
    """A run directory is missing or inconsistent."""


class SweepRunsFailed(UserError):
    """Some runs of a sweep raised; the others were trained and their results written."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, step: int, loss: float, logs: dict[str, float] | None = None):
        self.step, self.loss, self.logs = step, loss, dict(logs or {})
        detail = ", ".join(f"{k}={v:.4g}" for k, v in self.logs.items())
        super().__init__(
            f"non-finite loss {loss} at step {step}" + (f" ({detail})" if detail else "")
            + "; lower train.lr, set train.grad_clip, or check the data for NaN/inf"
        )


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option closest to `name` by edit similarity, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix, or '' when no option is close."""
    best = closest(name, options)
    return f" (did you mean '{best}'?)" if best else ""
