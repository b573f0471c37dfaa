"""The solver-in-the-loop hybrid (coarse Kolmogorov2D step plus learned correction): the zero
correction reproduces the plain solver through the domain's normalisation, gradients reach the
correction and pass through the solver, and it trains and reloads through the pipeline."""

from __future__ import annotations

import h5py
import pytest
import torch
from conftest import REPO

from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.errors import ConfigError
from flowsci.plugins import create_domain
from flowsci.training import train
from flowsci_domains.turbulence.hybrid import HybridSolver
from flowsci_domains.turbulence.objectives import relative_l2
from flowsci_domains.turbulence.spectral import Kolmogorov2D, random_initial_vorticity

TURBULENCE_YAML = REPO / "domains" / "turbulence.yaml"
TINY = ["model.name=hybrid_solver", "data.n_trajectories=4", "data.n_val=1", "data.n_test=1",
        "data.n_snapshots=12", "data.spinup_time=2.0", "data.n_dns=32", "data.n_les=16",
        "data.spinup_n_dns=null", "data.snapshot_dt=0.2",
        "model.corrector={name: ifactformer_m, dim: 16, heads: 2, dim_head: 8, n_layer: 2}",
        "model.solver_dt=null", "eval.baselines={}",
        "train.steps=4", "train.batch_size=4", "train.log_every=1", "train.warmup_steps=1",
        "train.checkpoint_every=2", "train.threads=1", "eval.rollout_steps=5", "eval.error_steps=[1,5]",
        "eval.timing_repeats=2", "eval.dns_timing_time=0.05", "eval.timing_batch=2"]


def tiny(*extra: str):
    return load_config(TURBULENCE_YAML, [*TINY, *extra])


def plain_solver(cfg) -> Kolmogorov2D:
    """The coarse solver of the data file's physics, read independently of the domain."""
    with h5py.File(create_domain("turbulence").data_file(cfg)) as f:
        physics = {k: f.attrs[k] for k in ("nu", "drag", "forcing_amplitude", "forcing_wavenumber")}
        n = f["splits/test/t0_fields/vorticity"].shape[-1]
    # the classical solvers' default step under the 3/2 rule: 2/3 of Kolmogorov2D's default
    return Kolmogorov2D(n, dealias="three_halves", dt=(2 / 3) * Kolmogorov2D(n).dt, **physics)


def test_zero_correction_is_the_plain_solver_through_the_domains_normalisation():
    cfg = tiny()
    domain = create_domain("turbulence")
    data = domain.build_data(cfg)
    model = domain.build_model(cfg).eval()
    assert model.normalizer.std.item() != pytest.approx(1.0)  # the normalisation is not trivial
    states = data.test.tensors["trajectory"][0, :6]                          # (6, 1, 16, 16)
    expected = plain_solver(cfg).advance(states[:, 0].double(), cfg.data.snapshot_dt).unsqueeze(1)
    with torch.no_grad():
        exact = model.double()(states.double())
        single = model.float()(states)
    scale = expected.abs().max()
    assert (exact - expected).abs().max() <= 1e-12 * scale
    assert (single.double() - expected).abs().max() <= 1e-5 * scale
    # and the hybrid is not persistence: the solver moved the state
    assert (expected - states.double()).abs().max() > 0.1 * scale


def test_a_zero_correction_split_into_parts_is_the_plain_solver_to_time_stepping_accuracy():
    cfg = tiny("model.corrections=3")
    domain = create_domain("turbulence")
    states = domain.build_data(cfg).test.tensors["trajectory"][0, :4].double()
    model = domain.build_model(cfg).double().eval()
    assert model.operator.snapshot_dt == pytest.approx(cfg.data.snapshot_dt / 3)
    with torch.no_grad():
        parts = model(states)
    # each part of Δ/3 = 0.067 takes two solver steps (default dt 0.065): six equal steps in all
    solver = plain_solver(cfg)
    solver.dt = cfg.data.snapshot_dt / 6
    expected = solver.advance(states[:, 0], cfg.data.snapshot_dt).unsqueeze(1)
    assert (parts - expected).abs().max() <= 1e-12 * expected.abs().max()


def tiny_hybrid() -> HybridSolver:
    """A float64 hybrid on an 8² grid with a non-zero correction."""
    torch.manual_seed(0)
    model = HybridSolver(1, 1, n=8, snapshot_dt=0.3, nu=0.01, drag=0.1, forcing_amplitude=2.0,
                         forcing_wavenumber=2, mean=[0.1], std=[2.0],
                         corrector={"name": "ifactformer_m", "dim": 8, "heads": 2, "dim_head": 4,
                                    "n_layer": 2}).double()
    return model


