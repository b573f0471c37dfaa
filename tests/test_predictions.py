"""Prediction parameterizations (epsilon, x1, diffusion's v, velocity) behind the `parameterized`
model, the x0-space loss, and the endpoint solvers `ddim` and `anchored` (2-RF++'s rule).

Oracles: central finite differences of x_t = sigma_t x0 + alpha_t x1 (never the derivative
formulas), hand computations, the closed-form trajectories of first-order and straight flows,
and Rectified Diffusion's claim on a 2-D toy (Wang et al. 2024; reference notes §4.4).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from flowsci.config import SampleConfig
from flowsci.couplings import IndependentCoupling, PairedCoupling
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, Sampler
from flowsci.losses import X0SpaceLoss, X1SpaceLoss
from flowsci.nn.parameterized import Parameterized
from flowsci.paths import AffinePath, linear_path, vp_path
from flowsci.paths.path_sample import per_sample
from flowsci.registry import LOSSES, SOLVERS, build_model
from flowsci.solvers import DDIM, Anchored, Euler, uniform_grid
from flowsci.sources import StandardNormal
from flowsci.spaces import Sphere
from flowsci.timesteps import UniformTime

F64 = torch.float64
PREDICTIONS = ["epsilon", "x1", "v", "velocity"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(prediction: str, path: str | dict = "vp", dim: int = 2, **kwargs) -> Parameterized:
    backbone = {"name": "mlp_velocity", "params": {"dim": dim, "width": 16, "depth": 2}}
    return build_model("parameterized", {"backbone": backbone, "prediction": prediction, "path": path,
                                         **kwargs})


class _Fixed(nn.Module):
    """A backbone returning a given tensor whatever (x, t): an exact prediction, as an oracle."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.value


def _fd_velocity(path: AffinePath, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor,
                 h: float = 1e-6) -> torch.Tensor:
    """d/dt of the path's x_t by central differences."""
    return (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)


def _coefficients(path: AffinePath, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = path.scheduler(per_sample(t, x))
    return c.alpha_t, c.sigma_t


# --- the conversions ----------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_conversions_match_finite_differences_on_vp(prediction: str) -> None:
    """An exact backbone's prediction becomes the path's velocity and endpoints, on VP (curved)."""
    path = vp_path()
    g = _gen(0)
    x0, x1 = torch.randn(7, 3, generator=g, dtype=F64), torch.randn(7, 3, generator=g, dtype=F64)
    t = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.8, 0.95, 0.995], dtype=F64)
    x_t = path.sample(x0, x1, t).x_t
    velocity = _fd_velocity(path, x0, x1, t)
    alpha, sigma = _coefficients(path, t, x0)
    # Salimans & Ho's v = alpha eps - sigma x_data, with DDPM's (alpha, sigma) = our (alpha_t, sigma_t)
    oracle = {"epsilon": x0, "x1": x1, "v": alpha * x0 - sigma * x1, "velocity": velocity}[prediction]
    model = _model(prediction, dim=3).double()
    model.backbone = _Fixed(oracle)
    torch.testing.assert_close(model(x_t, t), velocity, rtol=1e-6, atol=1e-6)
    x0_hat, x1_hat = model.endpoints(x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x1_hat, x1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.predict(x_t, t), oracle)
    torch.testing.assert_close(model.target(x0, x1, t), oracle, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_wrapper_round_trip(prediction: str) -> None:
    """Any backbone output: the endpoints rebuild x_t and the velocity, the target of the endpoints
    is the prediction, and the path's velocity converters agree with the endpoints."""
    torch.manual_seed(0)
    model = _model(prediction).double()
    path = model.path
    x = torch.randn(5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 0.999], dtype=F64)
    v, pred = model(x, t), model.predict(x, t)
    x0_hat, x1_hat = model.endpoints(x, t)
    alpha, sigma = _coefficients(path, t, x)
    torch.testing.assert_close(pred, model.backbone(x, t))
    torch.testing.assert_close(sigma * x0_hat + alpha * x1_hat, x)
    torch.testing.assert_close(model.target(x0_hat, x1_hat, t), pred)
    torch.testing.assert_close(path.velocity_to_x0(v, x, t), x0_hat)
    torch.testing.assert_close(path.velocity_to_x1(v, x, t), x1_hat)


