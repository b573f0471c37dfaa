"""Inversion, editing, steering and restoration with trained flows on MNIST-5k at 14×14.

Sections (each cached under ``--work`` as ``<section>.json``, so an interrupted benchmark
resumes and a finished section is read back):

- ``inversion``: 200 test digits inverted to noise and regenerated (their label, no
  guidance) with Euler, midpoint, Heun, RF-Solver-3 and RK4 at equal NFE per direction;
  reconstruction MSE and the observed order of each method.
- ``flowchef``: deblurring, inpainting of the right half and 2× super-resolution of 200 test
  digits with the class-conditional teacher read unconditionally (null label) as the prior:
  FlowChef (gradient-free steering, K = 3), DPS-style guidance (backpropagation through the
  network), the plain answer of each operator (zero fill, Tikhonov least squares, bicubic), and
  the unsteered prior; the same with the reflowed (2-RF) prior, FlowChef's "straighter is better".
  PSNR, Fréchet classifier distance (FD; a classifier trained here, not Inception: not FID),
  class accuracy; step sizes chosen on 50 validation digits for FlowChef and DPS alike.
- ``timing``: wall-clock and peak memory of FlowChef, DPS and the unsteered prior, least of 3
  runs each in a fresh process (run it on a quiet machine).
- ``edit``: RF-Edit label edits (7 → 1, 3 → 8, 4 → 9, 1 → 7) with a class-conditional DiT and
  thickness edits ("thin" ↔ "thick") with an MM-DiT on attribute captions, with and without
  sharing the source's attention values; target accuracy, SSIM / PSNR to the source, and how
  much the edit moves the digit's slant and position.
- ``pmrf-<mnist|lfw>-<denoise|inpaint>``: denoising (σ = 0.35 on [0, 1] pixels) and inpainting
  (a central box of half the side missing, noise 0.05) on MNIST-5k and on scikit-image's LFW
  crops (25×25, 120 training images and their mirror images) with the posterior mean, PMRF,
  posterior sampling (a flow from noise conditioned on the observation) and a flow from the
  observation: MSE against FD, the perception-distortion plane.

Writes ``bench/results/restoration.{json,md,png}`` and ``restoration_grid.png`` (before/after).

    python bench/restoration.py [--sections inversion flowchef timing edit pmrf-mnist-denoise ...]
                                [--edits label attribute] [--threads 1]
    python bench/restoration.py --report      # the tables from the sections measured so far
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from images_common import write_result
from matplotlib.figure import Figure
from peak_memory import in_fresh_process, reset_peak, resident_mib
from skimage.metrics import structural_similarity

import flowsci
from flowsci.atomic import atomic_write_text
from flowsci.checkpoint import load_model
from flowsci.config import load_config
from flowsci.data import load_split
from flowsci.data.lifecycle import ensure_data
from flowsci.editing import rf_edit
from flowsci.feature_metrics import frechet_distance
from flowsci.grids import uniform_grid
from flowsci.inversion import inversion_table, observed_order
from flowsci.measurements import Blur, Downsample, Mask, box_mask, observe
from flowsci.metrics import psnr
from flowsci.nn.concat import ConcatConditioned
from flowsci.registry import SOLVERS, build_model, create_domain
from flowsci.restoration import PosteriorMean, fit_flow, fit_regression, pmrf_source, restore
from flowsci.rng import isolated_rng
from flowsci.runs import open_run
from flowsci.steering import dps, flowchef, measurement_cost
from flowsci.training import train
from flowsci_domains.images.attributes import position, slant
from flowsci_domains.images.captions import attribute_agreement, caption, describe
from flowsci_domains.images.domain import VOCABULARY

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "restoration.json"
N_TEST = 200
UNET = {"width": 16, "multipliers": [1, 2, 2], "blocks": 1, "attention": True}
DIT = "{name: dit, patch: 2, width: 64, depth: 4, heads: 4}"
MMDIT = "{name: mmdit, patch: 2, width: 48, depth: 3, heads: 4}"


# --- the trained flows -------------------------------------------------------------------------

def trained(run: Path, overrides: list[str], yaml: str = "images.yaml") -> Path:
    """``run``: a run of domains/``yaml`` with ``overrides``, trained here on first use."""
    done = run / "teacher-done.json"
    if not done.is_file():
        cfg = load_config(REPO / "domains" / yaml, overrides)
        resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*.pt"))
        train(cfg, run, resume=resume, progress=False)
        atomic_write_text(done, "{}\n")
    return run


def teacher(work: Path) -> Path:
    """The class-conditional U-Net of domains/images.yaml (bench/one_step.py's teacher)."""
    return trained(work / "teacher", ["seed=0", "eval.steps=[1,2,4,8]"])


def dit(work: Path) -> Path:
    """A class-conditional DiT (49 tokens of 2×2 patches), 4 000 steps (the committed run: 2 000, then
    resumed to 4 000 with `flowsci resume`)."""
    return trained(work / "dit", ["seed=0", f"model={DIT}", "train.steps=4000", "eval.steps=[1,4,20]"])


def mmdit(work: Path) -> Path:
    """SD3's MM-DiT on the attribute captions of domains/images_attributes.yaml, 2 000 steps."""
    return trained(work / "mmdit", ["seed=0", f"model={MMDIT}", "eval.steps=[4,20]"],
                   "images_attributes.yaml")


def reflowed(work: Path) -> Path:
    """2-RF: the teacher reflowed on 4 000 of its pairs (bench/one_step.py's row 2-RF)."""
    from flowsci.rectify import rectify

    out = work / "reflow"
    results = rectify(teacher(work), ["reflow"], n_pairs=4000, out=out, progress=False,
                      overrides=["train.steps=500", "train.warmup_steps=50", "train.ema=0.99",
                                 "train.checkpoint_every=100", "eval.steps=[1,2,4,8]",
                                 "reflow:sample.guidance=1"])
    return results[-1].run


class Images:
    """A data set's splits (N, C, H, W) in [-1, 1], its feature classifier and, from a run, the
    run's model (EMA weights)."""

    def __init__(self, cfg, model: torch.nn.Module | None = None):
        self.cfg, self.model = cfg, model
        self.domain = create_domain(cfg.domain)
        ensure_data(self.domain, cfg, progress=False)
        self.data = self.domain.build_data(cfg)
        self.classifier = self.domain.classifier(cfg, self.data)
        path = self.data.meta.path
        splits = {name: load_split(path, name, ["image", "label"]) for name in ("train", "val", "test")}
        self.train = splits["train"]["image"].float() * 2 - 1
        self.test, self.test_labels = splits["test"]["image"].float() * 2 - 1, splits["test"]["label"].long()
        self.val, self.val_labels = splits["val"]["image"].float() * 2 - 1, splits["val"]["label"].long()
        with torch.no_grad():
            self.real = self.classifier.features(self.val)

    @classmethod
    def from_run(cls, run: Path) -> Images:
        return cls(open_run(run).load_config(), load_model(run, ema=True).eval())

    def velocity(self, labels: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.model(x, t, y=labels[: x.shape[0]])
        return v

    def scores(self, restored: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """PSNR (dB, pixels in [0, 1], mean over images), FD against the validation images and
        class accuracy of ``restored`` (N, 1, H, W) in [-1, 1]."""
        restored = restored.clamp(-1, 1)
        with torch.no_grad():
            features = self.classifier.features(restored)
            accuracy = float((self.classifier(restored).argmax(1) == labels).float().mean())
        return {"psnr": mean_psnr(restored, truth), "mse": mse01(restored, truth),
                "fd": frechet_distance(features, self.real), "accuracy": accuracy}


def mse01(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error on [0, 1] pixels of images (N, ...) in [-1, 1]."""
    return float(((a - b) / 2).pow(2).mean())


def unit(images: torch.Tensor) -> list:
    """The first channel of images (N, C, H, W) in [-1, 1] as nested lists in [0, 1] (3 decimals)."""
    return ((images[:, 0].clamp(-1, 1) + 1) / 2).round(decimals=3).tolist()


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images (N, C, H, W) in [-1, 1] of their PSNR on [0, 1] pixels, dB."""
    return float(psnr(a, b, data_range=2.0).clamp_max(120).mean())


# --- inversion ---------------------------------------------------------------------------------

def section_inversion(work: Path) -> dict:
    images = Images.from_run(teacher(work))
    x1, labels = images.test[:N_TEST], images.test_labels[:N_TEST]
    names = ("euler", "midpoint", "heun", "rf_solver3", "rk4")
    solvers = {name: SOLVERS.create(name, "solver") for name in names}
    with torch.no_grad():
        table = inversion_table(images.velocity(labels), x1, solvers, nfe=[4, 6, 8, 12, 24, 48])
    orders = {}
    for name in solvers:
        rows = [r for r in table if r.solver == name]
        orders[name] = observed_order([r.nfe for r in rows], [r.rmse for r in rows])
    return {"n_images": N_TEST, "mse_scale": "[-1, 1] pixels, mean over pixels and images",
            "rows": [dataclasses.asdict(r) for r in table], "orders": orders}


# --- FlowChef ----------------------------------------------------------------------------------

def operators() -> dict[str, tuple[Callable, float]]:
    """task -> (operator, measurement noise std on [-1, 1] pixels)."""
    return {"deblur": (Blur(kernel_size=7, sigma=1.5), 0.0),
            "inpaint": (Mask(box_mask((1, 14, 14), top=0, left=7, height=14, width=7)), 0.0),
            "sr2": (Downsample(2), 0.0)}


def steer(method: str, prior: str, task: str, step: float, work: str, n: int, split: str) -> dict:
    """One restoration run in this process: ``method`` (flowchef | dps | prior | baseline) with
    ``prior`` (teacher | 2-RF) on ``task``, 50 Euler steps, seconds and peak memory above the
    loaded model (resident set, MiB)."""
    torch.set_num_threads(1)
    run = teacher(Path(work)) if prior == "teacher" else reflowed(Path(work))
    images = Images.from_run(run)
    truth = (images.val if split == "val" else images.test)[:n]
    labels = (images.val_labels if split == "val" else images.test_labels)[:n]
    op, noise = operators()[task]
    with isolated_rng(1):
        y = observe(op, truth, noise)
        x0 = torch.randn_like(truth)
    null = images.velocity(torch.full((n,), -1, dtype=torch.long))
    times = uniform_grid(50)
    cost = measurement_cost(op, y)
    reset_peak()
    before = resident_mib("VmRSS")
    started = time.perf_counter()
    if method == "flowchef":
        restored = flowchef(null, x0, times, cost, step_size=step, iterations=3).x
    elif method == "dps":
        restored = dps(null, x0, times, cost, step_size=step).x
    elif method == "prior":
        with torch.no_grad():
            restored = SOLVERS.create("euler", "solver").integrate(null, x0, times).x
    else:
        restored = op.baseline(y)
    seconds = time.perf_counter() - started
    peak = resident_mib("VmHWM") - before
    if not torch.isfinite(restored).all():  # a step size too large for the operator: diverged
        return {"seconds": seconds, "peak_mib": peak, "psnr": -math.inf, "diverged": True}
    out = {"seconds": seconds, "peak_mib": peak, **images.scores(restored, truth, labels)}
    out.update(images=unit(restored[:8]), observed=unit(op.baseline(y)[:8]), truth=unit(truth[:8]))
    return out


STEP_SIZES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


def section_flowchef(work: Path) -> dict:
    teacher(work), reflowed(work)
    out: dict = {"n_images": N_TEST, "steps": 50, "iterations": 3, "rows": {}}
    for prior in ("teacher", "2-RF"):
        for task in operators():
            for method in ("flowchef", "dps", "prior", "baseline"):
                if prior == "2-RF" and method == "baseline":
                    continue
                step = None
                if method in ("flowchef", "dps"):
                    # the step size with the best PSNR on 50 validation digits
                    tried = {s: in_fresh_process(steer, method, prior, task, s, str(work), 50, "val")["psnr"]
                             for s in STEP_SIZES}
                    step = max(tried, key=tried.get)
                row = in_fresh_process(steer, method, prior, task, step or 0.0, str(work), N_TEST, "test")
                out["rows"][f"{prior}/{task}/{method}"] = {"step_size": step, **row}
                print(f"flowchef {prior} {task} {method}: step {step} psnr {row['psnr']:.2f} "
                      f"fd {row['fd']:.1f} acc {row['accuracy']:.2f} {row['seconds']:.1f} s "
                      f"{row['peak_mib']:.0f} MiB", flush=True)
    return out


def section_timing(work: Path) -> dict:
    """FlowChef, DPS and the unsteered prior on each task with the teacher prior, 3 times each in
    turn (each in a fresh process), at the step sizes chosen in the flowchef section: the least
    seconds of each, and the peak memory. Run it on a quiet machine: the flowchef section's
    seconds were measured while other benchmarks ran."""
    chosen = json.loads((work / "flowchef.json").read_text())["rows"]
    out: dict = {"repeats": 3, "rows": {}}
    for task in operators():
        runs: dict[str, list[dict]] = {"flowchef": [], "dps": [], "prior": []}
        for _ in range(3):
            for method in runs:
                step = chosen[f"teacher/{task}/{method}"]["step_size"] or 0.0
                runs[method].append(in_fresh_process(steer, method, "teacher", task, step, str(work), N_TEST,
                                                     "test"))
        for method, measured in runs.items():
            out["rows"][f"{task}/{method}"] = {"seconds": min(r["seconds"] for r in measured),
                                               "peak_mib": max(r["peak_mib"] for r in measured)}
        best = {m: out["rows"][f"{task}/{m}"] for m in runs}
        print(f"timing {task}: " + " ".join(f"{m} {r['seconds']:.1f} s {r['peak_mib']:.0f} MiB"
                                             for m, r in best.items()), flush=True)
    return out


# --- RF-Edit -----------------------------------------------------------------------------------

EDITS = ((7, 1), (3, 8), (4, 9), (1, 7))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (scikit-image, 7×7 windows) of images (N, 1, H, W) in [-1, 1]."""
    return sum(structural_similarity(x[0].numpy(), z[0].numpy(), data_range=2.0, win_size=7)
               for x, z in zip(a.clamp(-1, 1), b.clamp(-1, 1))) / len(a)


def edit_scores(images: Images, x: torch.Tensor, edited: torch.Tensor) -> dict:
    """SSIM / PSNR to the sources x and the mean change of slant and position (pixels) of edits."""
    unit_x, unit_e = (x + 1) / 2, (edited + 1) / 2
    return {"ssim": ssim(edited, x), "psnr": mean_psnr(edited, x),
            "slant_change": float((slant(unit_e) - slant(unit_x)).abs().mean()),
            "position_change": float((position(unit_e) - position(unit_x)).norm(dim=-1).mean()),
            "images": unit(edited[:6]), "sources": unit(x[:6])}


def label_edits(images: Images, inject: int, blocks: int) -> dict:
    """Each edit of EDITS on the test images of its source class."""
    sampler = images.domain.sampler(images.cfg)
    out = {}
    for source, target in EDITS:
        x = images.test[images.test_labels == source]
        n = len(x)
        with isolated_rng(2):
            edited = rf_edit(images.model, sampler, x, {"y": torch.full((n,), source)},
                             {"y": torch.full((n,), target)}, steps=20, inject=inject,
                             blocks=blocks).clamp(-1, 1)
        with torch.no_grad():
            accuracy = float((images.classifier(edited).argmax(1) == target).float().mean())
        out[f"{source}->{target}"] = {"n": n, "target_accuracy": accuracy, **edit_scores(images, x, edited)}
    return out


def attribute_edits(images: Images, inject: int, blocks: int) -> dict:
    """"thin" -> "thick" and "thick" -> "thin" on the test digits whose caption says the first: the
    source caption describes the image (digit, size, slant, thickness), the target changes the
    thickness word only; target accuracy is the thickness judged against the training median,
    the class accuracy says whether the digit survived."""
    sampler = images.domain.sampler(images.cfg)
    bins = images.domain.caption_bins(images.data.meta.path)
    requests = describe((images.test + 1) / 2, images.test_labels, bins)
    out = {}
    for source, target in (("thin", "thick"), ("thick", "thin")):
        rows = [i for i, r in enumerate(requests) if r["thickness"] == source]
        x, labels = images.test[rows], images.test_labels[rows]
        wanted = [{**requests[i], "thickness": target} for i in rows]
        tokens = {name: VOCABULARY.encode([caption(r, 0) for r in asked])
                  for name, asked in (("source", [requests[i] for i in rows]), ("target", wanted))}
        with isolated_rng(2):
            edited = rf_edit(images.model, sampler, x, {"tokens": tokens["source"]},
                             {"tokens": tokens["target"]},
                             steps=20, inject=inject, blocks=blocks).clamp(-1, 1)
        with torch.no_grad():
            accuracy = float((images.classifier(edited).argmax(1) == labels).float().mean())
        agreement = attribute_agreement([{"thickness": target}] * len(rows), (edited + 1) / 2, bins)
        out[f"{source}->{target}"] = {"n": len(rows), "target_accuracy": agreement["thickness"],
                                      "class_accuracy": accuracy, **edit_scores(images, x, edited)}
    return out


def section_edit(work: Path, kinds: tuple[str, ...] = ("label", "attribute")) -> dict:
    """RF-Edit with and without sharing the source's values in the last ``blocks`` (2, or all) blocks
    for the first ``inject`` of 20 steps: label edits with the DiT (4 blocks), thickness edits with
    the caption MM-DiT (3 blocks) (``kinds``: which of the two)."""
    out: dict = {"steps": 20, "rows": {}}
    for kind, build, edits in (("label", dit, label_edits), ("attribute", mmdit, attribute_edits)):
        if kind not in kinds:
            continue
        run = build(work)
        images = Images.from_run(run)
        out[f"{kind}_guidance"] = images.cfg.sample.guidance
        depth = sum(hasattr(m, "value_hook") for m in images.model.modules())
        for blocks, inject in [(2, 0), *((b, i) for b in (2, depth) for i in (2, 4, 6, 10))]:
            per_edit = edits(images, inject, blocks)
            keys = ("target_accuracy", "ssim", "psnr", "slant_change", "position_change")
            mean = {k: sum(e[k] for e in per_edit.values()) / len(per_edit) for k in keys}
            out["rows"][f"{kind}/{blocks}/{inject}"] = {**mean, "edits": per_edit}
            print(f"edit {kind} blocks {blocks} inject {inject}: "
                  + " ".join(f"{k} {v:.3f}" for k, v in mean.items()), flush=True)
    return out


# --- PMRF --------------------------------------------------------------------------------------

PMRF_STEPS = 1000
DATASETS = {"mnist": [],
            "lfw": ["domain.source=lfw", "domain.resolution=25", "data.n_val=40", "data.n_test=40"]}
# sigma_s of PMRF's source noise: 0.025 for denoising, 0.1 otherwise (the paper's settings)
TASKS = {"denoise": 0.025, "inpaint": 0.1}
PMRF_SECTIONS = tuple(f"pmrf-{d}-{t}" for d in DATASETS for t in TASKS)
SECTIONS = ("inversion", "flowchef", "timing", "edit", *PMRF_SECTIONS)


def degrade(task: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The lifted observation (N, 1, H, W) of x in [-1, 1]: noisy images (σ 0.7, i.e. 0.35 on [0, 1]
    pixels, PMRF's denoising level), or the central box of side ~H/2 missing (zero fill) with noise
    0.1 (0.05 on [0, 1]) on the rest."""
    _, c, h, w = x.shape
    with isolated_rng(seed):
        if task == "denoise":
            return observe(Mask(torch.ones(c, h, w)), x, 0.7)
        op = Mask(box_mask((c, h, w), top=h // 4, left=w // 4, height=h // 2, width=w // 2))
        return op.baseline(observe(op, x, 0.1))


def section_pmrf(work: Path, dataset: str, task: str) -> dict:
    """The posterior mean, PMRF, posterior sampling and the flow from the observation on ``task``,
    each trained PMRF_STEPS steps on the training split (LFW: with its mirror images)."""
    images = Images(load_config(REPO / "domains" / "images.yaml", DATASETS[dataset]))
    train_x = images.train if dataset == "mnist" else torch.cat([images.train, images.train.flip(-1)])
    shape = train_x.shape[1:]
    y_train, y_test = degrade(task, train_x, 3), degrade(task, images.test, 4)
    sigma_s = TASKS[task]
    common = {"steps": PMRF_STEPS, "batch_size": 64 if dataset == "lfw" else 128, "lr": 1e-3,
              "progress": False}
    unet = {"name": "unet", "params": {"channels": shape[0], **UNET}}
    rows, seconds = {}, {}

    started = time.perf_counter()
    mmse = PosteriorMean(unet)
    fit_regression(mmse, y_train, train_x, seed=0, **common)
    mmse.eval()
    with torch.no_grad():
        x_star_train, x_star_test = mmse(y_train), mmse(y_test)
    seconds["mmse"] = time.perf_counter() - started
    rows["mmse"] = images.scores(x_star_test, images.test, images.test_labels)
    samples = {"truth": images.test[:8], "observation": y_test[:8], "mmse": x_star_test[:8]}
    flows = {
        "pmrf": (pmrf_source(x_star_train, sigma_s), None),
        "posterior": (pmrf_source(torch.zeros_like(train_x), 1.0), {"observation": y_train}),
        "from_y": (pmrf_source(y_train, sigma_s), None),
    }
    for name, (sources, conditions) in flows.items():
        started = time.perf_counter()
        concat = {"name": "unet", "params": UNET}  # the wrapper sets its channels
        net = (ConcatConditioned(concat, observation_channels=shape[0], channels=shape[0]) if conditions
               else build_model("unet", unet["params"]))
        flow = fit_flow(net, sources, train_x, conditions=conditions, seed=0, **common)
        seconds[name] = time.perf_counter() - started
        with isolated_rng(5), torch.no_grad():
            if name == "posterior":
                restored = restore(flow, torch.randn_like(images.test), 25, observation=y_test)
            else:
                start = x_star_test if name == "pmrf" else y_test
                restored = restore(flow, start + sigma_s * torch.randn_like(start), 25)
        rows[name] = images.scores(restored, images.test, images.test_labels)
        samples[name] = restored[:8]
        print(f"pmrf {dataset} {task} {name}: " + " ".join(f"{k} {v:.4g}" for k, v in rows[name].items()),
              flush=True)
    with torch.no_grad():
        floor = frechet_distance(images.classifier.features(images.test), images.real)
    return {"dataset": dataset, "task": task, "sigma_s": sigma_s, "train_steps": PMRF_STEPS,
            "euler_steps": 25, "n_test": len(images.test), "fd_floor": floor, "rows": rows,
            "train_seconds": seconds, "images": {k: unit(v) for k, v in samples.items()}}


# --- report ------------------------------------------------------------------------------------

def markdown(result: dict) -> str:
    lines = []
    inv = result.get("inversion")
    if inv:
        nfe = sorted({r["nfe"] for r in inv["rows"]})
        lines += ["Inversion then regeneration of 200 test digits (MSE on [-1, 1] pixels; NFE per "
                  "direction)", "",
                  "| solver | " + " | ".join(f"NFE {k}" for k in nfe) + " | observed order (RMSE) |",
                  "|---|" + "---:|" * (len(nfe) + 1)]
        for name, order in inv["orders"].items():
            cells = {r["nfe"]: f"{r['mse']:.2g}" for r in inv["rows"] if r["solver"] == name}
            lines.append(f"| {name} | " + " | ".join(cells.get(k, "–") for k in nfe) + f" | {order:.2f} |")
        lines.append("")
    chef = result.get("flowchef")
    if chef:
        lines += ["FlowChef vs DPS-style guidance (200 test digits, 50 Euler steps; FD on 200 images)", "",
                  "| prior | task | method | step size | PSNR (dB) | FD | class accuracy |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for key, row in chef["rows"].items():
            prior, task, method = key.split("/")
            step = "–" if row["step_size"] is None else f"{row['step_size']:g}"
            lines.append(f"| {prior} | {task} | {method} | {step} | {row['psnr']:.2f} | {row['fd']:.1f} | "
                         f"{row['accuracy']:.2f} |")
        lines.append("")
    timing = result.get("timing")
    if timing:
        lines += ["Time and peak memory of 200 restorations (teacher prior, 50 Euler steps; least of 3 runs, "
                  "each in a fresh process; memory: resident set above the loaded model)", "",
                  "| task | FlowChef s | DPS s | prior s | FlowChef / DPS time | FlowChef MiB | DPS MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for task in operators():
            row = {m: timing["rows"][f"{task}/{m}"] for m in ("flowchef", "dps", "prior")}
            ratio = row["flowchef"]["seconds"] / row["dps"]["seconds"]
            lines.append(f"| {task} | {row['flowchef']['seconds']:.1f} | {row['dps']['seconds']:.1f} | "
                         f"{row['prior']['seconds']:.1f} | {ratio:.2f} | "
                         f"{row['flowchef']['peak_mib']:.0f} | {row['dps']['peak_mib']:.0f} |")
        lines.append("")
    edit = result.get("edit")
    if edit:
        lines += ["RF-Edit (20 steps; values of the last `blocks` blocks shared for the first `inject` "
                  "steps): label edits 7→1, 3→8, 4→9, 1→7 with a class-conditional DiT; thin↔thick "
                  "with the caption MM-DiT",
                  "", "| edits | blocks | inject | target accuracy | SSIM to source | PSNR to source | "
                  "slant change | position change |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for key, row in edit["rows"].items():
            kind, blocks, inject = key.split("/")
            lines.append(f"| {kind} | {blocks} | {inject} | {row['target_accuracy']:.3f} | "
                         f"{row['ssim']:.3f} | "
                         f"{row['psnr']:.2f} | {row['slant_change']:.3f} | {row['position_change']:.3f} |")
        lines.append("")
    for section in PMRF_SECTIONS:
        pm = result.get(section)
        if pm:
            lines += [f"PMRF, {pm['dataset']} {pm['task']} ({pm['n_test']} test images; FD floor "
                      f"{pm['fd_floor']:.2f})", "",
                      "| method | MSE | PSNR (dB) | FD | class accuracy |", "|---|---:|---:|---:|---:|"]
            for name, row in pm["rows"].items():
                lines.append(f"| {name} | {row['mse']:.4f} | {row['psnr']:.2f} | {row['fd']:.2f} | "
                             f"{row['accuracy']:.3f} |")
            lines.append("")
    return "\n".join(lines)


def figure(result: dict) -> Figure:
    """The inversion table as curves, and the perception-distortion plane of each PMRF task."""
    fig = Figure(figsize=(15, 7))
    axes = fig.subplots(2, 3).ravel()
    inv = result.get("inversion")
    if inv:
        for name in inv["orders"]:
            rows = [r for r in inv["rows"] if r["solver"] == name]
            axes[0].plot([r["nfe"] for r in rows], [r["mse"] for r in rows], marker="o", label=name)
        axes[0].set(xscale="log", yscale="log", xlabel="NFE per direction", ylabel="reconstruction MSE",
                    title="inversion + regeneration")
        axes[0].legend(fontsize=8)
    for ax, section in zip(axes[1:], PMRF_SECTIONS):
        pm = result.get(section)
        if not pm:
            ax.axis("off")
            continue
        for name, row in pm["rows"].items():
            ax.scatter(row["mse"], row["fd"], label=name)
        ax.axhline(pm["fd_floor"], color="gray", ls="--", label="FD floor")
        ax.set(xlabel="MSE ([0, 1] pixels)", ylabel="FD", title=f"{pm['dataset']} {pm['task']}", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def grid(result: dict) -> Figure:
    """Before / after: truth, observation and each method's restoration, 8 digits per row."""
    rows: list[tuple[str, list]] = []
    chef = result.get("flowchef", {}).get("rows", {})
    for task in operators():
        first = chef.get(f"teacher/{task}/flowchef")
        if first:
            rows += [(f"{task}: truth", first["truth"]), (f"{task}: observed", first["observed"])]
            rows += [(f"{task}: {m}", chef[f"teacher/{task}/{m}"]["images"]) for m in ("flowchef", "dps")
                     if f"teacher/{task}/{m}" in chef]
    for section in PMRF_SECTIONS:
        pm = result.get(section)
        if pm:
            rows += [(f"{pm['dataset']} {pm['task']}: {name}", images)
                     for name, images in pm["images"].items()]
    fig = Figure(figsize=(8, 0.9 * max(len(rows), 1)))
    if not rows:
        return fig
    axes = fig.subplots(len(rows), 8, squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(8):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "restoration" / "seed0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--edits", nargs="+", default=["label", "attribute"], choices=["label", "attribute"],
                        help="the edit section's edits: label (DiT) and attribute (caption MM-DiT)")
    parser.add_argument("--report", action="store_true", help="only write the results measured so far")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for section in args.sections:
            record = args.work / f"{section}.json"
            if record.is_file():
                continue
            if section.startswith("pmrf-"):
                result = section_pmrf(args.work, *section.split("-")[1:])
            elif section == "edit":
                result = section_edit(args.work, tuple(args.edits))
            else:
                result = globals()[f"section_{section}"](args.work)
            atomic_write_text(record, json.dumps(result) + "\n")
    result = {"flowsci": flowsci.__version__, "torch": torch.__version__, "machine": platform.machine(),
              "threads": args.threads}
    for record in sorted(args.work.glob("*.json")):
        if record.stem in SECTIONS:
            result[record.stem] = json.loads(record.read_text())
    # the images stay in the section records under --work; the committed JSON keeps the numbers
    write_result(OUT, without_images(result), markdown(result), figure(result), extra={"grid": grid(result)})


IMAGE_KEYS = ("images", "observed", "truth", "sources")


def without_images(value):
    """``value`` (nested dicts and lists) without the image lists kept for the figures."""
    if isinstance(value, dict):
        return {k: without_images(v) for k, v in value.items() if k not in IMAGE_KEYS}
    return value


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
