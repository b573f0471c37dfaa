"""Oracle tests of RF-Solver-3 and the inversion utilities (flowsci.solvers.RFSolver3,
flowsci.inversion): a time-dependent linear field with a closed-form flow, observed orders,
Simpson quadrature, the stability polynomial, a Butcher-tableau Runge-Kutta, a closed-form flow
on the sphere and exact power laws."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.flow_matching import Sampler
from flowsci.inversion import (
    InversionRow,
    cycle_consistency,
    inversion_table,
    observed_order,
    per_sample_mse,
    reconstruct,
    reconstruction_error,
)
from flowsci.registry import SOLVERS
from flowsci.solvers import RK4, Dopri5, Euler, RFSolver3, uniform_grid
from flowsci.spaces.sphere import Sphere

F64 = torch.float64
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rf_solver3": 3, "rk4": 4}
NFE = [24, 48, 96]  # multiples of every method's NFE per step (1, 2, 3, 4)

# dx/dt = A x + e^{tA} c: a non-normal A and a time-dependent forcing whose flow is closed-form,
# x(t) = e^{(t-s)A} x(s) + (t - s) e^{tA} c (differentiate: A x(t) + e^{tA} c).
A = torch.tensor([[-0.4, 1.5, 0.2], [-1.3, 0.3, 0.5], [0.4, -0.6, -0.8]], dtype=F64)
C = torch.tensor([0.7, -0.5, 1.1], dtype=F64)


def linear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x @ A.T + torch.linalg.matrix_exp(t[:, None, None] * A) @ C


def linear_flow(x: torch.Tensor, s: float, t: float) -> torch.Tensor:
    return x @ torch.linalg.matrix_exp((t - s) * A).T + (t - s) * torch.linalg.matrix_exp(t * A) @ C


def _rmse(x: torch.Tensor, reference: torch.Tensor) -> float:
    return math.sqrt(float(per_sample_mse(x, reference).mean()))


@pytest.fixture(scope="module")
def x1() -> torch.Tensor:
    return torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))


# --- RF-Solver-3 ------------------------------------------------------------------------------


def test_rf_solver3_is_registered() -> None:
    solver = SOLVERS.create("rf_solver3", "x")
    assert isinstance(solver, RFSolver3) and solver.order == 3 and solver.nfe_per_step == 3
    result = solver.integrate(linear_field, torch.zeros(2, 3, dtype=F64), uniform_grid(7))
    assert result.nfe == 21


@pytest.mark.parametrize("name", list(ORDERS))
def test_one_way_observed_order_against_the_closed_form_flow(name: str, x1: torch.Tensor) -> None:
    """Sampling (0 -> 1) and inversion (1 -> 0) errors fall as NFE^-order."""
    solver = SOLVERS.create(name, "x")
    for start, end in ((0.0, 1.0), (1.0, 0.0)):
        exact = linear_flow(x1, start, end)
        errors = []
        for nfe in NFE:
            grid = uniform_grid(nfe // solver.nfe_per_step)
            errors.append(_rmse(solver.integrate(linear_field, x1, grid if end > start else grid.flip(0)).x,
                                exact))
        assert observed_order(NFE, errors) == pytest.approx(ORDERS[name], abs=0.15), errors


def _butcher_step(a: list[list[float]], b: list[float], c: list[float]):  # noqa: ANN202 - test helper
    """A generic explicit Runge-Kutta method from its tableau, as a Solver.integrate stand-in."""
    def integrate(velocity, x, grid):  # noqa: ANN001, ANN202
        for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
            h, k = t_next - t, []
            for i in range(len(b)):
                stage = x + h * sum((a[i][j] * k[j] for j in range(i)), torch.zeros_like(x))
                k.append(velocity(stage, torch.full((x.shape[0],), t + c[i] * h, dtype=x.dtype)))
            x = x + h * sum(bi * ki for bi, ki in zip(b, k))
        return x
    return integrate


def _nonlinear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    rot = torch.stack([-x[:, 1], x[:, 0]], dim=1)
    return (2.0 + t[:, None]) * rot - (1.0 + t[:, None]) * torch.tanh(x) + torch.sin(3 * t)[:, None]


@pytest.mark.parametrize("decreasing", [False, True])
def test_rf_solver3_equals_kutta_rk3(decreasing: bool) -> None:
    """The Taylor step with the finite-difference derivatives is Kutta's RK3 tableau (checked
    together with the observed order 3 above: the tableau alone could be mistyped)."""
    kutta = _butcher_step([[], [0.5], [-1.0, 2.0]], [1 / 6, 4 / 6, 1 / 6], [0.0, 0.5, 1.0])
    grid = torch.tensor([0.0, 0.1, 0.35, 0.4, 0.8, 1.0], dtype=F64)
    grid = grid.flip(0) if decreasing else grid
    x0 = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(RFSolver3().integrate(_nonlinear, x0, grid).x, kutta(_nonlinear, x0, grid),
                               rtol=1e-13, atol=1e-13)


def test_rf_solver3_integrates_cubics_in_time_exactly_not_quartics() -> None:
    """v = c t^k: Simpson's rule (weights 1, 4, 1 at 0, 1/2, 1) is exact to degree 3 only."""
    grid = torch.tensor([0.0, 0.3, 0.45, 1.0], dtype=F64)
    x0 = torch.randn(2, 2, dtype=F64)
    for k in range(5):
        result = RFSolver3().integrate(lambda x, t, k=k: (t[:, None] ** k).expand_as(x), x0, grid)
        error = float((result.x - (x0 + 1 / (k + 1))).abs().max())
        assert (error < 1e-14) if k <= 3 else (error > 1e-4), (k, error)


