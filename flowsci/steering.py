"""Steering a trained flow at sampling time towards a cost: FlowChef and a DPS-style baseline.

FlowChef (Patel et al., ICCV 2025, "Steering Rectified Flow Models in the Vector Field") needs no
gradient through the flow network. On each step t -> t' of an increasing grid (0 -> 1):

1. v = v(z, t), evaluated WITHOUT gradient (frozen);
2. the clean estimate x_hat(z) = path.velocity_to_x1(v, z, t) (linear path: z + (1 - t) v);
3. the state moves down the cost, z <- z - s grad_z L(x_hat(z)) with v frozen, ``iterations``
   times (x_hat recomputed with the same v each time). On the linear path d x_hat / d z = I, so
   the gradient is grad_{x_hat} L, the paper's identity Jacobian; on another affine path it is
   that gradient times the scalar -sigma'_t / D_t of the conversion;
4. an Euler step with the pre-update velocity: z_{t'} = z + (t' - t) v.

Steps with index < ``max_steps`` are steered (default: all but the last). Only the cost is
differentiated. The paper writes time the other way (t = 1 noise, t = 0 data, velocity
v' = noise - data): with t = 1 - t', v = -v' its x0_hat = z - t' v' is our z + (1 - t) v, and its
update of z is the same, so the adaptation is only the direction of the grid.

:func:`dps` is the baseline that differentiates through the network (Chung et al. 2023): the
gradient of L(x_hat(z)) with x_hat(z) = z + (1 - t) v(z, t) (linear path) taken by autograd, one
backward pass through the network per steered step.

Scale of the step size: a cost is per sample, e.g. :func:`measurement_cost`'s MEAN over the M
measurement entries, |A x - y|^2 / M, whose gradient is (2 / M) A^T (A x - y). A step s thus moves
x_hat by (2 s / M) A^T r: for a mask or probes (A A^T = I), s = M / 2 removes the residual in one
step. FlowChef's pixel-space setting, s = 500 on a mean over 64 x 64 x 3 entries, is 2 s / M = 0.08.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from flowsci.paths import AffinePath, linear_path
from flowsci.solvers import SolverResult, VelocityFn, check_grid

Cost = Callable[[torch.Tensor], torch.Tensor]
"""A cost of the clean estimate: x_hat (B, *D) -> (B,), one value per sample."""

_OPTIMIZERS = ("sgd", "adam")
# Adam's defaults (Kingma & Ba 2015). Adam is written out in _descend rather than taken from
# torch.optim: the first torch.optim optimizer of a process imports torch._dynamo (about 4 s on
# these machines), which would dominate one steered sampling call; tests/test_steering.py checks it
# against torch.optim.Adam.
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


def measurement_cost(op: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> Cost:
    """L(x) = mean over the measurement entries of (op(x) - y)^2, per sample. y: (B, *M)."""

    def cost(x: torch.Tensor) -> torch.Tensor:
        measured = op(x)
        if measured.shape != y.shape:
            raise ValueError(f"the operator's output {tuple(measured.shape)} does not match the "
                             f"measurements y {tuple(y.shape)}")
        return (measured - y).square().flatten(1).mean(1)

    return cost


def classifier_cost(classifier: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor) -> Cost:
    """L(x) = -log p(labels | x) under a classifier returning logits (B, K). labels: (B,) int."""

    def cost(x: torch.Tensor) -> torch.Tensor:
        logits = classifier(x)
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"the classifier must return logits (B, K) for B = {labels.shape[0]} "
                             f"labels, got shape {tuple(logits.shape)}")
        return F.cross_entropy(logits, labels, reduction="none")

    return cost


def flowchef(velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, cost: Cost, *,
             step_size: float, iterations: int = 1, max_steps: int | None = None,
             path: AffinePath | None = None, optimizer: str = "sgd") -> SolverResult:
    """FlowChef sampling from x0: (B, *D) at times[0] to times[-1] (increasing grid) -> SolverResult.

    velocity: v(x, t), x (B, *D), t (B,), e.g. ``Sampler.velocity(model, **cond)`` (classifier-free
    guidance included); called without gradient. cost: x_hat (B, *D) -> (B,). step_size: s of the
    update z <- z - s grad (see the module's note on its scale), or Adam's learning rate with
    ``optimizer='adam'`` (a fresh Adam state on every time step). iterations: updates per steered
    step. max_steps: steer the steps with index < max_steps (default: all but the last). path:
    the affine path the model was trained on (default: linear). nfe counts velocity evaluations.
    """
    times, steered, path = _check(x0, times, step_size, max_steps, path)
    if not (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 1):
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    z = x0.detach()
    for i, (t, t_next) in enumerate(zip(times[:-1].tolist(), times[1:].tolist())):
        tt = torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device)
        with torch.no_grad():
            v = velocity(z, tt)
        if i < steered:
            z = _descend(z, v, tt, path, cost, optimizer, step_size, iterations)
        z = z + (t_next - t) * v
    return SolverResult(x=z, nfe=len(times) - 1, times=times)


def dps(velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, cost: Cost, *, step_size: float,
        max_steps: int | None = None, path: AffinePath | None = None) -> SolverResult:
    """The DPS-style baseline: as :func:`flowchef` with one gradient step, but the gradient of
    L(x_hat(z)), x_hat(z) = path.velocity_to_x1(v(z, t), z, t), goes through the network.

    As in DPS (Chung et al. 2023) the gradient is taken at the current state and applied after
    the unguided step: z_{t'} = z + (t' - t) v(z, t) - s grad_z L(x_hat(z)), so the Euler step uses
    the velocity at the pre-update state (1 NFE and one backward pass through the network per
    steered step). Only the state is differentiated; the network's parameters get no gradient.
    x0: (B, *D); arguments as in :func:`flowchef`.
    """
    times, steered, path = _check(x0, times, step_size, max_steps, path)
    z = x0.detach()
    for i, (t, t_next) in enumerate(zip(times[:-1].tolist(), times[1:].tolist())):
        tt = torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device)
        if i < steered:
            with torch.enable_grad():
                state = z.detach().requires_grad_(True)
                v = velocity(state, tt)
                loss = _evaluate(cost, path.velocity_to_x1(v, state, tt))
                grad = torch.autograd.grad(loss.sum(), state)[0]
            z = z + (t_next - t) * v.detach() - step_size * grad
        else:
            with torch.no_grad():
                z = z + (t_next - t) * velocity(z, tt)
    return SolverResult(x=z, nfe=len(times) - 1, times=times)


def _descend(z: torch.Tensor, v: torch.Tensor, t: torch.Tensor, path: AffinePath, cost: Cost,
             optimizer: str, step_size: float, iterations: int) -> torch.Tensor:
    """``iterations`` steps on the state z (B, *D) down cost(x_hat(z)), x_hat(z) =
    path.velocity_to_x1(v, z, t) with the velocity v (B, *D) frozen; t: (B,). 'sgd':
    z <- z - s g; 'adam': Adam (Kingma & Ba 2015, betas 0.9, 0.999, eps 1e-8) from a fresh state.
    The cost's own parameters (a classifier's) get no gradient."""
    first = second = torch.zeros_like(z)
    for k in range(1, iterations + 1):
        with torch.enable_grad():
            state = z.detach().requires_grad_(True)
            loss = _evaluate(cost, path.velocity_to_x1(v, state, t))
            grad = torch.autograd.grad(loss.sum(), state)[0]
        direction = grad
        if optimizer == "adam":  # bias-corrected first and second moments of the gradient
            first = _BETA1 * first + (1 - _BETA1) * grad
            second = _BETA2 * second + (1 - _BETA2) * grad.square()
            direction = (first / (1 - _BETA1**k)) / ((second / (1 - _BETA2**k)).sqrt() + _ADAM_EPS)
        z = z - step_size * direction
    return z


def _evaluate(cost: Cost, x_hat: torch.Tensor) -> torch.Tensor:
    loss = cost(x_hat)
    if loss.shape != x_hat.shape[:1]:
        raise ValueError(f"cost must return one value per sample, shape ({x_hat.shape[0]},), "
                         f"got {tuple(loss.shape)}")
    return loss


def _check(x0: torch.Tensor, times: torch.Tensor, step_size: float, max_steps: int | None,
           path: AffinePath | None) -> tuple[torch.Tensor, int, AffinePath]:
    """The validated grid, the number of steered steps and the path."""
    times = check_grid(times)
    if not bool(times[1] > times[0]):
        raise ValueError(f"steering samples from 0 to 1: times must be increasing, got {times.tolist()}")
    if x0.dim() < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a batch (B, *D) with B >= 1, got shape {tuple(x0.shape)}")
    if isinstance(step_size, bool) or not (isinstance(step_size, (int, float)) and 0 < step_size < math.inf):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    steps = len(times) - 1
    if max_steps is None:
        max_steps = steps - 1
    elif isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 0 <= max_steps <= steps:
        raise ValueError(f"max_steps must be an integer in [0, {steps}] (the grid's steps) or None, "
                         f"got {max_steps!r}")
    if path is None:
        path = linear_path()
    elif not isinstance(path, AffinePath):
        raise ValueError(f"path must be a flowsci.paths.AffinePath (or None: linear), got {path!r}")
    return times, max_steps, path
