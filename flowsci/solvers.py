"""ODE solvers for dx/dt = v(x, t) on a time grid, counting function evaluations (NFE).

A grid may run either way: increasing (0 -> 1) samples, decreasing (1 -> 0) inverts; the
signed step h = t_{n+1} - t_n carries the direction, so every method is used unchanged in
both. Fixed-step methods (:class:`Euler`, :class:`Midpoint`, :class:`Heun`, :class:`RK4`;
``RFSolver2``, registered as ``rf_solver2``, is :class:`Midpoint`; :class:`RFSolver3`,
``rf_solver3``, is RF-Solver's third-order Taylor step, algebraically Kutta's third-order
Runge-Kutta rule, 3 NFE per step) take one step per grid interval;
:class:`Dopri5` adapts its steps (torchdiffeq) and reports the states at the grid times.

On a :class:`~flowsci.spaces.Space` (``space=`` in :meth:`Solver.integrate`) the fixed-step
methods are Runge-Kutta-Munthe-Kaas methods: each step solves, in the tangent space at the
current point x, the ODE of the normal coordinate delta (y = exp(x, delta)),
d(delta)/dt = dexp_inv(x, delta, v(y, t)), with the Euclidean Butcher tableau, and maps the
result back with exp. The state never leaves the space and each method keeps its Euclidean
order (with the exact dexp_inv). In Euclidean space exp is addition and dexp_inv the
identity, so the formulas reduce to the classical ones.

Two first-order solvers step through the endpoint estimates (x0_hat, x1_hat) of an affine path
x_t = sigma_t x0 + alpha_t x1 instead of along the velocity (Euclidean states only): :class:`DDIM`
(``ddim``) and 2-RF++'s :class:`Anchored` (``anchored``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torchdiffeq import odeint

from flowsci.grids import uniform_grid  # noqa: F401  (re-exported: the grid most callers want)
from flowsci.paths import AffinePath
from flowsci.registry import PATHS
from flowsci.spaces import Euclidean, Space

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v(x, t) with x: (B, *D) and t: (B,) -> (B, *D)."""

StepVelocityFn = Callable[[torch.Tensor, float], torch.Tensor]
"""The velocity as a one-step method sees it: v(x, t) with x: (B, *D) and a scalar time t."""


class _Flat:
    """Euclidean stand-in used when no space is given: any state shape, exp = +, dexp_inv = id."""

    @staticmethod
    def exp(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + u

    @staticmethod
    def dexp_inv(x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w


FLAT = _Flat()


@dataclass(frozen=True)
class SolverResult:
    """x: (B, *D) final state; nfe: velocity evaluations; times: (K+1,) float64 grid;
    trajectory: (K+1, B, *D) states at the grid times when requested."""

    x: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: torch.Tensor | None = None


def check_grid(times: torch.Tensor) -> torch.Tensor:
    """``times`` as a 1-D float64 tensor of >= 2 strictly monotone values; ValueError otherwise."""
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"times must be a 1-D grid of at least two times, got shape {tuple(times.shape)}")
    diffs = times.diff()
    if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
        raise ValueError("times must be strictly increasing (sampling, 0 -> 1) or strictly decreasing "
                         f"(inversion, 1 -> 0), got {times.tolist()}")
    return times


def _check_state(x0: torch.Tensor) -> None:
    if x0.dim() < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a batch (B, *D) with B >= 1, got shape {tuple(x0.shape)}")


class Solver(ABC):
    """Integrates dx/dt = v(x, t) over a time grid; ``order`` is the global order of accuracy."""

    order: int = 0

    @abstractmethod
    def integrate(self, velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, *,
                  space: Space | None = None, trajectory: bool = False, grad: bool = False) -> SolverResult:
        """x0: (B, *D) at times[0] -> state at times[-1]. ``space``: the state space (None:
        Euclidean, any shape); the velocity then returns tangent vectors (B, *tangent_shape).
        ``grad=False`` runs under ``torch.no_grad``; ``grad=True`` lets gradients flow to x0
        and to the velocity's parameters (when autograd is enabled by the caller)."""


class FixedStepSolver(Solver):
    """A one-step method applied once per grid interval, ``nfe_per_step`` evaluations each."""

    nfe_per_step: int = 0

    @abstractmethod
    def step(self, velocity: StepVelocityFn, x: torch.Tensor, t: float, h: float,
             space: Space | _Flat = FLAT) -> torch.Tensor:
        """Advance x: (B, *D) from time t by the signed step h (h < 0 integrates backwards)."""

    def integrate(self, velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, *,
                  space: Space | None = None, trajectory: bool = False, grad: bool = False) -> SolverResult:
        times = check_grid(times)
        _check_state(x0)
        geometry = FLAT if space is None else space
        nfe = 0

        def counted(x: torch.Tensor, t: float) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            return velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))

        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            x = x0
            states = [x0] if trajectory else None
            for t, t_next in zip(times[:-1].tolist(), times[1:].tolist()):
                x = self.step(counted, x, t, t_next - t, geometry)
                if states is not None:
                    states.append(x)
            path = torch.stack(states) if states is not None else None
        return SolverResult(x=x, nfe=nfe, times=times, trajectory=path)


