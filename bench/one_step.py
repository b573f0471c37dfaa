"""The one-step family on MNIST-5k at 14×14: reflow (2-RF), 2-RF++, distillation (from the
1-RF or after reflow: InstaFlow's order), InstaFlow on the caption model, SlimFlow's small
student and Rectified Diffusion, in one table at 1/2/4/8 steps.

Every row is a run of ``flowsci rectify`` (:mod:`flowsci.rectify`) or a teacher trained with
``flowsci train``, kept under ``--work`` so that an interrupted benchmark resumes and a row
already measured is read back. Each model is then scored here, with the same noise and the
same feature classifier: Fréchet classifier distance (FD; a classifier trained here, not
Inception: not FID) against the test images next to the real-vs-real floor, class (or caption
attribute) accuracy, improved precision / recall, straightness of its 8-step path,
parameters, milliseconds per image of one step, and its training cost (teacher + pairs +
training, in seconds on this machine). Writes ``bench/results/one_step.{json,md,png}`` and
``one_step_samples.png`` (one step of every model from the same noise).

    python bench/one_step.py [--seeds 0 1 2] [--rows 2-RF 2-RF++ ...] [--threads 1]
    python bench/one_step.py --report      # the table from the rows measured so far
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from images_common import write_result
from matplotlib.figure import Figure

import flowsci
from flowsci.atomic import atomic_open, atomic_write_text
from flowsci.checkpoint import latest_checkpoint, load_checkpoint, load_model
from flowsci.config import load_config
from flowsci.data import load_split
from flowsci.feature_metrics import frechet_distance, precision_recall
from flowsci.metrics import straightness
from flowsci.rectify import rectify
from flowsci.registry import create_domain
from flowsci.rng import isolated_rng
from flowsci.runs import open_run
from flowsci.training import train
from flowsci_domains.images.domain import sample_scores

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "one_step.json"
STEPS = (1, 2, 4, 8)
N_PAIRS = 4000
# the students fine-tune for 500 steps (about 2 minutes on one core); a short EMA so that the
# average is not dominated by the initial (teacher) weights
STUDENT = ["train.steps=500", "train.warmup_steps=50", "train.ema=0.99", "train.checkpoint_every=100",
           "eval.steps=[1,2,4,8]"]
# the students draw without classifier-free guidance: the teacher's guidance is in their pairs
UNGUIDED = ["reflow:sample.guidance=1", "distill:sample.guidance=1"]
SLIM = ["model.width=9", "model.heads=3", "train.init_from=null"]  # ≈ 1/3 of the teacher's parameters
ANNEALED = "objective.coupling={name: annealed_paired, anneal_fraction: 0.6}"
# the VP (DDPM schedule) model predicts diffusion's v, trained on the x-prediction error: an
# epsilon-prediction read at t = 0 divides by alpha_0 = 0.0066 (one DDIM step from pure noise
# amplifies its error 150-fold), v stays well conditioned at both ends
VP_MODEL = ("model={name: parameterized, prediction: v, path: vp, backbone: {name: unet, params: "
            "{width: 16, multipliers: [1, 2, 2], blocks: 1, attention: true}}}")
VP = [VP_MODEL, "objective.path=vp", "objective.loss={name: x1_space, base: mse}",
      "sample.solver={name: ddim, path: vp}"]


@dataclasses.dataclass
class Row:
    """A model of the table: its label, what it is built from and how."""

    label: str
    build: Callable[[Path, int], Path]  # (work folder of the seed, seed) -> run directory
    solver: str | None = None             # sample.solver for scoring (default: the run's)


def teacher(name: str, yaml: str, extra: tuple[str, ...] = ()) -> Callable[[Path, int], Path]:
    """Train (or find) a teacher run of ``yaml`` for the seed."""
    def build(work: Path, seed: int) -> Path:
        run = work / name
        cfg = load_config(REPO / "domains" / yaml, [f"seed={seed}", "eval.steps=[1,2,4,8]", *extra])
        done = run / "teacher-done.json"
        if not done.is_file():
            resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*.pt"))
            train(cfg, run, resume=resume, progress=False)
            atomic_write_text(done, "{}\n")
        return run
    return build


def pipeline(folder: str, stages: list[str], base: Callable[[Path, int], Path], overrides: list[str],
             share: tuple[str, str] | None = None, distill_steps: int = 1) -> Callable[[Path, int], Path]:
    """A ``rectify`` pipeline after the teacher ``base``; ``share=(folder, stage dir)`` reuses
    a finished stage of another pipeline (its pairs and run) instead of repeating it. ``WORK``
    in an override is the seed's work folder."""
    def build(work: Path, seed: int) -> Path:
        out = work / folder
        if share is not None:
            source = work / share[0] / share[1]
            target = out / share[1]
            if not target.exists():
                if not (source / "metrics.json").is_file():
                    raise RuntimeError(f"{folder}: the shared stage {source} is not finished; "
                                       "run its row first")
                out.mkdir(parents=True, exist_ok=True)
                shutil.copytree(source, target, symlinks=True)
        # WORK in an override stands for the seed's work folder
        given = [o.replace("WORK", str(work.resolve())) for o in overrides]
        results = rectify(base(work, seed), stages, n_pairs=N_PAIRS, distill_steps=distill_steps,
                          overrides=[*STUDENT, *UNGUIDED, *given], out=out, progress=False)
        return results[-1].run
    return build


