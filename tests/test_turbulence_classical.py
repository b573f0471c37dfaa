"""Classical solvers as one-step models (coarse, LES, finer grid, DNS restart), the spectral
interpolation they rely on, the two-grid spin-up, training objectives on velocity and through
unrolled steps, and runs of a model without trainable parameters."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REPO

from flowsci.config import load_config
from flowsci.errors import ConfigError
from flowsci.training import train
from flowsci_domains.turbulence.classical import ClassicalSolver, make_closure
from flowsci_domains.turbulence.generate import generate_kolmogorov
from flowsci_domains.turbulence.les import Leith, Smagorinsky
from flowsci_domains.turbulence.objectives import OneStepObjective
from flowsci_domains.turbulence.spectral import (
    Kolmogorov2D,
    random_initial_vorticity,
    velocity_from_vorticity,
)
from flowsci_domains.turbulence.statistics import spectral_filter, spectral_interpolate

TURBULENCE_YAML = REPO / "domains" / "turbulence.yaml"


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    return torch.meshgrid(x, x, indexing="ij")


def mode(n: int, kx: int, ky: int, phase: float = 0.3) -> torch.Tensor:
    x, y = grid(n)
    return torch.cos(kx * x + ky * y + phase)


def test_spectral_interpolation_samples_band_limited_fields_exactly_and_inverts_the_filter():
    field = 1.5 * mode(16, 3, -2) + 0.7 * mode(16, 0, 7, phase=1.1) - 0.4 * mode(16, 5, 1) + 0.2
    fine = spectral_interpolate(field, 48)
    expected = 1.5 * mode(48, 3, -2) + 0.7 * mode(48, 0, 7, phase=1.1) - 0.4 * mode(48, 5, 1) + 0.2
    assert torch.allclose(fine, expected, rtol=0, atol=1e-12)
    w = random_initial_vorticity(3, 32, torch.Generator().manual_seed(1), dtype=torch.float64)
    w = spectral_filter(w, 16)
    assert torch.allclose(spectral_filter(spectral_interpolate(w, 64), 16), w, rtol=0, atol=1e-12)
    assert torch.allclose(spectral_interpolate(w, 16), w, rtol=0, atol=1e-12)  # same grid: identity
    with pytest.raises(ValueError, match="even integer >= m=16"):
        spectral_interpolate(w, 8)


def single_mode_model(resolution: int | None, **settings) -> ClassicalSolver:
    """A classical solver of 16² data with unit normalisation and no forcing."""
    physics = {"nu": 0.01, "drag": 0.2, "forcing_amplitude": 0.0, "forcing_wavenumber": 4, **settings}
    return ClassicalSolver(1, 1, n=16, snapshot_dt=0.5, mean=[0.0], std=[1.0], resolution=resolution,
                           **physics)


@pytest.mark.parametrize("resolution", [None, 32, 48])
def test_a_single_shell_decays_at_the_closed_form_rate_at_every_solver_resolution(resolution):
    """Modes of one shell are an exact steady solution of the nonlinear term (u . grad w = 0), so
    the filtered vorticity decays as exp(-(nu k^2 + drag) Δ) whatever the solver's grid."""
    w = mode(16, 3, 4) + 0.5 * mode(16, 5, 0, phase=0.2)                      # |k| = 5 both
    model = single_mode_model(resolution)
    with torch.no_grad():
        advanced = model.double()(w[None, None])[0, 0]
    assert torch.allclose(advanced, w * math.exp(-(0.01 * 25 + 0.2) * 0.5), rtol=0, atol=1e-10)


def test_the_les_model_runs_the_closure_and_the_dns_restart_the_fine_grid():
    w = random_initial_vorticity(2, 16, torch.Generator().manual_seed(0), dtype=torch.float64)
    w = spectral_filter(w, 16)
    settings = {"nu": 1e-3, "drag": 0.1, "forcing_amplitude": 4.0, "forcing_wavenumber": 4}
    les = ClassicalSolver(1, 1, 16, 0.3, mean=[0.0], std=[2.0], closure="smagorinsky", c=0.2, solver_dt=0.05,
                          **settings)
    plain = Kolmogorov2D(16, dealias="three_halves", closure=Smagorinsky(0.2), dt=0.05, **settings)
    # the default step keeps the DNS's Courant number per largest kept wavenumber (3/2 as high)
    default = ClassicalSolver(1, 1, 16, 0.3, mean=[0.0], std=[1.0], **settings)
    assert default.solver.dt == pytest.approx(2 / 3 * Kolmogorov2D(16).dt)
    with torch.no_grad():
        # the model maps normalised fields (w / std) to normalised fields
        assert torch.allclose(2 * les.double()(w[:, None] / 2)[:, 0], plain.advance(w, 0.3), atol=1e-12)
        restart = ClassicalSolver(1, 1, 16, 0.3, mean=[0.0], std=[1.0], resolution=64, dealias="two_thirds",
                                  **settings).double()(w[:, None])[:, 0]
    dns = Kolmogorov2D(64, dealias="two_thirds", **settings)
    assert torch.allclose(restart, spectral_filter(dns.advance(spectral_interpolate(w, 64), 0.3), 16),
                          atol=1e-12)
    assert make_closure("leith", 0.3) == Leith(0.3)


