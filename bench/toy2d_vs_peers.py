"""flowsci vs torchcfm vs flow_matching on 8 Gaussians -> two moons, side by side in one process.

Every variant trains the same MLP (input (x, t), 3 hidden layers x 256, SELU, the same
initial weights for a given seed) with Adam 1e-3 on the same batches (256 fresh source and
target points per step), one step each in turn so that background load hits all alike.

Data: source = 8 Gaussians at radius 5 with per-axis std 0.1**0.25 (torchcfm's covariance
quirk, Tong et al. 2024; ``flowsci_domains.toy2d.distributions``); target = scikit-learn's
make_moons recipe (evenly spaced angles on each half circle, Gaussian noise 0.2), scaled
3x - 1, written out here so that scikit-learn is not needed. (toy2d's own moons draw the
angles at random, an i.i.d. sample of the same limit; two such sets of 1000 points are
~0.3 apart in W2 instead of ~0.24, because evenly spaced angles remove the angular noise.)

Reports: median time per training step after warm-up; exact W2 (POT, 1000 generated vs 1000
fresh target points, 3 evaluation seeds) at NFE 1..64 with Euler and midpoint and with
dopri5; the finite-sample floor (target vs target); straightness; over several training
seeds; for the last iterate and for an EMA of the same run (decay 0.999). 2-RF is trained
from pairs of the EMA flowsci independent-coupling flow.

    python bench/toy2d_vs_peers.py [--seeds 3] [--steps 10000] [--threads 2] [--out bench/results]

Needs the peers: ``pip install -c constraints.txt --no-deps torchcfm flow-matching`` (or
``make bench-deps``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from flowsci.couplings import IndependentCoupling, OTCoupling, PairedCoupling
from flowsci.ema import ema_update
from flowsci.flow_matching import FlowMatching, Sampler
from flowsci.losses import MSELoss
from flowsci.metrics import straightness, wasserstein
from flowsci.paths import linear_path
from flowsci.reflow import generate_pairs
from flowsci.solvers import Dopri5, Euler, Midpoint, uniform_grid
from flowsci.timesteps import UniformTime
from flowsci_domains.toy2d.distributions import eight_gaussians

NFES = (1, 2, 4, 8, 16, 64)
EVAL_SEEDS = (101, 202, 303)
N_EVAL = 1000
BATCH = 256
WARMUP = 50


def moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """scikit-learn's make_moons(n, noise=0.2) (unshuffled), mapped by x -> 3x - 1: (n, 2)."""
    n_out = n // 2
    outer = torch.linspace(0, math.pi, n_out, dtype=torch.float64)
    inner = torch.linspace(0, math.pi, n - n_out, dtype=torch.float64)
    points = torch.cat([torch.stack([outer.cos(), outer.sin()], 1),
                        torch.stack([1 - inner.cos(), 1 - inner.sin() - 0.5], 1)]).float()
    return 3 * (points + 0.2 * torch.randn(n, 2, generator=generator)) - 1


class MLP(nn.Module):
    """v(x, t) = MLP([x, t]); 3 hidden layers x 256, SELU (the torchcfm example network)."""

    def __init__(self, dim: int = 2, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SELU(), nn.Linear(width, width), nn.SELU(),
                                 nn.Linear(width, width), nn.SELU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], dim=-1))


class Source:
    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: str = "cpu") -> torch.Tensor:
        return eight_gaussians(n, generator).to(device)


# --- the variants: loss(model, x0, x1) for one batch -----------------------------------------


def flowsci_loss(coupling):
    objective = FlowMatching(linear_path(), UniformTime(), coupling, MSELoss())
    return lambda model, x0, x1: objective.loss(model, {"x0": x0, "x1": x1})[0]


def torchcfm_loss(matcher):
    def loss(model, x0, x1):
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        return (model(xt, t) - ut).pow(2).mean()
    return loss


def flow_matching_loss():
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def loss(model, x0, x1):
        t = torch.rand(x0.shape[0])
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        return (model(sample.x_t, sample.t) - sample.dx_t).pow(2).mean()
    return loss


def variants() -> dict:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    return {
        "flowsci independent": flowsci_loss(IndependentCoupling()),
        "flowsci OT": flowsci_loss(OTCoupling(method="exact")),
        "torchcfm I-CFM": torchcfm_loss(ConditionalFlowMatcher(sigma=0.0)),
        "torchcfm OT-CFM": torchcfm_loss(ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)),
        "flow_matching CondOT": flow_matching_loss(),
    }


