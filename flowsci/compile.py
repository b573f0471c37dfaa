"""``train.compile``: the velocity model through ``torch.compile``, with an eager fallback.

torch.compile is lazy: it compiles at the first call (and again when a call's shapes or grad
mode change). A call that fails compiled but succeeds eagerly (no C++ compiler, a platform or
an operation torch.compile does not support) switches the model to eager execution for good,
with one warning naming the reason. The original module keeps its parameters and state-dict
keys, so checkpoints never see the ``_orig_mod.`` prefix and load without compiling.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass
class CompileState:
    """Whether the models compiled together (the trained model, its EMA) run compiled; one
    failure sends them all to eager execution with one warning."""

    enabled: bool
    failure: str | None = None       # why they run eagerly after all

    @property
    def active(self) -> bool:
        return self.enabled and self.failure is None

    def retry_eagerly(self, error: Exception, run: Callable[[], T]) -> T:
        """Run ``run`` with the models eager after ``error`` from a compiled run. If it succeeds,
        compiling was at fault: warn once and stay eager. If it fails too, its error is raised."""
        self.failure = "retrying eagerly"
        try:
            result = run()
        except Exception:
            self.failure = None
            raise
        self.fall_back(error)
        return result

    def fall_back(self, error: Exception) -> None:
        """Run eagerly from now on because of ``error``, with one warning."""
        lines = str(error).strip().splitlines() or [""]
        self.failure = f"{type(error).__name__}: {lines[0][:300]}"
        log.warning("train.compile: torch.compile failed (%s); continuing eagerly (set "
                    "train.compile=false to skip compiling)", self.failure)


class CompiledModule(torch.nn.Module):
    """Calls ``torch.compile(module)`` while ``state`` is active, else ``module``; other
    attributes come from ``module``, which stays the only registered submodule."""

    def __init__(self, module: torch.nn.Module, compiled: Callable[..., Any], state: CompileState):
        super().__init__()
        self.module = module
        object.__setattr__(self, "_compiled", compiled)  # not a submodule: no second parameter set
        object.__setattr__(self, "_state", state)
        self.train(module.training)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._state.active:
            return self.module(*args, **kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as exc:
            return self._state.retry_eagerly(exc, lambda: self.module(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:
                raise
            return getattr(modules["module"], name)


def compile_model(model: torch.nn.Module, enabled: bool, state: CompileState | None = None
                  ) -> tuple[torch.nn.Module, CompileState]:
    """``(module to call, state)``: a :class:`CompiledModule` of ``model`` when ``enabled``, else
    ``model`` itself. Pass the ``state`` of a model compiled before (the trained one, for its
    EMA) to share its fallback."""
    state = state if state is not None else CompileState(enabled)
    if not (enabled and state.active):
        return model, state
    try:
        compiled = torch.compile(model)
    except Exception as exc:  # a platform or Python version torch.compile does not support
        state.fall_back(exc)
        return model, state
    return CompiledModule(model, compiled, state), state
