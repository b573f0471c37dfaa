"""flowsci: a flow-matching / rectified-flow engine for scientific machine learning.

The names below are the notebook-facing API; they are imported on first use so that
``import flowsci`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "flowsci.config",
    "config_from_dict": "flowsci.config",
    "train": "flowsci.training",
    "load_model": "flowsci.checkpoint",
    "register_domain": "flowsci.registry",
    "register_model": "flowsci.registry",
    "create_domain": "flowsci.registry",
    "DomainBase": "flowsci.plugins",
    "configure_logging": "flowsci.logs",
    "FlowMatching": "flowsci.flow_matching",
    "sample": "flowsci.flow_matching",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flowsci' has no attribute '{name}'")
