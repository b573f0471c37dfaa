"""LPINN vs PINN on periodic convection u_t + β u_x = 0 across β, with DeepXDE's PINN as the peer.

flowsci rows: the failure-mode sweep of ``domains/lpinn.yaml`` (LPINN and Eulerian PINN, both
with the exact periodic embedding and the same budget: Adam then L-BFGS), run or resumed
through ``flowsci.sweep``; finished runs are reused, so ``flowsci sweep domains/lpinn.yaml``
and this script share their runs.

Peer row: DeepXDE's vanilla PINN (pytorch backend) on the same problem with the same optimiser
budget (Adam at ``train.lr`` for ``train.steps``, then L-BFGS for at most ``train.lbfgs.steps``
iterations): tanh 4 × 50, 2560 domain + 256 initial + 256 boundary points, a PeriodicBC on x.
Every model is scored on the same 256 × 100 grid against the same exact solution.

Reported per method, β and seed: rel-L2 after Adam and at the end, L-BFGS iterations, training
wall-clock (scoring excluded) and, for flowsci, the optimiser steps to reach rel-L2 ≤ 1e-2.

    python bench/lpinn.py [--workers 2] [--seeds 0 1] [--betas 1 10 20 30 40 60 80] [--smoke]
    python bench/lpinn.py --report bench/results/lpinn.json     # rebuild .md and .png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import flowsci
from flowsci.sweep import collect, load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from domains.lpinn.evaluation import error_metrics  # noqa: E402
from domains.lpinn.problems import Problem  # noqa: E402
from domains.lpinn.reference import grid, reference_solution  # noqa: E402

YAML = REPO / "domains" / "lpinn.yaml"
PEER = "deepxde-pinn"
SCORES = ("rel_l2", "adam_rel_l2", "lbfgs_iterations", "train_seconds", "steps_to_target")
TABLES = {"rel_l2": ("rel-L2 after Adam + L-BFGS", "{:.2e}"),
          "adam_rel_l2": ("rel-L2 after Adam alone", "{:.2e}"),
          "lbfgs_iterations": ("L-BFGS iterations (budget {lbfgs})", "{:.0f}"),
          "train_seconds": ("training wall-clock, s", "{:.0f}"),
          "steps_to_target": ("optimiser steps to rel-L2 ≤ {target} (— never)", "{:.0f}")}


def deepxde_run(beta: float, seed: int, adam_steps: int, lbfgs_steps: int, lr: float, n_x: int, n_t: int,
                threads: int) -> dict:
    """Train DeepXDE's PINN on u_t + β u_x = 0, u₀ = sin x, periodic; return its row."""
    os.environ["DDE_BACKEND"] = "pytorch"
    torch.set_num_threads(threads)
    import deepxde as dde

    dde.config.set_random_seed(seed)
    domain = dde.geometry.GeometryXTime(dde.geometry.Interval(0.0, 2 * math.pi),
                                        dde.geometry.TimeDomain(0.0, 1.0))

    def residual(xt, u):
        return dde.grad.jacobian(u, xt, i=0, j=1) + beta * dde.grad.jacobian(u, xt, i=0, j=0)

    conditions = [dde.icbc.PeriodicBC(domain, 0, lambda _, on_boundary: on_boundary),
                  dde.icbc.IC(domain, lambda xt: np.sin(xt[:, 0:1]), lambda _, on_initial: on_initial)]
    data = dde.data.TimePDE(domain, residual, conditions, num_domain=2560, num_boundary=256, num_initial=256)
    model = dde.Model(data, dde.nn.FNN([2] + [50] * 4 + [1], "tanh", "Glorot normal"))

    x, t = grid(n_x, n_t)
    points = np.stack(np.meshgrid(x, t, indexing="ij"), axis=-1).reshape(-1, 2)
    reference = reference_solution(Problem("convection", beta=beta), n_x, n_t)

    def score() -> float:
        return error_metrics(model.predict(points).reshape(n_x, n_t), reference)["rel_l2"]

    start = time.perf_counter()
    model.compile("adam", lr=lr, verbose=0)
    model.train(iterations=adam_steps, display_every=adam_steps, verbose=0)
    adam_seconds = time.perf_counter() - start
    adam_rel_l2 = score()
    dde.optimizers.set_LBFGS_options(maxiter=lbfgs_steps)
    # DeepXDE sizes one torch.optim.LBFGS call from maxiter when it is imported, not when the
    # option is set: size it again so that maxiter is the budget.
    options = dde.optimizers.config.LBFGS_options
    options["iter_per_step"] = min(1000, options["maxiter"])
    options["fun_per_step"] = options["maxfun"] * options["iter_per_step"] // options["maxiter"]
    start = time.perf_counter()
    model.compile("L-BFGS", verbose=0)
    model.train(verbose=0)
    lbfgs_seconds = time.perf_counter() - start
    return {"method": PEER, "beta": beta, "seed": seed, "rel_l2": score(), "adam_rel_l2": adam_rel_l2,
            "lbfgs_iterations": float(model.opt.state_dict()["state"][0]["n_iter"]),
            "train_seconds": adam_seconds + lbfgs_seconds, "steps_to_target": math.nan}