def linked_pairs(folder: str, source: str, stages: list[str], base, overrides: list[str]):
    """A pipeline whose first stage trains on the pairs of ``source``'s first stage (the same
    4 000 pairs for every 2-RF variant: the variants differ in training only)."""
    inner = pipeline(folder, stages, base, overrides)

    def build(work: Path, seed: int) -> Path:
        pairs = work / folder / f"1-{stages[0]}" / "pairs.h5"
        if not pairs.exists():
            pairs.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / source / f"1-{stages[0]}" / "pairs.h5", pairs)
            shutil.copy2(work / source / f"1-{stages[0]}" / "pairs.json", pairs.with_name("pairs.json"))
        return inner(work, seed)
    return build


T1 = teacher("teacher", "images.yaml")
TC = teacher("teacher-captions", "images_attributes.yaml")
TVP = teacher("teacher-vp", "images.yaml", tuple(VP))
U, HUBER = "objective.timesteps={name: u_shaped, a: 4}", "objective.loss=pseudo_huber"
PERCEPTUAL = "objective.loss={name: perceptual_huber, inverse_time: true}"

ROWS = {
    "1-RF": Row("1-RF teacher (guidance 1.5)", T1),
    "2-RF": Row("2-RF", pipeline("reflow", ["reflow"], T1, [])),
    "2-RF/U": Row("2-RF++: U-shaped t", linked_pairs("reflow-u", "reflow", ["reflow"], T1, [U])),
    "2-RF/H": Row("2-RF++: pseudo-Huber", linked_pairs("reflow-h", "reflow", ["reflow"], T1, [HUBER])),
    "2-RF++": Row("2-RF++: U-shaped + pseudo-Huber",
                  linked_pairs("reflow-uh", "reflow", ["reflow"], T1, [U, HUBER])),
    "2-RF++/P": Row("2-RF++: U-shaped + perceptual-Huber (1/t)",
                    linked_pairs("reflow-up", "reflow", ["reflow"], T1, [U, PERCEPTUAL])),
    "2-RF++/anchored": Row("2-RF++ (U + Huber), x̂-anchored sampler",
                           linked_pairs("reflow-uh", "reflow", ["reflow"], T1, [U, HUBER]),
                           solver="anchored"),
    "distil-1RF": Row("1-RF distilled, 1 step (L2)", pipeline("distil", ["distill"], T1, [])),
    "distil-1RF/P": Row("1-RF distilled, 1 step (perceptual-Huber)",
                        pipeline("distil-p", ["distill"], T1, [f"distill:{PERCEPTUAL}"])),
    "2-RF+distil": Row("2-RF distilled, 1 step (L2)",
                       pipeline("reflow-distil", ["reflow", "distill"], T1, [],
                                share=("reflow", "1-reflow"))),
    "2-RF+distil/P": Row("2-RF distilled, 1 step (perceptual-Huber)",
                         pipeline("reflow-distil-p", ["reflow", "distill"], T1, [f"distill:{PERCEPTUAL}"],
                                  share=("reflow", "1-reflow"))),
    "2-RF+distil2": Row("2-RF distilled, 2 steps (L2)",
                        pipeline("reflow-distil2", ["reflow", "distill"], T1, [],
                                 share=("reflow", "1-reflow"), distill_steps=2)),
    "captions-1RF": Row("caption 1-RF teacher (guidance 1.5)", TC),
    "InstaFlow": Row("InstaFlow: caption 2-RF distilled, 1 step",
                     pipeline("instaflow", ["reflow", "distill"], TC, [])),
    "Slim/random": Row("SlimFlow student: reflow from random init",
                       pipeline("slim-random", ["reflow"], T1, SLIM)),
    "Slim/annealed": Row("SlimFlow student: annealing reflow",
                         pipeline("slim-annealed", ["reflow"], T1, [*SLIM, f"reflow:{ANNEALED}"])),
    "Slim/annealed+FGD": Row("SlimFlow student: annealing reflow + flow-guided distillation",
                             pipeline("slim-fgd", ["reflow", "distill"], T1,
                                      [*SLIM, f"reflow:{ANNEALED}",
                                       "distill:objective.flow_guidance="
                                       "{teacher: WORK/slim-fgd/1-reflow/run}"],
                                      share=("slim-annealed", "1-reflow"))),
    # the small student trains from scratch: the same rows at four times the students' budget
    "Slim/random-2000": Row("SlimFlow student: reflow from random init, 2000 steps",
                            linked_pairs("slim-random-2000", "reflow", ["reflow"], T1,
                                         [*SLIM, "train.steps=2000"])),
    "Slim/annealed-2000": Row("SlimFlow student: annealing reflow, 2000 steps",
                              linked_pairs("slim-annealed-2000", "reflow", ["reflow"], T1,
                                           [*SLIM, "train.steps=2000", f"reflow:{ANNEALED}"])),
    "Slim/annealed-2000+distil": Row("SlimFlow student: annealing reflow (2000 steps), distilled (L2)",
                                     pipeline("slim-distil-2000", ["reflow", "distill"], T1,
                                              [*SLIM, "reflow:train.steps=2000", f"reflow:{ANNEALED}"],
                                              share=("slim-annealed-2000", "1-reflow"))),
    "Slim/annealed-2000+FGD": Row("SlimFlow student: annealing reflow (2000 steps) + flow-guided "
                                  "distillation",
                                  pipeline("slim-fgd-2000", ["reflow", "distill"], T1,
                                           [*SLIM, "reflow:train.steps=2000", f"reflow:{ANNEALED}",
                                            "distill:objective.flow_guidance="
                                            "{teacher: WORK/slim-fgd-2000/1-reflow/run}"],
                                           share=("slim-annealed-2000", "1-reflow"))),
    "VP": Row("VP v-model (DDPM schedule), DDIM", TVP),
    "VP/rectified": Row("Rectified Diffusion: VP retrained on its DDIM pairs",
                        pipeline("vp-rectified", ["reflow"], TVP, [])),
    "VP/linear": Row("VP pairs, reflowed on the linear path (from the 1-RF's weights)",
                     linked_pairs("vp-linear", "vp-rectified", ["reflow"], TVP, [
                         "model={name: unet, width: 16, multipliers: [1, 2, 2], blocks: 1, attention: true}",
                         "objective.path=linear", "objective.loss=mse", "sample.solver=euler",
                         "reflow:train.init_from=WORK/teacher"])),
}