@pytest.mark.parametrize("prediction, loss, endpoint", [("epsilon", "x0_space", 0), ("x1", "x1_space", 1)])
def test_prediction_space_losses_see_the_raw_prediction_up_to_the_data_end(
        prediction: str, loss: str, endpoint: int) -> None:
    """float32 on VP, t up to 1 (moved one ulp inside by the path): x0_space on an epsilon model is
    DDPM's simple loss |eps_hat - eps|^2, x1_space on an x1 model |x1_hat - x1|^2, although the
    objective passes them through the velocity, whose sigma'_t is about -460 there."""
    torch.manual_seed(0)
    model = _model(prediction)
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    sample = model.path.sample(x0, x1, torch.tensor([0.0, 0.3, 0.7, 0.99, 1 - 2 ** -20, 1.0]))
    assert sample.t[-1] < 1
    fn = LOSSES.create({"name": loss, "base": "mse"}, "objective.loss")
    got = fn(model(sample.x_t, sample.t), sample.dx_t, sample.t, x_t=sample.x_t, path=model.path)
    want = (model.predict(sample.x_t, sample.t) - (x0, x1)[endpoint]).pow(2).mean(1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_x0_space_loss_hand_value_on_the_linear_path() -> None:
    """Linear path: x0_hat = x_t - t v, so MSE in x0-space is t^2 |v_hat - v|^2 / D."""
    v_hat, v, x_t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, -1.0]])
    out = X0SpaceLoss()(v_hat, v, torch.tensor([0.5]), x_t=x_t, path=linear_path())
    torch.testing.assert_close(out, torch.tensor([0.25 * 5 / 2]))
    with pytest.raises(ValueError, match="X0SpaceLoss needs the keywords x_t="):
        X0SpaceLoss()(v_hat, v, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="velocity_to_x0"):
        X0SpaceLoss()(v_hat, v, torch.tensor([0.5]), x_t=x_t, path=object())
    assert isinstance(LOSSES.create("x0_space", "objective.loss"), X0SpaceLoss)
    assert isinstance(LOSSES.create("x1_space", "objective.loss"), X1SpaceLoss)


# --- the wrapper --------------------------------------------------------------------------------


@pytest.mark.parametrize("path, prediction, ends", [
    ("vp", "epsilon", (1.0,)), ("vp", "x1", (1.0,)), ("vp", "v", (1.0,)), ("vp", "velocity", (1.0,)),
    ("linear", "epsilon", (0.0,)), ("linear", "x1", (1.0,)), ("linear", "v", ()), ("linear", "velocity", ()),
    ("cosine", "epsilon", (0.0,)), ("cosine", "x1", (1.0,)), ("cosine", "v", ()),
])
def test_singular_ends(path: str, prediction: str, ends: tuple[float, ...]) -> None:
    assert _model(prediction, path).singular_ends == ends


def test_a_singular_end_is_evaluated_t_eps_inside_and_other_times_exactly() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 2, dtype=F64)
    vp = _model("epsilon", t_eps=1e-3).double()
    at_end = vp(x, torch.ones(3, dtype=F64))
    assert torch.isfinite(at_end).all()
    torch.testing.assert_close(at_end, vp(x, torch.full((3,), 1 - 1e-3, dtype=F64)))
    near = vp(x, torch.full((3,), 1 - 1e-9, dtype=F64))  # not moved: the exact, large velocity
    assert torch.isfinite(near).all() and near.norm() > 100 * at_end.norm()
    linear = _model("epsilon", "linear", t_eps=0.01).double()
    torch.testing.assert_close(linear(x, torch.zeros(3, dtype=F64)),
                               linear(x, torch.full((3,), 0.01, dtype=F64)))


