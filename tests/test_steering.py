"""Oracle tests of FlowChef and the DPS baseline: closed-form Gaussian flows, gradient descent on
a quadratic in closed form, finite differences, and the plain Euler solver as the unsteered reference."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.measurements import Mask, Probes
from flowsci.paths import cosine_path
from flowsci.solvers import RK4, Euler, uniform_grid
from flowsci.steering import classifier_cost, dps, flowchef, measurement_cost

F64 = torch.float64
MEAN, SCALE = 2.0, 0.5  # target N(MEAN, SCALE^2 I) of the closed-form flows, source N(0, I)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _column(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *[1] * (x.dim() - 1))


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The marginal velocity E[x1 - x0 | x_t = x] of the linear path between x0 ~ N(0, I) and
    x1 ~ N(m, s^2 I), independent: with V_t = (1 - t)^2 + t^2 s^2 = Var(x_t) per coordinate,
    E[x1 | x] = m + t s^2 / V_t (x - t m) and E[x0 | x] = (1 - t) / V_t (x - t m)."""
    t = _column(t, x)
    var = (1 - t) ** 2 + t**2 * SCALE**2
    return MEAN + (t * SCALE**2 - (1 - t)) / var * (x - t * MEAN)


def straight_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The straight flow of the map x0 -> m + s x0 (N(0, I) to N(m, s^2 I)): x_t = t m + (1 - t +
    t s) x0, so v = m + (s - 1) x0 with x0 = (x - t m) / (1 - t + t s)."""
    t = _column(t, x)
    return MEAN + (SCALE - 1) * (x - t * MEAN) / (1 - t + t * SCALE)


def _mlp(dim: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(dim + 1, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim)]
    return torch.nn.Sequential(*layers).double()


def _as_velocity(model: torch.nn.Module):  # noqa: ANN202 - a test helper
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(torch.cat([x, t[:, None]], dim=1))

    return velocity


def _frozen(velocity):  # noqa: ANN001, ANN202 - a test helper
    """The velocity, refusing to run where autograd could record the network."""

    def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.requires_grad:
            raise AssertionError("flowchef evaluated the velocity with gradients enabled")
        return velocity(x, t)

    return wrapped


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_the_closed_form_velocities_transport_the_source_to_the_target():
    """Checks the test fields themselves: Euler on the straight field is exact (x0 -> m + s x0),
    and the curved Gaussian field's flow maps x0 to m + s x0 too (its ODE solution is
    t m + sqrt(V_t) x0)."""
    x0 = torch.randn(16, 3, generator=_generator(0), dtype=F64)
    straight = Euler().integrate(straight_velocity, x0, uniform_grid(3)).x
    torch.testing.assert_close(straight, MEAN + SCALE * x0, rtol=0, atol=1e-12)
    curved = RK4().integrate(gaussian_velocity, x0, uniform_grid(50)).x
    torch.testing.assert_close(curved, MEAN + SCALE * x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("field", ["gaussian", "mlp"])
def test_full_observation_returns_the_observation(field: str):
    """Identity operator, y arbitrary, s = D / 2 (one step removes the residual of x_hat): the
    sample converges to y as the steps shrink (second order), unguided sampling stays away."""
    dim = 4
    velocity = gaussian_velocity if field == "gaussian" else _as_velocity(_mlp(dim, 1))
    x0 = torch.randn(8, dim, generator=_generator(2), dtype=F64)
    y = 3.0 * torch.randn(8, dim, generator=_generator(3), dtype=F64)
    cost = measurement_cost(_identity, y)
    samples = [flowchef(_frozen(velocity), x0, uniform_grid(n), cost, step_size=dim / 2).x
               for n in (20, 40, 80)]
    errors = [float((x - y).abs().max()) for x in samples]
    assert errors[2] < (2e-2 if field == "gaussian" else 1e-4)
    assert errors[1] < 0.35 * errors[0] and errors[2] < 0.35 * errors[1]
    unguided = Euler().integrate(velocity, x0, uniform_grid(80)).x
    assert float((unguided - y).abs().max()) > 1.0


def test_partial_observation_steers_the_observed_coordinate_only():
    """Direction test on the straight flow, A = the first coordinate: FlowChef brings x[:, 0] to y,
    while the other coordinates (the field is separable) follow the unguided flow exactly."""
    x0 = torch.randn(64, 3, generator=_generator(4), dtype=F64)
    op = Probes(torch.tensor([0]), (3,))
    y = torch.full((64, 1), 4.0, dtype=F64)  # 4 s.d. of the target N(2, 0.5^2) away from its mean
    steered = flowchef(_frozen(straight_velocity), x0, uniform_grid(50), measurement_cost(op, y),
                       step_size=0.5).x
    unguided = Euler().integrate(straight_velocity, x0, uniform_grid(50)).x
    assert float((op(steered) - y).square().mean()) < 1e-4
    assert float((op(unguided) - y).square().mean()) > 1.0
    torch.testing.assert_close(steered[:, 1:], unguided[:, 1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_iterations_are_gradient_descent_on_the_quadratic(iterations: int):
    """Constant (frozen, straight) field c and L = |A x - y|^2 / M: each iteration maps the residual
    r = A x_hat - y to (I - (2 s / M) A A^T) r, and on the grid (0, 1/2, 1) with the last step
    unsteered the sample is x_hat after the iterations."""
    dim, m, step = 5, 3, 0.6
    matrix = torch.randn(m, dim, generator=_generator(5), dtype=F64) / math.sqrt(dim)
    c = torch.randn(dim, generator=_generator(6), dtype=F64)
    x0 = torch.randn(4, dim, generator=_generator(7), dtype=F64)
    y = torch.randn(4, m, generator=_generator(8), dtype=F64)

    def operator(x: torch.Tensor) -> torch.Tensor:
        return x @ matrix.T

    result = flowchef(lambda x, t: c.expand_as(x), x0, uniform_grid(2), measurement_cost(operator, y),
                      step_size=step, iterations=iterations)
    contraction = torch.eye(m, dtype=F64) - (2 * step / m) * matrix @ matrix.T
    residual = (x0 + c) @ matrix.T - y
    expected = residual @ torch.linalg.matrix_power(contraction, iterations).T
    torch.testing.assert_close(operator(result.x) - y, expected, rtol=0, atol=1e-12)
    assert result.nfe == 2


def test_one_step_moves_a_mask_residual_geometrically():
    """A mask, s = M / 2 * (1 - q): the observed residual shrinks by q per iteration, exactly."""
    mask = Mask(torch.tensor([1.0, 0.0, 1.0, 1.0]))
    x0 = torch.randn(3, 4, generator=_generator(9), dtype=F64)
    y = mask(torch.randn(3, 4, generator=_generator(10), dtype=F64))
    c = torch.ones(4, dtype=F64)
    q = 0.3
    for k in (1, 3):
        x = flowchef(lambda x, t: c.expand_as(x), x0, uniform_grid(2), measurement_cost(mask, y),
                     step_size=4 / 2 * (1 - q), iterations=k).x
        torch.testing.assert_close(mask(x) - y, q**k * (mask(x0 + c) - y), rtol=0, atol=1e-12)
        torch.testing.assert_close(x[:, 1], (x0 + c)[:, 1], rtol=0, atol=0)


def _finite_difference_gradient(function, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:  # noqa: ANN001
    """Central differences of the per-sample function (B, D) -> (B,), sample by sample."""
    grad = torch.zeros_like(z)
    for j in range(z.shape[1]):
        step = torch.zeros_like(z)
        step[:, j] = eps
        grad[:, j] = (function(z + step) - function(z - step)) / (2 * eps)
    return grad


def test_flowchef_freezes_the_network_and_dps_differentiates_through_it():
    """One steered step on the grid (t, 1) with max_steps=1, an MLP velocity: FlowChef moves z by
    -s d/dz L(z + (1 - t) v_frozen), DPS by -s d/dz L(z + (1 - t) v(z, t)) (finite differences),
    both then take the Euler step with v at the pre-update state. No parameter gets a gradient."""
    dim, t0, s = 3, 0.25, 0.7
    model = _mlp(dim, 11)
    velocity = _as_velocity(model)
    z = torch.randn(5, dim, generator=_generator(12), dtype=F64)
    y = torch.randn(5, dim, generator=_generator(13), dtype=F64)
    cost = measurement_cost(_identity, y)
    times = torch.tensor([t0, 1.0], dtype=F64)
    tt = torch.full((5,), t0, dtype=F64)
    with torch.no_grad():
        v = velocity(z, tt)
        frozen_grad = _finite_difference_gradient(lambda w: cost(w + (1 - t0) * v), z)
        network_grad = _finite_difference_gradient(lambda w: cost(w + (1 - t0) * velocity(w, tt)), z)
    before = [p.detach().clone() for p in model.parameters()]

    calls = []

    def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(torch.is_grad_enabled() and x.requires_grad)
        return velocity(x, t)

    chef = flowchef(_frozen(velocity), z, times, cost, step_size=s, max_steps=1)
    torch.testing.assert_close(chef.x, z - s * frozen_grad + (1 - t0) * v, rtol=0, atol=1e-8)
    baseline = dps(recording, z, times, cost, step_size=s, max_steps=1)
    torch.testing.assert_close(baseline.x, z - s * network_grad + (1 - t0) * v, rtol=0, atol=1e-8)
    assert calls == [True]
    assert float((chef.x - baseline.x).abs().max()) > 1e-3  # the network's Jacobian matters here
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_flowchef_on_an_affine_path_differentiates_the_conversion():
    """Cosine path: x_hat = (sigma v - sigma' z) / D with D = pi / 2, so d x_hat / d z =
    sin(pi t / 2) and the steering step is -s sin(pi t / 2) grad L(x_hat)."""
    t0, s = 0.4, 0.9
    path = cosine_path()
    z = torch.randn(4, 3, generator=_generator(14), dtype=F64)
    y = torch.randn(4, 3, generator=_generator(15), dtype=F64)
    c = torch.randn(3, generator=_generator(16), dtype=F64).expand_as(z)
    tt = torch.full((4,), t0, dtype=F64)
    x_hat = path.velocity_to_x1(c, z, tt)
    gradient = (2 / 3) * (x_hat - y) * math.sin(math.pi * t0 / 2)
    result = flowchef(lambda x, t: c, z, torch.tensor([t0, 1.0], dtype=F64), measurement_cost(_identity, y),
                      step_size=s, max_steps=1, path=path)
    torch.testing.assert_close(result.x, z - s * gradient + (1 - t0) * c, rtol=0, atol=1e-12)


def test_unsteered_steps_are_plain_euler_steps():
    x0 = torch.randn(6, 2, generator=_generator(17), dtype=F64)
    y = torch.zeros(6, 2, dtype=F64)
    cost = measurement_cost(_identity, y)
    euler = Euler().integrate(gaussian_velocity, x0, uniform_grid(7)).x
    for method in (flowchef, dps):
        none = method(gaussian_velocity, x0, uniform_grid(7), cost, step_size=1.0, max_steps=0).x
        torch.testing.assert_close(none, euler, rtol=0, atol=1e-14)
        one_step = method(gaussian_velocity, x0, uniform_grid(1), cost, step_size=1.0).x  # last never steered
        torch.testing.assert_close(one_step, Euler().integrate(gaussian_velocity, x0, uniform_grid(1)).x)


def test_samples_are_steered_independently_of_the_batch():
    """The cost is per sample: a batch gives the samples' results one by one."""
    velocity = _as_velocity(_mlp(3, 18))
    x0 = torch.randn(4, 3, generator=_generator(19), dtype=F64)
    y = torch.randn(4, 3, generator=_generator(20), dtype=F64)
    for optimizer in ("sgd", "adam"):
        batch = flowchef(velocity, x0, uniform_grid(5), measurement_cost(_identity, y), step_size=0.3,
                         iterations=2, optimizer=optimizer).x
        alone = torch.cat([flowchef(velocity, x0[i:i + 1], uniform_grid(5),
                                    measurement_cost(_identity, y[i:i + 1]), step_size=0.3, iterations=2,
                                    optimizer=optimizer).x for i in range(4)])
        torch.testing.assert_close(batch, alone, rtol=0, atol=1e-12)


def test_adam_first_step_moves_every_entry_by_the_learning_rate():
    """Adam's first update (bias-corrected moments g and g^2) is lr * g / (|g| + eps), about lr * sign(g);
    here g = (2 / 4) (x_hat - y)."""
    x0 = torch.randn(3, 4, generator=_generator(21), dtype=F64)
    y = torch.randn(3, 4, generator=_generator(22), dtype=F64)
    c = torch.ones(4, dtype=F64)
    lr = 0.05
    x = flowchef(lambda x, t: c.expand_as(x), x0, uniform_grid(2), measurement_cost(_identity, y),
                 step_size=lr, optimizer="adam").x
    g = 0.5 * (x0 + c - y)
    torch.testing.assert_close(x, x0 + c - lr * g / (g.abs() + 1e-8), rtol=0, atol=1e-14)


def test_adam_iterations_match_torch_adam():
    """Three Adam iterations on one steered step against torch.optim.Adam on the same objective
    z -> L(z + (1 - t) v), v frozen (constant field c, grid (0, 1/2, 1): the sample is x_hat)."""
    x0 = torch.randn(3, 4, generator=_generator(25), dtype=F64)
    y = torch.randn(3, 4, generator=_generator(26), dtype=F64)
    c = torch.randn(4, generator=_generator(27), dtype=F64)
    cost = measurement_cost(lambda x: x[:, :2].sin(), y[:, :2])
    x = flowchef(lambda x, t: c.expand_as(x), x0, uniform_grid(2), cost, step_size=0.1, iterations=3,
                 optimizer="adam").x
    state = x0.clone().requires_grad_(True)
    reference = torch.optim.Adam([state], lr=0.1)
    for _ in range(3):
        reference.zero_grad()
        cost(state + c).sum().backward()
        reference.step()
    torch.testing.assert_close(x, state.detach() + c, rtol=0, atol=1e-12)


def test_classifier_cost_is_the_negative_log_likelihood_and_steers_towards_the_label():
    """Logits (0, k x_0): -log p(1 | x) = softplus(-k x_0), -log p(0 | x) = softplus(k x_0). Steering
    the Gaussian flow to label 1 raises x_0 (and p(1 | x)); the classifier gets no gradient."""
    classifier = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
        classifier.bias.zero_()
    x = torch.randn(6, 3, generator=_generator(23), dtype=F64)
    labels = torch.tensor([1, 0, 1, 0, 1, 1])
    expected = torch.nn.functional.softplus(torch.where(labels == 1, -2 * x[:, 0], 2 * x[:, 0]))
    torch.testing.assert_close(classifier_cost(classifier, labels)(x), expected, rtol=1e-12, atol=1e-12)

    x0 = torch.randn(256, 3, generator=_generator(24), dtype=F64)
    ones = torch.ones(256, dtype=torch.long)
    steered = flowchef(gaussian_velocity, x0, uniform_grid(20), classifier_cost(classifier, ones),
                       step_size=0.5).x
    unguided = Euler().integrate(gaussian_velocity, x0, uniform_grid(20)).x
    assert float(steered[:, 0].mean()) > float(unguided[:, 0].mean()) + 0.2
    torch.testing.assert_close(steered[:, 1:], unguided[:, 1:], rtol=0, atol=1e-12)
    assert all(p.grad is None for p in classifier.parameters())


def test_measurement_cost_is_the_mean_over_the_measurement_entries():
    mask = Mask(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    x = torch.ones(2, 2, 3, dtype=F64)
    torch.testing.assert_close(measurement_cost(mask, mask(torch.zeros_like(x)))(x),
                               torch.full((2,), 3 / 6, dtype=F64))
    with pytest.raises(ValueError, match="does not match"):
        measurement_cost(mask, torch.zeros(2, 6))(x)


BAD_CALLS = {
    "decreasing_grid": dict(times=torch.tensor([1.0, 0.5, 0.0])),
    "step_size_zero": dict(step_size=0.0),
    "step_size_negative": dict(step_size=-1.0),
    "step_size_nan": dict(step_size=math.nan),
    "cost_shape": dict(cost=lambda x: x.sum()),
    "cost_per_entry": dict(cost=lambda x: x.square()),
    "max_steps_negative": dict(max_steps=-1),
    "max_steps_too_many": dict(max_steps=5),
    "path_name": dict(path="linear"),
}


@pytest.mark.parametrize("method", [flowchef, dps])
@pytest.mark.parametrize("bad", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_inputs_raise(method, bad: dict):  # noqa: ANN001
    arguments = dict(velocity=gaussian_velocity, x0=torch.zeros(2, 3), times=uniform_grid(4),
                     cost=lambda x: x.square().sum(1), step_size=1.0)
    with pytest.raises(ValueError):
        method(**{**arguments, **bad})


@pytest.mark.parametrize("bad", [dict(iterations=0), dict(iterations=1.5), dict(optimizer="lbfgs")])
def test_bad_flowchef_options_raise(bad: dict):
    with pytest.raises(ValueError):
        flowchef(gaussian_velocity, torch.zeros(2, 3), uniform_grid(4), lambda x: x.square().sum(1),
                 step_size=1.0, **bad)