def score(run_dir: Path, solver: str | None, seed: int) -> dict:
    """The model of ``run_dir`` at 1/2/4/8 steps of its sampler (``solver`` instead when given),
    500 conditions cycling over the classes (or the test captions), fixed noise."""
    overrides = ["eval.n_samples=500"] + ([f"sample.solver={solver}"] if solver else [])
    cfg = open_run(run_dir).load_config(overrides)
    domain = create_domain(cfg.domain)
    data = domain.build_data(cfg)
    model = load_model(run_dir, ema=cfg.eval.use_ema)
    classifier = domain.classifier(cfg, data)
    mode = cfg.settings.captions
    bins = domain.caption_bins(data.meta.path) if mode == "attributes" else {}
    real_images = load_split(data.meta.path, "test", ["image"])["image"].float()[:500] * 2 - 1
    val = load_split(data.meta.path, "val", ["image"])["image"].float()[:500] * 2 - 1
    _, cond, requests = domain.conditions(cfg, data, 500, bins)
    with torch.no_grad():
        real = classifier.features(real_images)
        out = {"fd_real": frechet_distance(classifier.features(val), real), "by_steps": {}}
    for steps in STEPS:
        with isolated_rng(seed + 10_007), torch.no_grad():
            images, nfe = domain.generate(model, cfg, data, cond, 500, steps)
            scores, features = sample_scores(mode, classifier, images, requests, bins)
        key = "attribute_accuracy" if mode == "attributes" else "accuracy"
        out["by_steps"][str(steps)] = {"nfe": nfe, "fd": frechet_distance(features, real),
                                       "accuracy": scores[key], **precision_recall(real, features, k=3)}
    with isolated_rng(seed + 10_007), torch.no_grad():
        x0 = torch.randn(200, *domain.image_shape(cfg, data.meta))
        small = {k: v[:200] for k, v in cond.items()}
        path = domain.sampler(cfg).sample(model, x0, steps=8, trajectory=True, **small).trajectory
        started = time.perf_counter()
        domain.generate(model, cfg, data, cond, 500, 1)
        seconds = time.perf_counter() - started
    out.update(straightness=straightness(path), ms_per_image_1step=1000 * seconds / 500,
               parameters=sum(p.numel() for p in model.parameters()),
               nfe_per_step=out["by_steps"]["1"]["nfe"], solver=str(cfg.sample.solver),
               guidance=cfg.sample.guidance)
    return out


