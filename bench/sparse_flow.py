"""Sparse observations -> continuous fields (Janny et al., ICLR 2024) at CPU scale, with the
flow-matching ensemble beside it.

Runs (or reuses) the sweep of ``domains/sparse_flow.yaml``: three methods × space_sub 0.25 /
0.10 / 0.05 on the same 64² Navier-Stokes data (DINo set-up; 64 training trajectories of 21
frames, every 2nd frame observed), each trained with its default budget on one thread:

- ``observer``: System 1 (recurrent GNN on the Delaunay graph) + System 2 (attention observer);
- ``interpolation``: the System-1 GNN trained autoregressively on the observed nodes, then cubic
  interpolation in space (periodic Clough-Tocher) and linear in time;
- ``flow_ensemble``: a conditional rectified flow on the full field given the masked input, 8
  members, midpoint 4 steps.

All are scored on the same 8 test trajectories (full grid, 21 frames): the four In/Out MSEs,
the anchor forecast error, and for the ensemble CRPS and spread/skill. The goals of issue 25 are
evaluated on these numbers. Writes JSON, Markdown and PNG (errors vs density, ensemble
calibration, the fields of one test trajectory).

    python bench/sparse_flow.py [--workers 2] [--smoke]
    python bench/sparse_flow.py --report bench/results/sparse_flow.json     # rebuild .md and .png
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

import flowsci
from flowsci.checkpoint import load_model
from flowsci.registry import create_domain
from flowsci.runs import open_run
from flowsci.sweep import RESULT, load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "sparse_flow.yaml"
METHODS = ("observer", "interpolation", "flow_ensemble")
SPLITS = (("mse_in_t_in_s", "In-t In-s"), ("mse_in_t_out_s", "In-t Out-s"),
          ("mse_out_t_in_s", "Out-t In-s"), ("mse_out_t_out_s", "Out-t Out-s"))
SMOKE = ["data.n_trajectories=8", "data.n_val=1", "data.n_test=2", "data.n=16", "data.n_frames=7",
         "train.steps=3", "train.batch_size=2", "train.log_every=1", "model.latent=8", "model.gnn_density=1"]


def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, each with its numbers and whether it is met."""
    by = {(r["method"], r["space_sub"]): r for r in rows}
    out = []
    observer, interp = by.get(("observer", 0.1)), by.get(("interpolation", 0.1))
    if observer and interp:
        out.append({"goal": "observer: every Out MSE within 2x its In-t In-s MSE (space_sub 0.10)",
                    "value": observer["worst_out_ratio"], "met": observer["worst_out_ratio"] <= 2.0})
        out.append({"goal": "interpolation: Out-s MSE >= 2x its In-s MSE at observed times (space_sub 0.10)",
                    "value": interp["ratio_in_t_out_s"], "met": interp["ratio_in_t_out_s"] >= 2.0})
    for s in sorted({r["space_sub"] for r in rows}, reverse=True):
        o, i = by.get(("observer", s)), by.get(("interpolation", s))
        if o and i:
            ratios = [o[key] / i[key] for key, _ in SPLITS[1:]]
            out.append({"goal": f"observer beats interpolation on all three Out MSEs (space_sub {s:g}); "
                                "value: worst observer/interpolation ratio", "value": max(ratios),
                        "met": max(ratios) < 1.0})
    ensemble = by.get(("flow_ensemble", 0.1))
    if ensemble and observer:
        out.append({"goal": "ensemble spread/skill within 0.7-1.3 (space_sub 0.10)",
                    "value": ensemble["spread_skill"], "met": 0.7 <= ensemble["spread_skill"] <= 1.3})
        ratio = ensemble["rel_l2"] / observer["rel_l2"]
        out.append({"goal": "ensemble mean rel-L2 <= 1.2x the observer's (space_sub 0.10)",
                    "value": ratio, "met": ratio <= 1.2})
    if observer:
        out.append({"goal": "observer default config trains in <= 15 min on one core (seconds)",
                    "value": observer["train_seconds"], "met": observer["train_seconds"] <= 900})
    return out