@pytest.mark.parametrize(("closure", "c", "message"), [("none", 0.1, "coefficient of a closure"),
                                                        ("smagorinsky", None, "needs its coefficient"),
                                                        ("dynamic", 0.1, "must be 'none' or one of")])
def test_closure_choices_are_checked(closure, c, message):
    with pytest.raises(ValueError, match=message):
        make_closure(closure, c)


def test_resolution_below_the_data_grid_is_rejected():
    with pytest.raises(ValueError, match="resolution must be an even integer >= the data's n=16"):
        single_mode_model(8)


def test_two_grid_spin_up_interpolates_to_the_dns_and_times_only_the_fine_solver():
    settings = dict(n_trajectories=2, n_snapshots=2, snapshot_dt=0.1, spinup_time=0.3, n_dns=32, n_les=16,
                    progress=False)
    data = generate_kolmogorov(spinup_n_dns=16, spinup_fine_time=0.1, **settings)
    # the same thing by hand: 0.2 on the 16² grid, interpolated, 0.1 on the 32² grid
    w = random_initial_vorticity(2, 16, torch.Generator().manual_seed(0))
    w = Kolmogorov2D(16).advance(Kolmogorov2D(16).advance(w, 0.1), 0.1)
    w = Kolmogorov2D(32).advance(spectral_interpolate(w, 32), 0.1)
    assert torch.allclose(data.vorticity[:, 0], spectral_filter(w, 16), atol=1e-5)
    assert data.attrs["spinup_n_dns"] == 16 and data.attrs["spinup_fine_time"] == 0.1
    with pytest.raises(ValueError, match="spinup_n_dns must be an even integer below n_dns=32"):
        generate_kolmogorov(spinup_n_dns=48, **settings)
    with pytest.raises(ValueError, match="spinup_fine_time must be in"):
        generate_kolmogorov(spinup_n_dns=16, spinup_fine_time=1.0, **settings)