def test_conditions_and_domain_inputs_reach_the_backbone() -> None:
    torch.manual_seed(0)
    backbone = {"name": "mlp_velocity", "params": {"width": 16, "num_classes": 3}}
    model = build_model("parameterized", {"backbone": backbone, "prediction": "x1", "path": "vp", "dim": 2})
    x, t, y = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, -1])
    torch.testing.assert_close(model.predict(x, t, y=y), model.backbone(x, t, y=y))
    assert not torch.allclose(model(x, t, y=y), model(x, t, y=y.flip(0)))
    clone = build_model(model.flowsci_spec["name"], model.flowsci_spec["params"])  # as a checkpoint does
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(x, t, y=y), model(x, t, y=y))


@pytest.mark.parametrize("change, error, match", [
    ({"prediction": "eps"}, ValueError, "prediction must be one of epsilon, x1, v, velocity"),
    ({"path": {"name": "schrodinger_bridge", "sigma": 0.5}}, ValueError, "path must be an affine path"),
    ({"path": "vpp"}, ConfigError, "model.path"),
    ({"backbone": "mlp_velocity"}, ValueError, "backbone must be"),
    ({"t_eps": 0.0}, ValueError, "t_eps must be a number in"),
    ({"dim": 3}, ValueError, "backbone.params.dim = 2 disagrees with dim = 3"),
])
def test_wrapper_rejects_bad_arguments(change: dict, error: type[Exception], match: str) -> None:
    params = {"backbone": {"name": "mlp_velocity", "params": {"dim": 2}}, "prediction": "epsilon",
              "path": "vp", **change}
    with pytest.raises(error, match=match):
        build_model("parameterized", params)


# --- the endpoint solvers -----------------------------------------------------------------------