def field_figure(sweep_dir: Path, names: dict[str, str], frames: list[int]) -> Figure:
    """Truth, the three methods' fields and the ensemble spread for the first test trajectory."""
    panels, truth, obs = {}, None, None
    for method, name in names.items():
        run = open_run(sweep_dir / "runs" / name)
        cfg = run.load_config(["eval.n_trajectories=1", "eval.members=8"])
        domain = create_domain(cfg.domain)
        evaluation = domain.evaluate(load_model(run.path, ema=True), domain.build_data(cfg), cfg)
        truth = evaluation.artifacts["truth"][0]
        n = math.isqrt(truth.shape[-1])
        obs = domain.observation(cfg, n, truth.shape[0])
        panels[method] = evaluation.artifacts["fields"][0].view(-1, n, n)
        if "spread" in evaluation.artifacts:
            panels["ensemble std"] = evaluation.artifacts["spread"][0].view(-1, n, n)
    truth = truth.view(-1, n, n)
    rows = [("truth", truth)] + list(panels.items())
    limit = float(truth.abs().quantile(0.995))
    fig = Figure(figsize=(2.4 * len(frames) + 1, 2.3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(frames), squeeze=False)
    observed = set(obs.frames.tolist())
    for r, (label, values) in enumerate(rows):
        spread = label == "ensemble std"
        for c, frame in enumerate(frames):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            image = ax.imshow(values[frame].T.numpy(), origin="lower", extent=(0, 1, 0, 1),
                              cmap="magma" if spread else "RdBu_r", vmin=0 if spread else -limit,
                              vmax=limit / 4 if spread else limit)
            if r == 0 and frame in observed:
                points = obs.positions.numpy() + 0.5 / n  # pixel centres
                ax.scatter(points[:, 0], points[:, 1], s=1, c="k", linewidths=0)
            ax.set_title(f"{label}, frame {frame}" + ("" if frame in observed else " (unobs.)"), fontsize=7)
        fig.colorbar(image, ax=axes[r].tolist(), shrink=0.8)
    return fig


def report(results: dict, out: Path) -> None:
    """Markdown tables and the error / calibration plots."""
    rows = results["rows"]
    subs = sorted({r["space_sub"] for r in rows}, reverse=True)
    by = {(r["method"], r["space_sub"]): r for r in rows}
    lines = [f"Command: `{results['command']}` ({results['minutes']:.0f} min, {results['workers']} runs in "
             f"parallel, 1 thread each). MSE of vorticity (field variance {results['field_variance']:.3f}) "
             f"on {results['test_trajectories']} test trajectories x {results['n_frames']} frames x "
             f"{results['n']}².", "",
             "| space_sub | method | " + " | ".join(t for _, t in SPLITS)
             + " | forecast MSE | worst Out/In | CRPS | spread/skill | train s |",
             "|---|---|" + "---|" * (len(SPLITS) + 5)]
    for s in subs:
        for m in METHODS:
            r = by.get((m, s))
            if r is None:
                continue
            cells = [f"{r[k]:.2e}" for k, _ in SPLITS]
            extra = [f"{r.get('forecast_mse', math.nan):.2e}", f"{r.get('worst_out_ratio', math.nan):.2f}",
                     f"{r.get('crps', math.nan):.3f}", f"{r.get('spread_skill', math.nan):.2f}",
                     f"{r['train_seconds']:.0f}"]
            lines.append(f"| {s:g} | {m} | " + " | ".join(cells + extra).replace("nan", "—") + " |")
    lines += ["", "Interpolating the *true* observations (a perfect forecast) gives Out MSEs "
              + ", ".join(f"{s:g}: {by[('observer', s)]['truth_interp_mse_in_t_out_s']:.1e} (Out-s) / "
                          f"{by[('observer', s)]['truth_interp_mse_out_t_out_s']:.1e} (Out-t Out-s)"
                          for s in subs if ("observer", s) in by) + ".", "",
              "| goal | value | met |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['value']:.3g} | {'yes' if g['met'] else '**no**'} |"
              for g in results["goals"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig = Figure(figsize=(16, 3.6), layout="constrained")
    axes = fig.subplots(1, 5)
    for ax, (key, title) in zip(axes, SPLITS, strict=False):
        for m in METHODS:
            points = [(s, by[(m, s)][key]) for s in subs if (m, s) in by]
            ax.plot(*zip(*points, strict=True), "o-", label=m)
        ax.set(xscale="log", yscale="log", xlabel="space_sub", title=f"MSE {title}")
    axes[0].legend(fontsize=7)
    ax = axes[4]
    ensemble = [(s, by[("flow_ensemble", s)]) for s in subs if ("flow_ensemble", s) in by]
    if ensemble:
        xs = [s for s, _ in ensemble]
        ax.plot(xs, [r["spread_skill"] for _, r in ensemble], "o-", label="spread/skill")
        ax.plot(xs, [r["ensemble_std_out_s"] for _, r in ensemble], "s--", label="ensemble std, Out-s")
        ax.plot(xs, [r["ensemble_std_in_s"] for _, r in ensemble], "^--", label="ensemble std, In-s")
        ax.axhspan(0.7, 1.3, color="0.9")
        ax.set(xscale="log", xlabel="space_sub", title="flow ensemble")
        ax.legend(fontsize=7)
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sweep-dir", type=Path, default=REPO / "runs" / "sparse_flow-sweep")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sparse_flow.json")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the script")
    parser.add_argument("--report", type=Path, help="rebuild .md and .png from this JSON")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()), args.report)
        return
    overrides = SMOKE if args.smoke else []
    if args.smoke:
        scratch = Path(tempfile.mkdtemp(prefix="sparse_flow_bench_"))
        args.sweep_dir, args.out = scratch / "sweep", scratch / "sparse_flow.json"
    sweep = load_sweep(YAML, overrides)
    if args.smoke:  # tiny models
        tiny = {"interpolation": {"model": {"name": "sparse_autoregressive", "latent": 8, "gnn_density": 1}},
                "flow_ensemble": {"model": {"name": "concat_conditioned", "backbone": {
                    "name": "unet", "params": {"width": 8, "multipliers": [1, 2], "attention": False}}},
                    "eval.members": 2, "sample.steps": 1}}
        sweep.grid["method"] = [dict(m, **tiny.get(m["name"], {})) for m in sweep.grid["method"]]
    start = time.perf_counter()
    run_sweep(sweep, args.sweep_dir, workers=args.workers)
    rows = [{**json.loads((args.sweep_dir / "runs" / run.name / RESULT).read_text())["metrics"],
             "method": run.values["method"]["name"], "space_sub": float(run.values["domain.space_sub"]),
             "run": run.name} for run in sweep.runs()]
    names = {r["method"]: r["run"] for r in rows if r["space_sub"] == 0.1}
    results = {"command": "python bench/sparse_flow.py" + (" --smoke" if args.smoke else ""),
               "workers": args.workers, "minutes": (time.perf_counter() - start) / 60,
               "test_trajectories": min(8, sweep.base["data"]["n_test"]), "n": sweep.base["data"]["n"],
               "n_frames": sweep.base["data"]["n_frames"], "field_variance": rows[0]["field_variance"],
               "flowsci_version": flowsci.__version__, "torch": torch.__version__,
               "machine": platform.platform(), "rows": rows}
    results["goals"] = goals(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    report(results, args.out)
    field_figure(args.sweep_dir, names, [0, 5, 10, 20] if not args.smoke else [0, 1, 6]).savefig(
        args.out.with_name(args.out.stem + "_fields.png"), dpi=110)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    sys.exit(main())
