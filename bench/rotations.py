"""The SO(3) density benchmark (FoldFlow's mixture of IGSO(3) blobs) and the backbone speed-up.

Part 1 (default): one flowsci pipeline, trained per configuration on the same data with the
same budget, then sampled at NFE 1 ... 200 with the exponential-map Euler and midpoint methods:

- ``qflow``: unit-quaternion state, geodesic path, independent coupling (ReQFlow's base model);
- ``qflow-ot``: the same with minibatch OT on the squared rotation angle (FoldFlow-OT);
- ``matrix-ot``: ``qflow-ot`` with rotation matrices as the state;
- ``reqflow``: ``qflow`` rectified: reflow on its own samples (generated with
  ``--teacher-steps`` midpoint steps), filtered by the mixture density (the filter hook), then
  fine-tuned from the teacher with the paired coupling.

Each cell is the geodesic W2 (exact OT on the relative-rotation angle, in radians, W2 not W2^2)
between ``--n`` generated and ``--n`` test rotations, with the wall-clock seconds per 1000
samples; the floor (test vs validation) and the ceiling (test vs Haar) are on the same table.

Part 2 (``--backbones``): the backbones domain on the MDAnalysisTests proteins: the flow
sampled with 500 Euler steps (FrameFlow style) vs its rectified version with 50, geometry
(CA-CA validity, clashes, local-distance W1) and seconds per structure.

    python bench/rotations.py [--steps 4000] [--n 2000] [--out bench/results] [--smoke]
    python bench/rotations.py --backbones [--backbone-steps 3000]
    python bench/rotations.py --report bench/results/rotations.json   # rebuild .md and .png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

import flowsci
from flowsci.checkpoint import load_model
from flowsci.config import config_from_dict, load_config
from flowsci.flow_matching import Sampler
from flowsci.plugins import create_domain
from flowsci.reflow import generate_pairs
from flowsci.solvers import Euler, Midpoint
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
SO3_YAML = REPO / "domains" / "rotations.yaml"
BACKBONES_YAML = REPO / "domains" / "backbones.yaml"
EULER_STEPS = (1, 2, 4, 10, 20, 50, 100, 200)
MIDPOINT_STEPS = (1, 2, 5, 10, 25, 50, 100)
CONFIGS = {
    "qflow": ["objective.coupling=independent"],
    "qflow-ot": [],
    "matrix-ot": ["domain.chart=matrix"],
}


def common(args: argparse.Namespace) -> list[str]:
    base = [f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", "train.eval_every=0",
            f"eval.n_samples={args.n}", "train.log_every=100"]
    if args.smoke:
        base += ["data.n_train=4000", "data.n_val=400", "data.n_test=400", "model.width=64", "model.depth=2"]
    return base


def nfe_table(domain, cfg, model, data) -> dict[str, dict[int, dict[str, float]]]:
    """{solver: {nfe: {"w2", "w2_std", "seconds_per_1000"}}}: W2 averaged over the domain's
    ``eval.repeats`` fixed Haar draws, each against its own window of the test set."""
    space, tests, x0s = domain.space(cfg), domain.references(data, cfg), domain.base_draws(cfg)
    table: dict[str, dict[int, dict[str, float]]] = {}
    for solver, steps_list in ((Euler(), EULER_STEPS), (Midpoint(), MIDPOINT_STEPS)):
        sampler = Sampler(solver, space=space)
        rows = {}
        for steps in steps_list:
            with torch.no_grad():
                start = time.perf_counter()
                outs = [sampler.sample(model, x0, steps=steps) for x0 in x0s]
                seconds = time.perf_counter() - start
            w2, std = domain.w2([o.x for o in outs], tests, cfg)
            rows[outs[0].nfe] = {"w2": w2, "w2_std": std,
                                 "seconds_per_1000": 1000 * seconds / sum(len(x0) for x0 in x0s)}
        table[type(solver).__name__.lower()] = rows
    return table


def run_so3(args: argparse.Namespace) -> dict:
    domain = create_domain("rotations")
    results: dict = {"configs": {}}
    runs: dict[str, Path] = {}
    for label, extra in CONFIGS.items():
        cfg = load_config(SO3_YAML, [*common(args), *extra])
        result = train(cfg, args.runs / label, progress=True)
        runs[label] = result.run_dir
        data = domain.build_data(cfg)
        results["configs"][label] = {"overrides": extra,
                                     "seconds_per_step": _seconds_per_step(result.run_dir),
                                     "table": nfe_table(domain, cfg, load_model(result.run_dir), data)}
        print(label, _summary(results["configs"][label]["table"]))
    # reflow of qflow on its own filtered samples
    cfg = load_config(SO3_YAML, common(args))
    data = domain.build_data(cfg)
    teacher = load_model(runs["qflow"])
    pairs = args.runs / "reqflow-pairs.h5"
    sampler = Sampler(Midpoint(), steps=args.teacher_steps, space=domain.space(cfg))
    start = time.perf_counter()
    generate_pairs(teacher, domain.source(cfg), args.pairs, pairs, sampler=sampler, batch_size=2000,
                   seed=cfg.seed, accept=domain.reflow_filter(cfg, data), progress=True)
    pair_seconds = time.perf_counter() - start
    extra = [f"data.pairs={pairs}", "objective.coupling=paired", f"train.init_from={runs['qflow']}",
             f"train.steps={args.reflow_steps}", "train.warmup_steps=0"]
    result = train(load_config(SO3_YAML, [*common(args), *extra]), args.runs / "reqflow", progress=True)
    results["configs"]["reqflow"] = {"overrides": extra[1:],
                                     "seconds_per_step": _seconds_per_step(result.run_dir),
                                     "pair_seconds": pair_seconds,
                                     "table": nfe_table(domain, cfg, load_model(result.run_dir), data)}
    print("reqflow", _summary(results["configs"]["reqflow"]["table"]))
    tests = domain.references(data, cfg)
    results["floor"], results["floor_std"] = domain.w2(domain.references(data, cfg, "val"), tests, cfg)
    results["ceiling"] = domain.w2(domain.base_draws(cfg), tests, cfg)[0]
    return results


def run_backbones(args: argparse.Namespace) -> dict:
    domain = create_domain("backbones")
    base = [f"train.steps={args.backbone_steps}", "train.eval_every=0", "eval.timing_steps=[500,50]"]
    if args.smoke:
        base += ["domain.source=synthetic", "domain.length=16", "model.dim=16", "model.depth=1",
                 "eval.timing_steps=[20,5]", "eval.n_samples=4", "eval.timing_samples=2"]
    cfg = load_config(BACKBONES_YAML, base)
    teacher = train(cfg, args.runs / "backbones", progress=True)
    data = domain.build_data(cfg)
    model = load_model(teacher.run_dir)
    many, few = cfg.eval.timing_steps
    rows = {"flow": _backbone_row(domain, cfg, model, data, many)}
    pairs = args.runs / "backbone-pairs.h5"
    # an untrained smoke model passes nothing
    accept = None if args.smoke else domain.reflow_filter(cfg, data)
    generate_pairs(model, domain.source(cfg), args.backbone_pairs, pairs, sampler=domain.sampler(cfg),
                   batch_size=64, seed=cfg.seed, accept=accept, progress=True)
    extra = [f"data.pairs={pairs}", "objective.coupling=paired", f"train.init_from={teacher.run_dir}",
             f"train.steps={args.backbone_reflow_steps}", "train.warmup_steps=0", "sample.schedule=null"]
    rectified = train(load_config(BACKBONES_YAML, [*base, *extra]), args.runs / "backbones-reflow",
                      progress=True)
    cfg_rect = load_config(rectified.run_dir / "config.yaml")
    rectified_model = load_model(rectified.run_dir)
    rows["flow, few steps"] = _backbone_row(domain, cfg, model, data, few)
    rows["rectified"] = _backbone_row(domain, cfg_rect, rectified_model, data, few)
    rows["test data"] = {k.removesuffix("_test"): v for k, v in rows["flow"]["metrics"].items()
                         if k.endswith("_test")}
    return {"rows": rows, "many_steps": many, "few_steps": few}


def _backbone_row(domain, cfg, model, data, steps: int) -> dict:
    cfg = config_from_dict(cfg.to_dict(), [f"sample.steps={steps}", f"eval.timing_steps=[{steps}]"])
    metrics = domain.evaluate(model, data, cfg)
    return {"steps": steps, "metrics": metrics,
            "seconds_per_structure": metrics[f"seconds_per_structure_steps{steps}"]}


def _seconds_per_step(run: Path) -> float:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    per_step = [float(r[3]) for r in rows if r[1] == "train" and r[2] == "seconds_per_step"]
    return sum(per_step) / max(len(per_step), 1)


def _summary(table: dict) -> str:
    return "  ".join(f"{s}@{nfe}={row['w2']:.3f}" for s, rows in table.items() for nfe, row in rows.items()
                     if nfe in (1, 2, 4, 10, 20, 200))


def markdown(results: dict) -> str:
    lines = []
    so3 = results.get("so3")
    if so3:
        lines += [f"Geodesic W2 (rad) between {results['n']} generated and {results['n']} test rotations, "
                  f"the mean over 3 draws; floor (validation vs test) **{so3['floor']:.3f}** ± "
                  f"{so3['floor_std']:.3f}, ceiling (Haar vs test) {so3['ceiling']:.3f}. "
                  "Seconds per 1000 samples in brackets.", ""]
        nfes = sorted({nfe for c in so3["configs"].values() for rows in c["table"].values()
                       for nfe in map(int, rows)})
        lines += ["| configuration | solver | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
                  "|---|---|" + "---|" * len(nfes)]
        for label, config in so3["configs"].items():
            for solver, rows in config["table"].items():
                rows = {int(k): v for k, v in rows.items()}
                cells = [f"{rows[k]['w2']:.3f} ({rows[k]['seconds_per_1000']:.2f})" if k in rows else ""
                         for k in nfes]
                lines.append(f"| {label} | {solver} | " + " | ".join(cells) + " |")
        lines.append("")
    bb = results.get("backbones")
    if bb:
        lines += ["| backbones | steps | CA-CA valid | CA-CA mean dev (Å) | clash rate | Rg (Å) | "
                  "W1 CA(i,i+2) (Å) | W1 CA(i,i+3) (Å) | s / structure |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, row in bb["rows"].items():
            m = row.get("metrics", row)

            def fmt(key: str, f: str = "{:.3f}", m: dict = m) -> str:
                return f.format(m[key]) if key in m else "–"

            lines.append(f"| {label} | {row.get('steps', '–')} | {fmt('ca_ca_valid_fraction')} | "
                         f"{fmt('ca_ca_deviation')} | {fmt('clash_rate')} | {fmt('rg_mean', '{:.1f}')} | "
                         f"{fmt('w1_ca_i2')} | {fmt('w1_ca_i3')} | "
                         f"{row['seconds_per_structure']:.3f} |" if "seconds_per_structure" in row else
                         f"| {label} | – | {fmt('ca_ca_valid_fraction')} | {fmt('ca_ca_deviation')} | "
                         f"{fmt('clash_rate')} | {fmt('rg_mean', '{:.1f}')} | – | – | – |")
        lines.append("")
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    so3 = results["so3"]
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for ax, solver in zip(axes, ("euler", "midpoint")):
        for label, config in so3["configs"].items():
            rows = {int(k): v for k, v in config["table"][solver].items()}
            nfe = sorted(rows)
            ax.plot(nfe, [rows[k]["w2"] for k in nfe], marker="o", ms=3, label=label)
        ax.axhline(so3["floor"], color="black", ls="--", lw=1, label=f"floor {so3['floor']:.3f}")
        ax.axhline(1.3 * so3["floor"], color="grey", ls=":", lw=1, label="1.3 x floor")
        ax.set_xscale("log")
        ax.set_ylim(0, min(1.05, so3["ceiling"] * 1.05))
        ax.set_xlabel("NFE")
        ax.set_ylabel("geodesic W2 (rad)")
        ax.set_title(f"exp-map {solver}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="training steps per SO(3) configuration")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n", type=int, default=2000, help="samples per W2 (exact OT n x n)")
    parser.add_argument("--pairs", type=int, default=40000, help="reflow pairs (before filtering)")
    parser.add_argument("--teacher-steps", type=int, default=50, help="midpoint steps of the reflow teacher")
    parser.add_argument("--reflow-steps", type=int, default=2000)
    parser.add_argument("--backbones", action="store_true", help="run the backbone part instead of SO(3)")
    parser.add_argument("--backbone-steps", type=int, default=3000)
    parser.add_argument("--backbone-pairs", type=int, default=256)
    parser.add_argument("--backbone-reflow-steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_rotations")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (checks the script)")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="rebuild the Markdown and PNG from a JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "rotations_smoke" if args.smoke else "rotations"
    json_path = args.report or args.out / f"{stem}.json"
    if args.report:
        results = json.loads(json_path.read_text())
    else:
        if args.smoke:
            args.steps, args.n, args.pairs, args.reflow_steps = 60, 300, 600, 20
            args.backbone_steps, args.backbone_pairs, args.backbone_reflow_steps = 4, 16, 2
        results = json.loads(json_path.read_text()) if json_path.exists() else {}
        results.update({"flowsci": flowsci.__version__, "torch": torch.__version__,
                        "machine": platform.processor()
                        or platform.machine(), "threads": args.threads, "n": args.n, "command": " ".join(
                            ["python bench/rotations.py", *sys.argv[1:]])})
        if args.backbones:
            results["backbones"] = run_backbones(args)
        else:
            results["so3"] = run_so3(args)
        json_path.write_text(json.dumps(results, indent=1))
    json_path.with_suffix(".md").write_text(markdown(results))
    if "so3" in results:
        figure(results, json_path.with_suffix(".png"))
    print(markdown(results))


if __name__ == "__main__":
    main()