def _swirl(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear, time-dependent field on (B, 2)."""
    rot = torch.stack([-x[:, 1], x[:, 0]], dim=1)
    return (2.0 + t[:, None]) * rot - (1.0 + t[:, None]) * torch.tanh(x)


@pytest.mark.parametrize("grid", [uniform_grid(1), uniform_grid(7),
                                  torch.tensor([0.9, 0.5, 0.45, 0.0], dtype=F64)], ids=["1", "7", "reverse"])
def test_ddim_is_euler_on_the_linear_path(grid: torch.Tensor) -> None:
    x = torch.randn(5, 2, generator=_gen(1), dtype=F64)
    ddim = DDIM().integrate(_swirl, x, grid, trajectory=True)
    euler = Euler().integrate(_swirl, x, grid, trajectory=True)
    torch.testing.assert_close(ddim.trajectory, euler.trajectory, rtol=1e-12, atol=1e-12)
    assert ddim.nfe == euler.nfe == len(grid) - 1


def _first_order_fields(path: AffinePath, a: torch.Tensor, b: torch.Tensor) -> dict:
    """Fields whose (x0_hat, x1_hat) stay constant along every trajectory: a constant data
    prediction b (the conditional velocity of the pairs (*, b)) or a constant noise prediction a."""
    return {"x1 = b": lambda x, t: path.x1_to_velocity(b.expand_as(x), x, t),
            "x0 = a": lambda x, t: path.x0_to_velocity(a.expand_as(x), x, t)}


@pytest.mark.parametrize("field", ["x1 = b", "x0 = a"])
@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (0.1, 0.9), (0.9, 0.05)])
def test_ddim_is_exact_in_one_step_for_a_first_order_field_and_euler_is_not(field: str, t0: float,
                                                                           t1: float) -> None:
    path = vp_path()
    g = _gen(2)
    a, b = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, 2, generator=g, dtype=F64)
    velocity = _first_order_fields(path, a, b)[field]
    def on_curve(s: float) -> torch.Tensor:
        alpha, sigma = _coefficients(path, torch.full((4,), s, dtype=F64), a)
        return sigma * a + alpha * b

    grid = torch.tensor([t0, t1], dtype=F64)
    ddim = SOLVERS.create({"name": "ddim", "path": "vp"}, "sample.solver")
    torch.testing.assert_close(ddim.integrate(velocity, on_curve(t0), grid).x, on_curve(t1),
                               rtol=1e-10, atol=1e-10)
    euler_error = (Euler().integrate(velocity, on_curve(t0), grid).x - on_curve(t1)).norm(dim=1)
    assert (euler_error > 0.1).all(), euler_error


def test_ddim_inverts_from_the_data_end_of_vp_at_t_eps() -> None:
    """t = 1 on VP (sigma'_1 = -inf) is evaluated 1 - t_eps inside; a first-order field then goes
    back to its start up to the noise level there, sigma(1 - t_eps) ~ 0.01."""
    path = vp_path()
    g = _gen(3)
    a, b = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, 2, generator=g, dtype=F64)
    field = _first_order_fields(path, a, b)["x0 = a"]
    times = []

    def recorded(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times.append(float(t[0]))
        return field(x, t)

    start = path.sample(a, b, torch.zeros(4, dtype=F64)).x_t
    sampler = Sampler(DDIM(path, t_eps=1e-3), steps=4)
    x1 = sampler.sample(recorded, start).x
    back = sampler.invert(recorded, x1).x
    assert times[4] == pytest.approx(1 - 1e-3) and max(times) < 1
    assert (back - start).abs().max() < 1e-3


def _straight_field(m: torch.Tensor):  # noqa: ANN202 - a test helper
    """Trajectories x_t = (1 - t) x0 + t M x0 (straight lines), v = (M - I) ((1 - t) I + t M)^-1 x."""
    eye = torch.eye(2, dtype=F64)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = torch.linalg.solve((1 - t)[:, None, None] * eye + t[:, None, None] * m, x)
        return x0 @ (m - eye).T

    return velocity


@pytest.mark.parametrize("grid", [uniform_grid(1), torch.tensor([0.0, 0.1, 0.55, 0.6, 1.0], dtype=F64),
                                  uniform_grid(3).flip(0)], ids=["1", "4", "reverse"])
def test_anchored_is_exact_on_a_straight_field(grid: torch.Tensor) -> None:
    m = torch.tensor([[2.0, 0.5], [0.0, 0.5]], dtype=F64)  # eigenvalues > 0: (1 - t) I + t M invertible
    x0 = torch.randn(5, 2, generator=_gen(4), dtype=F64)
    exact = lambda t: (1 - t) * x0 + t * x0 @ m.T  # noqa: E731
    start = exact(float(grid[0]))
    result = SOLVERS.create("anchored", "sample.solver").integrate(_straight_field(m), start, grid,
                                                                  trajectory=True)
    for state, t in zip(result.trajectory, grid.tolist()):
        torch.testing.assert_close(state, exact(t), rtol=1e-12, atol=1e-12)
    assert result.nfe == len(grid) - 1


def test_anchored_reuses_the_initial_sample_by_hand() -> None:
    """v = -x on the linear path, 3 steps. Sampling: x1_hat = x + (1 - t) v and
    x_{t'} = (1 - t') x_init + t' x1_hat give 2/3, 13/27, 26/81 (Euler: 2/3, 4/9, 8/27).
    Inversion anchors the initial data sample: x0_hat = x - t v gives 4/3, 49/27, 196/81."""
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    forward = Anchored().integrate(lambda y, t: -y, x, uniform_grid(3), trajectory=True)
    backward = Anchored().integrate(lambda y, t: -y, x, uniform_grid(3).flip(0), trajectory=True)
    torch.testing.assert_close(forward.trajectory[:, 0, 0],
                               torch.tensor([1, 2 / 3, 13 / 27, 26 / 81], dtype=F64))
    torch.testing.assert_close(backward.trajectory[:, 0, 0],
                               torch.tensor([1, 4 / 3, 49 / 27, 196 / 81], dtype=F64))
    # it assumes straight trajectories: on this curved flow it converges to 1/2, not to e^-1
    fine = Anchored().integrate(lambda y, t: -y, x, uniform_grid(1000)).x[0, 0]
    assert abs(fine - 0.5) < 0.01 and abs(fine - math.exp(-1)) > 0.1


@pytest.mark.parametrize("solver", [DDIM, Anchored])
def test_endpoint_solvers_refuse_other_spaces_and_bad_arguments(solver: type) -> None:
    x = torch.nn.functional.normalize(torch.randn(3, 3), dim=1)
    with pytest.raises(ValueError, match="leaves"):
        solver().integrate(lambda y, t: torch.zeros_like(y), x, uniform_grid(2), space=Sphere(2))
    with pytest.raises(ValueError, match="path must be an affine path"):
        solver({"name": "schrodinger_bridge", "sigma": 0.5})
    with pytest.raises(ValueError, match="t_eps must be a number in"):
        solver(t_eps=1.0)
    with pytest.raises(ConfigError, match="sample.solver.path"):
        solver("vpp")


def test_endpoint_solvers_from_yaml_with_gradients() -> None:
    sampler = Sampler.from_config(SampleConfig(solver={"name": "ddim", "path": VP8}, steps=3))
    assert isinstance(sampler.solver, DDIM) and sampler.solver.path.scheduler.beta_max == 8.0
    anchored = SOLVERS.create("anchored", "sample.solver")
    assert isinstance(anchored, Anchored) and anchored.path.scheduler == linear_path().scheduler
    x = torch.randn(4, 2, dtype=F64, requires_grad=True)
    result = Anchored().integrate(_swirl, x, uniform_grid(3), grad=True)
    result.x.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --- training -----------------------------------------------------------------------------------

CENTRES = 2 * torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]) / math.sqrt(2)
SPREAD = 0.3
VP8 = {"name": "vp", "beta_max": 8.0}
"""A VP path with alpha_0 = e^-2 = 0.13: one DDIM step from t = 0 turns eps_hat into
x1_hat = (x - sigma_0 eps_hat) / alpha_0, 7.5 times its error (150 times with the default
beta_max = 20, too much for a one-step test of a small epsilon model)."""


def _blobs(n: int, g: torch.Generator) -> torch.Tensor:
    """n points of four Gaussian blobs (centres at radius 2, std SPREAD)."""
    return CENTRES[torch.randint(0, 4, (n,), generator=g)] + SPREAD * torch.randn(n, 2, generator=g)


def _train(model: nn.Module, objective: FlowMatching, batch, steps: int, lr: float) -> list[float]:  # noqa: ANN001
    opt = torch.optim.Adam(model.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        loss, _ = objective.loss(model, batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def test_epsilon_model_trains_on_vp_with_the_ddpm_loss() -> None:
    torch.manual_seed(0)
    g = _gen(5)
    objective = FlowMatching.from_config(FlowMatchingConfig(path="vp", loss="x0_space"),
                                         source=StandardNormal((2,)))
    model = _model("epsilon")
    losses = _train(model, objective, lambda: {"x1": _blobs(128, g)}, 150, 3e-3)
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.7 * first, (first, last)


def _mixture_velocity(path: AffinePath):  # noqa: ANN202 - a test helper
    """The exact marginal velocity of `path` from N(0, I) to the blobs: E[x1 | x_t] in closed form
    (x_t | blob k ~ N(alpha mu_k, (alpha^2 s^2 + sigma^2) I)), as a data prediction."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = _coefficients(path, t, x)
        var = alpha ** 2 * SPREAD ** 2 + sigma ** 2
        mean_k = alpha[:, None] * CENTRES.to(x.dtype)
        weights = torch.softmax(-(x[:, None] - mean_k).pow(2).sum(-1) / (2 * var), dim=1)
        x1_k = CENTRES.to(x.dtype) + (alpha * SPREAD ** 2 / var)[:, None] * (x[:, None] - mean_k)
        return path.x1_to_velocity((weights[..., None] * x1_k).sum(1), x, t)

    return velocity


def _one_step_error(velocity, ddim: DDIM, eps: torch.Tensor) -> float:  # noqa: ANN001
    """Mean |one DDIM step - 40 DDIM steps|^2 of a flow from the noise eps."""
    with torch.no_grad():
        reference = ddim.integrate(velocity, eps, uniform_grid(40)).x
        return (ddim.integrate(velocity, eps, uniform_grid(1)).x - reference).pow(2).sum(1).mean().item()


def _rectify(student: nn.Module, teacher, path: AffinePath, ddim: DDIM, g: torch.Generator,  # noqa: ANN001
             steps: int, lr: float) -> None:
    """Rectified Diffusion: pairs (eps, x) from the teacher's ODE, then x_t = sigma_t eps + alpha_t x
    on the same VP path, with its loss on x1_hat (here MSE)."""
    eps = torch.randn(2000, 2, generator=g)
    with torch.no_grad():
        x = ddim.integrate(teacher, eps, uniform_grid(40)).x

    def batch() -> dict[str, torch.Tensor]:
        index = torch.randint(0, len(eps), (128,), generator=g)
        return {"x0": eps[index], "x1": x[index]}

    _train(student, FlowMatching(path, UniformTime(), PairedCoupling(), X1SpaceLoss()), batch, steps, lr)


def test_rectified_diffusion_makes_one_ddim_step_exact_from_an_exact_teacher() -> None:
    """The fast variant: the teacher is the exact marginal flow (what training on independent
    pairs converges to); its one-step DDIM gives about the data mean. An epsilon MLP trained on
    the teacher's own (eps, x) pairs on the same, curved VP path is first order: one DDIM step
    lands near its many-step solution."""
    torch.manual_seed(0)
    g = _gen(6)
    path, ddim = vp_path(beta_max=VP8["beta_max"]), DDIM(VP8)
    teacher = _mixture_velocity(path)
    student = build_model("parameterized", {"prediction": "epsilon", "path": VP8, "backbone": {
        "name": "mlp_velocity", "params": {"dim": 2, "width": 64, "depth": 3}}})
    _rectify(student, teacher, path, ddim, g, steps=300, lr=3e-3)
    eps = torch.randn(500, 2, generator=g)
    before, after = _one_step_error(teacher, ddim, eps), _one_step_error(student, ddim, eps)
    assert before > 2.0 and after < before / 5, (before, after)


@pytest.mark.slow
def test_rectified_diffusion_thesis_on_a_trained_epsilon_model() -> None:
    """The full recipe of §4.4: train an epsilon MLP on VP with DDPM's loss (independent pairs),
    generate (eps, x) with DDIM, retrain from it on x_t = sigma_t eps + alpha_t x: the one-step
    DDIM error drops by an order of magnitude, the flow still transports eps to the teacher's x,
    and it is first order, not straight: one Euler step stays several times further off."""
    torch.manual_seed(0)
    g = _gen(7)
    path, ddim = vp_path(beta_max=VP8["beta_max"]), DDIM(VP8)
    model = build_model("parameterized", {"prediction": "epsilon", "path": VP8, "backbone": {
        "name": "mlp_velocity", "params": {"dim": 2, "width": 64, "depth": 3}}})
    independent = FlowMatching(path, UniformTime(), IndependentCoupling(), X0SpaceLoss(),
                               source=StandardNormal((2,)))
    _train(model, independent, lambda: {"x1": _blobs(256, g)}, 2000, 3e-3)
    eps = torch.randn(1000, 2, generator=g)
    before = _one_step_error(model, ddim, eps)
    teacher = copy.deepcopy(model)
    _rectify(model, teacher, path, ddim, g, steps=1500, lr=1e-3)
    after = _one_step_error(model, ddim, eps)
    assert before > 1.0 and after < before / 10, (before, after)
    with torch.no_grad():
        solution = ddim.integrate(model, eps, uniform_grid(40)).x
        euler = (Euler().integrate(model, eps, uniform_grid(1)).x - solution).pow(2).sum(1).mean().item()
        drift = (solution - ddim.integrate(teacher, eps, uniform_grid(40)).x).pow(2).sum(1).mean().item()
    assert drift < 0.2 and euler > 2 * after, (drift, euler, after)
