"""The guidance weight of the images domain: Fréchet classifier distance, class accuracy,
precision and recall of one trained run at each weight, against the real-vs-real floor.

Trains ``domains/images.yaml`` (or reuses ``--run``), then evaluates its checkpoint with
``sample.guidance = w`` for every ``--weights`` (``eval.steps = [sample.steps]``, the domain's
fixed evaluation seed, the same feature classifier). Writes
``bench/results/images_guidance.{json,md,png}``.

    python bench/images.py [--run RUN] [--weights 1 1.25 1.5 1.75 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import torch
from images_common import write_result
from matplotlib.figure import Figure

import flowsci
from flowsci.checkpoint import load_model
from flowsci.plugins import Evaluation
from flowsci.registry import create_domain
from flowsci.rng import EVAL_SEED_OFFSET, isolated_rng
from flowsci.runs import open_run
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "images.yaml"
COLUMNS = ("fd", "accuracy", "precision", "recall")


def evaluate_weights(run_dir: Path, weights: list[float]) -> tuple[list[dict], dict]:
    """One row per guidance weight, and the run's fixed numbers (floor, classifier accuracy)."""
    cfg = open_run(run_dir).load_config()
    domain, model = create_domain(cfg.domain), load_model(run_dir)
    data = domain.build_data(cfg)
    rows, fixed = [], {}
    for w in weights:
        cfg.sample = dataclasses.replace(cfg.sample, guidance=w)
        cfg.eval.steps = [cfg.sample.steps]
        started = time.perf_counter()
        with isolated_rng(cfg.seed + EVAL_SEED_OFFSET):
            m = Evaluation.of(domain.evaluate(model, data, cfg)).metrics
        nfe = next(k for k in m if k.startswith("fd_nfe")).removeprefix("fd_")
        fixed = {"fd_real": m["fd_real"], "classifier_test_accuracy": m["classifier_test_accuracy"],
                 "nfe": int(nfe.removeprefix("nfe"))}
        rows.append({"guidance": w, "fd": m[f"fd_{nfe}"], "accuracy": m[f"accuracy_{nfe}"],
                     "precision": m["precision"], "recall": m["recall"],
                     "seconds": time.perf_counter() - started})
        print(f"w = {w:g}: " + "  ".join(f"{k} {rows[-1][k]:.4g}" for k in COLUMNS), flush=True)
    return rows, fixed


def markdown(result: dict) -> str:
    fixed = result["fixed"]
    lines = [f"Guidance sweep of `{result['run']}` ({fixed['nfe']} Euler steps; floor fd_real = "
             f"{fixed['fd_real']:.3g}; classifier accuracy on test images "
             f"{fixed['classifier_test_accuracy']:.3f})",
             "", "| guidance w | FD | class accuracy | precision | recall |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['guidance']:g} | {r['fd']:.3g} | {r['accuracy']:.3f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def figure(result: dict) -> Figure:
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    w = [r["guidance"] for r in result["rows"]]
    left.plot(w, [r["fd"] for r in result["rows"]], "o-", label="generated vs test")
    left.axhline(result["fixed"]["fd_real"], color="gray", ls="--", label="floor (val vs test)")
    left.set(xlabel="guidance weight w", ylabel="Fréchet classifier distance", yscale="log")
    left.legend()
    for key in ("accuracy", "precision", "recall"):
        right.plot(w, [r[key] for r in result["rows"]], "o-", label=key)
    right.set(xlabel="guidance weight w", ylim=(0, 1.02))
    right.legend()
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained images run (default: train domains/images.yaml)")
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.25, 1.5, 1.75, 2.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "images_guidance.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flowsci.configure_logging()
    run = args.run or train(flowsci.load_config(YAML, [f"train.threads={args.threads}"])).run_dir
    rows, fixed = evaluate_weights(run, args.weights)
    command = "python bench/images.py" + (f" --run {args.run}" if args.run else "")
    result = {"run": str(run), "command": command,
              "threads": args.threads, "machine": platform.platform(), "torch": torch.__version__,
              "fixed": fixed, "rows": rows}
    write_result(args.out, result, markdown(result), figure(result))


if __name__ == "__main__":
    main()