def train_round_robin(losses: dict, steps: int, seed: int, pairs: dict | None = None) -> tuple[dict, dict]:
    """Train one model per variant, one step each in turn; returns the models, their EMA
    averages (decay 0.999 with flowsci's warm-up, kept outside the timed step: the same
    training run, averaged) and the step times (s)."""
    torch.manual_seed(seed)
    init = MLP().state_dict()
    models, emas, optims, times = {}, {}, {}, {name: [] for name in losses}
    for name in losses:
        models[name] = MLP()
        models[name].load_state_dict(pairs["init"] if pairs and name in pairs["names"] else init)
        optims[name] = torch.optim.Adam(models[name].parameters(), lr=1e-3)
        emas[name] = AveragedModel(models[name], multi_avg_fn=functools.partial(ema_update, decay=0.999))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0, x1 = eight_gaussians(BATCH, g), moons(BATCH, g)
        for name, loss_fn in losses.items():
            if pairs and name in pairs["names"]:
                idx = torch.randint(0, len(pairs["x0"]), (BATCH,), generator=g)
                a, b = pairs["x0"][idx], pairs["x1"][idx]
            else:
                a, b = x0, x1
            start = time.perf_counter()
            loss = loss_fn(models[name], a, b)
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            optims[name].step()
            times[name].append(time.perf_counter() - start)
            emas[name].update_parameters(models[name])
    models.update({f"{name} + EMA": emas[name].module for name in losses})
    return models, times


