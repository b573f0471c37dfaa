"""IFactFormer-m vs -o vs FNO vs IFNO (flowsci) and neuraloperator's FNO on filtered 2-D
Kolmogorov turbulence, at an equal parameter budget and an equal number of epochs, in the
IFactFormer paper's kind of setting (ν = 1e-3, 128² DNS -> 32², Δ = 0.2; :data:`LEGACY_DATA`),
not the main job's default regime (``bench/turbulence.py`` compares models and LES there).

Every model trains through flowsci's own pipeline (`flowsci_domains.turbulence`, the same
data, normalisation, relative-L2 loss, optimiser, schedule and batches); neuraloperator's FNO
enters as a registered model plugin. The baselines' widths are chosen so that their parameter
count is closest to IFactFormer-m's. Two reference rows need no training: persistence (copy
u(t) forward) and the coarse solver (the same equations on the 32² grid, no closure).

Reports per model: parameters, training seconds per epoch, one-step test relative L2, rollout
relative L2 at 10/50/300 steps, time-averaged spectrum error for k <= 8 and the spectrum
ratio range, mean enstrophy ratio, seconds per rollout step (batch 1) and the speed-up over
the 128² DNS for the same physical time. Writes JSON + Markdown + PNG to --out.

    python bench/turbulence_operators.py [--epochs 8] [--threads 1] [--out bench/results] [--smoke]
    python bench/turbulence_operators.py --flow [--epochs 8]   # flow-matching surrogate: CRPS, spread-skill

neuraloperator is optional (``make bench-deps``); without it its row is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import torch
import yaml
from matplotlib.figure import Figure

import flowsci
from flowsci.config import config_from_dict, load_config
from flowsci.plugins import build_model, create_domain, register_model
from flowsci.training import train
from flowsci_domains.turbulence.domain import rollout_statistics
from flowsci_domains.turbulence.generate import coarse_solver_rollout
from flowsci_domains.turbulence.objectives import relative_l2
from flowsci_domains.turbulence.statistics import energy_spectrum, enstrophy

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "turbulence.yaml"
ERROR_STEPS = (10, 50, 300)
# The data of this comparison (the default regime of domains/turbulence.yaml before issue 21).
LEGACY_DATA = ["data.n_trajectories=16", "data.n_val=2", "data.n_test=2", "data.snapshot_dt=0.2",
               "data.spinup_time=30.0", "data.spinup_n_dns=null", "data.n_dns=128", "data.n_les=32",
               "data.nu=0.001", "eval.correlation_horizon=50"]


class NeuralopFNO(torch.nn.Module):
    """neuraloperator's FNO (grid positional embedding on by default) as a flowsci model.

    Its state_dict carries a pickled '_metadata' entry (init kwargs) that flowsci's
    weights-only checkpoint loading rejects; the wrapper leaves it out.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: list[int], hidden_channels: int,
                 n_layers: int = 4):
        super().__init__()
        from neuralop.models import FNO

        self.fno = FNO(n_modes=tuple(n_modes), in_channels=in_channels, out_channels=out_channels,
                       hidden_channels=hidden_channels, n_layers=n_layers)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.fno(u)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state


def parameters(name: str, params: dict) -> int:
    model = build_model(name, {"in_channels": 1, "out_channels": 1, **params})
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def match_width(name: str, fixed: dict, key: str, target: int) -> dict:
    """``fixed`` plus the value of ``key`` (a width) whose parameter count is closest to target."""
    counts = {}
    for width in range(2, 129):
        try:
            counts[width] = parameters(name, {**fixed, key: width})
        except ValueError:  # e.g. IFactFormer needs an even dim
            continue
    best = min(counts, key=lambda w: abs(counts[w] - target))
    return {**fixed, key: best}


