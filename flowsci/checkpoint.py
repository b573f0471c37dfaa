"""Checkpoints: atomic writes, safe loading (``weights_only=True``), model rebuilding."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from flowsci.atomic import atomic_open
from flowsci.errors import CheckpointError

FORMAT = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")
REQUIRED_KEYS = ("format", "flowsci_version", "step", "model", "model_spec")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` through a temporary file in the same directory, fsync
    and rename, so that a crash leaves either the old file or the complete new one."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing, truncated or foreign file is a
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a flowsci checkpoint (top level is "
                              f"{type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a flowsci checkpoint: missing {', '.join(missing)}")
    if state["format"] > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, newer than this flowsci "
                              f"(reads up to {FORMAT}); upgrade flowsci")
    return state


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path:
    """The newest checkpoint in ``directory``; CheckpointError if there is none."""
    found = list_checkpoints(directory)
    if not found:
        raise CheckpointError(f"no checkpoint in {directory}")
    return found[-1][1]


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (keep <= 0 keeps all)."""
    if keep > 0:
        for _, path in list_checkpoints(directory)[:-keep]:
            path.unlink(missing_ok=True)


def load_model(path: str | os.PathLike, *, ema: bool = True,
               map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the registered model stored in a checkpoint and load its weights.

    ``path`` is a checkpoint file, a ``checkpoints/`` folder or a run directory (the newest
    checkpoint is used). ``ema=True`` loads the EMA weights when the checkpoint has them.
    The model is in eval mode.
    """
    from flowsci.registry import build_model

    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
    state = load_checkpoint(path, map_location)
    spec = state["model_spec"]
    model = build_model(spec["name"], spec["params"])
    weights = state["model"]
    if ema and state.get("ema") is not None:
        weights = ema_weights(state["ema"])
    model.load_state_dict(weights)
    return model.eval()


def ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model weights inside the state dict of a ``torch.optim.swa_utils.AveragedModel``."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}