@torch.no_grad()
def evaluate(model: nn.Module) -> dict:
    """W2 per solver and NFE (mean over evaluation seeds), straightness, dopri5 NFE."""
    model.eval()
    rows: dict = {"euler": {}, "midpoint": {}, "dopri5": {}}
    s_values, dopri_nfe = [], []
    for eval_seed in EVAL_SEEDS:
        g = torch.Generator().manual_seed(eval_seed)
        x0, target = eight_gaussians(N_EVAL, g), moons(N_EVAL, g)
        for nfe in NFES:
            rows["euler"].setdefault(nfe, []).append(
                wasserstein(Sampler(Euler(), nfe).sample(model, x0).x, target))
            if nfe >= 2:
                rows["midpoint"].setdefault(nfe, []).append(
                    wasserstein(Sampler(Midpoint(), nfe // 2).sample(model, x0).x, target))
        result = Dopri5(rtol=1e-5, atol=1e-5).integrate(lambda x, t: model(x, t), x0, uniform_grid(1))
        rows["dopri5"].setdefault("w2", []).append(wasserstein(result.x, target))
        dopri_nfe.append(result.nfe)
        trajectory = Sampler(Euler(), 100).sample(model, x0, trajectory=True).trajectory
        s_values.append(straightness(trajectory))
    summary = {solver: {str(k): float(np.mean(v)) for k, v in table.items()}
               for solver, table in rows.items()}
    summary["dopri5"]["nfe"] = float(np.mean(dopri_nfe))
    summary["straightness"] = float(np.mean(s_values))
    return summary


def floor() -> float:
    values = []
    for eval_seed in EVAL_SEEDS:
        g = torch.Generator().manual_seed(eval_seed)
        values.append(wasserstein(moons(N_EVAL, g),
                                  moons(N_EVAL, torch.Generator().manual_seed(eval_seed + 7))))
    return float(np.mean(values))


def two_rf(teacher: nn.Module, steps: int, seed: int, n_pairs: int) -> tuple[nn.Module, list[float]]:
    """2-RF: pairs from the teacher (dopri5), then the paired coupling, from the teacher's weights."""
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_pairs(teacher, Source(), n_pairs, Path(tmp) / "pairs.h5",
                              sampler=Sampler(Dopri5(rtol=1e-5, atol=1e-5), 1), batch_size=5000, seed=seed,
                              progress=False)
        from flowsci.data import load_split

        pairs = load_split(path, "train", ["x0", "x1"])
    pairs.update(init=teacher.state_dict(), names={"flowsci 2-RF"})
    models, times = train_round_robin({"flowsci 2-RF": flowsci_loss(PairedCoupling())}, steps, seed, pairs)
    return models, times["flowsci 2-RF"]


def plot(results: dict, out: Path) -> None:
    """W2 vs NFE (Euler; EMA solid, last iterate faint) and the step times."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    colours = {}
    for name, runs in results["variants"].items():
        base = name.removesuffix(" + EMA")
        colour = colours.setdefault(base, f"C{len(colours)}")
        mean = [np.mean([r["eval"]["euler"][str(k)] for r in runs]) for k in NFES]
        ema = name.endswith(" + EMA")
        ax.plot(NFES, mean, "-o" if ema else "--", color=colour, ms=3, alpha=1.0 if ema else 0.35,
                label=name)
    ax.axhline(results["floor"], color="gray", ls=":", label="data floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE (Euler steps)", ylabel="W2 (exact, 1000 vs 1000)",
           title="8 Gaussians -> moons: W2 vs NFE (mean of seeds)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    names = [n for n in results["variants"] if not n.endswith(" + EMA")]
    times = [np.mean([r["step_ms"] for r in results["variants"][n]]) for n in names]
    bx.barh(names, times, color=[colours[n] for n in names])
    bx.set(xlabel=f"ms per training step (median, {results['threads']} threads)", title="training step time")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def markdown_table(results: dict) -> str:
    """The README table: mean ± std over training seeds of W2 per NFE, straightness, step time."""

    def cell(values: list[float], digits: int = 3) -> str:
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if len(values) > 1 \
            else f"{values[0]:.{digits}f}"

    head = (["variant", "ms/step", "× indep."] + [f"Euler {k}" for k in NFES]
            + [f"midpoint {k}" for k in NFES if k >= 2] + ["dopri5 (NFE)", "Ŝ"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = np.mean([r["step_ms"] for r in results["variants"]["flowsci independent"]])
    for name, runs in results["variants"].items():
        ms = [r["step_ms"] for r in runs]
        row = [name, cell(ms, 2), f"{np.mean(ms) / base:.2f}"]
        row += [cell([r["eval"]["euler"][str(k)] for r in runs]) for k in NFES]
        row += [cell([r["eval"]["midpoint"][str(k)] for r in runs]) for k in NFES if k >= 2]
        row.append(f"{cell([r['eval']['dopri5']['w2'] for r in runs])} "
                   f"({np.mean([r['eval']['dopri5']['nfe'] for r in runs]):.0f})")
        row.append(cell([r["eval"]["straightness"] for r in runs], 4))
        lines.append("| " + " | ".join(row) + " |")
    seeds = len(next(iter(results["variants"].values())))
    lines.append(f"\nData floor (target vs target, 1000 vs 1000): {results['floor']:.3f}. "
                 f"{seeds} training seeds x 3 evaluation seeds; {results['steps']} steps, batch "
                 f"{results['batch']}, {results['threads']} threads, torch {results['torch']}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--reflow-steps", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--report", metavar="JSON",
                        help="redraw the PNG and print the table of an earlier run")
    args = parser.parse_args()
    if args.report:  # redraw the figure and the table of an earlier run
        results = json.loads(Path(args.report).read_text())
        plot(results, Path(args.report).with_suffix(".png"))
        print(markdown_table(results))
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = {"benchmark": "toy2d_vs_peers", "steps": args.steps, "reflow_steps": args.reflow_steps,
               "batch": BATCH, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
               "floor": floor(), "variants": {}}
    for seed in range(args.seeds):
        t0 = time.time()
        models, times = train_round_robin(variants(), args.steps, seed)
        reflowed, times["flowsci 2-RF"] = two_rf(models["flowsci independent + EMA"], args.reflow_steps, seed,
                                                 args.pairs)
        models.update(reflowed)
        for name, model in models.items():
            step_times = times[name.removesuffix(" + EMA")]
            row = {"seed": seed, "step_ms": 1e3 * statistics.median(step_times[WARMUP:]),
                   "eval": evaluate(model)}
            results["variants"].setdefault(name, []).append(row)
            print(f"seed {seed} {name:<22} {row['step_ms']:.2f} ms/step  W2 euler "
                  + " ".join(f"{k}:{row['eval']['euler'][str(k)]:.3f}" for k in NFES)
                  + f"  dopri5 {row['eval']['dopri5']['w2']:.3f} ({row['eval']['dopri5']['nfe']:.0f} NFE)"
                  + f"  S={row['eval']['straightness']:.4f}", flush=True)
        print(f"seed {seed} done in {time.time() - t0:.0f} s", flush=True)
        (out / "toy2d_vs_peers.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "toy2d_vs_peers.png")
    table = markdown_table(results)
    (out / "toy2d_vs_peers.md").write_text(table + "\n")
    print(table)
    print(f"written: {out / 'toy2d_vs_peers.json'}, .png, .md")


if __name__ == "__main__":
    main()
