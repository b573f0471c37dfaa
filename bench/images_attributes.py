"""Captions that say more than the label: the run of ``domains/images_attributes.yaml`` (a U-Net
conditioned on a tiny text encoder's pooled caption), scored on the attribute combinations its
training left out, asked for in phrasings it never read.

Trains the config (or reuses ``--run``) and writes its evaluation to
``bench/results/images_attributes.{json,md}`` and its sample grid (one row per held-out
combination) to ``bench/results/images_attributes.png``.

    python bench/images_attributes.py [--run RUN] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from images_common import write_result

import flowsci
from flowsci.checkpoint import load_model
from flowsci.plugins import Evaluation
from flowsci.registry import create_domain
from flowsci.rng import EVAL_SEED_OFFSET, isolated_rng
from flowsci.runs import open_run
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "images_attributes.yaml"


def markdown(result: dict) -> str:
    m, nfe = result["metrics"], result["nfe"]
    rows = [("class accuracy", m[f"accuracy_nfe{nfe}"], m["heldout_accuracy"]),
            ("all named attributes", m[f"attribute_accuracy_nfe{nfe}"], m["heldout_attribute_accuracy"]),
            ("thickness", m[f"thickness_accuracy_nfe{nfe}"], m["heldout_thickness_accuracy"]),
            ("slant", m[f"slant_accuracy_nfe{nfe}"], m["heldout_slant_accuracy"]),
            ("size", m[f"size_accuracy_nfe{nfe}"], None)]  # the held-out captions name no size
    lines = [f"`{result['command']}` ({nfe} Euler steps, guidance {result['guidance']:g}); Fréchet "
             f"classifier distance {m[f'fd_nfe{nfe}']:.3g} against a floor of {m['fd_real']:.3g}", "",
             "| accuracy of | test captions (training phrasings) | held-out combinations, held-out "
             "phrasings |",
             "|---|---:|---:|"]
    for name, test, held in rows:
        lines.append(f"| {name} | {test:.3f} | {'–' if held is None else f'{held:.3f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run of domains/images_attributes.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "images_attributes.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flowsci.configure_logging()
    run = args.run or train(flowsci.load_config(YAML, [f"train.threads={args.threads}"])).run_dir
    cfg = open_run(run).load_config()
    domain, model = create_domain(cfg.domain), load_model(run)
    data = domain.build_data(cfg)
    with isolated_rng(cfg.seed + EVAL_SEED_OFFSET):  # the run's own evaluation seed
        evaluation = Evaluation.of(domain.evaluate(model, data, cfg))
    with isolated_rng(cfg.seed + EVAL_SEED_OFFSET):
        figure = domain.figures(model, data, cfg, evaluation)["samples"]
    result = {"run": str(run), "command": "python bench/images_attributes.py"
              + (f" --run {args.run}" if args.run else ""), "threads": args.threads,
              "machine": platform.platform(), "torch": torch.__version__, "nfe": cfg.sample.steps,
              "guidance": cfg.sample.guidance, "config": cfg.to_dict(), "metrics": evaluation.metrics}
    write_result(args.out, result, markdown(result), figure)


if __name__ == "__main__":
    main()