def model_table(have_neuralop: bool) -> dict[str, tuple[str, dict, list[str]]]:
    """label -> (registered model, its arguments, extra config overrides)."""
    reference = {"dim": 48, "heads": 4, "dim_head": 16, "kernel_multiplier": 3, "n_layer": 6}
    budget = parameters("ifactformer_m", reference)
    table = {
        "IFactFormer-m": ("ifactformer_m", reference, []),
        "IFactFormer-o": ("ifactformer_o", match_width("ifactformer_o", reference, "dim", budget), []),
        "FNO": ("fno", match_width("fno", {"modes": 6, "n_layers": 4}, "width", budget), []),
        "IFNO": ("ifno", match_width("ifno", {"modes": 6, "n_layer": 6}, "width", budget), []),
    }
    if have_neuralop:
        table["FNO (neuraloperator)"] = ("neuralop_fno", match_width(
            "neuralop_fno", {"n_modes": [12, 12], "n_layers": 4}, "hidden_channels", budget), [])
    return table


FLOW_TABLE = {"IFactFormer-m + flow matching": (
    "ifactformer_m", {"dim": 48, "heads": 4, "dim_head": 16, "kernel_multiplier": 3, "n_layer": 6},
    ["objective.kind=flow_matching", "sample.solver=midpoint", "sample.steps=1", "eval.n_samples=100",
     "eval.members=8"])}


def overrides(args: argparse.Namespace) -> list[str]:
    """The data, training and evaluation settings shared by every model."""
    common = [*LEGACY_DATA, "data.n_snapshots=301", f"train.threads={args.threads}",
              "train.checkpoint_every=0", "eval.error_steps=[1,10,50,300]", "eval.rollout_steps=300",
              "train.log_every=50"]
    if args.smoke:
        common += ["data.n_trajectories=4", "data.n_val=1", "data.n_test=1", "data.n_snapshots=40",
                   "data.spinup_time=5", "data.n_dns=64", "eval.rollout_steps=40",
                   "eval.error_steps=[1,10,30]", "eval.timing_repeats=2", "eval.dns_timing_time=0.2",
                   "eval.timing_batch=2"]
    return common


def train_model(label: str, name: str, params: dict, extra: list[str], args: argparse.Namespace,
                steps: int) -> dict:
    """Train one model through flowsci's pipeline in a fresh run directory; its final metrics."""
    raw = yaml.safe_load(YAML.read_text())
    raw["model"] = {"name": name, **params}
    cfg = config_from_dict(raw, [*overrides(args), f"train.steps={steps}", *extra], source=str(YAML))
    run_dir = args.runs / (name + ("_flow" if cfg.objective.kind == "flow_matching" else ""))
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run per benchmark
    result = train(cfg, run_dir, progress=sys.stderr.isatty())
    return {"model": label, "registered_name": name, "params": params, "parameters": parameters(name, params),
            "run": str(result.run_dir), **result.metrics}


def reference_rows(data) -> tuple[list[dict], torch.Tensor]:
    """Persistence and the coarse solver without closure on the test trajectories, the latter
    keeping the filter's modes (3/2-rule products) and with the 2/3 rule (|k| <= (n - 1) // 3);
    also the 3/2-rule coarse solver's rollouts (1, N, T, 1, n, n)."""
    reference = data.test.tensors["trajectory"]
    steps = reference.shape[1] - 1
    attrs = data.meta.attrs
    dt = float(attrs["snapshot_dt"])
    physics = {k: attrs[k] for k in ("nu", "drag", "forcing_amplitude", "forcing_wavenumber")}
    k_max = reference.shape[-1] // 4
    starts = reference[:, :-1, 0].flatten(0, 1).double()
    targets = reference[:, 1:].flatten(0, 1)
    rows, coarse_paths = [], None
    persistence = {"model": "persistence", "one_step": reference[:, :-1].flatten(0, 1),
                   "paths": reference[:, :1].expand_as(reference)}
    variants = [persistence]
    for label, dealias in (("coarse solver (no closure)", "three_halves"),
                           ("coarse solver, 2/3 rule (no closure)", "two_thirds")):
        paths = coarse_solver_rollout(reference[:, 0, 0].double(), steps, dt, dealias=dealias, **physics)
        one_step = coarse_solver_rollout(starts, 1, dt, dealias=dealias, **physics)[:, 1]
        variants.append({"model": label, "one_step": one_step.float().unsqueeze(1),
                         "paths": paths.float().unsqueeze(2)})
    for variant in variants:
        paths = variant["paths"]
        row = {"model": variant["model"], "parameters": 0,
               "one_step_rel_l2": float(relative_l2(variant["one_step"], targets).mean())}
        for s in ERROR_STEPS:
            if s <= steps:
                row[f"rollout_rel_l2_step{s}"] = float(relative_l2(paths[:, s], reference[:, s]).mean())
        row.update(rollout_statistics(paths[None, :, 1:], reference, k_max))
        rows.append(row)
        if variant["model"] == "coarse solver (no closure)":
            coarse_paths = paths[None]
    return rows, coarse_paths


