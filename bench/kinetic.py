"""Kinetic closures: a-priori errors, cost per closure evaluation, and a-posteriori statistics.

1. A priori (Maddu, Weady & Shelley 2024, at toy scale): ``domains/kinetic.yaml`` trained with
   flowsci's Trainer for d = 2 (eigenframe MLP) and d = 3 (e3nn network); relative Frobenius
   errors of S:E and S:D on the held-out trajectories for the learned, Bingham and quadratic
   closures.
2. Cost: milliseconds per closure call on the 64² grid's worth of points (4096 second moments
   from the test trajectories), learned against the Bingham root-find (2-D: vectorised Newton on
   I₁/I₀; 3-D: Newton on the convex dual with quadrature), one thread, median of repeats.
3. A posteriori (after Maddu, Weady & Shelley 2024): the 2-D active suspension (64², L = 10,
   α = −4, β = 0.8, ζ = 1, d_T = 0.05, d_R = 0.25: a Well (α, ζ) pair, with the d_R of the
   a-priori data so that the closure is used where it was trained) from one seeded
   near-isotropic state, with the Bingham, quadratic, learned (a priori) and learned
   (fine-tuned) closures, 10⁴ steps each (t = 50). The fine-tuning unrolls 10 solver steps from
   states of a Bingham run of another seed (:mod:`a_posteriori`). Statistics over t ∈ [10, 50]
   (the flow saturates by t ≈ 8): mean |u|, order parameter and the time-averaged energy
   spectrum, against the Bingham run.

    python bench/kinetic.py [--smoke]
    python bench/kinetic.py --report bench/results/kinetic.json     # rebuild .md and .png
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import flowsci
from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.plugins import create_domain
from flowsci.training import train
from flowsci_domains.kinetic.a_posteriori import (
    compare_statistics,
    fine_tune,
    simulate,
    unroll_targets,
    unrolled_loss,
    window_statistics,
)
from flowsci_domains.kinetic.a_priori import closure_errors
from flowsci_domains.kinetic.active_suspension import ActiveSuspensionParams
from flowsci_domains.kinetic.closures import make_closure

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "kinetic.yaml"
PARAMS = ActiveSuspensionParams(n=64, alpha=-4.0, zeta=1.0, d_t=0.05, d_r=0.25, dt=5e-3)
TOL = 0.05        # realizability tolerance of every closure in the solver (D's truncated spectrum)
LABELS = {"bingham": "Bingham", "quadratic": "quadratic", "learned": "learned (a priori)",
          "finetuned": "learned (fine-tuned)"}


def a_priori(d: int, out: Path, smoke: bool) -> tuple[dict, torch.nn.Module, dict]:
    """Train the d-dimensional learned closure; return its metrics, the model and the test data."""
    overrides = [f"domain.d={d}", "train.checkpoint_every=0"]
    if d == 3:
        overrides.append("model={name: learned_closure_3d}")
    if smoke:
        overrides += ["data.n_trajectories=6", "data.n_train=4", "data.n_pieces=10", "data.n_modes=16",
                      "train.steps=100", "train.batch_size=64"]
    cfg = load_config(YAML, overrides)
    result = train(cfg, out / f"apriori_d{d}", progress=False)
    test = create_domain("kinetic").build_data(cfg).test.tensors
    return result.metrics, load_model(result.run_dir), test


def cost_per_call(closures: dict, D: torch.Tensor, E: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median milliseconds of closure(D, E) without gradients, per closure."""
    out = {}
    with torch.no_grad():
        for name, closure in closures.items():
            closure(D, E)                                   # warm-up (e3nn / Bessel caches)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                closure(D, E)
                times.append(time.perf_counter() - start)
            out[name] = 1e3 * statistics.median(times)
    return out


