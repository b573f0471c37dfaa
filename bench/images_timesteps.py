"""SD3's training-timestep study on images (Esser et al. 2024, §3.1 and Table 1): the same
class-conditional U-Net of ``domains/images.yaml`` trained with each timestep sampler at an
equal budget, several seeds each, scored by the Fréchet classifier distance (FD; not FID) at
few Euler steps.

Samplers: uniform, logit-normal(0, 1), mode(s = 1.29), cosmap and U-shaped (a = 4, 2-RF++).
Each (sampler, seed) trains ``--train-steps`` steps under ``runs/bench_timesteps/`` (a finished
run is reused, so an interrupted study resumes where it stopped; ``--jobs`` trains in parallel
processes, one thread each) and is evaluated at ``--nfe`` Euler steps with the domain's fixed
evaluation seed and guidance. Writes ``bench/results/images_timesteps.{json,md,png}``: mean ±
standard deviation over seeds per sampler and step count, next to the real-vs-real floor.

    python bench/images_timesteps.py [--seeds 0 1 2] [--train-steps 600] [--nfe 4 8 25] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from images_common import fd_against_steps, prepare, write_result
from matplotlib.figure import Figure

import flowsci
from flowsci.atomic import atomic_write_text
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "images.yaml"
SAMPLERS = {
    "uniform": "uniform",
    "logit_normal": "{name: logit_normal, m: 0.0, s: 1.0}",
    "mode": "{name: mode, s: 1.29}",
    "cosmap": "cosmap",
    "u_shaped": "{name: u_shaped, a: 4.0}",
}


def train_one(sampler: str, seed: int, train_steps: int, nfe: list[int], root: Path) -> dict:
    """Train (or reuse) one run and return its metrics at each step count of ``nfe``."""
    torch.set_num_threads(1)
    flowsci.configure_logging()
    out = root / f"{sampler}_seed{seed}_{train_steps}steps"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [f"objective.timesteps={SAMPLERS[sampler]}", f"seed={seed}", f"train.steps={train_steps}",
                 f"eval.steps={list(nfe)}", f"sample.steps={max(nfe)}", "train.threads=1"]
    result = train(flowsci.load_config(YAML, overrides), out, resume=(out / "config.yaml").is_file(),
                   progress=False)
    row = {"sampler": sampler, "seed": seed, "run": str(out.relative_to(REPO)), "metrics": result.metrics}
    atomic_write_text(done, json.dumps(row, indent=2) + "\n")
    fd = "  ".join(f"FD@{k} {result.metrics[f'fd_nfe{k}']:.3g}" for k in nfe)
    print(f"{sampler} seed {seed}: {fd}", flush=True)
    return row


def summarise(rows: list[dict], nfe: list[int]) -> dict[str, dict[str, list[float]]]:
    """sampler -> 'fd_nfe<k>' -> [mean, std over seeds, n]; also class accuracy."""
    table: dict[str, dict[str, list[float]]] = {}
    for sampler in SAMPLERS:
        mine = [r["metrics"] for r in rows if r["sampler"] == sampler]
        if not mine:
            continue
        table[sampler] = {}
        for key in [f"fd_nfe{k}" for k in nfe] + [f"accuracy_nfe{k}" for k in nfe]:
            values = [m[key] for m in mine]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            table[sampler][key] = [statistics.fmean(values), std, len(values)]
    return table


def markdown(result: dict) -> str:
    nfe = result["nfe"]
    lines = [f"SD3 timestep samplers, class-conditional U-Net on MNIST-5k 14×14, {result['train_steps']} "
             f"training steps each, seeds {result['seeds']}; Fréchet classifier distance (mean ± std over "
             f"seeds) at each number of Euler steps, guidance {result['guidance']:g}; floor (val vs test) "
             f"{result['fd_real']:.3g}",
             "", "| sampler | " + " | ".join(f"FD @ {k}" for k in nfe) + f" | accuracy @ {nfe[-1]} |",
             "|---|" + "---:|" * (len(nfe) + 1)]
    for sampler, cols in result["table"].items():
        cells = [f"{cols[f'fd_nfe{k}'][0]:.3g} ± {cols[f'fd_nfe{k}'][1]:.2g}" for k in nfe]
        acc = cols[f"accuracy_nfe{nfe[-1]}"][0]
        lines.append(f"| {sampler} | " + " | ".join(cells) + f" | {acc:.3f} |")
    return "\n".join(lines) + "\n"


def figure(result: dict) -> Figure:
    nfe = result["nfe"]
    curves = {sampler: ([cols[f"fd_nfe{k}"][0] for k in nfe], [cols[f"fd_nfe{k}"][1] for k in nfe])
              for sampler, cols in result["table"].items()}
    return fd_against_steps(curves, nfe, result["fd_real"], f"training timesteps ({result['train_steps']} "
                            f"steps, {len(result['seeds'])} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 25])
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes (one thread each)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "images_timesteps.json")
    args = parser.parse_args()
    nfe = sorted(args.nfe)
    root = REPO / "runs" / "bench_timesteps"
    jobs = [(s, seed) for seed in args.seeds for s in args.samplers]
    cfg = flowsci.load_config(YAML)
    prepare(cfg)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(train_one, *zip(*jobs, strict=True), *([x] * len(jobs) for x in
                                                                     (args.train_steps, nfe, root))))
    result = {"command": "python bench/images_timesteps.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if k not in ("out", "jobs")),
              "machine": platform.platform(), "torch": torch.__version__, "train_steps": args.train_steps,
              "seeds": args.seeds, "nfe": nfe, "guidance": cfg.sample.guidance,
              "fd_real": rows[0]["metrics"]["fd_real"], "table": summarise(rows, nfe), "runs": rows}
    write_result(args.out, result, markdown(result), figure(result))


if __name__ == "__main__":
    main()