def figure(rows: list[dict], runs: dict[str, torch.Tensor], reference: torch.Tensor, path: Path) -> None:
    fig = Figure(figsize=(15, 4.2))
    bars, spectra, series = fig.subplots(1, 3)
    labels = [r["model"] for r in rows]
    bars.barh(labels, [r["one_step_rel_l2"] for r in rows], color="C0")
    bars.invert_yaxis()
    bars.set_xlabel("one-step test relative L2"), bars.set_title("one-step error")
    k, e_ref = energy_spectrum(reference[:, :, 0].flatten(0, 1).double())
    spectra.loglog(k, e_ref.mean(0), "k-", lw=2, label="filtered DNS")
    for label, paths in runs.items():
        w = paths[..., 1:, 0, :, :].flatten(0, 2).double()
        if torch.isfinite(w).all():
            style = ":" if label.startswith("coarse") else "-"
            spectra.loglog(k, energy_spectrum(w)[1].mean(0), style, lw=1, label=label)
        z = enstrophy(paths[0, 0, :, 0].double())
        series.semilogy(torch.arange(len(z)), z.clamp_min(1e-6), lw=1, label=label)
    series.semilogy(torch.arange(reference.shape[1]), enstrophy(reference[0, :, 0].double()), "k-", lw=2,
                    label="filtered DNS")
    spectra.set_ylim(bottom=float(e_ref.mean(0).min()) / 10)
    spectra.set_xlabel("k"), spectra.set_ylabel("E(k)"), spectra.legend(fontsize=7)
    spectra.set_title("time-averaged spectrum of 300-step rollouts")
    series.set_xlabel("rollout step"), series.set_ylabel("enstrophy"), series.legend(fontsize=7)
    series.set_title("enstrophy along the first test rollout")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict], header: str, flow: bool = False) -> str:
    columns = [("model", "model", "{}"), ("parameters", "params", "{:,}"),
               ("seconds_per_epoch", "s/epoch", "{:.1f}"), ("one_step_rel_l2", "one-step", "{:.3f}")]
    if flow:
        columns += [("one_step_mean_rel_l2", "one-step (ensemble mean)", "{:.3f}"),
                    ("one_step_crps", "CRPS", "{:.3f}"), ("one_step_spread_skill", "spread/skill", "{:.2f}"),
                    ("rollout_spread_skill_step10", "spread/skill@10", "{:.2f}")]
    columns += [(f"rollout_rel_l2_step{s}", f"rollout@{s}", "{:.3f}") for s in ERROR_STEPS]
    columns += [("spectrum_max_rel_error", "max spectrum err k≤8", "{:.2f}"),
                ("enstrophy_ratio", "enstrophy ratio", "{:.2f}"), ("seconds_per_step", "ms/step", "{:.1f}"),
                ("speedup", "speed-up vs DNS", "{:.1f}×"),
                ("speedup_batch16", "speed-up, batch 16", "{:.1f}×")]
    lines = [header, "", "| " + " | ".join(c[1] for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            if value is None:
                cells.append("–")
            elif key == "seconds_per_step":
                cells.append(fmt.format(1000 * value))
            else:
                cells.append(fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_turbulence_operators",
                        help="where the trained runs go (replaced on every benchmark)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and few steps (checks the script)")
    parser.add_argument("--models", nargs="*", help="labels to run (default: all)")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="rebuild the table, baseline rows and figure of a finished benchmark from "
                             "its JSON and runs")
    parser.add_argument("--flow", action="store_true",
                        help="the flow-matching IFactFormer-m surrogate instead (turbulence_flow.*)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import neuralop  # noqa: F401
        register_model("neuralop_fno")(NeuralopFNO)
        have_neuralop = True
    except ImportError:
        have_neuralop = False

    domain = create_domain("turbulence")
    if args.report:
        report(args.report, domain)
        return
    cfg = load_config(YAML, overrides(args))
    data = domain.build_data(cfg)
    pairs = len(data.train)
    steps = max(1, round(args.epochs * pairs / args.batch_size)) if not args.smoke else 20
    rows, runs = [], {}
    table = FLOW_TABLE if args.flow else model_table(have_neuralop)
    for label, (name, params, extra) in table.items():
        if args.models and label not in args.models:
            continue
        print(f"--- {label}: {name} {params} ({parameters(name, params):,} parameters, {steps} steps)",
              flush=True)
        row = train_model(label, name, params, extra, args, steps)
        row["seconds_per_epoch"] = _seconds_per_step(Path(row["run"])) * pairs / args.batch_size
        rows.append(row)
        runs[label] = run_rollouts(domain, Path(row["run"]))
    if not args.flow:
        baseline_rows, coarse = reference_rows(data)
        rows += baseline_rows
        runs["coarse solver (no closure)"] = coarse
    reference = data.test.tensors["trajectory"]
    stem = "turbulence_operators" + ("_flow" if args.flow else "") + ("_smoke" if args.smoke else "")
    hardware = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "flowsci": flowsci.__version__,
                "python": platform.python_version()}
    command = " ".join(["python", "bench/turbulence_operators.py", *sys.argv[1:]])
    record = {"command": command, "hardware": hardware,
              "epochs": args.epochs, "batch_size": args.batch_size, "steps": steps, "train_pairs": pairs,
              "data": data.meta.attrs, "neuraloperator": have_neuralop, "rows": rows}
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    header = (f"`{record['command']}` — {steps} steps × batch {args.batch_size} = {args.epochs:g} epochs of "
              f"{pairs} pairs, {hardware['threads']} thread(s), torch {hardware['torch']}")
    (args.out / f"{stem}.md").write_text(markdown(rows, header, args.flow))
    figure(rows, runs, reference, args.out / f"{stem}.png")
    print(markdown(rows, header, args.flow))


def run_rollouts(domain, run: Path) -> torch.Tensor:
    """The evaluation rollouts (M, N, S + 1, C, n, n) of a trained run's final model."""
    from flowsci.checkpoint import load_model

    cfg = load_config(run / "config.yaml")
    return domain.rollouts(load_model(run), domain.build_data(cfg), cfg)["rollout"]


def report(path: Path, domain) -> None:
    """Rewrite the Markdown table and the figure next to ``path`` from its rows and runs."""
    record = json.loads(path.read_text())
    rows = record["rows"]
    flow = any("one_step_crps" in row for row in rows)
    runs = {row["model"]: run_rollouts(domain, Path(row["run"])) for row in rows if "run" in row}
    data = domain.build_data(load_config(Path(rows[0]["run"]) / "config.yaml"))
    if not flow:  # the baseline rows are cheap: recompute them
        baseline_rows, runs["coarse solver (no closure)"] = reference_rows(data)
        rows = [row for row in rows if "run" in row] + baseline_rows
        record["rows"] = rows
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    hardware = record["hardware"]
    header = (f"`{record['command']}` — {record['steps']} steps × batch {record['batch_size']} = "
              f"{record['epochs']:g} epochs of {record['train_pairs']} pairs, "
              f"{hardware['threads']} thread(s), torch {hardware['torch']}")
    path.with_suffix(".md").write_text(markdown(rows, header, flow))
    figure(rows, runs, data.test.tensors["trajectory"], path.with_suffix(".png"))
    print(markdown(rows, header, flow))


def _seconds_per_step(run: Path) -> float:
    """Median training wall-clock per step of a run (its logged seconds_per_step)."""
    from flowsci.metrics_log import read_metrics

    values = [v for (_, phase, name, v) in read_metrics(run / "metrics.csv") if name == "seconds_per_step"]
    return float(torch.tensor(values).median()) if values else float("nan")


if __name__ == "__main__":
    main()