def _stage(velocity: StepVelocityFn, space: Space | _Flat, x: torch.Tensor, delta: torch.Tensor,
           s: float) -> torch.Tensor:
    """A Runge-Kutta stage in normal coordinates at x: the velocity at exp(x, delta) and time s,
    pulled back to the tangent space at x by dexp_inv (the identity in Euclidean space)."""
    return space.dexp_inv(x, delta, velocity(space.exp(x, delta), s))


class Euler(FixedStepSolver):
    """x_{n+1} = x_n + h v(x_n, t_n); first order, 1 NFE per step."""

    order = 1
    nfe_per_step = 1

    def step(self, velocity: StepVelocityFn, x: torch.Tensor, t: float, h: float,
             space: Space | _Flat = FLAT) -> torch.Tensor:
        return space.exp(x, h * velocity(x, t))


class Midpoint(FixedStepSolver):
    """Explicit midpoint: x_{n+1} = x_n + h v(x_n + (h/2) v(x_n, t_n), t_n + h/2); second order,
    2 NFE per step. Also registered as ``rf_solver2`` (RF-Solver-2 is this method; see RFSolver2)."""

    order = 2
    nfe_per_step = 2

    def step(self, velocity: StepVelocityFn, x: torch.Tensor, t: float, h: float,
             space: Space | _Flat = FLAT) -> torch.Tensor:
        return space.exp(x, h * _stage(velocity, space, x, 0.5 * h * velocity(x, t), t + 0.5 * h))


class Heun(FixedStepSolver):
    """Heun (explicit trapezoid): predictor x~ = x_n + h k1, x_{n+1} = x_n + (h/2)(k1 + v(x~, t_n + h));
    second order, 2 NFE per step."""

    order = 2
    nfe_per_step = 2

    def step(self, velocity: StepVelocityFn, x: torch.Tensor, t: float, h: float,
             space: Space | _Flat = FLAT) -> torch.Tensor:
        k1 = velocity(x, t)
        k2 = _stage(velocity, space, x, h * k1, t + h)
        return space.exp(x, 0.5 * h * (k1 + k2))


class RK4(FixedStepSolver):
    """Classical Runge-Kutta: x_{n+1} = x_n + (h/6)(k1 + 2 k2 + 2 k3 + k4); fourth order, 4 NFE per step."""

    order = 4
    nfe_per_step = 4

    def step(self, velocity: StepVelocityFn, x: torch.Tensor, t: float, h: float,
             space: Space | _Flat = FLAT) -> torch.Tensor:
        k1 = velocity(x, t)
        k2 = _stage(velocity, space, x, 0.5 * h * k1, t + 0.5 * h)
        k3 = _stage(velocity, space, x, 0.5 * h * k2, t + 0.5 * h)
        k4 = _stage(velocity, space, x, h * k3, t + h)
        return space.exp(x, (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4))


# RF-Solver-2 (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025) takes the
# second-order Taylor step z_next = z + h v0 + (h^2/2) dv/dt with dv/dt ~ (v_mid - v0)/(h/2),
# v0 = v(z, t), v_mid = v(z + (h/2) v0, t + h/2). Substituting dv/dt gives z_next = z + h v_mid:
# algebraically the explicit midpoint method, so the registered name ``rf_solver2`` is an alias
# of Midpoint, not a second implementation. (The paper's time runs the other way, SD3's t = 1
# noise, but the step is the same formula in the signed step h.)
RFSolver2 = Midpoint


