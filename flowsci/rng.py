"""Random-number streams: seeding, checkpoint-safe states, and blocks with fixed seeds.

A checkpoint stores :func:`rng_state` so that a resumed run draws the same numbers as an
uninterrupted one; evaluation runs under :func:`isolated_rng` so that it neither depends on
nor disturbs the training streams; :func:`batch_generator` gives batch k its own stream, which
any thread can draw from.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

EVAL_SEED_OFFSET = 10_007  # evaluation runs with seed + this offset (training, `flowsci eval`)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as checkpoint-safe values (tensors, numbers, lists)."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with fixed seeds, restoring the previous RNG streams afterwards."""
    saved = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def batch_generator(seed: int, k: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for batch ``k`` of process ``rank``: its numbers depend only on
    (seed, rank, k), not on the global streams or on the thread that draws them."""
    key = np.random.SeedSequence((seed % 2**64, rank, k)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(key))