def points(test: dict, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (D, E) pairs from the test snapshots (repeated if fewer)."""
    index = torch.arange(count) % len(test["D"])
    return test["D"][index], test["E"][index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kinetic.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, results under a temporary folder")
    parser.add_argument("--report", type=Path, help="rebuild .md and .png from this JSON")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()), args.report)
        return
    out = Path(tempfile.mkdtemp(prefix="bench-kinetic-")) / "kinetic.json" if args.smoke else args.out
    run(out, smoke=args.smoke)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


def run(out: Path, smoke: bool = False, steps: int = 10_000, window: float = 10.0,
        finetune_steps: int = 40) -> dict:
    """The whole benchmark (module docstring); writes ``out`` (JSON), .md and .png and returns the
    results. ``steps`` of every run (dt = 5e-3), statistics over t >= ``window``; ``smoke``: a 16²
    grid and tiny sizes."""
    torch.set_num_threads(1)
    params = PARAMS
    scratch = Path(tempfile.mkdtemp(prefix="bench-kinetic-"))
    if smoke:
        params = dataclasses.replace(PARAMS, n=16)
        steps, window, finetune_steps = 200, 0.5, 3
    results: dict = {"flowsci": flowsci.__version__, "torch": torch.__version__,
                     "machine": platform.processor()
                     or platform.machine(), "threads": 1, "params": dataclasses.asdict(params), "tol": TOL,
                     "steps": steps, "window_start": window}

    print("1. a priori", flush=True)
    learned, tests = {}, {}
    results["a_priori"] = {}
    for d in (2, 3):
        metrics, learned[d], tests[d] = a_priori(d, scratch, smoke)
        results["a_priori"][f"d{d}"] = {
            label: {"SE": metrics[f"test_SE_{label}"], "SD": metrics[f"test_SD_{label}"]}
            for label in ("learned", "bingham", "quadratic")}
        print(f"   d = {d}: {results['a_priori'][f'd{d}']}", flush=True)

    print("2. cost per closure call", flush=True)
    results["cost_ms"] = {}
    for d in (2, 3):
        D, E = points(tests[d], 4096 if d == 2 else 1024)
        closures = {"learned": learned[d], "bingham": make_closure(f"bingham{d}d"),
                    "quadratic": make_closure("quadratic")}
        ms = cost_per_call(closures, D, E, repeats=3 if smoke else 20)
        results["cost_ms"][f"d{d}"] = {"points": len(D), **ms,
                                       "learned_over_bingham": ms["learned"] / ms["bingham"]}
        print(f"   d = {d}: {results['cost_ms'][f'd{d}']}", flush=True)

    print("3. a posteriori", flush=True)
    bingham = make_closure("bingham2d", tol=TOL)
    apriori = learned[2]
    apriori.tol = TOL
    finetuned = copy.deepcopy(apriori)
    targets = unroll_targets(bingham, params, seed=1, n_starts=4 if smoke else 16,
                             start_every=20 if smoke else 100, n_unroll=10, skip=100 if smoke else 1000,
                             progress=True)
    with torch.no_grad():
        before = float(unrolled_loss(finetuned, params, targets))
    start = time.perf_counter()
    losses = fine_tune(finetuned, params, targets, steps=finetune_steps, lr=1e-3, batch_size=2, seed=0,
                       progress=True)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        after = float(unrolled_loss(finetuned, params, targets))
    a_priori_after = closure_errors(finetuned, tests[2])
    results["fine_tuning"] = {"unrolled_loss_before": before, "unrolled_loss_after": after, "losses": losses,
                              "seconds": seconds, "n_starts": len(targets.c), "n_unroll": targets.n_unroll,
                              "a_priori_after": a_priori_after}
    print(f"   unrolled loss {before:.3g} -> {after:.3g} ({seconds:.0f} s); a priori after: {a_priori_after}",
          flush=True)

    closures = {"bingham": bingham, "quadratic": make_closure("quadratic", tol=TOL), "learned": apriori,
                "finetuned": finetuned}
    runs = {}
    for name, closure in closures.items():
        print(f"   {LABELS[name]}: {steps} steps", flush=True)
        runs[name] = simulate(closure, params, seed=0, n_steps=steps, record_every=20, progress=True)
    reference = window_statistics(runs["bingham"], window)
    results["a_posteriori"] = {}
    for name, series in runs.items():
        row = {"steps": series["steps"], "error": series["error"], "seconds": series["seconds"],
               "ms_per_step": 1e3 * series["seconds"] / max(series["steps"], 1)}
        if series["error"] is None:
            stats = window_statistics(series, window)
            row.update(mean_speed=stats["mean_speed"], order_parameter=stats["order_parameter"],
                       spectrum=stats["spectrum"].tolist(),
                       difference=compare_statistics(stats, reference, params.n, params.length))
        row["series"] = {key: series[key].tolist() for key in ("time", "mean_speed", "order_parameter")}
        results["a_posteriori"][name] = row
        print(f"   {LABELS[name]}: {_summary(row)}", flush=True)
    results["wavenumber"] = runs["bingham"]["wavenumber"].tolist()

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    report(results, out)
    return results


def _summary(row: dict) -> str:
    text = f"{row['steps']} steps ({row['ms_per_step']:.1f} ms/step)"
    if row["error"]:
        text += f", stopped: {row['error']}"
    if "difference" in row:
        diff = row["difference"]
        text += (f"; mean |u| {row['mean_speed']:.4f} ({100 * diff['mean_speed']:.1f} %), order "
                 f"{row['order_parameter']:.4f} ({100 * diff['order_parameter']:.1f} %), spectrum ratio ≤ "
                 f"{diff['spectrum']:.2f}")
    return text


def report(results: dict, out: Path) -> None:
    """Write the Markdown tables and the figure next to ``out``."""
    p = results["params"]
    lines = ["# Kinetic closures: a priori, cost, a posteriori", "",
             f"flowsci {results['flowsci']}, torch {results['torch']}, {results['threads']} thread; "
             "`python bench/kinetic.py`.", "",
             "## A priori: relative Frobenius error on the held-out trajectories", "",
             "| d | closure | S:E | S:D |", "|---|---|---|---|"]
    for d, rows in results["a_priori"].items():
        lines += [f"| {d[1]} | {label} | {row['SE']:.4f} | {row['SD']:.4f} |" for label, row in rows.items()]
    lines += ["", "## Cost per closure call (ms, median; no gradients)", "",
              "| d | points | learned | Bingham | quadratic | learned / Bingham |",
              "|---|---|---|---|---|---|"]
    for d, row in results["cost_ms"].items():
        lines.append(f"| {d[1]} | {row['points']} | {row['learned']:.2f} | {row['bingham']:.2f} | "
                     f"{row['quadratic']:.2f} | {row['learned_over_bingham']:.2f} |")
    ft = results["fine_tuning"]
    lines += ["", f"## A posteriori: {p['n']}², L = {p['length']:g}, α = {p['alpha']:g}, β = {p['beta']:g}, "
              f"ζ = {p['zeta']:g}, d_T = {p['d_t']:g}, d_R = {p['d_r']:g}, dt = {p['dt']:g}", "",
              f"Fine-tuning: {len(ft['losses'])} Adam steps on {ft['n_starts']} start states of a Bingham "
              f"run (seed 1), {ft['n_unroll']} unrolled steps each; unrolled loss "
              f"{ft['unrolled_loss_before']:.3g} → {ft['unrolled_loss_after']:.3g} in {ft['seconds']:.0f} s; "
              f"a-priori errors after: S:E {ft['a_priori_after']['SE']:.4f}, "
              f"S:D {ft['a_priori_after']['SD']:.4f}.", "",
              f"Statistics over t ∈ [{results['window_start']:g}, {results['steps'] * p['dt']:g}] (seed 0), "
              "differences relative to the Bingham run; spectrum: max ratio over 0 < k < k_max/3.", "",
              "| closure | steps run | ms/step | mean abs(u) | Δ | order parameter | Δ | "
              "spectrum ratio | stopped |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["a_posteriori"].items():
        if "difference" in row:
            diff = row["difference"]
            cells = (f"{row['mean_speed']:.4f} | {100 * diff['mean_speed']:.1f} % | "
                     f"{row['order_parameter']:.4f} | {100 * diff['order_parameter']:.1f} % | "
                     f"{diff['spectrum']:.2f}")
        else:
            cells = "— | — | — | — | —"
        stopped = (row["error"] or "").replace("|", "/")[:80] or "no"
        lines.append(f"| {LABELS[name]} | {row['steps']} | {row['ms_per_step']:.1f} | {cells} | {stopped} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig = Figure(figsize=(15, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    k = np.asarray(results["wavenumber"])
    band = (k > 0) & (k < np.pi * p["n"] / p["length"] / 3)
    for index, (name, row) in enumerate(results["a_posteriori"].items()):
        series = row["series"]
        axes[0].plot(series["time"], series["mean_speed"], color=f"C{index}", lw=1, label=LABELS[name])
        axes[1].plot(series["time"], series["order_parameter"], color=f"C{index}", lw=1, label=LABELS[name])
        if "spectrum" in row:
            axes[2].loglog(k[band], np.asarray(row["spectrum"])[band], color=f"C{index}", marker=".",
                           label=LABELS[name])
    for ax in axes[:2]:
        ax.axvline(results["window_start"], color="0.6", ls=":")
    axes[0].set(xlabel="t", ylabel="mean |u|", title="flow speed")
    axes[1].set(xlabel="t", ylabel="⟨λ₁ − λ₂⟩/c", title="order parameter")
    axes[2].set(xlabel="k", ylabel="E(k)", title="time-averaged energy spectrum, k < k_max/3")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
