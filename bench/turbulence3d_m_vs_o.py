"""IFactFormer-m vs -o: gradients at initialisation (2-D and 3-D) and training on 3-D turbulence.

The claim checked (Yang, Wang & Wang, arXiv 2412.18840, on IFactFormer-o's trouble in 3-D):
at initialisation the chained (-o) block applies the product K_x ⊗ K_y (⊗ K_z) of small axis
kernels, so in 3-D its parameters get gradients far below AdamW's eps (1e-8) and barely move,
while the parallel (-m) block's gradients are orders larger; in 2-D -o's gradients clear eps.

Part (a): per parameter tensor, the median and max |∂loss/∂θ| of the training loss (the
domain's one-step relative L2) on one training batch of the real data (``domains/turbulence.yaml``
and ``domains/turbulence3d.yaml`` as they are, with the IFactFormer settings of MODELS), for -m and -o in 2-D
and 3-D and for -o in 3-D with larger query/key initialisations (``qk_gain``); grouped into the
q/k projections, the value and output maps, the rest of the attention block and the shell
(lifting, positional map, projection). Also the median spectral norm of the axis kernels at the
first iteration.

Part (b): -m, -o and -o with each ``--qk-gains`` value trained on turbulence3d through flowsci's
pipeline with the same data, steps, schedule and batches: one-step test relative L2, the
training loss curve and the axis-kernel norms after training.

Writes JSON + Markdown + PNG to ``--out`` (``turbulence3d_m_vs_o.*``, ``_smoke`` with --smoke).

    python bench/turbulence3d_m_vs_o.py [--steps 1200] [--qk-gains 20 50] [--out bench/results] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import platform
import shutil
import sys
from pathlib import Path

import torch
import yaml
from matplotlib.figure import Figure

import flowsci
from flowsci.checkpoint import list_checkpoints, load_model
from flowsci.config import Config, config_from_dict
from flowsci.metrics_log import read_metrics
from flowsci.plugins import create_domain
from flowsci.rng import seed_everything
from flowsci.training import train

REPO = Path(__file__).resolve().parents[1]
YAMLS = {2: REPO / "domains" / "turbulence.yaml", 3: REPO / "domains" / "turbulence3d.yaml"}
ADAM_EPS = inspect.signature(torch.optim.AdamW).parameters["eps"].default  # the trainer's optimiser
GROUPS = ("q/k projections", "value and output maps", "other attention", "shell")
VARIANTS = {"m": "ifactformer_m", "o": "ifactformer_o"}
# the 2-D reference IFactFormer of bench/turbulence_operators.py and the 3-D one of domains/turbulence3d.yaml
MODELS = {2: {"dim": 48, "heads": 4, "dim_head": 16, "kernel_multiplier": 3, "n_layer": 6},
          3: {"n_dims": 3, "dim": 32, "heads": 4, "dim_head": 8, "kernel_multiplier": 2, "n_layer": 4}}
# evaluation kept cheap: the speed measurements (the DNS timing above all) are not reported here
CHEAP_EVAL = ["eval.timing_repeats=2", "eval.timing_batch=2", "eval.dns_timing_time=0.2"]
SMOKE_EVAL = ["eval.n_samples=8", "eval.rollout_steps=3", "eval.error_steps=[1]",
              "eval.timing_repeats=1", "eval.timing_batch=1", "eval.dns_timing_time=0.02"]


def parameter_group(name: str) -> str:
    """The group (one of GROUPS) of an IFactFormer parameter named as in ``named_parameters``."""
    parts = name.split(".")
    if "to_q" in parts or "to_k" in parts:
        return GROUPS[0]
    if "block" in parts:
        return GROUPS[1] if parts[parts.index("block") + 1] in ("to_value", "mix", "out") else GROUPS[2]
    return GROUPS[3]


def gradient_magnitudes(model: torch.nn.Module, loss: torch.Tensor) -> list[dict]:
    """Per parameter tensor of ``model``: name, group, median and max |∂loss/∂θ| over its entries."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named])
    return [{"parameter": name, "group": parameter_group(name),
             "median": float(g.abs().flatten().double().quantile(0.5)), "max": float(g.abs().max())}
            for (name, _), g in zip(named, grads)]


