"""SD3's claim that joint attention reads the caption better, at toy scale: on the two-digit
canvas of ``domains/images_relations.yaml`` ("a 3 left of a 7" / "a 7 right of a 3"), MM-DiT
(separate weights per modality, one joint attention over image and caption tokens) against a
DiT conditioned on the pooled caption, at about equal parameters and the same training budget
(steps, batch, text encoder).

Each (model, seed) trains under ``runs/bench_relations/`` (a finished run is reused; ``--jobs``
runs in parallel processes, one thread each). Scores from the run's evaluation: per-half class
accuracy, relation accuracy (both digits where the caption put them), swapped rate, for the
training phrasings and a held-out one, and the Fréchet classifier distance of the halves (not
FID). Writes ``bench/results/images_relations.{json,md,png}``.

    python bench/images_relations.py [--seeds 0] [--train-steps 4000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from images_common import prepare, write_result
from matplotlib.figure import Figure

import flowsci
from flowsci.atomic import atomic_write_text
from flowsci.checkpoint import load_model
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "images_relations.yaml"
# about equal parameters (text encoder included): 0.34 M each
MODELS = {
    "mmdit": "{name: mmdit, patch: 2, width: 48, depth: 3, heads: 4}",
    "dit (pooled text)": "{name: dit, patch: 2, width: 64, depth: 3, heads: 4}",
}
COLUMNS = ("relation_accuracy", "left_accuracy", "right_accuracy", "swapped", "heldout_relation_accuracy",
           "fd")


def train_one(model: str, seed: int, train_steps: int, root: Path) -> dict:
    """Train (or reuse) one run; its final metrics and parameter count."""
    torch.set_num_threads(1)
    flowsci.configure_logging()
    out = root / f"{model.split()[0]}_seed{seed}_{train_steps}steps"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [f"model={MODELS[model]}", f"seed={seed}", f"train.steps={train_steps}", "train.threads=1"]
    result = train(flowsci.load_config(YAML, overrides), out, resume=(out / "config.yaml").is_file(),
                   progress=False)
    parameters = sum(p.numel() for p in load_model(out).parameters())
    row = {"model": model, "seed": seed, "run": str(out.relative_to(REPO)), "parameters": parameters,
           "metrics": result.metrics}
    atomic_write_text(done, json.dumps(row, indent=2) + "\n")
    accuracy = result.metrics["relation_accuracy_nfe20"]
    print(f"{model} seed {seed}: relation accuracy {accuracy:.3f}", flush=True)
    return row


def column(metrics: dict, name: str, nfe: int) -> float:
    return metrics[name] if name.startswith("heldout") else metrics[f"{name}_nfe{nfe}"]


def summarise(rows: list[dict], nfe: int) -> dict[str, dict[str, list[float]]]:
    """model -> column -> [mean, std over seeds, n]."""
    table = {}
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        if mine:
            seconds = statistics.fmean(r["metrics"]["train_seconds"] for r in mine)
            table[model] = {"parameters": [mine[0]["parameters"], 0.0, len(mine)],
                            "train_seconds": [seconds, 0.0, len(mine)]}
            for name in COLUMNS:
                values = [column(r["metrics"], name, nfe) for r in mine]
                table[model][name] = [statistics.fmean(values),
                                      statistics.stdev(values) if len(values) > 1 else 0.0, len(values)]
    return table


def markdown(result: dict) -> str:
    lines = [f"Two-digit canvas (MNIST-5k, 14×28), {result['train_steps']} training steps each, seeds "
             f"{result['seeds']}, {result['nfe']} Euler steps, guidance {result['guidance']:g}; mean ± std "
             "over seeds", "",
             "| model | parameters | train s | relation acc. | left acc. | right acc. | swapped | "
             "held-out phrasing relation acc. | FD (halves) |", "|---|" + "---:|" * 8]
    for model, cols in result["table"].items():
        cells = [f"{cols[name][0]:.3f} ± {cols[name][1]:.2g}" if name != "fd" else f"{cols[name][0]:.3g}"
                 for name in COLUMNS]
        lines.append(f"| {model} | {cols['parameters'][0] / 1e6:.2f} M | {cols['train_seconds'][0]:.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(result: dict) -> Figure:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    names = [c for c in COLUMNS if c != "fd"]
    width = 0.8 / max(len(result["table"]), 1)
    for i, (model, cols) in enumerate(result["table"].items()):
        xs = [k + i * width for k in range(len(names))]
        ax.bar(xs, [cols[n][0] for n in names], width, yerr=[cols[n][1] for n in names], capsize=3,
               label=model)
    ax.set_xticks([k + width * (len(result["table"]) - 1) / 2 for k in range(len(names))],
                  [n.replace("_", " ") for n in names], fontsize=7)
    ax.set(ylim=(0, 1.02), title="relations canvas: MM-DiT vs pooled-text DiT")
    ax.legend()
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes (one thread each)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "images_relations.json")
    args = parser.parse_args()
    cfg = flowsci.load_config(YAML)
    prepare(cfg)
    jobs = [(m, seed) for seed in args.seeds for m in MODELS]
    root = REPO / "runs" / "bench_relations"
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(train_one, *zip(*jobs, strict=True), [args.train_steps] * len(jobs),
                             [root] * len(jobs)))
    result = {"command": f"python bench/images_relations.py --seeds {' '.join(map(str, args.seeds))} "
                         f"--train-steps {args.train_steps}",
              "machine": platform.platform(), "torch": torch.__version__, "train_steps": args.train_steps,
              "seeds": args.seeds, "nfe": cfg.sample.steps, "guidance": cfg.sample.guidance,
              "models": MODELS, "table": summarise(rows, cfg.sample.steps), "runs": rows}
    write_result(args.out, result, markdown(result), figure(result))


if __name__ == "__main__":
    main()
