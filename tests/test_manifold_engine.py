"""The engine on non-Euclidean spaces: RKMK solvers, geodesic paths, likelihood, OT and W_p.

Oracles: closed-form flows on S^2, a reference ODE solution (scipy solve_ivp on the
quaternion ODE), closed-form densities, scipy's assignment solver and Rotation class.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.likelihood import log_likelihood
from flowsci.metrics import geodesic_wasserstein, wasserstein
from flowsci.paths import linear_path
from flowsci.paths.geodesic import ExpKappa, GeodesicPath, RescheduledVelocity
from flowsci.solvers import RK4, Euler, Heun, Midpoint, uniform_grid
from flowsci.spaces import Euclidean
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion
from flowsci.spaces.sphere import Sphere

SOLVERS = [(Euler, 1), (Midpoint, 2), (Heun, 2), (RK4, 4)]  # rf_solver2 is Midpoint
EZ = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def _sink(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v(x) = P_x(e_z) on S^2: z' = 1 - z^2, azimuth fixed."""
    return EZ - (x @ EZ)[..., None] * x


def _sink_exact(x0: torch.Tensor, t: float) -> torch.Tensor:
    z0 = x0[:, 2]
    z = torch.tanh(torch.atanh(z0) + t)
    rho0 = (1 - z0 ** 2).sqrt()
    scale = (1 - z ** 2).sqrt() / rho0
    return torch.stack([x0[:, 0] * scale, x0[:, 1] * scale, z], dim=1)