def one_step_samples(run_dir: Path, solver: str | None, seed: int) -> dict:
    """One step of the model from fixed noise for each showcase condition (the classes, or
    held-out captions): {"names": [...], "images": (K, H, W) nested lists in [0, 1]}."""
    cfg = open_run(run_dir).load_config([f"sample.solver={solver}"] if solver else [])
    domain = create_domain(cfg.domain)
    data = domain.build_data(cfg)
    model = load_model(run_dir, ema=cfg.eval.use_ema)
    names, cond = domain.showcase(cfg, data)
    with isolated_rng(seed), torch.no_grad():
        images, _ = domain.generate(model, cfg, data, cond, len(names), 1)
    return {"names": names, "images": ((images[:, 0] + 1) / 2).clamp(0, 1).round(decimals=3).tolist()}


def training_cost(run_dir: Path) -> float:
    """Seconds of training of ``run_dir`` plus, for a model trained on pairs, the pairs'
    seconds and the cost of the model that drew them (``pairs.json`` beside the pair store)
    and of the run it started from (``train.init_from``), each counted once."""
    seen: set[Path] = set()

    def cost(run: Path) -> float:
        run = run.resolve()
        if run in seen:
            return 0.0
        seen.add(run)
        cfg = open_run(run).load_config()
        seconds = float(load_checkpoint(latest_checkpoint(run / "checkpoints")).get("train_seconds", 0.0))
        pairs = getattr(cfg.data, "pairs", None)
        if pairs and Path(pairs).with_name("pairs.json").is_file():
            record = json.loads(Path(pairs).with_name("pairs.json").read_text())
            seconds += record["seconds"] + cost(Path(record["source"]))
        if cfg.train.init_from:
            seconds += cost(Path(cfg.train.init_from))
        return seconds

    return cost(run_dir)


def measure(key: str, seed: int, work_root: Path) -> dict:
    """Build (or find) the row's model for the seed and score it; cached in its folder."""
    row = ROWS[key]
    work = work_root / f"seed{seed}"
    record = work / "scores" / f"{key.replace('/', '_')}.json"
    if record.is_file():
        return with_samples(record)
    started = time.perf_counter()
    run_dir = row.build(work, seed)
    result = {"row": key, "label": row.label, "seed": seed, "run": str(run_dir),
              "build_seconds": time.perf_counter() - started, "training_cost_seconds": training_cost(run_dir),
              **score(run_dir, row.solver, seed),
              "samples_1step": one_step_samples(run_dir, row.solver, seed)}
    atomic_write_text(record, json.dumps(result, indent=2) + "\n")
    return result


def with_samples(record: Path) -> dict:
    """A stored row, with its one-step samples added if it was measured before they were kept."""
    result = json.loads(record.read_text())
    if "samples_1step" not in result:
        result["samples_1step"] = one_step_samples(Path(result["run"]), ROWS[result["row"]].solver,
                                                   result["seed"])
        atomic_write_text(record, json.dumps(result, indent=2) + "\n")
    return result