def test_rf_solver3_stability_polynomial() -> None:
    """dx/dt = lambda x: one step multiplies by R(z) = 1 + z + z^2/2 + z^3/6, z = h lambda."""
    lam = torch.tensor([-3.0, 0.5, 2.0], dtype=F64)
    x0 = torch.ones(3, 1, dtype=F64)
    z = 0.7 * lam[:, None]
    result = RFSolver3().integrate(lambda x, t: lam[:, None] * x, x0, torch.tensor([0.1, 0.8], dtype=F64))
    torch.testing.assert_close(result.x, 1 + z + z**2 / 2 + z**3 / 6, rtol=1e-14, atol=1e-14)


def test_rf_solver3_order_and_constraint_on_the_sphere() -> None:
    """v(x) = P_x(e_z) on S^2 (z' = 1 - z^2, azimuth fixed), a closed-form flow: Munthe-Kaas
    RF-Solver-3 stays on the sphere and keeps order 3."""
    ez = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    x0 = Sphere(2).random_base(16, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0 = x0[x0[:, 2].abs() < 0.8]
    z = torch.tanh(torch.atanh(x0[:, 2]) + 1.0)
    scale = ((1 - z**2) / (1 - x0[:, 2] ** 2)).sqrt()
    exact = torch.stack([x0[:, 0] * scale, x0[:, 1] * scale, z], dim=1)
    errors, nfe = [], [24, 48, 96]
    for n in nfe:
        x = RFSolver3().integrate(lambda x, t: ez - (x @ ez)[:, None] * x, x0, uniform_grid(n // 3),
                                  space=Sphere(2)).x
        assert float((x.norm(dim=1) - 1).abs().max()) < 1e-13
        errors.append(float((x - exact).norm(dim=1).max()))
    assert observed_order(nfe, errors) == pytest.approx(3, abs=0.2), errors


# --- reconstruction ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(x1: torch.Tensor) -> list[InversionRow]:
    solvers = {name: SOLVERS.create(name, "x") for name in ORDERS}
    return inversion_table(linear_field, x1, solvers, [*NFE, 50])


def test_inversion_table_rows(table: list[InversionRow]) -> None:
    """One row per (solver, NFE) where the NFE is a multiple of the NFE per step; steps = NFE / it."""
    per_step = {"euler": 1, "midpoint": 2, "heun": 2, "rf_solver3": 3, "rk4": 4}
    expected = {(name, n) for name, k in per_step.items() for n in [*NFE, 50] if n % k == 0}
    assert {(row.solver, row.nfe) for row in table} == expected
    assert all(row.steps * per_step[row.solver] == row.nfe for row in table)
    assert all(row.rmse == pytest.approx(math.sqrt(row.mse)) for row in table)


# The round trip's RMSE falls as h^p for odd p and h^(p+1) for even p: stepping back with -h
# gives the leading local error (-h)^(p+1) C, which cancels the forward step's h^(p+1) C when
# p + 1 is odd (for v = A x: R(z) R(-z) = 1 - z^2, 1 + z^4/4, 1 - z^4/12, 1 + z^6/72 for Euler,
# midpoint/Heun, RK3, RK4). The one-way orders are checked above.
ROUND_TRIP_ORDERS = {"euler": 1, "midpoint": 3, "heun": 3, "rf_solver3": 3, "rk4": 5}


@pytest.mark.parametrize("name", list(ORDERS))
def test_round_trip_observed_order(name: str, table: list[InversionRow]) -> None:
    rows = [row for row in table if row.solver == name and row.nfe in NFE]
    order = observed_order([row.nfe for row in rows], [row.rmse for row in rows])
    assert order == pytest.approx(ROUND_TRIP_ORDERS[name], abs=0.15), [row.rmse for row in rows]
    assert order > ORDERS[name] - 0.15


def test_rf_solver3_reconstructs_better_than_euler_at_every_nfe(table: list[InversionRow]) -> None:
    mse = {(row.solver, row.nfe): row.mse for row in table}
    for n in NFE:
        assert mse[("rf_solver3", n)] < 1e-3 * mse[("euler", n)], n


@pytest.mark.parametrize("name", ["euler", "rf_solver3"])
def test_reconstruct_inverts_to_the_exact_source_and_counts_nfe(name: str, x1: torch.Tensor) -> None:
    solver = SOLVERS.create(name, "x")
    errors = []
    for steps in (8, 16, 32):
        result = reconstruct(Sampler(solver, steps=100), linear_field, x1, steps=steps)
        assert result.nfe_invert == result.nfe_sample == steps * solver.nfe_per_step
        errors.append(_rmse(result.x0, linear_flow(x1, 1.0, 0.0)))
    assert observed_order([8, 16, 32], errors) == pytest.approx(ORDERS[name], abs=0.15), errors


def test_reconstruction_error_and_cycle_consistency_per_sample(x1: torch.Tensor) -> None:
    """(B,) errors that vanish with the order of the round trip; conditions reach the model."""
    x0 = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    cycle = [cycle_consistency(Sampler(RK4(), steps=10), linear_field, x0, steps=n) for n in (6, 12)]
    assert cycle[0].shape == (4,)
    assert math.log2(float(cycle[0].sum() / cycle[1].sum())) / 2 == pytest.approx(5, abs=0.2)
    errors = reconstruction_error(Sampler(Euler(), steps=20), linear_field, x1)
    assert errors.shape == (5,) and bool((errors > 0).all())
    torch.testing.assert_close(errors, per_sample_mse(reconstruct(Sampler(Euler(), 20), linear_field, x1).x1,
                                                      x1))

    def scaled(x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale[:, None] * linear_field(x, t)

    scale = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.0], dtype=F64)
    sampler = Sampler(Euler(), steps=20)
    for i in range(5):
        alone = reconstruction_error(sampler, lambda x, t, s=float(scale[i]): s * linear_field(x, t),
                                     x1[i:i + 1])
        batched = reconstruction_error(sampler, scaled, x1, scale=scale)[i]
        torch.testing.assert_close(batched, alone[0])
    assert float(reconstruction_error(sampler, scaled, x1, scale=scale)[4]) == 0.0  # v = 0


def test_observed_order_of_exact_power_laws() -> None:
    nfe = [3, 10, 40, 41]
    assert observed_order(nfe, [2.0 * n**-2.5 for n in nfe]) == pytest.approx(2.5, abs=1e-12)
    assert observed_order(nfe, [7.0 for _ in nfe]) == pytest.approx(0.0, abs=1e-12)
    # MSE of an order-p error decays twice as fast as its square root
    assert observed_order(nfe, [(n**-3.0) ** 2 for n in nfe]) == pytest.approx(6.0, abs=1e-12)


def test_bad_inputs_raise(x1: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="at least two different NFE"):
        observed_order([8], [0.1])
    with pytest.raises(ValueError, match="at least two different NFE"):
        observed_order([8, 16], [0.1])
    with pytest.raises(ValueError, match="positive and finite"):
        observed_order([8, 16], [0.1, 0.0])
    with pytest.raises(ValueError, match="no fixed NFE per step"):
        inversion_table(linear_field, x1, {"dopri5": Dopri5()}, [8])
    with pytest.raises(ValueError, match="at least one solver"):
        inversion_table(linear_field, x1, {}, [8])
    with pytest.raises(ValueError, match="nfe must be"):
        inversion_table(linear_field, x1, {"euler": Euler()}, [0])
    with pytest.raises(ValueError, match="steps must be"):
        reconstruct(Sampler(Euler()), linear_field, x1, steps=0)
    with pytest.raises(ValueError, match="steps must be"):
        cycle_consistency(Sampler(Euler()), linear_field, x1, steps=2.5)
    with pytest.raises(ValueError, match="one shape"):
        per_sample_mse(x1, x1[:2])