def group_summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per group: the median of the tensors' median |grad| and the largest |grad|."""
    summary = {}
    for group in GROUPS:
        members = [r for r in rows if r["group"] == group]
        medians = torch.tensor([r["median"] for r in members], dtype=torch.float64)
        summary[group] = {"median": float(medians.quantile(0.5)), "max": max(r["max"] for r in members)}
    return summary


def kernel_norms(surrogate: torch.nn.Module, states: torch.Tensor) -> list[float]:
    """Median spectral norm (over batch and heads) of each axis kernel at the first iteration."""
    with torch.no_grad():
        kernels = surrogate.operator.attention_kernels(surrogate.normalizer.normalize(states))[0]
        return [float(torch.linalg.matrix_norm(k, ord=2).median()) for k in kernels]


def kernel_scale(norms: list[float]) -> float:
    """Geometric mean of the per-axis kernel norms."""
    return float(torch.tensor(norms, dtype=torch.float64).log().mean().exp())


def attention_state(surrogate: torch.nn.Module, states: torch.Tensor) -> dict:
    """The axis-kernel norms (:func:`kernel_norms`) and the norm of all q/k weights together."""
    qk = [p.detach().flatten() for name, p in surrogate.named_parameters()
          if parameter_group(name) == GROUPS[0]]
    return {"kernel_norms": kernel_norms(surrogate, states), "qk_weight_norm": float(torch.cat(qk).norm())}


def config(n_dims: int, variant: str, qk_gain: float, extra: list[str]) -> Config:
    """The domain's YAML with the model replaced by IFactFormer-``variant`` of MODELS[n_dims]."""
    raw = yaml.safe_load(YAMLS[n_dims].read_text())
    raw["model"] = {"name": VARIANTS[variant], **MODELS[n_dims], "qk_gain": qk_gain}
    return config_from_dict(raw, ["train.threads=1", *extra], source=str(YAMLS[n_dims]))


def init_gradients(n_dims: int, variant: str, qk_gain: float) -> dict:
    """Part (a) for one setting: the gradients of the training loss at initialisation (seed
    ``cfg.seed``) on ``train.batch_size`` training pairs drawn with that seed."""
    cfg = config(n_dims, variant, qk_gain, [])
    domain = create_domain(cfg.domain)
    pairs = domain.build_data(cfg).train.tensors
    generator = torch.Generator().manual_seed(cfg.seed)
    chosen = torch.randperm(len(pairs["state"]), generator=generator)[:cfg.train.batch_size]
    batch = {key: value[chosen] for key, value in pairs.items()}
    torch.manual_seed(cfg.seed)
    model = domain.build_model(cfg)
    loss, _ = domain.build_objective(cfg).loss(model, batch)
    rows = gradient_magnitudes(model, loss)
    return {"setting": label(n_dims, variant, qk_gain), "n_dims": n_dims, "model": VARIANTS[variant],
            "qk_gain": qk_gain, "model_params": cfg.model.params, "data": dataclasses.asdict(cfg.data),
            "grid": list(batch["state"].shape[2:]),
            "batch": len(chosen), "loss": loss.item(), "kernel_norms": kernel_norms(model, batch["state"]),
            "groups": group_summary(rows), "parameters": rows}


def label(n_dims: int, variant: str, qk_gain: float) -> str:
    return f"{n_dims}-D -{variant}" + (f" (qk_gain {qk_gain:g})" if qk_gain != 1 else "")