class RFSolver3(FixedStepSolver):
    """RF-Solver-3 (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025):
    the third-order Taylor step x_{n+1} = x_n + h v + (h^2/2) v' + (h^3/6) v'' along the
    trajectory, its time derivatives v', v'' estimated from velocities at t, t + h/2 and t + h.

    Stages: v0 = v(x, t); v_m = v(x + (h/2) v0, t + h/2); v_e = v(x - h v0 + 2 h v_m, t + h),
    the end state predicted by second-order extrapolation (a first-order prediction x + h v0
    would leave a second-order error in v_e and the step would be of order 2 only). One-sided
    differences: v' ~ (-3 v0 + 4 v_m - v_e) / h, v'' ~ 4 (v_e - 2 v_m + v0) / h^2.
    Substituted, the step is x_n + h (v0 + 4 v_m + v_e) / 6: Kutta's third-order Runge-Kutta
    rule (Butcher tableau c = (0, 1/2, 1), a21 = 1/2, a31 = -1, a32 = 2, b = (1, 4, 1)/6), not
    the midpoint rule. Third order, 3 NFE per step. On a space the Taylor step is taken in the
    tangent space at x_n (Runge-Kutta-Munthe-Kaas, like :class:`RK4`). The paper's time runs the
    other way (t = 1 noise); in the signed step h the formula is the same.
    """

    order = 3
    nfe_per_step = 3

    def step(self, velocity: StepVelocityFn, x: torch.Tensor, t: float, h: float,
             space: Space | _Flat = FLAT) -> torch.Tensor:
        v0 = velocity(x, t)
        v_mid = _stage(velocity, space, x, 0.5 * h * v0, t + 0.5 * h)
        v_end = _stage(velocity, space, x, h * (2.0 * v_mid - v0), t + h)
        dv_dt = (-3.0 * v0 + 4.0 * v_mid - v_end) / h
        d2v_dt2 = 4.0 * (v_end - 2.0 * v_mid + v0) / h**2
        return space.exp(x, h * v0 + (h**2 / 2.0) * dv_dt + (h**3 / 6.0) * d2v_dt2)