def test_gradients_reach_the_correction_and_pass_through_the_solver():
    model = tiny_hybrid()
    z = random_initial_vorticity(2, 8, torch.Generator().manual_seed(1), dtype=torch.float64).unsqueeze(1)
    # as initialised only the zeroed output layer sees a gradient; once it is not zero, all do
    model(z).square().sum().backward()
    output_layer = model.corrector.project[-1]
    assert output_layer.weight.grad.abs().sum() > 0
    torch.nn.init.normal_(output_layer.weight, std=0.1)
    model.zero_grad()
    model(z).square().sum().backward()
    for name, p in model.corrector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    # d(output)/d(input) along a random direction: central differences against autograd
    g = torch.Generator().manual_seed(2)
    direction = torch.randn(z.shape, generator=g, dtype=torch.float64)
    probe = torch.randn(z.shape, generator=g, dtype=torch.float64)
    z_in = z.clone().requires_grad_()
    (vjp,) = torch.autograd.grad((model(z_in) * probe).sum(), z_in)
    autograd = (vjp * direction).sum()
    eps = 1e-6
    with torch.no_grad():
        difference = (model(z + eps * direction) - model(z - eps * direction)) / (2 * eps)
    finite = (difference * probe).sum()
    assert float(autograd) == pytest.approx(float(finite), rel=1e-6)
    # the solver alone contributes (not only the correction): its own derivative is non-trivial
    (solver_vjp,) = torch.autograd.grad((model.coarse_step(z_in) * probe).sum(), z_in)
    assert (solver_vjp - probe).abs().max() > 1e-3


def test_hybrid_trains_through_the_pipeline_and_reloads_to_the_same_outputs(tmp_path):
    cfg = tiny("objective.unroll=2")
    result = train(cfg, tmp_path / "hybrid", progress=False)
    assert result.step == 4
    model = load_model(result.run_dir)
    assert model.operator.corrector.project[-1].weight.abs().max() > 0  # the correction was trained
    reference = create_domain("turbulence").build_data(cfg).test.tensors["trajectory"]
    states, targets = reference[:, :-1].flatten(0, 1), reference[:, 1:].flatten(0, 1)
    with torch.no_grad():
        error = relative_l2(model(states), targets).mean()
    assert float(error) == pytest.approx(result.metrics["one_step_rel_l2"], rel=1e-5)
    assert result.metrics["rollout_finite"] == 1.0


def test_the_data_sets_the_solver_arguments():
    domain = create_domain("turbulence")
    with pytest.raises(ConfigError, match="model.nu is set by the turbulence domain"):
        domain.build_model(tiny("model.nu=0.01"))
    with pytest.raises(ConfigError, match="objective.kind=one_step"):
        domain.build_model(tiny("objective.kind=flow_matching"))
    three_d = load_config(REPO / "domains" / "turbulence3d.yaml", ["model={name: hybrid_solver}"])
    with pytest.raises(ConfigError, match="runs the 2-D Kolmogorov solver"):
        create_domain("turbulence3d").build_model(three_d)
    with pytest.raises(ValueError, match="in_channels = out_channels = 1"):
        HybridSolver(2, 2, n=8, snapshot_dt=0.3, nu=0.01, drag=0.1, forcing_amplitude=2.0,
                     forcing_wavenumber=2, mean=[0.0, 0.0], std=[1.0, 1.0])


def test_an_fno_corrector_also_starts_as_the_plain_solver_and_bad_specs_are_rejected():
    settings = dict(n=8, snapshot_dt=0.3, nu=0.01, drag=0.1, forcing_amplitude=2.0, forcing_wavenumber=2,
                    mean=[0.1], std=[2.0], corrections=2)
    model = HybridSolver(1, 1, corrector={"name": "fno", "modes": 3, "width": 4, "n_layers": 1},
                         **settings).double()
    z = random_initial_vorticity(2, 8, torch.Generator().manual_seed(1), dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        expected = model.coarse_step(model.coarse_step(z))
        assert torch.equal(model(z), expected)
    with pytest.raises(ValueError, match="without in_channels"):
        HybridSolver(1, 1, corrector={"name": "fno", "in_channels": 2}, **settings)
    with pytest.raises(ValueError, match="corrections must be an integer >= 1"):
        HybridSolver(1, 1, **{**settings, "corrections": 0})