def train_run(variant: str, qk_gain: float, args: argparse.Namespace) -> dict:
    """Part (b) for one model: train on turbulence3d in a fresh run directory; its results, with
    the attention's trace (:func:`attention_state` on the test initial states) at initialisation
    and at every checkpoint (each ``--trace-every`` steps)."""
    extra = [f"train.steps={args.steps}", f"train.checkpoint_every={args.trace_every}",
             "train.keep_checkpoints=0", f"train.log_every={args.log_every}",
             *(SMOKE_EVAL if args.smoke else CHEAP_EVAL)]
    cfg = config(3, variant, qk_gain, extra)
    run_dir = args.runs / f"turbulence3d_m_vs_o_{variant}_gain{qk_gain:g}"
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"--- {label(3, variant, qk_gain)}: {args.steps} steps", flush=True)
    result = train(cfg, run_dir, progress=False)
    curve = [(step, value) for step, phase, name, value in read_metrics(run_dir / "metrics.csv")
             if phase == "train" and name == "loss"]
    domain = create_domain(cfg.domain)
    test_states = domain.build_data(cfg).test.tensors["trajectory"][:, 0]
    seed_everything(cfg.seed)  # the trainer's initial weights: seeded just before build_model
    trace = [{"step": 0, **attention_state(domain.build_model(cfg), test_states)}]
    trace += [{"step": step, **attention_state(load_model(path), test_states)}
              for step, path in list_checkpoints(run_dir / "checkpoints")]
    m = result.metrics
    return {"setting": label(3, variant, qk_gain), "model": VARIANTS[variant], "qk_gain": qk_gain,
            "steps": result.step, "run": str(run_dir), "one_step_rel_l2": m["one_step_rel_l2"],
            "persistence_rel_l2": m["persistence_rel_l2"],
            "rollout_rel_l2": {k: v for k, v in m.items() if k.startswith("rollout_rel_l2_step")},
            "train_seconds": m.get("train_seconds"),
            "attention_trace": trace, "loss_curve": curve}


def against_eps(value: float) -> str:
    """How many orders of magnitude ``value`` lies below (or above) ADAM_EPS, in words."""
    orders = float(torch.tensor(ADAM_EPS / value).log10())
    return f"{orders:.1f} orders below eps" if orders >= 0 else f"{-orders:.1f} orders above eps"


def verdict(grads: dict[str, dict], runs: list[dict]) -> list[str]:
    """Plain statements of what the numbers say about the claim."""
    lines = []
    for n_dims in (3, 2):
        o, m = grads[label(n_dims, "o", 1.0)], grads[label(n_dims, "m", 1.0)]
        o_block = [r for r in o["parameters"] if r["group"] != "shell"]
        m_block = [r for r in m["parameters"] if r["group"] != "shell"]
        o_lo, o_hi = min(r["median"] for r in o_block), max(r["median"] for r in o_block)
        o_max = max(r["max"] for r in o_block)
        m_lo, m_hi = min(r["median"] for r in m_block), max(r["median"] for r in m_block)
        above = sum(r["median"] > ADAM_EPS for r in o_block)
        lines.append(
            f"{n_dims}-D: the attention block's per-tensor median |grad| is {o_lo:.1e} .. {o_hi:.1e} for -o "
            f"({against_eps(o_lo)} .. {against_eps(o_hi)}; eps = {ADAM_EPS:g}) and "
            f"{m_lo:.1e} .. {m_hi:.1e} for -m; -o's largest block entry is {o_max:.1e} "
            f"({'above' if o_max > ADAM_EPS else 'below'} eps); {above} of -o's {len(o_block)} block tensors "
            f"have a median above eps.")
    if runs:
        by = {r["setting"]: r for r in runs}
        m, o = by[label(3, "m", 1.0)], by[label(3, "o", 1.0)]
        persistence = m["persistence_rel_l2"]
        better = "better" if m["one_step_rel_l2"] < o["one_step_rel_l2"] else "not better"
        lines.append(f"3-D training ({m['steps']} steps): one-step test relative L2 -m "
                     f"{m['one_step_rel_l2']:.4f}, -o {o['one_step_rel_l2']:.4f} (persistence "
                     f"{persistence:.4f}): -m is {better} than -o.")
        for r in runs:
            if r["qk_gain"] != 1:
                lines.append(f"{r['setting']}: one-step test relative L2 {r['one_step_rel_l2']:.4f}.")
        for r in runs:
            trace = r["attention_trace"]
            start, end = kernel_scale(trace[0]["kernel_norms"]), kernel_scale(trace[-1]["kernel_norms"])
            grown = next((t["step"] for t in trace if kernel_scale(t["kernel_norms"]) >= 100 * start), None)
            when = "never 100x its start" if grown is None else f"100x its start by step {grown}"
            lines.append(f"{r['setting']}: axis-kernel scale {start:.1e} -> {end:.1e} ({when}); q/k weight "
                         f"norm {trace[0]['qk_weight_norm']:.2f} -> {trace[-1]['qk_weight_norm']:.2f}.")
    return lines


