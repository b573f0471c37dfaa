"""FlowSep at CPU scale: the rectified-flow separator against the discriminative mask separator and
the same model on a diffusion (VP) path, on held-out Bach chorales.

Runs, each a flowsci run under ``--work`` (a finished run is reused, an interrupted one resumed):

- ``autoencoder``: ``domains/separation_autoencoder.yaml``, the mel autoencoder of the flow's
  latent space (its reconstruction scores are reported);
- ``flow``: ``domains/separation.yaml`` with that autoencoder (FlowSep's σ_min path);
- ``vp``: the same config with ``objective.path=vp`` (the diffusion baseline, same network);
- ``mask``: ``domains/separation_mask.yaml`` (LASS-Net-style mask on the mixture's mel, the same
  U-Net at the same resolution and about the same parameter count).

All use the default data set and are evaluated by their domain on the same 400 test rows (mixture,
voice) of held-out chorales, the flows at 1-64 Euler steps. Then, in this process, the seconds
each separator takes per second of audio (separation and resynthesis, least of 3). Two runs train
at a time (``--jobs``), one thread each.

Writes ``bench/results/separation.{json,md,png}`` and ``separation_roles.png``.

    python bench/separation.py [--work runs/separation_bench] [--jobs 2] [--seed 0]
    python bench/separation.py --report bench/results/separation.json   # the table and figures again
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from images_common import write_result
from matplotlib.figure import Figure

import flowsci
from flowsci.atomic import atomic_write_text
from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.metrics_log import read_metrics
from flowsci.registry import create_domain
from flowsci_domains.separation.chorales import VOICES

REPO = Path(__file__).resolve().parents[1]
FLOWSCI = str(Path(sys.executable).with_name("flowsci"))
NFE = [1, 2, 4, 8, 16, 32, 64]
TOLERANCE_DB = 0.25   # "equal quality": within this much SI-SDRi of the best
TIMING_ROWS = 100


def run_commands(work: Path, seed: int) -> dict[str, list[str]]:
    """The ``flowsci train`` arguments of every run."""
    common = [f"seed={seed}", "train.threads=1"]
    flow = [*common, f"domain.autoencoder={work / 'autoencoder'}", f"eval.steps={NFE}"]
    return {"autoencoder": ["domains/separation_autoencoder.yaml", *common],
            "mask": ["domains/separation_mask.yaml", *common],
            "flow": ["domains/separation.yaml", *flow],
            "vp": ["domains/separation.yaml", *flow, "objective.path=vp"]}


def final_metrics(run: Path) -> dict[str, float] | None:
    """The last evaluation of a finished run (None when it has not finished)."""
    path = run / "metrics.csv"
    rows = [r for r in read_metrics(path) if r[1] == "eval"] if path.is_file() else []
    if not rows:
        return None
    last = max(step for step, *_ in rows)
    return {name: value for step, _, name, value in rows if step == last}


def train_runs(work: Path, seed: int, jobs: int) -> None:
    """Train (or resume) every run, ``jobs`` at a time, the flows once the autoencoder has finished;
    a failure stops the benchmark."""
    commands = run_commands(work, seed)
    pending = [n for n in commands if final_metrics(work / n) is None]
    running: dict[str, subprocess.Popen] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def ready(name: str) -> bool:
        return name in ("autoencoder", "mask") or "autoencoder" not in pending + list(running)

    while pending or running:
        while len(running) < jobs and any(ready(n) for n in pending):
            name = next(n for n in pending if ready(n))
            pending.remove(name)
            out = work / name
            args = (["resume", str(out)] if (out / "config.yaml").is_file()
                    else ["train", *commands[name], "--out", str(out)])
            log = (work / f"{name}.log").open("a")
            print(f"{name}: flowsci {' '.join(args)}", flush=True)
            running[name] = subprocess.Popen([FLOWSCI, "-q", *args], cwd=REPO, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
        time.sleep(5)
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                if process.returncode:
                    raise SystemExit(f"{name} failed (exit {process.returncode}); see {work / name}.log")
                print(f"{name}: done", flush=True)


def seconds_per_audio_second(run: Path, repeats: int = 3) -> float:
    """Separation and resynthesis of the first TIMING_ROWS test rows at the run's sample.steps,
    least of ``repeats``, in seconds per second of audio."""
    from flowsci_domains.separation.scoring import resynthesize

    cfg = flowsci.load_config(run / "config.yaml")
    domain = create_domain(cfg.domain)
    model = load_model(run, ema=cfg.eval.use_ema)
    features = domain.features(cfg, "test")
    rows = slice(0, TIMING_ROWS)
    query = {k: v[rows] for k, v in domain.query(cfg, features, "test").items()}
    mixture = features.mixture_waves(features.rows[rows])
    domain.estimate(model, cfg, features, rows, query, cfg.sample.steps)  # warm-up (latents, caches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        estimate, _ = domain.estimate(model, cfg, features, rows, query, cfg.sample.steps)
        resynthesize(estimate, mixture, domain.spectrogram(cfg))
        best = min(best, time.perf_counter() - start)
    return best / (TIMING_ROWS * mixture.shape[-1] / cfg.data.sample_rate)


def curve(metrics: dict[str, float], name: str = "si_sdri") -> tuple[list[int], list[float]]:
    nfe = [k for k in NFE if f"{name}_nfe{k}" in metrics]
    return nfe, [metrics[f"{name}_nfe{k}"] for k in nfe]


def efficiency(flow: dict[str, float], vp: dict[str, float]) -> dict[str, float | None]:
    """The fewest NFE at which the flow is within TOLERANCE_DB of its best SI-SDRi, and the fewest
    at which the VP model reaches that quality (None: not within the grid)."""
    nfe, quality = curve(flow)
    best = max(quality)
    flow_nfe = next(k for k, q in zip(nfe, quality) if q >= best - TOLERANCE_DB)
    target = flow[f"si_sdri_nfe{flow_nfe}"]
    vp_nfe = next((k for k, q in zip(*curve(vp)) if q >= target - TOLERANCE_DB), None)
    return {"flow_nfe": flow_nfe, "quality_db": target, "vp_nfe": vp_nfe,
            "vp_over_flow": vp_nfe / flow_nfe if vp_nfe else None, "vp_best_db": max(curve(vp)[1])}


def report(result: dict) -> tuple[str, Figure, dict[str, Figure]]:
    runs, ae = result["runs"], result["runs"]["autoencoder"]
    flow, mask = runs["flow"], runs["mask"]
    eff = result["efficiency"]
    lines = ["# FlowSep: text-queried separation of chorale voices (held-out chorales)", "",
             f"`python bench/separation.py` — one seed ({result['seed']}), {result['threads']} thread; "
             f"400 test rows (mixture, voice) of {result['n_test']} excerpts; mixture SI-SDR "
             f"{flow['si_sdr_mixture']:.2f} dB. Waves from the estimated mel with the mixture's phase "
             "(Griffin-Lim: phase-free).", "",
             "| separator | parameters | NFE | SI-SDR | SI-SDRi | SDR | mel-L1 | SI-SDR Griffin-Lim | "
             "SI-SDRi held-out phrasings | s per s of audio | training s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("flow", "FlowSep (rectified flow, latent)"), ("vp", "same model, VP path"),
                        ("mask", "mask separator (discriminative)")):
        m = runs[name]
        lines.append(f"| {label} | {m['parameters'] / 1e6:.2f} M | {m['nfe']:.0f} | {m['si_sdr']:.2f} | "
                     f"{m['si_sdri']:.2f} | {m['sdr']:.2f} | {m['mel_l1']:.3f} | "
                     f"{m['si_sdr_griffin_lim']:.2f} | {m['si_sdri_heldout']:.2f} | "
                     f"{result['seconds_per_audio_second'][name]:.4f} | {m['train_seconds']:.0f} |")
    lines += ["", f"Autoencoder ({ae['parameters'] / 1e6:.2f} M parameters, {ae['train_seconds']:.0f} s): "
              f"mel-L1 {ae['mel_l1']:.3f}; SI-SDR from the reconstructed target mel "
              f"{ae['si_sdr_reconstructed']:.2f} dB, from the true mel {ae['si_sdr_true_mel']:.2f} dB "
              "(the ceiling of any mel-domain separator with this resynthesis).", "",
              "Per role, SI-SDRi (dB) / mel-L1:", "", "| role | FlowSep | VP path | mask |",
              "|---|---|---|---|"]
    for role in VOICES:
        cells = [f"{runs[n][f'si_sdri_{role}']:.2f} / {runs[n][f'mel_l1_{role}']:.3f}"
                 for n in ("flow", "vp", "mask")]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    lines += ["", "SI-SDRi (dB) against NFE (Euler steps):", "",
              "| NFE | " + " | ".join(str(k) for k in NFE) + " |", "|---|" + "---|" * len(NFE)]
    for name in ("flow", "vp"):
        lines.append(f"| {name} | " + " | ".join(f"{runs[name].get(f'si_sdri_nfe{k}', float('nan')):.2f}"
                                                 for k in NFE) + " |")
    vp_nfe = eff["vp_nfe"] if eff["vp_nfe"] else f"> {NFE[-1]}"
    lines += ["", f"Equal quality (within {TOLERANCE_DB} dB): the flow reaches {eff['quality_db']:.2f} dB at "
              f"{eff['flow_nfe']} NFE; the VP model at {vp_nfe} NFE (best {eff['vp_best_db']:.2f} dB).", ""]

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, axis_label in zip(axes, ("si_sdri", "mel_l1"), ("SI-SDRi (dB)", "mel-L1")):
        for name, style, label in (("flow", "o-", "rectified flow"), ("vp", "s--", "VP (diffusion) path")):
            ax.plot(*curve(runs[name], metric), style, label=label)
        ax.axhline(mask[metric], color="k", ls=":", label="mask separator")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_ylabel(axis_label)
        ax.grid(alpha=0.3)
    axes[0].axhline(ae["si_sdr_true_mel"] - flow["si_sdr_mixture"], color="gray", ls="-.",
                    label="true mel (autoencoder's test rows)")
    axes[0].legend(fontsize=8)
    roles = Figure(figsize=(7, 3.2), layout="constrained")
    ax = roles.subplots()
    width = 0.27
    for i, name in enumerate(("flow", "vp", "mask")):
        heights = [runs[name][f"si_sdri_{r}"] for r in VOICES]
        ax.bar([j + (i - 1) * width for j in range(len(VOICES))], heights, width, label=name)
    ax.axhline(6.0, color="k", ls=":", label="goal: 6 dB")
    ax.set_xticks(range(len(VOICES)), VOICES)
    ax.set_ylabel("SI-SDRi (dB)")
    ax.legend(fontsize=8)
    return "\n".join(lines), fig, {"roles": roles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "separation_bench")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "separation.json")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="rebuild the table and figures from a saved JSON")
    args = parser.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
        markdown, figure, extra = report(result)
        write_result(args.report, result, markdown + "\n", figure, extra)
        return
    torch.set_num_threads(1)
    work = args.work / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([FLOWSCI, "-q", "data", "make", "domains/separation.yaml"], cwd=REPO, check=True)
    train_runs(work, args.seed, args.jobs)
    runs = {name: final_metrics(work / name) for name in run_commands(work, args.seed)}
    for name, metrics in runs.items():  # the count of the saved network (the autoencoder reports none)
        metrics["parameters"] = float(sum(p.numel() for p in load_model(work / name).parameters()))
    timing = {name: seconds_per_audio_second(work / name) for name in ("flow", "vp", "mask")}
    n_test = load_config(REPO / "domains" / "separation.yaml").data.n_test
    result = {"flowsci": flowsci.__version__, "torch": torch.__version__, "machine": platform.machine(),
              "threads": 1, "seed": args.seed, "n_test": n_test, "nfe_grid": NFE, "runs": runs,
              "seconds_per_audio_second": timing, "efficiency": efficiency(runs["flow"], runs["vp"])}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")  # kept if the report fails
    markdown, figure, extra = report(result)
    write_result(args.out, result, markdown + "\n", figure, extra)


if __name__ == "__main__":
    main()
