"""Restoration of turbulence fields with the engine's image techniques (issue 23, item 5).

The fields: filtered 2-D Kolmogorov vorticity at 32² (domains/turbulence.yaml: 192² DNS, forcing
A cos(4y); 7 train / 1 val / 2 test trajectories of 41 snapshots), normalised by the training
std. Sections, each cached under ``--work`` (an interrupted benchmark resumes, a finished row is
read back):

- ``symmetry``: the maps used for augmentation, checked on the 32² pseudo-spectral solver
  (T(S(w)) = S(T(w)) for one time unit; a non-symmetry as a control);
- ``prior``: an unconditional flow (U-Net, width 16, [1, 2, 2]) from N(0, I), trained with
  ``fit_flow`` on the training fields augmented by the flow's symmetries;
- ``steering``: reconstruction of the test fields from 5 % sparse probes and from 8×8 block means
  (``Downsample(4)``), noise-free: FlowChef (gradient-free, 3 iterations per step), DPS-style
  guidance (through the network), the unsteered prior (50 Euler steps each, the same noise) and
  the operator's plain answer (griddata linear / bicubic); step sizes tuned on validation fields,
  each method on the same grid; every test row in its own process (wall-clock, peak memory);
- ``pmrf``: super-resolution 8×8 -> 32² (the LES grid to the filtered DNS): the posterior mean
  (a residual U-Net on the bicubic-lifted observation), PMRF (a flow from the posterior mean
  + 0.1 noise), posterior sampling (a U-Net from noise, conditioned on the lifted observation by
  channel concatenation), 25 Euler steps; the same training set and steps for each network.

Scores on the un-normalised vorticity of the 82 test fields: relative L2 error, spectrum log
error (per field, mean over the shells k = 1..16 of |log10 E_restored(k) / E_truth(k)|, E the
shell kinetic-energy spectrum; then the mean over fields), mean-spectrum log error (the same for
the test-set mean spectra), enstrophy error |<Z_restored> - <Z_truth>| / <Z_truth>, and the
measurement residual |A x_restored - y| / |y|. Writes ``bench/results/restoration_fields.{json,md,png}``
and ``restoration_fields_grid.png`` (test fields restored by each method).

    python bench/restoration_fields.py [--sections symmetry prior steering pmrf] [--threads 1]
    python bench/restoration_fields.py --report      # the tables from the rows measured so far
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from images_common import write_result
from matplotlib.figure import Figure
from peak_memory import in_fresh_process, reset_peak, resident_mib

import flowsci
from flowsci.atomic import atomic_open, atomic_write_text
from flowsci.config import load_config
from flowsci.data.lifecycle import ensure_data
from flowsci.grids import uniform_grid
from flowsci.measurements import Downsample, MeasurementOperator, Probes, random_mask
from flowsci.nn.concat import ConcatConditioned
from flowsci.registry import build_model, create_domain
from flowsci.restoration import PosteriorMean, fit_flow, fit_regression, pmrf_source, restore
from flowsci.steering import dps, flowchef, measurement_cost
from flowsci_domains.turbulence.spectral import Kolmogorov2D
from flowsci_domains.turbulence.statistics import energy_spectrum, enstrophy

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "restoration_fields.json"
SECTIONS = ("symmetry", "prior", "steering", "pmrf")
UNET = {"width": 16, "multipliers": [1, 2, 2], "blocks": 1, "attention": True}
COPIES = 16                 # augmented copies of each training field
PRIOR_STEPS = 1500
RESTORATION_STEPS = 600     # each network of the PMRF section
BATCH, LR = 32, 1e-3
STEER_STEPS, ITERATIONS = 50, 3
PMRF_STEPS, SIGMA_S = 25, 0.1
PROBE_FRACTION = 0.05
FACTOR = 4                  # 32² -> 8×8 block means
# step sizes tried on the validation fields, as fractions of the step that removes the
# measurement residual of x_hat in one gradient step (``unit_step``); the same for both methods
FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
VAL_EVERY = 3               # the step sizes are tuned on every third validation snapshot (14 fields)
EXAMPLES = (5, 30, 60)      # test fields drawn in the grid (the second test trajectory starts at 41)
LABELS = {"baseline": "operator's answer", "prior": "unsteered prior", "dps": "DPS-style guidance",
          "flowchef": "FlowChef", "posterior_mean": "posterior mean", "pmrf": "PMRF",
          "posterior_sampling": "posterior sampling"}


# --- data and its symmetries -------------------------------------------------------------------

def load_fields() -> tuple[dict[str, torch.Tensor], dict]:
    """The snapshots of each split as (N, 1, 32, 32) float32 vorticity (the domain's reader), and
    the data settings of domains/turbulence.yaml."""
    cfg = load_config(REPO / "domains" / "turbulence.yaml")
    domain = create_domain(cfg.domain)
    path = ensure_data(domain, cfg, progress=False)
    fields = {split: domain.trajectories(path, split).flatten(0, 1) for split in ("train", "val", "test")}
    return fields, dict(cfg.data.generator_parameters())


def reflect(w: torch.Tensor, dim: int) -> torch.Tensor:
    """w(..., -x, ...) on the periodic grid: index i -> -i mod n along ``dim``."""
    return torch.roll(torch.flip(w, (dim,)), 1, dim)


def point_maps(half_period: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The reflections that map forced Kolmogorov flow (forcing A cos(k_f y), y the last axis) to
    itself, on fields (..., n, n); ``half_period`` = n / (2 k_f) grid points. Vorticity is a
    pseudo-scalar: a mirror flips its sign and the forcing's, which a shift of y by half the
    forcing period flips back; the rotation by pi needs no shift."""
    return {"identity": lambda w: w,
            "rotation by pi": lambda w: reflect(reflect(w, -1), -2),
            "x mirror, -w, y shifted": lambda w: -torch.roll(reflect(w, -2), -half_period, -1),
            "y mirror, -w, y shifted": lambda w: -torch.roll(reflect(w, -1), -half_period, -1)}


def augment(fields: torch.Tensor, copies: int, forcing_wavenumber: int, seed: int) -> torch.Tensor:
    """``copies`` random images of each field (N, 1, n, n) under the symmetries of the flow: a
    periodic shift in x by any number of points, in y by a multiple of the forcing period n / k_f,
    and one of :func:`point_maps` -> (N * copies, 1, n, n), copies of a field adjacent."""
    n = fields.shape[-1]
    period = n // forcing_wavenumber
    maps = list(point_maps(period // 2).values())
    generator = torch.Generator().manual_seed(seed)
    out = []
    for field in fields:
        shift_x = torch.randint(n, (copies,), generator=generator).tolist()
        shift_y = (period * torch.randint(forcing_wavenumber, (copies,), generator=generator)).tolist()
        which = torch.randint(len(maps), (copies,), generator=generator).tolist()
        out += [torch.roll(maps[m](field), (sx, sy), (-2, -1)) for sx, sy, m in zip(shift_x, shift_y, which)]
    return torch.stack(out)


def section_symmetry(work: Path) -> dict:
    """|T(S(w)) - S(T(w))| / |S(w)| for each map T, S one time unit of the 32² solver (3/2-rule
    dealiasing, float64) from two test fields; a y shift by half the forcing period and the
    x mirror without the sign and shift are controls that must fail."""
    fields, data = load_fields()
    n, k_f = fields["test"].shape[-1], data["forcing_wavenumber"]
    solver = Kolmogorov2D(n=n, nu=data["nu"], drag=data["drag"], forcing_amplitude=data["forcing_amplitude"],
                          forcing_wavenumber=k_f, dt=0.02, dealias="three_halves")
    w = fields["test"][:2, 0].double()
    half = n // (2 * k_f)
    maps = {name: f for name, f in point_maps(half).items() if name != "identity"}
    maps["y shift by the forcing period"] = lambda v: torch.roll(v, 2 * half, -1)
    controls = {"y shift by half the forcing period": lambda v: torch.roll(v, half, -1),
                "x mirror alone": lambda v: reflect(v, -2)}
    stepped = solver.advance(w, 1.0)

    def error(f: Callable[[torch.Tensor], torch.Tensor]) -> float:
        return float((f(stepped) - solver.advance(f(w), 1.0)).norm() / stepped.norm())

    return {"symmetries": {name: error(f) for name, f in maps.items()},
            "controls": {name: error(f) for name, f in controls.items()}}


# --- the prior ---------------------------------------------------------------------------------

def normal_sources(shape: tuple[int, ...]) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Training sources x0 ~ N(0, I) of ``shape`` per row."""
    return lambda rows, generator: torch.randn(len(rows), *shape, generator=generator)


def training_set(fields: dict[str, torch.Tensor], data: dict) -> tuple[torch.Tensor, float]:
    """The augmented, normalised training fields (287 * COPIES, 1, 32, 32) and the scale (the
    training std of the vorticity) they were divided by."""
    scale = float(fields["train"].std())
    return augment(fields["train"] / scale, COPIES, data["forcing_wavenumber"], seed=0), scale


def unet() -> torch.nn.Module:
    """The U-Net of every row: one channel in and out, zero-initialised output."""
    return build_model("unet", {"channels": 1, **UNET})


def section_prior(work: Path) -> dict:
    fields, data = load_fields()
    targets, scale = training_set(fields, data)
    started = time.perf_counter()
    prior = fit_flow(unet(), normal_sources(tuple(targets.shape[1:])), targets, steps=PRIOR_STEPS,
                     batch_size=BATCH, lr=LR, seed=0, progress=False)
    seconds = time.perf_counter() - started
    with atomic_open(work / "prior.pt", "wb") as fh:
        torch.save(prior.state_dict(), fh)
    print(f"prior: {PRIOR_STEPS} steps in {seconds:.0f} s", flush=True)
    return {"steps": PRIOR_STEPS, "batch_size": BATCH, "lr": LR, "train_fields": len(targets),
            "scale": scale, "train_seconds": seconds,
            "parameters": sum(p.numel() for p in prior.parameters())}


def load_prior(work: Path) -> torch.nn.Module:
    """The trained prior, frozen (steering differentiates the state only)."""
    prior = unet()
    prior.load_state_dict(torch.load(work / "prior.pt", weights_only=True))
    return prior.eval().requires_grad_(False)


# --- scores ------------------------------------------------------------------------------------

def spectra(w: torch.Tensor) -> torch.Tensor:
    """Shell energy spectra E(k), k = 1..n/2, of fields (N, 1, n, n) -> (N, n/2), float64."""
    return energy_spectrum(w[:, 0].double())[1]


def log_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|log10 a - log10 b| of positive spectra (a zero shell of ``a`` counts as 1e-30)."""
    return (a.clamp_min(1e-30).log10() - b.log10()).abs()


def scores(restored: torch.Tensor, truth: torch.Tensor, op: MeasurementOperator) -> dict:
    """The physics scores (see the module's docstring) of ``restored`` against ``truth``
    (N, 1, n, n), un-normalised vorticity; y = op(truth) (noise-free measurements)."""
    error = (restored - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)
    energy, energy_truth = spectra(restored), spectra(truth)
    z, z_truth = enstrophy(restored[:, 0].double()).mean(), enstrophy(truth[:, 0].double()).mean()
    y = op(truth)
    residual = (op(restored) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    return {"rel_l2": float(error.mean()),
            "spectrum_log_error": float(log_error(energy, energy_truth).mean()),
            "mean_spectrum_log_error": float(log_error(energy.mean(0), energy_truth.mean(0)).mean()),
            "enstrophy_error": float((z - z_truth).abs() / z_truth),
            "measurement_residual": float(residual.mean()),
            "mean_spectrum": energy.mean(0).tolist()}


def examples(w: torch.Tensor) -> list:
    """The test fields of EXAMPLES as nested lists (3, n, n), for the grid figure."""
    return w[list(EXAMPLES), 0].round(decimals=3).tolist()


# --- steering: FlowChef, DPS, the prior and the operators' answers ------------------------------

def operators(shape: tuple[int, ...]) -> dict[str, MeasurementOperator]:
    """task -> operator on normalised fields of ``shape`` (1, n, n): a fixed random 5 % of the
    points, or the FACTOR × FACTOR block means."""
    mask = random_mask(shape, PROBE_FRACTION, generator=torch.Generator().manual_seed(7))
    return {"probes": Probes.from_mask(mask), "coarse": Downsample(FACTOR)}


def plain_answer(op: MeasurementOperator, y: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The operator's reconstruction without a prior: griddata linear interpolation of the probes
    (nearest outside their hull, no periodic wrap), bicubic upsampling of the block means."""
    if isinstance(op, Probes):
        return Probes(op.indices, shape[1:]).baseline(y, method="linear").unsqueeze(1)
    return op.baseline(y)


def unit_step(op: MeasurementOperator, shape: tuple[int, ...]) -> float:
    """The step size s with which one gradient step of ``measurement_cost`` (the mean over M
    entries), x <- x - (2 s / M) A^T (A x - y), removes the residual when A A^T = lambda I:
    s = M / (2 lambda); lambda = 1 for probes, 1 / FACTOR² for block means."""
    ones = op(torch.ones(1, *shape))
    eigenvalue = float(op(op.adjoint(ones)).mean())
    return ones[0].numel() / (2 * eigenvalue)


def steer(task: str, method: str, fraction: float | None, split: str, work: str) -> dict:
    """One reconstruction in this process: ``method`` (baseline | prior | dps | flowchef) on the
    ``split``'s fields (validation: every VAL_EVERY-th snapshot), with the step size ``fraction`` *
    :func:`unit_step`. Returns the restored vorticity (N, 1, n, n), the seconds and the peak
    resident memory above the loaded model and data (MiB)."""
    torch.set_num_threads(1)
    fields, _ = load_fields()
    scale = json.loads((Path(work) / "prior.json").read_text())["scale"]
    x1 = fields[split][::VAL_EVERY if split == "val" else 1] / scale
    shape = tuple(x1.shape[1:])
    op = operators(shape)[task]
    y = op(x1)
    prior = load_prior(Path(work))
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1))
    times = uniform_grid(STEER_STEPS)
    step = None if fraction is None else fraction * unit_step(op, shape)
    reset_peak()
    before = resident_mib("VmRSS")
    started = time.perf_counter()
    if method == "baseline":
        restored = plain_answer(op, y, shape)
    elif method == "prior":
        restored = restore(prior, x0, STEER_STEPS)
    elif method == "flowchef":
        restored = flowchef(prior, x0, times, measurement_cost(op, y), step_size=step,
                            iterations=ITERATIONS).x
    else:
        restored = dps(prior, x0, times, measurement_cost(op, y), step_size=step).x
    seconds = time.perf_counter() - started
    peak = resident_mib("VmHWM") - before
    return {"restored": restored.detach() * scale, "seconds": seconds, "peak_mib": peak, "step_size": step}


def cached(record: Path, compute: Callable[..., dict], *args) -> dict:
    """The JSON ``record``, written first as ``compute(*args)`` if missing."""
    if not record.is_file():
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(compute(*args)) + "\n")
    return json.loads(record.read_text())


def truth_record(work: Path, task: str) -> dict:
    """The test fields' examples, their observation drawn on the full grid and mean spectrum."""
    return cached(work / task / "truth.json", observe_truth, task)


def observe_truth(task: str) -> dict:
    fields, _ = load_fields()
    truth = fields["test"]
    op = operators(tuple(truth.shape[1:]))[task]
    if isinstance(op, Probes):  # the probe values, NaN elsewhere
        observed = torch.full_like(truth, math.nan).flatten(1)
        observed[:, op.indices] = op(truth)
        observed = observed.reshape(truth.shape)
    else:                       # the block means, each on its block
        observed = op.adjoint(op(truth)) * FACTOR**2
    return {"n_fields": len(truth), "measurements": int(op(truth[:1]).numel()), "truth": examples(truth),
            "observed": examples(observed), "mean_spectrum": spectra(truth).mean(0).tolist()}


def tune(task: str, work: Path) -> dict:
    """The validation relative L2 error of each step fraction (None: diverged), for DPS and
    FlowChef."""
    val = load_fields()[0]["val"][::VAL_EVERY]
    op = operators(tuple(val.shape[1:]))[task]
    tried: dict = {}
    for method in ("dps", "flowchef"):
        errors = {str(f): scores(steer(task, method, f, "val", str(work))["restored"], val, op)["rel_l2"]
                  for f in FRACTIONS}
        tried[method] = {f: e if math.isfinite(e) else None for f, e in errors.items()}
    return tried


def best_fraction(tried: dict[str, float | None]) -> float:
    """The step fraction with the least validation error."""
    finite = {f: e for f, e in tried.items() if e is not None and math.isfinite(e)}
    return float(min(finite, key=finite.get))


def measure_steering(task: str, method: str, fraction: float | None, work: Path) -> dict:
    """A test row of the steering section, run in its own process."""
    truth = load_fields()[0]["test"]
    op = operators(tuple(truth.shape[1:]))[task]
    out = in_fresh_process(steer, task, method, fraction, "test", str(work))
    return {"fraction": fraction, "step_size": out["step_size"], "seconds": out["seconds"],
            "peak_mib": out["peak_mib"], **scores(out["restored"], truth, op),
            "examples": examples(out["restored"])}


def section_steering(work: Path) -> None:
    for task in ("probes", "coarse"):
        truth_record(work, task)
        tuning = cached(work / task / "tuning.json", tune, task, work)
        for method in ("baseline", "prior", "dps", "flowchef"):
            fraction = best_fraction(tuning[method]) if method in tuning else None
            row = cached(work / task / f"{method}.json", measure_steering, task, method, fraction, work)
            print(f"{task} {method}: fraction {fraction} rel L2 {row['rel_l2']:.3f} spectrum log error "
                  f"{row['spectrum_log_error']:.3f} {row['seconds']:.1f} s {row['peak_mib']:.0f} MiB",
                  flush=True)


# --- PMRF super-resolution -----------------------------------------------------------------------

def trained(path: Path, model: torch.nn.Module, fit: Callable[[torch.nn.Module], torch.nn.Module]
            ) -> tuple[torch.nn.Module, float]:
    """``fit(model)`` (the trained module), its weights cached at ``path`` and its training
    seconds beside them; read back when present."""
    seconds_file = path.with_suffix(".json")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        model = fit(model)
        atomic_write_text(seconds_file, json.dumps({"train_seconds": time.perf_counter() - started}) + "\n")
        with atomic_open(path, "wb") as fh:
            torch.save(model.state_dict(), fh)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval(), json.loads(seconds_file.read_text())["train_seconds"]


def batched(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([f(chunk) for chunk in x.split(size)])


def section_pmrf(work: Path) -> None:
    fields, data = load_fields()
    targets, scale = training_set(fields, data)
    truth = fields["test"]
    op = Downsample(FACTOR)
    truth_record(work, "coarse")
    lifted_train, lifted_test = op.baseline(op(targets)), op.baseline(op(truth / scale))
    folder, models = work / "coarse", work / "coarse" / "models"
    common = {"steps": RESTORATION_STEPS, "batch_size": BATCH, "lr": LR, "seed": 0, "progress": False}

    def fit_mean(model: torch.nn.Module) -> torch.nn.Module:
        fit_regression(model, lifted_train, targets, **common)
        return model

    mean_net, mean_seconds = trained(models / "posterior_mean.pt", PosteriorMean(unet()), fit_mean)
    estimates = batched(mean_net, lifted_train)
    shape = tuple(targets.shape[1:])
    flows = {
        "pmrf": (unet, pmrf_source(estimates, SIGMA_S), {}),
        "posterior_sampling": (lambda: ConcatConditioned({"name": "unet", "params": UNET},
                                                         observation_channels=1),
                               normal_sources(shape), {"observation": lifted_train}),
    }

    def measure(name: str) -> dict:
        """The test row of ``name``; seconds: the restoration of the test fields."""
        generator = torch.Generator().manual_seed(5)
        if name == "posterior_mean":
            started = time.perf_counter()
            restored, train_seconds = batched(mean_net, lifted_test), mean_seconds
        else:
            make, sources, conditions = flows[name]
            flow, train_seconds = trained(models / f"{name}.pt", make(), lambda m: fit_flow(
                m, sources, targets, conditions=conditions, **common))
            started = time.perf_counter()
            if name == "pmrf":
                start = batched(mean_net, lifted_test)
                x0 = start + SIGMA_S * torch.randn(start.shape, generator=generator)
                restored = restore(flow, x0, PMRF_STEPS)
            else:
                x0 = torch.randn(lifted_test.shape, generator=generator)
                restored = restore(flow, x0, PMRF_STEPS, observation=lifted_test)
        seconds = time.perf_counter() - started
        restored = restored * scale
        return {"train_seconds": train_seconds, "seconds": seconds, **scores(restored, truth, op),
                "examples": examples(restored)}

    for name in ("posterior_mean", "pmrf", "posterior_sampling"):
        row = cached(folder / f"{name}.json", measure, name)
        print(f"coarse {name}: rel L2 {row['rel_l2']:.3f} spectrum log error {row['spectrum_log_error']:.3f} "
              f"(trained {row['train_seconds']:.0f} s)", flush=True)


# --- report --------------------------------------------------------------------------------------

ROW_ORDER = ("baseline", "prior", "dps", "flowchef", "posterior_mean", "pmrf", "posterior_sampling")
TITLES = {"probes": "sparse probes (5 % of the points, fixed)", "coarse": "8×8 block means -> 32²"}


def collect(work: Path) -> dict:
    """The records under ``work``: the symmetry check, the prior and each task's rows."""
    result: dict = {}
    for name in ("symmetry", "prior"):
        if (work / f"{name}.json").is_file():
            result[name] = json.loads((work / f"{name}.json").read_text())
    result["tasks"] = {}
    for task in ("probes", "coarse"):
        if not (work / task / "truth.json").is_file():
            continue
        entry = {"truth": json.loads((work / task / "truth.json").read_text()), "rows": {}}
        if (work / task / "tuning.json").is_file():
            entry["tuning"] = json.loads((work / task / "tuning.json").read_text())
        for method in ROW_ORDER:
            if (work / task / f"{method}.json").is_file():
                entry["rows"][method] = json.loads((work / task / f"{method}.json").read_text())
        result["tasks"][task] = entry
    return result


def goal(result: dict) -> dict | None:
    """The issue's claim: PMRF beats bicubic and the posterior mean on the spectrum log error."""
    rows = result["tasks"].get("coarse", {}).get("rows", {})
    if not {"baseline", "posterior_mean", "pmrf"} <= set(rows):
        return None
    error = {k: rows[k]["spectrum_log_error"] for k in ("pmrf", "baseline", "posterior_mean")}
    return {"spectrum_log_error": error,
            "holds": error["pmrf"] < min(error["baseline"], error["posterior_mean"])}


def markdown(result: dict) -> str:
    lines = []
    sym = result.get("symmetry")
    if sym:
        lines += ["Augmentation maps checked on the 32² solver: |T(S(w)) - S(T(w))| / |S(w)| after one "
                  "time unit", "", "| map | error |", "|---|---:|"]
        lines += [f"| {name} | {value:.1e} |" for name, value in sym["symmetries"].items()]
        lines += [f"| (control, not a symmetry) {name} | {value:.2f} |"
                  for name, value in sym["controls"].items()]
        lines.append("")
    prior = result.get("prior")
    if prior:
        lines += [f"Prior: U-Net {UNET['width']} {UNET['multipliers']} ({prior['parameters'] / 1000:.0f} k "
                  f"parameters), {prior['steps']} steps of batch {prior['batch_size']} on "
                  f"{prior['train_fields']} augmented fields, {prior['train_seconds']:.0f} s; fields divided "
                  f"by {prior['scale']:.3f}.", ""]
    for task, entry in result["tasks"].items():
        truth = entry["truth"]
        lines += [f"{TITLES[task]}: {truth['n_fields']} test fields, {truth['measurements']} noise-free "
                  f"measurements. Spectrum log error: mean over fields and shells k = 1..16 of "
                  "|log10 E(k) / E_truth(k)|; mean-spectrum: the same for the test-set mean spectra. Step: "
                  "fraction of the one-step residual removal (tuned on validation). Seconds: the restoration "
                  "of the 82 fields; peak MiB: its peak resident set above the loaded model and data, each "
                  "steering row in its own process; train s: training of the row's own network.", "",
                  "| method | step | rel. L2 | spectrum log err. | mean-spectrum log err. | enstrophy err. "
                  "| meas. residual | seconds | peak MiB | train s |", "|---|" + "---:|" * 9]
        for method, row in entry["rows"].items():
            step = "–" if row.get("fraction") is None else f"{row['fraction']:g}"
            peak = "–" if "peak_mib" not in row else f"{row['peak_mib']:.0f}"
            train = "–" if "train_seconds" not in row else f"{row['train_seconds']:.0f}"
            lines.append(f"| {LABELS[method]} | {step} | {row['rel_l2']:.3f} | "
                         f"{row['spectrum_log_error']:.3f} | {row['mean_spectrum_log_error']:.3f} | "
                         f"{row['enstrophy_error']:.3f} | {row['measurement_residual']:.3f} | "
                         f"{row['seconds']:.1f} | {peak} | {train} |")
        if "tuning" in entry:
            lines += ["", "Validation relative L2 by step fraction: " + "; ".join(
                f"{LABELS[m]} " + ", ".join(f"{f}: {'diverged' if e is None else f'{e:.3g}'}"
                                            for f, e in tried.items())
                for m, tried in entry["tuning"].items())]
        lines.append("")
    claim = goal(result)
    if claim:
        e = claim["spectrum_log_error"]
        lines += ["Goal \"PMRF super-resolution beats bicubic interpolation and the posterior mean on "
                  f"spectrum error\": {'holds' if claim['holds'] else 'does not hold'} (spectrum log error "
                  f"PMRF {e['pmrf']:.3f}, bicubic {e['baseline']:.3f}, posterior mean "
                  f"{e['posterior_mean']:.3f}).", ""]
    return "\n".join(lines)


def figure(result: dict) -> Figure:
    """The mean spectra of each method against the truth's (one panel per task), and the coarse
    task's relative L2 against spectrum log error."""
    fig = Figure(figsize=(14, 4.2))
    axes = fig.subplots(1, 3)
    for ax, task in zip(axes[:2], ("probes", "coarse")):
        entry = result["tasks"].get(task)
        if not entry:
            continue
        k = np.arange(1, len(entry["truth"]["mean_spectrum"]) + 1)
        ax.plot(k, entry["truth"]["mean_spectrum"], "k-", lw=2.5, label="truth (filtered DNS)")
        for method, row in entry["rows"].items():
            ax.plot(k, row["mean_spectrum"], lw=1.2, label=LABELS[method])
        ax.set(xscale="log", yscale="log", xlabel="k", ylabel="E(k), mean over test fields",
               title=TITLES[task])
        ax.legend(fontsize=7)
    coarse = result["tasks"].get("coarse", {}).get("rows", {})
    for (method, row), marker in zip(coarse.items(), "osD^vP*"):
        axes[2].scatter(row["rel_l2"], row["spectrum_log_error"], marker=marker, label=LABELS[method])
    axes[2].set(xlabel="relative L2 error", ylabel="spectrum log error", yscale="log",
                title="8×8 -> 32²: distortion against spectrum error")
    if coarse:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def grid(result: dict) -> Figure:
    """For each task, one row per example test field: truth, observation, each method."""
    panels = []
    for task, entry in result["tasks"].items():
        columns = [("truth", entry["truth"]["truth"]), ("observed", entry["truth"]["observed"])]
        columns += [(LABELS[m], row["examples"]) for m, row in entry["rows"].items()]
        panels.append((task, columns))
    width = max((len(c) for _, c in panels), default=1)
    height = sum(len(EXAMPLES) for _ in panels) or 1
    fig = Figure(figsize=(1.5 * width, 1.55 * height))
    axes = fig.subplots(height, width, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    r = 0
    for task, columns in panels:
        for i in range(len(EXAMPLES)):
            limit = float(np.abs(np.asarray(columns[0][1][i])).max())
            for c, (name, images) in enumerate(columns):
                ax = axes[r, c]
                ax.imshow(np.asarray(images[i], dtype=float).T, origin="lower", cmap="RdBu_r", vmin=-limit,
                          vmax=limit)
                if i == 0:
                    ax.set_title(f"{task}: {name}" if c == 0 else name, fontsize=7)
            r += 1
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "restoration_fields")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only write the results measured so far")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for section in args.sections:
            started = time.perf_counter()
            run_section = globals()[f"section_{section}"]
            if section in ("symmetry", "prior"):
                cached(args.work / f"{section}.json", run_section, args.work)
            else:
                run_section(args.work)
            print(f"section {section}: {time.perf_counter() - started:.0f} s", flush=True)
    result = {"benchmark": "restoration_fields", "flowsci": flowsci.__version__, "torch": torch.__version__,
              "machine": platform.machine(), "threads": args.threads,
              "settings": {"unet": UNET, "copies": COPIES, "prior_steps": PRIOR_STEPS,
                           "restoration_steps": RESTORATION_STEPS, "batch_size": BATCH, "lr": LR,
                           "steer_steps": STEER_STEPS, "iterations": ITERATIONS, "pmrf_steps": PMRF_STEPS,
                           "sigma_s": SIGMA_S, "probe_fraction": PROBE_FRACTION, "factor": FACTOR,
                           "fractions": FRACTIONS, "val_every": VAL_EVERY,
                           "examples": EXAMPLES},
              **collect(args.work)}
    result["goal"] = goal(result)
    # the example fields stay in the row records under --work; the JSON keeps the numbers
    numbers = json.loads(json.dumps(result))
    for entry in numbers["tasks"].values():
        entry["truth"] = {k: v for k, v in entry["truth"].items() if k not in ("truth", "observed")}
        for row in entry["rows"].values():
            row.pop("examples", None)
    write_result(OUT, numbers, markdown(result), figure(result), extra={"grid": grid(result)})


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
