"""SD3's resolution-dependent timestep shift (Esser et al. 2024, §5.3.2) at toy scale: a
class-conditional U-Net trained on MNIST-5k at 14×14 is fine-tuned at 28×28 (4× the pixels)
with and without the shift, at the same budget.

SD3 argues that more pixels need more noise to destroy the same signal, and shifts the times
toward the noise end by shift = √(m / n) (m, n: pixel counts of the new and the base
resolution; here √(784 / 196) = 2), in training (``objective.timesteps.shift``) and sampling
(``sample.grid: {name: shifted}``). In flowsci's convention (t = 0 noise) that is t ->
t / (shift - (shift - 1) t) (docs/design.md; :func:`flowsci.timesteps.shift_time`).

The base run is ``--base RUN`` (a 14×14 run of ``domains/images.yaml``), or trained here with
logit-normal timesteps. Fine-tunes go to ``runs/bench_resolution/`` (reused when finished).
Scores: Fréchet classifier distance (not FID; the classifier is trained at 28×28) at each number
of Euler steps, next to the 28×28 floor. Writes ``bench/results/images_resolution.{json,md,png}``.

    python bench/images_resolution.py [--base RUN] [--finetune-steps 300] [--nfe 4 8 25]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
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
BASE, TARGET = 14, 28


def finetune(name: str, shift: float, base: Path, steps: int, nfe: list[int], root: Path) -> dict:
    """Fine-tune the base run at the target resolution with the given shift (train and sample)."""
    torch.set_num_threads(1)
    flowsci.configure_logging()
    out = root / f"{name}_{steps}steps"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    grid = "uniform" if shift == 1 else f"{{name: shifted, shift: {shift}}}"
    overrides = [f"domain.resolution={TARGET}", f"train.init_from={base}", f"train.steps={steps}",
                 "train.warmup_steps=20", "train.lr=0.0005", "train.threads=1",
                 f"objective.timesteps={{name: logit_normal, m: 0.0, s: 1.0, shift: {shift}}}",
                 f"sample.grid={grid}", f"eval.steps={list(nfe)}", f"sample.steps={max(nfe)}"]
    result = train(flowsci.load_config(YAML, overrides), out, resume=(out / "config.yaml").is_file(),
                   progress=False)
    row = {"name": name, "shift": shift, "run": str(out.relative_to(REPO)), "metrics": result.metrics}
    atomic_write_text(done, json.dumps(row, indent=2) + "\n")
    print(f"{name}: " + "  ".join(f"FD@{k} {result.metrics[f'fd_nfe{k}']:.3g}" for k in nfe), flush=True)
    return row


def base_run(base: Path | None, nfe: list[int]) -> Path:
    """The 14×14 run to start from (trained here when not given)."""
    if base is not None:
        return base
    out = REPO / "runs" / "bench_resolution" / "base14"
    if not (out / "result.json").is_file():
        overrides = ["objective.timesteps=logit_normal", "train.steps=600", "train.threads=1",
                     f"eval.steps={list(nfe)}", f"sample.steps={max(nfe)}"]
        cfg = flowsci.load_config(YAML, overrides)
        train(cfg, out, resume=(out / "config.yaml").is_file(), progress=False)
        atomic_write_text(out / "result.json", "{}\n")
    return out


def markdown(result: dict) -> str:
    nfe = result["nfe"]
    lines = [f"Resolution shift: the {BASE}×{BASE} run `{result['base']}` fine-tuned "
             f"{result['finetune_steps']} steps at {TARGET}×{TARGET} (logit-normal timesteps; the shift "
             f"applied to training times and the sampling grid); Fréchet classifier distance at "
             f"{TARGET}×{TARGET}, floor {result['fd_real']:.3g}", "",
             "| fine-tune | shift | " + " | ".join(f"FD @ {k}" for k in nfe) + f" | accuracy @ {nfe[-1]} |",
             "|---|---:|" + "---:|" * (len(nfe) + 1)]
    for row in result["rows"]:
        m = row["metrics"]
        fds = " | ".join(f"{m[f'fd_nfe{k}']:.3g}" for k in nfe)
        lines.append(f"| {row['name']} | {row['shift']:g} | {fds} | {m[f'accuracy_nfe{nfe[-1]}']:.3f} |")
    return "\n".join(lines) + "\n"


def figure(result: dict) -> Figure:
    nfe = result["nfe"]
    curves = {f"{row['name']} (shift {row['shift']:g})": ([row["metrics"][f"fd_nfe{k}"] for k in nfe], None)
              for row in result["rows"]}
    return fd_against_steps(curves, nfe, result["fd_real"], f"{BASE}→{TARGET} px fine-tune")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help=f"a {BASE}×{BASE} images run (default: train one here)")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 25])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "images_resolution.json")
    args = parser.parse_args()
    nfe = sorted(args.nfe)
    base = base_run(args.base, nfe)
    cfg = flowsci.load_config(YAML, [f"domain.resolution={TARGET}"])
    prepare(cfg)  # the 28×28 data and classifier, once, before the parallel fine-tunes
    shift = math.sqrt(TARGET**2 / BASE**2)
    variants = [("no shift", 1.0), ("SD3 shift", shift)]
    root = REPO / "runs" / "bench_resolution"
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        repeated = ([x] * len(variants) for x in (base, args.finetune_steps, nfe, root))
        rows = list(pool.map(finetune, *zip(*variants, strict=True), *repeated))
    command = "python bench/images_resolution.py" + (f" --base {args.base}" if args.base else "")
    result = {"command": f"{command} --finetune-steps {args.finetune_steps} --nfe {' '.join(map(str, nfe))}",
              "machine": platform.platform(), "torch": torch.__version__, "base": str(base),
              "finetune_steps": args.finetune_steps, "nfe": nfe, "fd_real": rows[0]["metrics"]["fd_real"],
              "rows": rows}
    write_result(args.out, result, markdown(result), figure(result))


if __name__ == "__main__":
    main()