def _so3_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A state- and time-dependent body angular velocity on SO(3): w = a + b t + c x R[:, 2]."""
    rotation = x if x.shape[-1] == 3 else SO3Quaternion().to_matrix(x)
    a = torch.tensor([0.3, -1.1, 0.7], dtype=x.dtype)
    b = torch.tensor([1.2, 0.4, -0.5], dtype=x.dtype)
    c = torch.tensor([0.0, 0.9, 0.2], dtype=x.dtype)
    return a + t[:, None] * b + torch.cross(c.expand_as(rotation[:, :, 2]), rotation[:, :, 2], dim=-1)


def _so3_reference(q0: np.ndarray) -> np.ndarray:
    """The flow of _so3_field at t = 1 from scipy's RK45 at rtol 1e-12 on q' = q (0, w) / 2."""
    def rhs(t, q):
        q = q / np.linalg.norm(q)
        rotation = Rotation.from_quat(q[[1, 2, 3, 0]]).as_matrix()
        w = (np.array([0.3, -1.1, 0.7]) + t * np.array([1.2, 0.4, -0.5])
             + np.cross([0.0, 0.9, 0.2], rotation[:, 2]))
        qw, qv = q[0], q[1:]
        return 0.5 * np.concatenate([[-qv @ w], qw * w + np.cross(qv, w)])
    return solve_ivp(rhs, (0.0, 1.0), q0, rtol=1e-12, atol=1e-12).y[:, -1]


@pytest.mark.parametrize("solver_cls,order", SOLVERS)
def test_solver_order_on_the_sphere(solver_cls, order):
    x0 = Sphere(2).random_base(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = x0[x0[:, 2].abs() < 0.8]
    exact = _sink_exact(x0, 1.0)
    errors = [float((solver_cls().integrate(_sink, x0, uniform_grid(n), space=Sphere(2)).x
                     - exact).norm(dim=1).max())
              for n in (8, 16, 32)]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.3, (errors, rates)


@pytest.mark.parametrize("space", [SO3Matrix(), SO3Quaternion()], ids=["matrix", "quaternion"])
@pytest.mark.parametrize("solver_cls,order", SOLVERS)
def test_solver_order_on_so3_against_a_reference_solver(space, solver_cls, order):
    q0 = SO3Quaternion().random_base(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = torch.from_numpy(np.stack([_so3_reference(q.numpy()) for q in q0]))
    x0 = q0 if isinstance(space, SO3Quaternion) else SO3Quaternion().to_matrix(q0)
    target = reference if isinstance(space, SO3Quaternion) else SO3Quaternion().to_matrix(reference)
    errors = [float(space.dist(solver_cls().integrate(_so3_field, x0, uniform_grid(n), space=space).x,
                               target).max())
              for n in (8, 16, 32)]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.3, (errors, rates)


@pytest.mark.parametrize("space", [SO3Matrix(), SO3Quaternion()], ids=["matrix", "quaternion"])
@pytest.mark.parametrize("solver_cls", [Euler, Midpoint, RK4])
def test_solvers_stay_on_so3_and_a_zero_field_is_the_identity(space, solver_cls):
    x0 = space.random_base(64, generator=torch.Generator().manual_seed(2))
    moved = solver_cls().integrate(_so3_field, x0, uniform_grid(200), space=space).x
    assert moved.dtype == torch.float32
    assert float(space.constraint_violation(moved).max()) < 1e-5
    still = solver_cls().integrate(lambda x, t: torch.zeros(x.shape[0], 3), x0, uniform_grid(200),
                                   space=space).x
    assert float((still - x0).abs().max()) < 1e-6  # exp(x, 0) = x up to the quaternion's renormalisation


def test_dopri5_refuses_a_manifold():
    from flowsci.solvers import Dopri5
    with pytest.raises(ValueError, match="Euclidean space only"):
        Dopri5().integrate(_sink, Sphere(2).random_base(2, dtype=torch.float64), uniform_grid(2),
                           space=Sphere(2))


# --- likelihood --------------------------------------------------------------------------

def test_likelihood_of_the_zero_field_is_the_base_density():
    for space, log_volume in ((Sphere(2), math.log(4 * math.pi)),
                              (SO3Quaternion(), math.log(8 * math.pi ** 2))):
        x = space.random_base(5, dtype=torch.float64)
        result = log_likelihood(
            lambda y, t, space=space: torch.zeros(y.shape[0], *space.tangent_shape, dtype=y.dtype), x,
            space.base_log_prob, steps=4, space=space)
        assert torch.allclose(result.log_p, torch.full((5,), -log_volume, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_likelihood_of_the_sink_flow_on_the_sphere_matches_the_closed_form(divergence):
    space = Sphere(2)
    x1 = space.random_base(200, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x1 = x1[x1[:, 2].abs() < 0.9][:64]
    z1 = x1[:, 2]
    exact = -math.log(4 * math.pi) + torch.log(torch.cosh(torch.atanh(z1) - 1.0) ** -2 / (1 - z1 ** 2))
    n_probes = 1 if divergence == "exact" else 64
    result = log_likelihood(_sink, x1, space.base_log_prob, steps=40, space=space, divergence=divergence,
                            probe="gaussian", n_probes=n_probes, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(result.x0, _sink_exact(x1, -1.0), atol=1e-6)
    # The sink field's divergence is -2 z for every probe set (z^T J z = trace only on average):
    # Hutchinson with 64 Gaussian probes is unbiased with a few percent of spread.
    tolerance = 1e-6 if divergence == "exact" else 0.15
    assert float((result.log_p - exact).abs().mean()) < tolerance


# --- geodesic paths ----------------------------------------------------------------------

def _pairs(space, n=32, seed=5):
    g = torch.Generator().manual_seed(seed)
    return (space.random_base(n, generator=g, dtype=torch.float64),
            space.random_base(n, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("space", [Sphere(2), SO3Matrix(), SO3Quaternion(), Euclidean(3)],
                         ids=["sphere", "so3-matrix", "so3-quaternion", "euclidean"])
@pytest.mark.parametrize("schedule", ["linear", {"name": "exp", "rate": 4.0}])
def test_the_three_target_forms_agree(space, schedule):
    x0, x1 = _pairs(space)
    if isinstance(space, Sphere):  # stay away from antipodal pairs, where log is not unique
        keep = (x0 * x1).sum(-1) > -0.9
        x0, x1 = x0[keep], x1[keep]
    t = torch.rand(len(x0), generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 0.9 + 0.05
    samples = {target: GeodesicPath(space, schedule, target=target).sample(x0, x1, t)
               for target in ("jvp", "x1", "x0")}
    for target in ("x1", "x0"):
        assert torch.allclose(samples[target].x_t, samples["jvp"].x_t, atol=1e-12)
        assert torch.allclose(samples[target].dx_t, samples["jvp"].dx_t, atol=1e-9)


@pytest.mark.parametrize("space", [Sphere(2), SO3Quaternion()], ids=["sphere", "so3"])
def test_geodesic_velocity_matches_finite_differences(space):
    x0, x1 = _pairs(space, seed=7)
    path = GeodesicPath(space, {"name": "exp", "rate": 3.0})
    t, h = torch.full((len(x0),), 0.4, dtype=torch.float64), 1e-6
    sample = path.sample(x0, x1, t)
    # the tangent vector whose exp from x_t reaches the point at t + h, divided by h
    fd = (space.log(sample.x_t, path.point(x0, x1, t + h))
          - space.log(sample.x_t, path.point(x0, x1, t - h))) / (2 * h)
    assert torch.allclose(sample.dx_t, fd, atol=1e-6)


def test_geodesic_path_in_euclidean_space_is_the_linear_path():
    x0, x1 = _pairs(Euclidean(4))
    t = torch.rand(len(x0), dtype=torch.float64)
    geodesic, linear = GeodesicPath(Euclidean(4)).sample(x0, x1, t), linear_path().sample(x0, x1, t)
    assert torch.allclose(geodesic.x_t, linear.x_t, atol=1e-14)
    assert torch.allclose(geodesic.dx_t, linear.dx_t, atol=1e-14)


def test_exp_schedule_endpoints_and_derivative():
    kappa = ExpKappa(rate=7.0)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert float(kappa.kappa(torch.tensor(0.0))) == 0.0
    assert abs(float(kappa.kappa(torch.tensor(1.0))) - 1) < 1e-15
    h = 1e-6
    assert torch.allclose(kappa.d_kappa(t), (kappa.kappa(t + h) - kappa.kappa(t - h)) / (2 * h), atol=1e-6)
    assert torch.allclose(kappa.rate(t), kappa.d_kappa(t) / (1 - kappa.kappa(t)), rtol=1e-10)
    frameflow = ExpKappa(rate=7.0, normalized=False)
    assert torch.allclose(frameflow.rate(t), torch.full_like(t, 7.0))


def test_rescheduled_velocity_scales_each_factor():
    space = Sphere(2)
    x = space.random_base(3, dtype=torch.float64)
    t = torch.full((3,), 0.25, dtype=torch.float64)
    v = _sink(x, t)
    assert torch.equal(RescheduledVelocity(_sink, space, "linear")(x, t), v)
    frameflow = RescheduledVelocity(_sink, space, {"name": "exp", "rate": 10.0, "normalized": False})
    assert torch.allclose(frameflow(x, t), 10.0 * 0.75 * v)


# --- objective, coupling, metrics --------------------------------------------------------

def test_flow_matching_on_so3_rejects_a_euclidean_path_and_builds_a_geodesic_one():
    with pytest.raises(ConfigError, match="geodesic"):
        FlowMatching.from_config(FlowMatchingConfig(path="linear"), space=SO3Quaternion())
    fm = FlowMatching.from_config(FlowMatchingConfig(path={"name": "geodesic", "schedule": "linear"},
                                                     coupling={"name": "ot", "cost": "geodesic"}),
                                  space=SO3Quaternion())
    assert isinstance(fm.path, GeodesicPath) and fm.coupling.space is not None


def test_geodesic_ot_coupling_reaches_the_optimal_rotation_assignment():
    space = SO3Matrix()
    x0, x1 = _pairs(space, n=24, seed=8)
    fm = FlowMatching.from_config(FlowMatchingConfig(path="geodesic",
                                                     coupling={"name": "ot", "cost": "geodesic"}),
                                  space=space)
    a, b, _ = fm.coupling(x0, x1, {})

    def angles(p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
        return Rotation.from_matrix(np.einsum("nji,njk->nik", p.numpy(), q.numpy())).magnitude()

    cost = np.array([[angles(x0[i:i + 1], x1[j:j + 1])[0] ** 2 for j in range(24)] for i in range(24)])
    rows, cols = linear_sum_assignment(cost)
    assert abs(float((angles(a, b) ** 2).mean()) - cost[rows, cols].mean()) < 1e-10


def test_geodesic_wasserstein_against_an_assignment_and_the_euclidean_metric():
    x, y = _pairs(SO3Quaternion(), n=30, seed=9)
    angle = np.array([[Rotation.from_quat(np.roll(p.numpy(), -1)).inv().__mul__(
        Rotation.from_quat(np.roll(q.numpy(), -1))).magnitude() for q in y] for p in x])
    rows, cols = linear_sum_assignment(angle ** 2)
    assert abs(geodesic_wasserstein(SO3Quaternion(), x, y)
               - math.sqrt((angle[rows, cols] ** 2).mean())) < 1e-10
    rows, cols = linear_sum_assignment(angle)
    assert abs(geodesic_wasserstein(SO3Quaternion(), x, y, p=1) - angle[rows, cols].mean()) < 1e-10
    a, b = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64) + 1
    assert abs(geodesic_wasserstein(Euclidean(3), a, b) - wasserstein(a, b)) < 1e-12


def test_sampler_on_a_space_keeps_the_state_on_it():
    space = SO3Quaternion()
    x0 = space.random_base(16, generator=torch.Generator().manual_seed(10))
    result = Sampler(Midpoint(), steps=7, space=space).sample(lambda x, t: _so3_field(x, t), x0)
    assert result.nfe == 14 and float(space.constraint_violation(result.x).max()) < 1e-6
