"""Meta Flow Matching vs FM vs CGFM on the two population data sets, with each embedder.

Every row trains ``domains/population.yaml`` with the same decoder, objective and budget
(``--steps`` steps of ``--batch-size`` population pairs) and differs only in the model's
conditioning:

- ``MFM-gcn``, ``MFM-deepsets``, ``MFM-attention``: the velocity reads an embedding of the whole
  source population (GCN on a kNN graph, DeepSets, PyG set-transformer pooling);
- ``FM``: no population input;
- ``CGFM``: a learned vector per training population id (unseen populations read zero).

Scores per split (letters: train / val letter X / test letter Y; patients: train / held-out
replicates / held-out patients): exact W1, W2, multi-bandwidth RBF MMD, energy distance and, on
the patients, the Pearson r of pairwise feature correlations; the reference predictors
identity, mean shift and ideal mean shift on the same populations; training wall-clock.

    python bench/population.py [--dataset letters patients] [--steps 4000] [--workers 2] [--smoke]
    python bench/population.py --report bench/results/population.json   # rebuild .md and .png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from matplotlib.figure import Figure

import flowsci
from flowsci.config import load_config
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "population.yaml"
METHODS = {
    "MFM-gcn": ["model.conditioning=population", "model.embedder={name: gcn_embedder, hidden: 64, "
                "out_dim: 64, layers: 3, k: 10}"],
    "MFM-deepsets": ["model.conditioning=population", "model.embedder={name: deepsets_embedder, hidden: 64, "
                     "out_dim: 64, layers: 2}"],
    "MFM-attention": ["model.conditioning=population", "model.embedder={name: attention_embedder, "
                      "hidden: 64, out_dim: 64, heads: 4}"],
    "FM": ["model.conditioning=none"],
    "CGFM": ["model.conditioning=identity"],
}
DATASETS = {"letters": [], "patients": ["domain.dataset=patients", "objective.pairing=ot"]}
SPLITS = {"letters": ("train", "val_letters", "test_letters"),
          "patients": ("train", "heldout_replicates", "heldout_patients")}
SCORES = ("w1", "w2", "mmd", "energy", "r")
REFERENCES = ("identity", "mean_shift", "ideal_mean_shift")


def run_one(dataset: str, method: str, overrides: list[str], threads: int) -> dict:
    """Train one configuration and return its row (scores per split, references, time)."""
    torch.set_num_threads(threads)
    cfg = load_config(YAML, [*DATASETS[dataset], *METHODS[method], *overrides])
    start = time.perf_counter()
    result = train(cfg, Path(tempfile.mkdtemp()) / f"{dataset}-{method}", progress=False)
    seconds = time.perf_counter() - start
    row = {"dataset": dataset, "method": method, "train_seconds_with_eval": seconds, "scores": {},
           "references": {}}
    for split in SPLITS[dataset]:
        row["scores"][split] = {s: result.metrics[f"{split}_{s}"] for s in SCORES
                                if f"{split}_{s}" in result.metrics}
        row["references"][split] = {ref: {s: result.metrics[f"{split}_ref_{ref}_{s}"] for s in SCORES
                                          if f"{split}_ref_{ref}_{s}" in result.metrics}
                                    for ref in REFERENCES}
    return row


def report(results: dict, out: Path) -> None:
    """Markdown table and bar chart of held-out and training W2 / MMD."""
    lines = [f"Command: `{results['command']}`", "",
             f"{results['steps']} steps x {results['batch_size']} population pairs; torch threads "
             f"{results['threads']}; W2 / MMD averaged over the scored populations of each split.", ""]
    for dataset in results["datasets"]:
        rows = [r for r in results["rows"] if r["dataset"] == dataset]
        splits = SPLITS[dataset]
        header = " | ".join(f"{s} W2 | {s} MMD" for s in splits)
        lines += [f"### {dataset}", "", f"| method | {header} | train s |",
                  "|---|" + "---|" * (2 * len(splits)) + "---|"]
        for r in rows:
            cells = " | ".join(f"{r['scores'][s]['w2']:.3f} | {r['scores'][s]['mmd']:.4f}" for s in splits)
            lines.append(f"| {r['method']} | {cells} | {r['train_seconds_with_eval']:.0f} |")
        for ref in REFERENCES:
            cells = " | ".join(f"{rows[0]['references'][s][ref]['w2']:.3f} | "
                               f"{rows[0]['references'][s][ref]['mmd']:.4f}"
                               for s in splits)
            lines.append(f"| *{ref.replace('_', ' ')}* | {cells} | – |")
        if "r" in rows[0]["scores"][splits[-1]]:
            lines += ["", "Pearson r of pairwise feature correlations (" + ", ".join(splits) + "): "
                      + "; ".join(f"{r['method']} " + "/".join(f"{r['scores'][s]['r']:.3f}" for s in splits)
                                  for r in rows)]
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))

    fig = Figure(figsize=(6 * len(results["datasets"]), 4))
    axes = fig.subplots(1, len(results["datasets"]), squeeze=False)[0]
    for ax, dataset in zip(axes, results["datasets"]):
        rows = [r for r in results["rows"] if r["dataset"] == dataset]
        splits = SPLITS[dataset]
        width = 0.8 / len(splits)
        for k, split in enumerate(splits):
            ax.bar([i + k * width for i in range(len(rows))], [r["scores"][split]["w2"] for r in rows], width,
                   label=split)
        ideal = rows[0]["references"][splits[-1]]["ideal_mean_shift"]["w2"]
        identity = rows[0]["references"][splits[-1]]["identity"]["w2"]
        ax.axhline(ideal, color="k", ls="--", lw=1, label=f"ideal mean shift ({splits[-1]})")
        ax.axhline(identity, color="gray", ls=":", lw=1, label=f"identity ({splits[-1]})")
        ax.set_xticks([i + width for i in range(len(rows))], [r["method"] for r in rows], rotation=20)
        ax.set_ylabel("W2 (predicted vs true population)")
        ax.set_title(dataset)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--steps", type=int, help="training steps (default: the YAML's train.steps)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="configurations trained in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "population.json")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the script")
    parser.add_argument("--report", type=Path, help="rebuild .md and .png from this JSON")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()), args.report)
        return
    args.steps = args.steps or load_config(YAML).train.steps
    overrides = [f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", "train.eval_every=0",
                 "train.checkpoint_every=100000"]
    if args.smoke:  # never overwrites the real results
        args.out = Path(tempfile.mkdtemp()) / "population.json"
        overrides = ["train.steps=5", "domain.n_rotations=2", "domain.n_patients=4",
                     "domain.held_out_patients=[3]",
                     "eval.n_populations=3", "sample.steps=2", "train.batch_size=4", "model.width=32",
                     "model.depth=2", "train.checkpoint_every=100000", "train.eval_every=0"]
    jobs = [(d, m) for d in args.dataset for m in args.methods]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, d, m, overrides, args.threads) for d, m in jobs]
        rows = []
        for (d, m), future in zip(jobs, futures):
            rows.append(future.result())
            print(f"{d:>8} {m:<14} held-out W2 {rows[-1]['scores'][SPLITS[d][-1]]['w2']:.3f}", flush=True)
    results = {"rows": rows, "datasets": args.dataset, "steps": 5 if args.smoke else args.steps,
               "batch_size": 4 if args.smoke else args.batch_size,
               "flowsci": flowsci.__version__, "torch": torch.__version__,
               "machine": platform.processor() or platform.machine(), "threads": args.threads,
               "workers": args.workers, "command": " ".join(["python", "bench/population.py", *sys.argv[1:]])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    report(results, args.out)
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
