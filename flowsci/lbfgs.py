"""The L-BFGS phase of a run (``train.lbfgs``): quasi-Newton iterations after the first-order
steps, as PINNs use, with restarts of the curvature history and a convergence test."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from flowsci.config import LBFGSConfig
from flowsci.errors import NonFiniteLossError

LossFn = Callable[[], tuple[torch.Tensor, dict[str, float]]]  # () -> (loss with graph, logs)


class LBFGSPhase:
    """One L-BFGS iteration per training step on a fixed batch.

    An iteration that leaves the loss unchanged (a failed line search along a direction built
    from stale curvature pairs) clears the curvature history, so that the next one starts again
    from a steepest-descent step; :attr:`converged` is set when that restart makes no progress
    either, or when the gradient is below ``tolerance_grad``. An iteration whose line search
    left the parameters non-finite (e.g. a trial point where the loss divides by zero) is undone
    and treated the same way.

    ``mean`` averages a scalar over the processes (identity in one process), so that every
    process takes the same line-search decisions (the gradients are averaged by DDP).
    """

    def __init__(self, parameters: list[torch.nn.Parameter], settings: LBFGSConfig,
                 mean: Callable[[torch.Tensor], torch.Tensor]):
        self.parameters, self.settings, self.mean = parameters, settings, mean
        self.optimizer: torch.optim.LBFGS | None = None  # built at the first iteration
        self.converged = False
        self.last_loss: float | None = None  # loss at the start of the last iteration
        self.restarts = 0
        self.since_restart = 0  # iterations since the phase started or the history was cleared
        self.evaluations = 0  # loss evaluations before the last restart

    def _build(self) -> torch.optim.LBFGS:
        s = self.settings
        # torch's own stopping tests are switched off (one iteration per call): the phase's
        # convergence test is in step(), so that it ends the run instead of one call.
        return torch.optim.LBFGS(
            self.parameters, lr=s.lr, max_iter=1, max_eval=s.max_eval, history_size=s.history_size,
            tolerance_grad=s.tolerance_grad, tolerance_change=0.0,
            line_search_fn=None if s.line_search == "none" else s.line_search)

    def step(self, loss_fn: LossFn, step: int) -> tuple[float, float, dict[str, float]]:
        """One iteration (training step ``step``, 1-based, for error messages); returns (loss
        where the iteration started, gradient norm, logs)."""
        if self.optimizer is None:
            self.optimizer = self._build()
        optimizer = self.optimizer
        logs: dict[str, float] = {}

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss, step_logs = loss_fn()
            loss.backward()
            logs.update(step_logs)
            return self.mean(loss.detach())

        params = optimizer.param_groups[0]["params"]
        state = optimizer.state[params[0]]
        iterations = state.get("n_iter", 0)
        start = [p.detach().clone() for p in params]
        loss = float(optimizer.step(closure))
        if not math.isfinite(loss):
            raise NonFiniteLossError(step, loss, logs)
        diverged = not all(bool(torch.isfinite(p).all()) for p in params)
        if diverged:
            with torch.no_grad():
                for p, value in zip(params, start):
                    p.copy_(value)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))  # the norm only
        no_step = state.get("n_iter", 0) == iterations  # the gradient was below tolerance_grad
        evaluations = self.evaluations + state.get("func_evals", 0)
        # the previous iteration left the loss unchanged
        stalled = (self.last_loss is not None
                   and abs(self.last_loss - loss) <= self.settings.tolerance_change * abs(loss))
        self.since_restart += 1
        # stalled tells about the previous iteration: with since_restart == 1 it ran before the
        # history was cleared (this one already ran after), with 2 it was the first one after.
        # diverged tells about this one (first after the clear with since_restart == 1).
        self.converged = (no_step or (stalled and self.since_restart == 2)
                          or (diverged and self.since_restart == 1))
        if not self.converged and (diverged or (stalled and self.since_restart > 2)):
            self.evaluations = evaluations
            optimizer.state.clear()
            self.restarts += 1
            self.since_restart = 0
        self.last_loss = loss
        return loss, grad_norm, {**logs, "lbfgs_evaluations": float(evaluations)}

    def state_dict(self) -> dict[str, Any]:
        """The phase's state under the checkpoint's top-level ``lbfgs*`` keys."""
        return {"lbfgs": self.optimizer.state_dict() if self.optimizer is not None else None,
                "lbfgs_converged": self.converged, "lbfgs_last_loss": self.last_loss,
                "lbfgs_restarts": self.restarts, "lbfgs_since_restart": self.since_restart,
                "lbfgs_evaluations": self.evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (missing keys: a phase that has not started)."""
        if state.get("lbfgs") is not None:
            self.optimizer = self._build()
            self.optimizer.load_state_dict(state["lbfgs"])
        self.converged = bool(state.get("lbfgs_converged", False))
        self.last_loss = state.get("lbfgs_last_loss")
        self.restarts = int(state.get("lbfgs_restarts", 0))
        self.since_restart = int(state.get("lbfgs_since_restart", 0))
        self.evaluations = int(state.get("lbfgs_evaluations", 0))