def collect(work_root: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for path in sorted(work_root.glob("seed*/scores/*.json")):
        raw = with_samples(path)
        rows.setdefault(raw["row"], []).append(raw)
    return {k: rows[k] for k in ROWS if k in rows}


def evals_per_step(record: dict) -> int:
    """Network evaluations per step: classifier-free guidance (weight != 1) evaluates the
    conditional and the unconditional branch (in one batch, so the solver counts one NFE)."""
    return record["nfe_per_step"] * (2 if record["guidance"] != 1 else 1)


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(values: list[float], digits: int = 3) -> str:
    m, s = mean_sd(values)
    return f"{m:.{digits}g}" + (f" ± {s:.2g}" if s is not None else "")


def markdown(rows: dict[str, list[dict]]) -> str:
    floor = statistics.fmean(r["fd_real"] for rs in rows.values() for r in rs)
    lines = [f"FD k: Fréchet classifier distance to 500 test images (not FID) after k steps of the "
             f"model's sampler; floor (validation vs test) {floor:.3g}. Mean ± sd over the seeds measured "
             "(n). evals/step: network evaluations per step (guidance: two). Accuracy: the class "
             "(captions: every attribute) asked for. P / R: improved precision / recall at 1 step. "
             "Cost: seconds of training and pair generation, the teacher's included.", "",
             "| model | n | evals/step | FD 1 | FD 2 | FD 4 | FD 8 | acc. 1 | P / R 1 | straightness "
             "| params | ms/img | cost s |", "|---" + "|---:" * 12 + "|"]
    for rs in rows.values():
        fd = [fmt([r["by_steps"][str(k)]["fd"] for r in rs]) for k in STEPS]
        one = [r["by_steps"]["1"] for r in rs]
        lines.append(
            f"| {rs[0]['label']} | {len(rs)} | {evals_per_step(rs[0])} | {' | '.join(fd)} | "
            f"{fmt([o['accuracy'] for o in one], 2)} | {fmt([o['precision'] for o in one], 2)} / "
            f"{fmt([o['recall'] for o in one], 2)} | {fmt([r['straightness'] for r in rs], 2)} | "
            f"{rs[0]['parameters'] / 1000:.0f} k | {fmt([r['ms_per_image_1step'] for r in rs], 2)} | "
            f"{fmt([r['training_cost_seconds'] for r in rs], 3)} |")
    return "\n".join(lines) + "\n"


def figure(rows: dict[str, list[dict]]) -> Figure:
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for rs in rows.values():
        means = [mean_sd([r["by_steps"][str(k)]["fd"] for r in rs])[0] for k in STEPS]
        nfe = [k * evals_per_step(rs[0]) for k in STEPS]
        ax.plot(nfe, means, "o-", label=rs[0]["label"], lw=1)
    floor = statistics.fmean(r["fd_real"] for rs in rows.values() for r in rs)
    ax.axhline(floor, color="gray", ls="--", label="floor (val vs test)")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations (guidance counts two per step)",
           ylabel="Fréchet classifier distance", title="one-step family on MNIST-5k 14×14")
    ax.legend(fontsize=6, loc="upper right")
    return fig


def sample_grid(rows: dict[str, list[dict]]) -> Figure:
    """One row per model (its first seed): one step from the same noise per condition."""
    shown = [rs[0] for rs in rows.values()]
    columns = max(len(r["samples_1step"]["names"]) for r in shown)
    fig = Figure(figsize=(columns * 0.7 + 3.2, len(shown) * 0.72 + 0.4))
    axes = fig.subplots(len(shown), columns, squeeze=False)
    for i, r in enumerate(shown):
        for j in range(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(r["samples_1step"]["images"]):
                ax.imshow(r["samples_1step"]["images"][j], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(r["label"], rotation=0, ha="right", va="center", fontsize=6)
    fig.suptitle("one step of each model from the same noise (caption rows: held-out captions)", fontsize=8)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help=f"rows: {', '.join(ROWS)}")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "one_step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only write the table of the rows measured")
    args = parser.parse_args()
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not args.report:
        for seed in args.seeds:
            for key in args.rows:
                result = measure(key, seed, args.work)
                one = result["by_steps"]["1"]
                print(f"seed {seed} {key}: FD 1 step {one['fd']:.3g}, "
                      f"8 steps {result['by_steps']['8']['fd']:.3g}, accuracy {one['accuracy']:.3f}",
                      flush=True)
    rows = collect(args.work)
    # the sample images stay in the row records under --work; the JSON keeps the numbers
    numbers = {k: [{f: v for f, v in r.items() if f != "samples_1step"} for r in rs]
               for k, rs in rows.items()}
    result = {"benchmark": "one_step", "flowsci": flowsci.__version__, "machine": platform.processor() or
              platform.machine(), "threads": args.threads, "n_pairs": N_PAIRS, "student": STUDENT,
              "rows": numbers}
    write_result(OUT, result, markdown(rows), figure(rows))
    with atomic_open(OUT.with_name("one_step_samples.png"), "wb") as fh:
        sample_grid(rows).savefig(fh, format="png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
