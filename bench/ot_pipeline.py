"""OT pairing off the critical path: toy2d training steps, plain vs inline OT vs pipelined OT.

Trains domains/toy2d.yaml (MLP 3 x 128, batch 256, EMA, gradient clipping) through the Trainer,
in one process, in three variants at ``train.threads`` 2 and 1:

- plain: ``objective.coupling=independent``;
- inline OT: ``objective.coupling=ot`` (exact, POT's network simplex), ``train.prefetch_pairs=false``:
  each batch is paired between the previous step and its own;
- pipelined OT: the same with ``train.prefetch_pairs=true``: batch k+1 is paired on a background
  thread while batch k trains (flowsci/pairing.py).

The step time is the Trainer's ``seconds_per_step`` (wall clock between log rows, waiting for the
batch included), median over the windows of 50 steps after the first; runs alternate variants
and thread counts round by round so that background load hits all alike. The pairing alone (x0
drawn from the source and the exact plan of one batch) is timed too: a pipelined step cannot be
shorter than it.

    python bench/ot_pipeline.py [--steps 600] [--rounds 3] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flowsci.config import load_config
from flowsci.metrics_log import read_metrics
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
TOY2D = REPO / "domains" / "toy2d.yaml"
VARIANTS = {
    "plain": ["objective.coupling=independent"],
    "inline OT": ["objective.coupling={name: ot}", "train.prefetch_pairs=false"],
    "pipelined OT": ["objective.coupling={name: ot}", "train.prefetch_pairs=true"],
}
THREADS = (2, 1)
WINDOW = 50


def step_ms(variant: str, threads: int, steps: int, out: Path) -> float:
    """Median ms per training step of one run (windows of WINDOW steps, the first left out)."""
    cfg = load_config(TOY2D, [*VARIANTS[variant], f"train.threads={threads}", f"train.steps={steps}",
                              f"train.log_every={WINDOW}", "train.eval_every=0", "train.checkpoint_every=0",
                              "eval.n_samples=200", "eval.steps=[1]"])
    run = train(cfg, out, progress=False).run_dir
    per_step = [v for s, phase, name, v in read_metrics(run / "metrics.csv")
                if (phase, name) == ("train", "seconds_per_step") and s > WINDOW]
    return 1e3 * statistics.median(per_step)


def pairing_ms(threads: int, repeats: int = 200) -> float:
    """Median ms to pair one toy2d batch of 256 (source draw + exact OT), in this thread."""
    from flowsci.plugins import create_domain
    from flowsci.rng import batch_generator

    torch.set_num_threads(threads)
    cfg = load_config(TOY2D, VARIANTS["inline OT"])
    domain = create_domain(cfg.domain)
    objective = domain.build_objective(cfg)
    x1 = domain.build_data(cfg).train.__getitems__(list(range(256)))["x1"]
    times = []
    for k in range(repeats):
        start = time.perf_counter()
        objective.pair({"x1": x1}, batch_generator(0, k))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def summarise(rounds: list[dict]) -> dict:
    """Median over rounds of each variant's ms per step, and its ratio to plain."""
    table = {}
    for threads in THREADS:
        ms = {v: statistics.median(r[str(threads)][v] for r in rounds) for v in VARIANTS}
        table[str(threads)] = {v: {"ms": ms[v], "x_plain": ms[v] / ms["plain"]} for v in VARIANTS}
    return table


def markdown_table(results: dict) -> str:
    lines = ["| threads | plain ms/step | inline OT ms/step (× plain) | pipelined OT ms/step (× plain) "
             "| pairing alone ms |", "|---|---|---|---|---|"]
    for threads in THREADS:
        row = results["summary"][str(threads)]
        lines.append(f"| {threads} | {row['plain']['ms']:.2f} "
                     f"| {row['inline OT']['ms']:.2f} ({row['inline OT']['x_plain']:.2f}×) "
                     f"| {row['pipelined OT']['ms']:.2f} ({row['pipelined OT']['x_plain']:.2f}×) "
                     f"| {results['pairing_ms'][str(threads)]:.2f} |")
    lines.append(f"\nMedian of {len(results['rounds'])} rounds, {results['steps']} steps per run (windows of "
                 f"{WINDOW} steps after the first), batch 256, toy2d.yaml's MLP; goal: pipelined OT ≤ 1.3× "
                 f"plain at 2 threads. torch {results['torch']}, {results['cpus']} CPUs, "
                 f"{results['machine']}; 1-min load average {results['load_average_before']:.1f} before, "
                 f"{results['load_average_after']:.1f} after (other processes on the machine).")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """ms per step per variant, grouped by thread count, with the 1.3 × plain goal."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    width = 0.8 / len(VARIANTS)
    for i, variant in enumerate(VARIANTS):
        xs = [j + i * width for j in range(len(THREADS))]
        ax.bar(xs, [results["summary"][str(t)][variant]["ms"] for t in THREADS], width, label=variant)
    for j, threads in enumerate(THREADS):
        goal = 1.3 * results["summary"][str(threads)]["plain"]["ms"]
        ax.hlines(goal, j - width / 2, j + (len(VARIANTS) - 0.5) * width, colors="k", linestyles=":",
                  label="1.3 × plain (goal)" if j == 0 else None)
    ax.set_xticks([j + width for j in range(len(THREADS))], [f"train.threads={t}" for t in THREADS])
    ax.set(ylabel="ms per training step (median)", title="toy2d: exact OT pairing, inline vs pipelined")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "ot_pipeline", "steps": args.steps, "torch": torch.__version__,
               "cpus": len(os.sched_getaffinity(0)), "load_average_before": os.getloadavg()[0],
               "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
               "rounds": [], "pairing_ms": {str(t): pairing_ms(t) for t in THREADS}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            row: dict = {}
            for threads in THREADS:
                for variant in VARIANTS:
                    run = Path(tmp) / f"{r}-{threads}-{variant.replace(' ', '_')}"
                    row.setdefault(str(threads), {})[variant] = step_ms(variant, threads, args.steps, run)
                    print(f"round {r} threads {threads} {variant:<13} "
                          f"{row[str(threads)][variant]:.2f} ms/step", flush=True)
            results["rounds"].append(row)
    results["load_average_after"] = os.getloadavg()[0]
    results["summary"] = summarise(results["rounds"])
    (out / "ot_pipeline.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "ot_pipeline.png")
    table = markdown_table(results)
    (out / "ot_pipeline.md").write_text(table + "\n")
    print(table)
    print(f"written: {out / 'ot_pipeline.json'}, .md, .png")


if __name__ == "__main__":
    main()
