"""The main job's comparison: learned models against classical LES at equal cost, on the default
regime of domains/turbulence.yaml (ν = 5e-4, drag 0.1, 192² DNS -> 32², Δ = 1).

Every row is a run of flowsci's own pipeline on the same data, evaluated the same way:

- classical solvers as ``classical_solver`` models (``train.steps=0``): the 32², 48² and 64²
  solvers without closure (the finer ones filtered back to 32²), Smagorinsky and Leith LES with
  their coefficient tuned on the validation split (the coefficient with the lowest mean relative
  L2 over the first ``--tune-steps`` rollout steps from every 5th validation snapshot), Smagorinsky
  also at 48² and 64², and the DNS restarted from the filtered state (the floor of any closure);
- learned models trained for the YAML's steps: the solver-in-the-loop hybrid (the main job) with
  an IFactFormer-m or an FNO corrector, and IFactFormer-m alone (its best recipe here: velocity
  loss, pushforward training).

Reports per row: one-step and rollout errors, the correlation time (Kochkov et al. 2021) over
the test initial conditions, time-averaged spectrum, energy and enstrophy over 50-step and
300-step rollouts, velocity-profile errors, and the cost per unit physical time at batch 1 and
batch 16. Writes JSON + Markdown and the Pareto figure (error and correlation time against cost)
to --out.

    python bench/turbulence.py [--threads 1] [--out bench/results] [--smoke]
    python bench/turbulence.py --report bench/results/turbulence.json   # table and figure again
    python bench/turbulence.py --retime bench/results/turbulence.json   # costs again, in one process
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

import flowsci
from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.plugins import create_domain
from flowsci.training import train
from flowsci_domains.turbulence.objectives import relative_l2
from flowsci_domains.turbulence.rollout import rollout, seconds_per_step

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "domains" / "turbulence.yaml"
CANDIDATES = {"smagorinsky": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], "leith": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
SMOKE = ["data.n_trajectories=4", "data.n_val=1", "data.n_test=1", "data.n_snapshots=8", "data.spinup_time=3",
         "data.spinup_n_dns=null", "data.n_dns=64", "train.steps=4", "eval.rollout_steps=8",
         "eval.short_statistics_steps=4", "eval.error_steps=[1,5]", "eval.correlation_horizon=5",
         "eval.timing_repeats=2", "eval.dns_timing_time=0.2", "eval.timing_batch=2",
         "model.corrector={name: ifactformer_m, dim: 16, heads: 2, dim_head: 8, n_layer: 2}"]


def common(args: argparse.Namespace) -> list[str]:
    """Settings shared by every row."""
    return [f"train.threads={args.threads}", "train.checkpoint_every=0", "eval.baselines={}",
            *(SMOKE if args.smoke else [])]


def rows_to_run(args: argparse.Namespace, data_n_dns: int) -> dict[str, list[str]]:
    """label -> config overrides; the tuned LES coefficients are filled in by :func:`tune`."""
    classical = ["model={name: classical_solver}", "train.steps=0"]
    rows = {
        "coarse 32² (no closure)": classical,
        "coarse 48² (no closure)": ["model={name: classical_solver, resolution: 48}", "train.steps=0"],
        "coarse 64² (no closure)": ["model={name: classical_solver, resolution: 64}", "train.steps=0"],
    }
    for resolution in (32, 48, 64):
        for closure in ("smagorinsky", "leith"):
            if closure == "leith" and resolution != 32:
                continue
            label = f"{closure.capitalize()} {resolution}²"
            rows[label] = [f"model={{name: classical_solver, closure: {closure}, c: {{c}}, "
                           f"resolution: {resolution}}}", "train.steps=0"]
    rows[f"DNS restart {data_n_dns}² (floor)"] = [
        f"model={{name: classical_solver, resolution: {data_n_dns}, dealias: two_thirds}}", "train.steps=0",
        "eval.rollout_steps=50"]
    rows["hybrid: 32² solver + IFactFormer-m"] = []
    rows["hybrid: 32² solver + FNO"] = ["model.corrector={name: fno, modes: 12, width: 32, n_layers: 4}"]
    rows["IFactFormer-m alone"] = ["model={name: ifactformer_m, dim: 48, heads: 4, dim_head: 16, n_layer: 6}",
                                   "objective.loss_on=velocity", "objective.unroll=3",
                                   "objective.unroll_gradient=pushforward"]
    return rows


def tune(closure: str, resolution: int, args: argparse.Namespace) -> dict[str, float]:
    """Validation error of each candidate coefficient: the mean relative L2 over the first
    ``--tune-steps`` steps of rollouts from every 5th validation snapshot."""
    domain = create_domain("turbulence")
    errors = {}
    for c in CANDIDATES[closure]:
        model_spec = f"{{name: classical_solver, closure: {closure}, c: {c}, resolution: {resolution}}}"
        cfg = load_config(YAML, [*common(args), "train.steps=0", f"model={model_spec}"])
        data = domain.build_data(cfg)
        model = domain.build_model(cfg).eval()
        val = data.val.tensors["trajectory"]
        steps = min(args.tune_steps, val.shape[1] - 1)
        starts = range(0, val.shape[1] - steps, 5)
        truth = torch.cat([val[:, s:s + steps + 1] for s in starts])
        with torch.no_grad():
            paths = rollout(model, truth[:, 0], steps)
        errors[str(c)] = float(relative_l2(paths[:, 1:].flatten(0, 1), truth[:, 1:].flatten(0, 1)).mean())
        print(f"  {closure} {resolution}² c={c}: validation error {errors[str(c)]:.4f}", flush=True)
    return errors


def run_row(label: str, extra: list[str], args: argparse.Namespace) -> dict:
    cfg = load_config(YAML, [*common(args), *extra])
    run_dir = args.runs / "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run per benchmark
    result = train(cfg, run_dir, progress=sys.stderr.isatty())
    parameters = sum(p.numel() for p in load_model(result.run_dir).parameters())
    return {"model": label, "overrides": extra, "run": str(result.run_dir), "trained": cfg.train.steps > 0,
            "train_seconds": result.metrics.get("train_seconds"), "weights": parameters, **result.metrics}


COLUMNS = [("model", "model", "{}"), ("one_step_rel_l2", "one-step", "{:.3f}"),
           ("rollout_rel_l2_step5", "rollout@5", "{:.3f}"), ("correlation_time", "corr. time", "{:.2f}"),
           ("spectrum_max_rel_error_short", "spectrum err k≤8 (50 Δ)", "{:.2f}"),
           ("enstrophy_ratio_short", "enstrophy (50 Δ)", "{:.2f}"),
           ("spectrum_max_rel_error", "spectrum err (300 Δ)", "{:.2f}"),
           ("energy_ratio", "energy (300 Δ)", "{:.2f}"), ("enstrophy_ratio", "enstrophy (300 Δ)", "{:.2f}"),
           ("profile_rel_error_rms_u", "rms u′(y) err", "{:.2f}"),
           ("seconds_per_time_unit", "ms / time unit (batch 1)", "{:.1f}"),
           ("seconds_per_time_unit_batch16", "ms / time unit / traj (batch 16)", "{:.1f}")]


def markdown(record: dict) -> str:
    data, hardware = record["data"], record["hardware"]
    lines = [f"`{record['command']}` — {hardware['threads']} thread(s), torch {hardware['torch']}; "
             f"Δ = {data['snapshot_dt']}, ν = {data['nu']}, {data['n_dns']}² DNS -> {data['n_les']}²; "
             "tuned coefficients: "
             + ", ".join(f"{k} c = {v['chosen']}" for k, v in record["tuning"].items()), "",
             "| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    if "timing" in record:
        timing = record["timing"]
        lines[1:1] = ["", f"Costs {timing['method']}: median of {timing['rounds']} rounds × "
                      f"{timing['repeats']} steps, {timing['threads']} thread(s) (`--retime`)."]
    for row in record["rows"]:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            if value is None:
                cells.append("–")
            elif key.startswith("seconds_per_time_unit"):
                cells.append(fmt.format(1000 * value))
            else:
                cells.append(fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_figure(rows: list[dict], path: Path) -> None:
    """Error and correlation time against cost per unit physical time, batch 1 and batch 16."""
    fig = Figure(figsize=(12, 8.5))
    axes = fig.subplots(2, 2)
    panels = (("one_step_rel_l2", "one-step relative L2 (lower is better)"),
              ("correlation_time", "correlation time (higher is better)"))
    for column, (suffix, title) in enumerate((("", "batch 1"), ("_batch16", "batch 16, per trajectory"))):
        for row_index, (key, ylabel) in enumerate(panels):
            ax = axes[row_index, column]
            for index, row in enumerate(rows):
                cost, value = row.get(f"seconds_per_time_unit{suffix}"), row.get(key)
                if cost is None or value is None:
                    continue
                marker = "*" if row["trained"] else ("s" if "DNS" in row["model"] else "o")
                ax.scatter(1000 * cost, value, s=90 if marker == "*" else 45, marker=marker,
                           color=f"C{index % 10}", label=row["model"], zorder=3)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())  # 10, 100 rather than 10^1, 10^2
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"cost: ms per unit physical time ({title})")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("filtered 2-D Kolmogorov flow: accuracy against cost (★ learned, ● classical, ■ DNS floor)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def retime(record: dict, rounds: int, repeats: int) -> None:
    """Measure every row's cost again in this one process: ``rounds`` rounds over all rows in turn
    (so that load on the machine falls on every row alike), the median over rounds of each row's
    median step time, at batch 1 and at the runs' timing batch. The in-run costs are kept as
    ``*_in_run``."""
    domain = create_domain("turbulence")
    loaded = []
    for row in record["rows"]:
        cfg = load_config(Path(row["run"]) / "config.yaml", [])
        data = domain.build_data(cfg)
        u0 = data.test.tensors["trajectory"][:1, 0]
        dt = float(data.meta.attrs["snapshot_dt"])
        loaded.append((row, domain.step_function(load_model(row["run"]).eval(), cfg), u0, dt,
                       cfg.eval.timing_batch))
    times: dict[tuple[int, str], list[float]] = {}
    with torch.inference_mode():
        for _ in range(rounds):
            for index, (_, step, u0, _, timing_batch) in enumerate(loaded):
                for batch, suffix in ((1, ""), (timing_batch, f"_batch{timing_batch}")):
                    states = u0.expand(batch, *u0.shape[1:]).contiguous()
                    seconds = seconds_per_step(step, states, repeats) / batch
                    times.setdefault((index, suffix), []).append(seconds)
    for (index, suffix), measured in times.items():
        row, dt = loaded[index][0], loaded[index][3]
        key = f"seconds_per_time_unit{suffix}"
        row.setdefault(f"{key}_in_run", row.get(key))
        row[key] = float(torch.tensor(measured).median()) / dt
    record["timing"] = {"method": "retimed in one process, rows interleaved", "rounds": rounds,
                        "repeats": repeats, "threads": torch.get_num_threads()}


def write(record: dict, out: Path, stem: str) -> None:
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown(record))
    pareto_figure(record["rows"], out / f"{stem}.png")
    print(markdown(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tune-steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_turbulence",
                        help="where the runs go (replaced on every benchmark)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and few steps (checks the script)")
    parser.add_argument("--models", nargs="*", help="labels to run (default: all); the other rows of an "
                        "existing result in --out are kept")
    parser.add_argument("--report", type=Path, metavar="JSON", help="rewrite the table and figure of a JSON")
    parser.add_argument("--retime", type=Path, metavar="JSON", help="measure the costs of a JSON's runs "
                        "again in one process (rows interleaved), then rewrite it with its table and figure")
    parser.add_argument("--rounds", type=int, default=3, help="--retime: rounds over all rows")
    parser.add_argument("--repeats", type=int, default=5, help="--retime: timed steps per row and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report or args.retime:
        path = args.report or args.retime
        record = json.loads(path.read_text())
        if args.retime:
            retime(record, args.rounds, args.repeats)
        write(record, path.parent, path.stem)
        return
    domain = create_domain("turbulence")
    cfg = load_config(YAML, common(args))
    data = domain.build_data(cfg)
    n_dns = int(data.meta.attrs["n_dns"])
    tuning = {}
    rows = []
    for label, extra in rows_to_run(args, n_dns).items():
        if args.models and label not in args.models:
            continue
        if "{c}" in " ".join(extra):
            closure, resolution = label.split()[0].lower(), int(label.split()[1].rstrip("²"))
            errors = tune(closure, resolution, args)
            chosen = min(errors, key=errors.get)
            tuning[label] = {"validation_errors": errors, "chosen": float(chosen)}
            extra = [e.replace("{c}", chosen) for e in extra]
        print(f"--- {label}: {' '.join(extra)}", flush=True)
        rows.append(run_row(label, extra, args))
    stem = "turbulence" + ("_smoke" if args.smoke else "")
    previous = args.out / f"{stem}.json"
    if args.models and previous.exists():  # rerun some rows: keep the others, in their order
        kept = json.loads(previous.read_text())
        fresh = {row["model"]: row for row in rows}
        rows = [fresh.pop(row["model"], row) for row in kept["rows"]] + list(fresh.values())
        tuning = {**kept["tuning"], **tuning}
    hardware = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "flowsci": flowsci.__version__,
                "python": platform.python_version()}
    record = {"command": " ".join(["python", "bench/turbulence.py", *sys.argv[1:]]), "hardware": hardware,
              "data": data.meta.attrs, "tuning": tuning, "rows": rows}
    write(record, args.out, stem)


if __name__ == "__main__":
    main()