class Dopri5(Solver):
    """Adaptive Dormand-Prince 5(4) through ``torchdiffeq.odeint``; returns the states at the grid
    times (a grid of two points asks only for the end state). The NFE count includes the
    evaluations torchdiffeq spends choosing the first step and on rejected steps. ``grad=True``
    backpropagates through the solver's operations (no adjoint method)."""

    order = 5

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5):
        for name, value in (("rtol", rtol), ("atol", atol)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive tolerance, got {value}")
        self.rtol, self.atol = float(rtol), float(atol)

    def integrate(self, velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, *,
                  space: Space | None = None, trajectory: bool = False, grad: bool = False) -> SolverResult:
        times = check_grid(times)
        _check_state(x0)
        if space is not None and not isinstance(space, Euclidean):
            raise ValueError(f"dopri5 integrates in Euclidean space only, not on {space!r}; use a "
                             "fixed-step solver (euler, midpoint, heun, rk4), which stays on the space")
        nfe = 0

        def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            return velocity(x, t.to(dtype=x.dtype, device=x.device).reshape(1).repeat(x.shape[0]))

        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            # torchdiffeq integrates decreasing grids by reversing time internally.
            states = odeint(rhs, x0, times.to(x0.device), rtol=self.rtol, atol=self.atol, method="dopri5")
        return SolverResult(x=states[-1], nfe=nfe, times=times, trajectory=states if trajectory else None)


class _EndpointSolver(Solver):
    """One velocity evaluation per grid interval, turned into the endpoint estimates of ``path``.

    At (x, t) the velocity v gives x0_hat = path.velocity_to_x0(v, x, t) and x1_hat =
    path.velocity_to_x1(v, x, t), and the next state is sigma_{t'} x0_hat + alpha_{t'} x1_hat
    (:class:`Anchored` replaces one of the two). ``path``: a registered affine path, by name or
    {name: ..., <parameters>}, or an :class:`~flowsci.paths.AffinePath`. A grid time at an end
    where the velocity does not determine the endpoints (t = 1 on vp, where sigma'_1 = -inf;
    t = 0 of a polynomial path with n != 1) is evaluated ``t_eps`` inside [0, 1] instead: the state
    there is taken as the state at that time (inversion from data at t = 1 on vp starts so).
    """

    order = 1
    nfe_per_step = 1
    anchored = False

    def __init__(self, path: str | dict[str, Any] | AffinePath = "linear", t_eps: float = 1e-3):
        self.path = path if isinstance(path, AffinePath) else PATHS.create(path, "sample.solver.path")
        if not isinstance(self.path, AffinePath):
            raise ValueError(f"path must be an affine path (linear, vp, cosine, polynomial, sigma_min), "
                             f"got {path!r}")
        if isinstance(t_eps, bool) or not (isinstance(t_eps, (int, float)) and 0 < t_eps < 0.5):
            raise ValueError(f"t_eps must be a number in (0, 0.5), got {t_eps!r}")
        self.t_eps = float(t_eps)
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        c = self.path.scheduler(ends)
        det = c.sigma_t * c.d_alpha_t - c.alpha_t * c.d_sigma_t
        regular = (torch.isfinite(det) & (det != 0)).tolist()
        self.singular_ends = tuple(end for end, ok in zip(ends.tolist(), regular) if not ok)

    def integrate(self, velocity: VelocityFn, x0: torch.Tensor, times: torch.Tensor, *,
                  space: Space | None = None, trajectory: bool = False, grad: bool = False) -> SolverResult:
        times = check_grid(times)
        _check_state(x0)
        if space is not None and not isinstance(space, Euclidean):
            raise ValueError(f"{type(self).__name__} combines endpoint estimates linearly, which leaves "
                             f"{space!r}; use a fixed-step solver (euler, midpoint, heun, rk4), which "
                             "stays on the space")
        forward = bool(times[1] > times[0])
        target = self.path.scheduler(times[1:])  # sigma_{t'}, alpha_{t'} at every next grid time
        anchor = None
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            x = x0
            states = [x0] if trajectory else None
            for i, t in enumerate(times[:-1].tolist()):
                t = self._evaluation_time(t)
                tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
                v = velocity(x, tt)
                x0_hat, x1_hat = self.path.velocity_to_x0(v, x, tt), self.path.velocity_to_x1(v, x, tt)
                if self.anchored:
                    if anchor is None:
                        anchor = x0_hat if forward else x1_hat
                    x0_hat, x1_hat = (anchor, x1_hat) if forward else (x0_hat, anchor)
                x = float(target.sigma_t[i]) * x0_hat + float(target.alpha_t[i]) * x1_hat
                if states is not None:
                    states.append(x)
            stacked = torch.stack(states) if states is not None else None
        return SolverResult(x=x, nfe=len(times) - 1, times=times, trajectory=stacked)

    def _evaluation_time(self, t: float) -> float:
        for end in self.singular_ends:
            if t == end:
                return end + self.t_eps if end == 0.0 else end - self.t_eps
        return t


class DDIM(_EndpointSolver):
    """DDIM (Song, Meng & Ermon 2021), the first-order solver of an affine path, in either direction.

    x_{t'} = sigma_{t'} x0_hat(x_t, t) + alpha_{t'} x1_hat(x_t, t), 1 NFE per step. It is exact
    in one step for a field whose (x0_hat, x1_hat) stay constant along its trajectories (a
    "first-order" flow, what Rectified Diffusion trains), however curved x_t is; on the linear
    path it is Euler's method. YAML: ``sample.solver: {name: ddim, path: vp}`` (default path
    linear); ``path`` should be the one the model was trained on. See :class:`_EndpointSolver`.
    """


class Anchored(_EndpointSolver):
    """2-RF++'s "new" update rule (Lee et al. 2024): keep the endpoint the trajectory started from.

    Sampling (increasing grid): x_{t'} = sigma_{t'} a + alpha_{t'} x1_hat(x_t, t), where the anchor
    a = x0_hat(x_{t_0}, t_0) of the first step is the initial source sample itself when the grid
    starts at t = 0 of the linear, cosine or sigma_min path (sigma_0 = 1, alpha_0 = 0), as in
    2-RF++, which re-uses its initial noise. Inversion (decreasing grid) is
    the mirror rule: x_{t'} = sigma_{t'} x0_hat(x_t, t) + alpha_{t'} b with b = x1_hat of the
    first step, the initial data sample from t = 1 on the linear path. The first step is a DDIM
    step; 1 NFE per step. YAML: ``sample.solver: anchored`` (default path linear).

    Exact for flows whose x0_hat and x1_hat stay constant along trajectories (on the linear path:
    straight flows), which it assumes: elsewhere the anchor is not the current trajectory's
    endpoint and the result does not converge to the ODE's solution as the steps shrink (hence
    ``order = 0``).
    """

    order = 0
    anchored = True
