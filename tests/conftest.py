"""Shared fixtures: a small toy2d config and isolated data/run directories."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# torch reads OMP_NUM_THREADS only at import; on these shared 2-core machines one thread is
# much faster for small models (docs/design.md, "Scale").
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
TOY2D_YAML = REPO / "domains" / "toy2d.yaml"
FLOWSCI = str(Path(sys.executable).with_name("flowsci"))

# Small, fast toy2d settings shared by the spine tests.
SMALL = ["data.n_train=2000", "data.n_val=200", "data.n_test=200", "eval.n_samples=200",
         "eval.steps=[1,4]", "sample.steps=20", "model.width=32", "model.depth=2",
         "train.batch_size=64", "train.log_every=1", "train.warmup_steps=5"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generated data goes to one session-wide temp folder (session scope: module-scoped
    fixtures that train see it too); child processes use one thread."""
    data = tmp_path_factory.getbasetemp() / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWSCI_DATA", str(data))
        patch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        yield data


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the test's data folder and thread count."""
    return dict(os.environ)