def flowsci_rows(betas: list[float], seeds: list[int], overrides: list[str], sweep_dir: Path,
                 workers: int) -> list[dict]:
    """Run (or reuse) the flowsci sweep restricted to ``betas`` × ``seeds``; one row per run."""
    sweep = load_sweep(YAML, overrides)
    sweep.grid["domain.beta"] = betas
    sweep.grid["seed"] = seeds
    runs = sweep.runs()
    run_sweep(sweep, sweep_dir, workers=workers)
    return [{"method": row["method"], "beta": float(row["_values"]["domain.beta"]),
             "seed": int(row["_values"]["seed"]),
             **{k: float(row[k]) for k in SCORES}} for row in collect(sweep, sweep_dir, runs)]


def _cell(values: list[float], fmt: str) -> str:
    return " / ".join("—" if math.isnan(v) else fmt.format(v) for v in values)


def report(results: dict, out: Path) -> None:
    """Markdown tables (one per score; a cell lists the seeds) and error / cost vs β plots."""
    rows, methods = results["rows"], results["methods"]
    betas = sorted({r["beta"] for r in rows})
    budget = results["budget"]
    lines = [f"Command: `{results['command']}`", "",
             f"Budget per run: Adam {budget['adam']} steps (lr {budget['lr']}), then L-BFGS for at most "
             f"{budget['lbfgs']} iterations. Cells list seeds {', '.join(map(str, results['seeds']))}. "
             f"torch threads {results['threads']}, {results['workers']} runs in parallel.", ""]
    for score, (title, fmt) in TABLES.items():
        lines += [f"**{title.format(lbfgs=budget['lbfgs'], target=results['target'])}**", "",
                  "| β | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for beta in betas:
            cells = [_cell([r[score] for r in sorted(rows, key=lambda r: r["seed"])
                            if r["method"] == m and r["beta"] == beta], fmt) for m in methods]
            lines.append(f"| {beta:g} | " + " | ".join(cells) + " |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))

    fig = Figure(figsize=(17, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [("rel-L2 (solid: final, dashed: after Adam)", ("rel_l2", "adam_rel_l2")),
              (f"optimiser steps to rel-L2 ≤ {results['target']} (missing: never)", ("steps_to_target",)),
              ("L-BFGS iterations", ("lbfgs_iterations",)), ("training wall-clock (s)", ("train_seconds",))]
    for ax, (label, scores) in zip(axes, panels):
        for colour, method in enumerate(methods):
            for score, style in zip(scores, ("-", "--")):
                mine = [r for r in rows if r["method"] == method]
                mean = [np.mean([r[score] for r in mine if r["beta"] == b]) for b in betas]
                ax.plot(betas, mean, style, color=f"C{colour}", label=method if style == "-" else None)
                ax.plot([r["beta"] for r in mine], [r[score] for r in mine], "o" if style == "-" else "x",
                        color=f"C{colour}", ms=4, alpha=0.6)
        if scores == ("steps_to_target",):
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale("log")
        ax.set_xlabel("β")
        ax.set_title(label, fontsize=10)
    axes[0].axhline(results["target"], color="gray", lw=0.8, ls=":")
    axes[0].legend(fontsize=8)
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--betas", nargs="+", type=float, default=[1.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--workers", type=int, default=2,
                        help="runs trained in parallel (1 torch thread each)")
    parser.add_argument("--sweep-dir", type=Path, default=REPO / "runs" / "lpinn-sweep",
                        help="the flowsci sweep's directory (shared with `flowsci sweep domains/lpinn.yaml`)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lpinn.json")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the script")
    parser.add_argument("--report", type=Path, help="rebuild .md and .png from this JSON")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()), args.report)
        return
    overrides = []
    if args.smoke:
        overrides = ["train.steps=3", "train.lbfgs.steps=2", "train.eval_every=3", "domain.n_x=32",
                     "domain.n_t=8", "eval.n_x=32", "eval.n_t=8"]
        args.betas, args.seeds = args.betas[:2], args.seeds[:1]
        scratch = Path(tempfile.mkdtemp())
        args.sweep_dir, args.out = scratch / "lpinn-sweep", scratch / "lpinn.json"
    base = load_sweep(YAML, overrides).base
    budget = {"adam": base["train"]["steps"], "lbfgs": base["train"]["lbfgs"]["steps"],
              "lr": base["train"]["lr"]}
    target = float(load_sweep(YAML).target["below"])

    rows = flowsci_rows(args.betas, args.seeds, overrides, args.sweep_dir, args.workers)
    jobs = [(beta, seed) for beta in args.betas for seed in args.seeds]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(deepxde_run, beta, seed, budget["adam"], budget["lbfgs"], budget["lr"],
                               base["eval"]["n_x"], base["eval"]["n_t"], 1) for beta, seed in jobs]
        for future in futures:
            rows.append(future.result())
            print(f"{PEER} β={rows[-1]['beta']:g} seed {rows[-1]['seed']}: rel-L2 {rows[-1]['rel_l2']:.3g} "
                  f"({rows[-1]['lbfgs_iterations']:.0f} L-BFGS iterations)", flush=True)
    methods = sorted({r["method"] for r in rows} - {PEER}) + [PEER]
    results = {"rows": rows, "methods": methods, "seeds": args.seeds, "budget": budget, "target": target,
               "threads": 1, "workers": args.workers, "flowsci": flowsci.__version__,
               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "command": " ".join(["python", "bench/lpinn.py", *sys.argv[1:]])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    report(results, args.out)
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