class Scale(torch.nn.Module):
    """u -> a u with an identity normaliser: a one-parameter model with closed-form losses."""

    def __init__(self, a: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.normalizer = torch.nn.Identity()
        self.normalizer.normalize = lambda u: u

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.a * u


def test_full_unroll_loss_is_the_mean_of_the_per_step_errors_with_gradient_through_every_step():
    u = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    b = 0.8
    batch = {"state": u, "next": b * u, "future": torch.stack([b * u, b ** 2 * u, b ** 3 * u], dim=1)}
    objective = OneStepObjective(unroll=3, gradient="full")
    model = Scale(0.5)
    loss, _ = objective.loss(model, batch)
    a = 0.5
    closed_form = sum(abs(a ** j - b ** j) / b ** j for j in (1, 2, 3)) / 3   # |a^j u - b^j u| / |b^j u|
    assert float(loss.detach()) == pytest.approx(closed_form, rel=1e-12)
    loss.backward()
    h = 1e-6
    finite_difference = (sum(abs((a + h) ** j - b ** j) / b ** j for j in (1, 2, 3))
                         - sum(abs((a - h) ** j - b ** j) / b ** j for j in (1, 2, 3))) / (3 * 2 * h)
    assert float(model.a.grad) == pytest.approx(finite_difference, rel=1e-6)


def test_velocity_loss_weights_each_mode_by_its_inverse_wavenumber_squared():
    """|u_k| = |w_k| / |k|: an error of equal vorticity amplitude costs 16x less at |k| = 4 than
    at |k| = 1 in the velocity norm."""
    target = mode(16, 1, 0)[None, None]
    low_error = target + 0.1 * mode(16, 1, 0, phase=2.0)[None, None]
    high_error = target + 0.1 * mode(16, 4, 0, phase=2.0)[None, None]
    on_vorticity = OneStepObjective()
    on_velocity = OneStepObjective(measure=lambda z: velocity_from_vorticity(z[:, 0]))
    model = torch.nn.Identity()
    model.normalizer = Scale(1.0).normalizer
    losses = {name: [float(objective.loss(model, {"state": state, "next": target})[0])
                     for state in (low_error, high_error)]
              for name, objective in (("vorticity", on_vorticity), ("velocity", on_velocity))}
    assert losses["vorticity"][0] == pytest.approx(losses["vorticity"][1], rel=1e-12)
    assert losses["velocity"][0] == pytest.approx(4 * losses["velocity"][1], rel=1e-12)  # sqrt(16)


def tiny(*extra: str):
    settings = ["data.n_trajectories=4", "data.n_val=1", "data.n_test=1", "data.n_snapshots=12",
                "data.spinup_time=2.0", "data.n_dns=32", "data.n_les=16", "data.spinup_n_dns=null",
                "data.snapshot_dt=0.2", "train.threads=1", "eval.rollout_steps=6", "eval.error_steps=[1,5]",
                "eval.timing_repeats=2", "eval.dns_timing_time=0.05", "eval.timing_batch=2",
                "eval.baselines={}"]
    return load_config(TURBULENCE_YAML, [*settings, *extra])


def test_a_classical_solver_is_evaluated_like_a_trained_model(tmp_path):
    cfg = tiny("model={name: classical_solver, closure: smagorinsky, c: 0.15}", "train.steps=0")
    result = train(cfg, tmp_path / "les", progress=False)
    m = result.metrics
    assert m["one_step_rel_l2"] < m["persistence_rel_l2"]
    assert 0 < m["correlation_time"] and m["seconds_per_time_unit"] > 0
    assert (result.run_dir / "figures" / "decorrelation.png").exists() and result.checkpoint.exists()
    with pytest.raises(ConfigError, match="no trainable parameters.*train.steps=0"):
        train(tiny("model={name: classical_solver}", "train.steps=5"), tmp_path / "steps", progress=False)
    with pytest.raises(ConfigError, match="model.n is set by the turbulence domain"):
        train(tiny("model={name: classical_solver, n: 16}", "train.steps=0"), tmp_path / "n", progress=False)


def test_baselines_are_evaluated_beside_the_model_and_compared(tmp_path, caplog):
    baselines = ("eval.baselines={coarse: {name: classical_solver}, "
                 "smagorinsky: {name: classical_solver, closure: smagorinsky, c: 0.15}}")
    cfg = tiny("model={name: classical_solver, resolution: 32}", "train.steps=0", baselines)
    with caplog.at_level("INFO"):
        result = train(cfg, tmp_path / "compared", progress=False)
    m = result.metrics
    assert m["baseline_coarse_one_step_rel_l2"] > m["one_step_rel_l2"]  # the 2x finer solver is better
    assert m["baseline_smagorinsky_seconds_per_time_unit"] > 0
    assert "comparison on the test split" in caplog.text and "smagorinsky" in caplog.text
    assert (result.run_dir / "figures" / "comparison.png").exists()
    with pytest.raises(ConfigError, match="eval.baselines.bad must be a model mapping"):
        train(tiny("train.steps=0", "model={name: classical_solver}", "eval.baselines={bad: {c: 0.1}}"),
              tmp_path / "bad", progress=False)


def test_input_noise_perturbs_the_state_in_normalised_units_only():
    """With a model u -> 0 the loss is |0 - target| / |target| = 1 whatever the input; with the
    identity model the loss is |noise| / |target|, whose expectation is known in closed form."""
    torch.manual_seed(0)
    target = torch.randn(64, 1, 16, 16, dtype=torch.float64)
    normalizer = torch.nn.Module()
    normalizer.normalize = lambda u: (u - 1.0) / 2.0
    normalizer.denormalize = lambda z: 2.0 * z + 1.0
    model = torch.nn.Identity()
    model.normalizer = normalizer
    noisy = OneStepObjective(noise=0.3)
    loss, _ = noisy.loss(model, {"state": target, "next": target})
    # normalised noise of std 0.3 against normalised targets of rms 1/2 (plus the mean shift -1/2)
    expected = 0.3 * math.sqrt(256) / float(normalizer.normalize(target).flatten(1).norm(dim=1).mean())
    assert float(loss) == pytest.approx(expected, rel=0.05)
    clean, _ = OneStepObjective().loss(model, {"state": target, "next": target})
    assert float(clean) == 0.0
    with pytest.raises(ValueError, match="noise must be >= 0"):
        OneStepObjective(noise=-0.1)