def markdown(record: dict) -> str:
    grads = record["gradients"]
    settings = list(grads)
    out = [f"Command: `{record['command']}`", "",
           f"torch {record['hardware']['torch']}, {record['hardware']['threads']} thread(s); AdamW eps "
           f"{ADAM_EPS:g}. Gradients of the one-step relative-L2 training loss at initialisation (seed 0) on "
           "one training batch of each domain's data (the data and training settings of "
           "domains/turbulence.yaml and domains/turbulence3d.yaml).", "",
           "## Reading", "", *[f"- {line}" for line in record["verdict"]], "",
           "## Gradient magnitudes at initialisation, per group", "",
           "Per group: the median over its tensors of the per-tensor median |grad|, and the largest |grad| "
           "(median / max).", "",
           "| group | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for group in GROUPS:
        cells = [f"{grads[s]['groups'][group]['median']:.1e} / {grads[s]['groups'][group]['max']:.1e}"
                 for s in settings]
        out.append(f"| {group} | " + " | ".join(cells) + " |")
    out.append("| axis-kernel spectral norms | " + " | ".join(
        ", ".join(f"{x:.1e}" for x in grads[s]["kernel_norms"]) for s in settings) + " |")
    out += ["", "## Per parameter tensor (median / max |grad|)", "",
            "| parameter | group | " + " | ".join(settings) + " |", "|---|---|" + "---|" * len(settings)]
    names = list(dict.fromkeys(r["parameter"] for s in settings for r in grads[s]["parameters"]))
    for name in names:
        cells = []
        for s in settings:
            row = next((r for r in grads[s]["parameters"] if r["parameter"] == name), None)
            cells.append("—" if row is None else f"{row['median']:.1e} / {row['max']:.1e}")
        short = name.removeprefix("operator.")
        out.append(f"| {short} | {parameter_group(name)} | " + " | ".join(cells) + " |")
    if record["training"]:
        out += ["", f"## Training on turbulence3d ({record['training'][0]['steps']} steps each, same data, "
                "schedule and batches)", "",
                "| model | one-step test rel-L2 | persistence | rollout rel-L2 | train s | last train loss |",
                "|---|---|---|---|---|---|"]
        for r in record["training"]:
            rollout = ", ".join(f"{k.removeprefix('rollout_rel_l2_')} {v:.3f}"
                                for k, v in r["rollout_rel_l2"].items())
            seconds = f"{r['train_seconds']:.0f}" if r["train_seconds"] is not None else "—"
            final = f"{r['loss_curve'][-1][1]:.4f}" if r["loss_curve"] else "—"
            out.append(f"| {r['setting']} | {r['one_step_rel_l2']:.4f} | {r['persistence_rel_l2']:.4f} | "
                       f"{rollout} | {seconds} | {final} |")
        steps = [t["step"] for t in record["training"][0]["attention_trace"]]
        shown = [step for i, step in enumerate(steps) if i & (i - 1) == 0 or step == steps[-1]]
        out += ["", "Attention during training: axis-kernel scale (geometric mean over the axes of the "
                "median spectral norm of K_a at the first iteration, on the test initial states) / norm of "
                "all q/k weights, at the checkpoints (the full trace is in the JSON).", "",
                "| model | " + " | ".join(f"step {step}" for step in shown) + " |",
                "|---|" + "---|" * len(shown)]
        for r in record["training"]:
            at = {t["step"]: t for t in r["attention_trace"]}
            out.append(f"| {r['setting']} | " + " | ".join(
                f"{kernel_scale(at[step]['kernel_norms']):.1e} / {at[step]['qk_weight_norm']:.2f}"
                for step in shown) + " |")
    return "\n".join(out) + "\n"


def figure(record: dict, path: Path) -> None:
    fig = Figure(figsize=(18, 4.8))
    bars, curves, kernels = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3, 2, 2]})
    grads = record["gradients"]
    width = 0.8 / len(grads)
    for i, (setting, g) in enumerate(grads.items()):
        x = [j + (i - (len(grads) - 1) / 2) * width for j in range(len(GROUPS))]
        bars.bar(x, [g["groups"][k]["median"] for k in GROUPS], width, color=f"C{i}", label=setting)
        bars.scatter(x, [g["groups"][k]["max"] for k in GROUPS], color=f"C{i}", marker="_", s=120)
    bars.axhline(ADAM_EPS, color="k", ls="--", lw=1, label=f"AdamW eps {ADAM_EPS:g}")
    bars.set_yscale("log"), bars.set_xticks(range(len(GROUPS)), GROUPS)
    bars.set_ylabel("|∂loss/∂θ| at initialisation")
    bars.set_title("per group: median of the tensors' median |grad| (bar), largest |grad| (tick)")
    bars.legend(fontsize=7)
    for i, r in enumerate(record["training"]):
        steps, losses = zip(*r["loss_curve"]) if r["loss_curve"] else ((), ())
        curves.plot(steps, losses, lw=1, color=f"C{2 + i}",
                    label=f"{r['setting']}: test {r['one_step_rel_l2']:.3f}")
    if record["training"]:
        curves.axhline(record["training"][0]["persistence_rel_l2"], color="k", ls=":", lw=1,
                       label="persistence (test)")
        trace = r["attention_trace"]
        kernels.semilogy([t["step"] for t in trace], [kernel_scale(t["kernel_norms"]) for t in trace],
                         "o-", ms=3, lw=1, color=f"C{2 + i}", label=r["setting"])
    curves.set_xlabel("step"), curves.set_ylabel("training loss (one-step relative L2)")
    curves.set_title("turbulence3d training"), curves.legend(fontsize=7)
    kernels.set_xlabel("step"), kernels.set_ylabel("axis-kernel scale (geometric mean of ‖K_a‖₂)")
    kernels.set_title("attention kernels during training"), kernels.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model")
    parser.add_argument("--qk-gains", type=float, nargs="*", default=[20.0, 50.0],
                        help="q/k initialisation gains (times the reference) of the extra -o models")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--trace-every", type=int, default=50, help="checkpoint (attention trace) interval")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_turbulence3d_m_vs_o")
    parser.add_argument("--smoke", action="store_true", help="a few training steps (checks the script)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.log_every, args.trace_every = 6, 2, 2
    torch.set_num_threads(1)
    gains = [g for g in args.qk_gains if g != 1]
    settings = [(2, "m", 1.0), (2, "o", 1.0), (3, "m", 1.0), (3, "o", 1.0), *((3, "o", g) for g in gains)]
    gradients = {}
    for n_dims, variant, gain in settings:
        result = init_gradients(n_dims, variant, gain)
        gradients[result["setting"]] = result
        print(f"{result['setting']}: " + ", ".join(f"{k} {v['median']:.1e}/{v['max']:.1e}"
                                                    for k, v in result["groups"].items()), flush=True)
    training = [train_run(variant, gain, args) for variant, gain in (("m", 1.0), ("o", 1.0),
                                                                      *(("o", g) for g in gains))]
    record = {"command": " ".join(["python", "bench/turbulence3d_m_vs_o.py", *sys.argv[1:]]),
              "hardware": {"cpu": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "flowsci": flowsci.__version__, "python": platform.python_version()},
              "adam_eps": ADAM_EPS, "gradients": gradients, "training": training}
    record["verdict"] = verdict(gradients, training)
    stem = "turbulence3d_m_vs_o" + ("_smoke" if args.smoke else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(record))
    figure(record, args.out / f"{stem}.png")
    print("\n".join(record["verdict"]))


if __name__ == "__main__":
    main()
