"""Throughput against the matmul peak: every model at its domain's default size, eager vs compiled.

Each model named in a domain YAML (``domains/*.yaml``, sorted; a model used by several YAMLs
is measured once, at the first) is built as that YAML builds it, with its batch size, its
objective and a real training batch of the domain's data. Measured per model:

- training step ms: the domain's objective (pairing included), backward, gradient clipping,
  AdamW and the EMA update, as the Trainer does them; median over repeats after warm-up, on one
  batch drawn once, eager at 1 and 2 intra-op threads, compiled at 1;
- sampling ms per sample at the YAML's solver and steps (one rollout step for the one-step
  turbulence surrogates; one forward pass for the kinetic closure and the PINN), at 1 thread,
  with the model evaluations per call counted by a forward hook;
- FLOPs per step and per sampling call (``torch.utils.flop_counter.FlopCounterMode``: matmuls,
  convolutions and attention; FFTs added at the conventional 2.5 N log2 N per real and
  5 N log2 N per complex transform), the aten operations per step, and the achieved FLOP/s as
  a fraction of this machine's fp32 matmul peak (square sgemm measured in the same run before,
  between and after the models; the peak at k threads is the best measured with at most k);
- peak memory: the rise of the process's peak resident set (VmHWM) over its resident set just
  before one steady-state call, after garbage collection and ``malloc_trim``: the working
  memory of a step (activations, gradients, temporaries), not the weights, the optimizer state
  or the data already resident (``resident_mb`` gives those, with torch's runtime);
- ``torch.compile`` (``flowsci.compile``, inductor): compile seconds (the first call) apart
  from the step time; a model that fails compiled runs eagerly with the reason recorded;
- plain vs OT coupling on the flow-matching domains with a per-batch OT coupling option
  (toy2d, rotations), pairing inline in the step, and the pairing alone.

Each model runs in its own processes (one eager, one compiled, each with a fresh inductor
cache) under a time limit: the eager runs first, then the compiled ones, fewest aten operations
per step first (compile time grows with the graph), in the time left of ``--budget``. Data
files that are not already in ``data/`` are generated in a temporary folder, small where
generation is slow (``SMALL_DATA``); the model and the batch keep their default sizes.

    python bench/throughput.py [--models mlp_velocity,unet] [--smoke] [--no-compile]
        [--device cuda [--bf16]] [--budget 800] [--out bench/results]
    python bench/throughput.py --report bench/results/throughput.json   # redraw PNG and table

``--smoke`` (seconds): mlp_velocity unless ``--models`` says otherwise, few repeats, a small
sgemm, no compiling unless ``--compile``; it writes ``throughput_smoke.*``. ``--device cuda``
(with ``--bf16``: bf16 autocast, against the bf16 matmul peak) skips with a message where no
CUDA device is available.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
DOMAINS = REPO / "domains"
# data settings used when the YAML's default data file is not already generated: the model and
# batch keep their default sizes, only the data set is smaller (or, for backbones, offline)
SMALL_DATA = {
    "backbones": ["domain.source=synthetic"],  # the default fetches PDB chains from PyPI
    "rotations": ["data.n_train=4096", "data.n_val=512", "data.n_test=512"],
    "turbulence": ["data.n_trajectories=4", "data.n_snapshots=3", "data.spinup_time=2.0"],
    "turbulence3d": ["data.n_trajectories=3", "data.n_snapshots=3", "data.spinup_time=1.0"],
}
# the other coupling measured on flow-matching domains that take a per-batch OT coupling
OTHER_COUPLING = {"toy2d": ("OT", "objective.coupling={name: ot}"),
                  "rotations": ("plain", "objective.coupling=independent")}
SAMPLE_CAP = 64      # samples per sampling call at most (the training batch size otherwise)


@dataclasses.dataclass
class Timing:
    """How long to time a call: ``warmup`` untimed calls, then at least ``min_repeats`` and at
    least ``min_seconds``, at most ``max_repeats``; past ``max_seconds``, one call is enough."""

    warmup: int = 2
    min_repeats: int = 3
    min_seconds: float = 1.5
    max_repeats: int = 30
    max_seconds: float = 6.0


FULL = {"train": Timing(2, 3, 1.5, 30, 6.0), "sample": Timing(0, 2, 1.5, 10, 6.0)}
SMOKE = {"train": Timing(1, 2, 0.0, 2, 1.0), "sample": Timing(0, 1, 0.0, 1, 1.0)}


# --- measuring -----------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], timing: Timing, device: torch.device) -> list[float]:
    """Seconds of each timed call of ``fn`` after ``timing.warmup`` untimed ones."""
    for _ in range(timing.warmup):
        fn()
    sync(device)
    times: list[float] = []
    started = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - started
        if times and elapsed >= timing.max_seconds:
            break
        if len(times) >= timing.min_repeats and (elapsed >= timing.min_seconds
                                                 or len(times) >= timing.max_repeats):
            break
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Median, quartiles (ms) and count of a list of seconds."""
    ms = sorted(1e3 * t for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"ms": statistics.median(ms), "p25_ms": q[0], "p75_ms": q[2], "repeats": len(ms)}


def _fft_flops(kind: str) -> Callable[..., int]:
    """FLOPs of one aten FFT (``kind``: r2c, c2r, c2c) from shapes, as FlopCounterMode passes
    them: 2.5 N log2 N per real and 5 N log2 N per complex transform of N points, N the
    product of the transformed sizes on the real side (the input of r2c, the output of c2r)."""

    def count(x_shape: Any, dim: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        shape = list(out_shape if kind == "c2r" else x_shape)
        n = math.prod(shape[d] for d in dim)
        transforms = math.prod(shape) // max(1, n)
        per_point = 5.0 if kind == "c2c" else 2.5
        return int(transforms * per_point * n * math.log2(max(n, 2)))

    return count


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP goes to "Global"."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class _OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched (forward and backward) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count_flops(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one call of ``fn``: ``total`` (matmuls, convolutions, attention, FFTs) and
    ``fft`` (the FFT part), by FlopCounterMode's formulas (a multiply-add is 2 FLOPs), and
    ``aten_ops``, the number of aten operations of the call. FlopCounterMode's per-module
    attribution is switched off: its module tracker's backward hooks fail under
    ``torch.autograd.grad`` of a leaf input (the PINN residuals)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    ffts = {aten._fft_r2c: _fft_flops("r2c"), aten._fft_c2r: _fft_flops("c2r"),
            aten._fft_c2c: _fft_flops("c2c")}
    counter = FlopCounterMode(display=False, custom_mapping=ffts)
    counter.mod_tracker = _GlobalOnly()
    with counter, _OpCounter() as ops:
        fn()
    by_op = counter.get_flop_counts().get("Global", {})
    fft = sum(int(v) for k, v in by_op.items() if k in ffts)
    return {"total": int(counter.get_total_flops()), "fft": fft, "aten_ops": ops.ops}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP/s of an n × n × n matmul (2 n³ FLOPs) over ``repeats`` calls at ``threads``
    intra-op threads: this machine's measured matmul peak."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    a, b = (torch.randn(n, n, device=dev).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=dev, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    best = math.inf
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


_LIBC = None


def _trim() -> None:
    """Return freed heap memory to the OS, so that a call's working memory shows in VmHWM."""
    global _LIBC
    gc.collect()
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except OSError:
        pass


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, float | str]:
    """Working memory of one call of ``fn`` in MB. CPU: VmHWM after the call minus VmRSS
    before it, the high-water mark reset through /proc/self/clear_refs (Linux >= 4.0), after
    gc and malloc_trim; ``rss_mb`` is the resident set before. CUDA: the rise of
    torch.cuda.max_memory_allocated over the memory allocated before."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return {"peak_mb": (torch.cuda.max_memory_allocated(device) - before) / 2**20,
                "resident_mb": before / 2**20, "method": "torch.cuda.max_memory_allocated rise"}
    _trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        return {"peak_mb": float("nan"), "resident_mb": float("nan"),
                "method": f"unavailable: cannot reset VmHWM ({exc})"}
    before = _status_kb("VmRSS")
    fn()
    return {"peak_mb": max(0, _status_kb("VmHWM") - before) / 1024, "resident_mb": before / 1024,
            "method": "VmHWM rise over VmRSS (clear_refs reset, after malloc_trim)"}


# --- the models, as their domains build them -----------------------------------------------------

def model_configs(domains_dir: Path = DOMAINS) -> list[dict[str, str]]:
    """One entry per registered model named in a domain YAML: {model, yaml, domain}, at the
    first YAML (sorted) that names it."""
    from flowsci.config import load_config

    seen: dict[str, dict[str, str]] = {}
    for path in sorted(domains_dir.glob("*.yaml")):
        cfg = load_config(path, [])
        seen.setdefault(cfg.model.name, {"model": cfg.model.name, "yaml": path.stem, "domain": cfg.domain})
    return list(seen.values())


@dataclasses.dataclass
class Case:
    """One model at its domain's defaults: config, domain, data, model, objective, one
    training batch (dict of tensors (B, ...)) on ``device``."""

    cfg: Any
    domain: Any
    data: Any
    model: torch.nn.Module
    objective: Any
    batch: dict[str, torch.Tensor]
    device: torch.device
    data_note: str


def prepare_config(yaml: str, overrides: list[str], data_dir: Path) -> tuple[Any, str]:
    """The YAML's config with ``overrides``; its data file made if missing: the default one when
    it exists in the data folder, else a small one (SMALL_DATA) in ``data_dir``."""
    from flowsci.config import load_config
    from flowsci.data.lifecycle import default_path, ensure_data, generates_data
    from flowsci.plugins import create_domain

    source = DOMAINS / f"{yaml}.yaml"
    cfg = load_config(source, overrides)
    domain = create_domain(cfg.domain)
    if not generates_data(domain):
        return cfg, "built in memory"
    default = default_path(domain, cfg)
    if default.exists():
        shown = default.relative_to(REPO) if default.is_relative_to(REPO) else default
        return cfg, f"default data set ({shown})"
    small = SMALL_DATA.get(yaml, [])
    path = data_dir / f"{yaml}.h5"
    cfg = load_config(source, [*overrides, *small, f"data.path={path}"])
    ensure_data(domain, cfg, force=not path.exists(), progress=False)
    return cfg, ("generated: " + " ".join(small) if small else "generated with the YAML's settings")


def build_case(yaml: str, overrides: list[str], data_dir: Path, device: str = "cpu", seed: int = 0) -> Case:
    """Build ``yaml``'s domain, data, model and objective, and draw one training batch."""
    from flowsci.batches import collate
    from flowsci.plugins import create_domain
    from flowsci.rng import seed_everything

    cfg, note = prepare_config(yaml, overrides, data_dir)
    domain = create_domain(cfg.domain)
    seed_everything(seed)
    data = domain.build_data(cfg)
    dev = torch.device(device)
    model = domain.build_model(cfg).to(dev)
    objective = domain.build_objective(cfg)
    train = data.train
    size = min(cfg.train.batch_size, len(train))
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size].tolist()
    items = train.__getitems__(index) if hasattr(train, "__getitems__") else [train[i] for i in index]
    batch = {k: v.to(dev) for k, v in collate(items).items()}
    return Case(cfg, domain, data, model, objective, batch, dev, note)


def autocast(case: Case, bf16: bool) -> contextlib.AbstractContextManager:
    return (torch.autocast(case.device.type, dtype=torch.bfloat16) if bf16
            else contextlib.nullcontext())


def train_step(case: Case, called: torch.nn.Module, bf16: bool = False) -> Callable[[], float]:
    """One training step as the Trainer takes it: loss of the batch through ``called`` (the model
    or its compiled wrapper), backward, clipping, AdamW, EMA; returns the loss."""
    from flowsci.ema import ema_model

    tc = case.cfg.train
    params = [p for p in case.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                                  amsgrad=tc.amsgrad)
    ema = ema_model(case.model, tc.ema) if tc.ema > 0 else None
    clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
    case.model.train()

    def step() -> float:
        with autocast(case, bf16):
            loss, _ = case.objective.loss(called, case.batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        value = float(loss.detach())
        optimizer.step()
        if ema is not None:
            ema.update_parameters(case.model)
        return value

    return step


def sampler_call(case: Case, called: torch.nn.Module, bf16: bool = False
                 ) -> tuple[Callable[[], Any], int, str]:
    """(one sampling / inference call through ``called``, samples per call, what a sample is)
    at the YAML's sample settings."""
    cfg, domain, data, batch = case.cfg, case.domain, case.data, case.batch
    n = min(cfg.train.batch_size, SAMPLE_CAP)

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            called.eval()
            try:
                with torch.no_grad(), autocast(case, bf16):
                    return fn()
            finally:
                case.model.train()
        return call

    if hasattr(domain, "step_function"):  # one-step surrogates: one rollout step from test states
        trajectory = data.test.tensors["trajectory"]
        u0 = trajectory[torch.arange(n) % trajectory.shape[0], 0].to(case.device)
        step = domain.step_function(called, cfg, torch.Generator().manual_seed(0))
        return wrap(lambda: step(u0)), n, "state, one rollout step"
    if cfg.domain == "population":
        from flowsci_domains.population.evaluation import predict
        sampler = domain.sampler(cfg)
        return (wrap(lambda: predict(called, sampler, batch, cfg.objective.base)), len(batch["x0"]),
                "population")
    if cfg.domain == "letter_clouds":
        clouds = cfg.eval.n_per_letter * len(cfg.settings.letters)
        return wrap(lambda: domain.generate(called, cfg)), clouds, "point cloud"
    if cfg.domain == "kinetic":
        return wrap(lambda: called(batch["D"], batch["E"])), len(batch["D"]), "snapshot (closure)"
    if cfg.domain == "lpinn":
        x, t = batch["x"].reshape(-1), batch["t"].reshape(-1)
        return wrap(lambda: called(x, t)), len(x), "collocation point (forward)"
    return wrap(lambda: domain.sample(called, data, cfg, n)), n, "sample"


@contextlib.contextmanager
def counting_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count the forward calls of ``model`` (the model evaluations of a sampling call)."""
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


# --- the worker: one model, one mode, in its own process ----------------------------------------

def measure_eager(spec: dict[str, Any]) -> dict[str, Any]:
    """Eager numbers of one model: FLOPs, memory, step and sampling ms at each thread count, and
    the other coupling where there is one."""
    timing = SMOKE if spec["smoke"] else FULL
    threads = spec["threads"]
    torch.set_num_threads(threads[0])
    case = build_case(spec["yaml"], [], Path(spec["data_dir"]), spec["device"])
    bf16 = spec["bf16"]
    out: dict[str, Any] = {"data": case.data_note, "batch_size": case.cfg.train.batch_size,
                           "parameters": sum(p.numel() for p in case.model.parameters()),
                           "trainable": sum(p.numel() for p in case.model.parameters() if p.requires_grad)}
    step = train_step(case, case.model, bf16)
    sample, n, what = sampler_call(case, case.model, bf16)
    out["sample_unit"], out["samples_per_call"] = what, n
    step()  # first step: optimizer state, lazy initialisation
    out["train_flops"] = count_flops(step)
    for _ in range(timing["train"].warmup):
        step()
    out["train_memory"] = peak_memory(step, case.device)
    with counting_calls(case.model) as calls:
        out["sample_flops"] = count_flops(sample)  # also the sampling warm-up
    out["model_calls_per_sample_call"] = calls[0]
    out["sample_memory"] = peak_memory(sample, case.device)
    out["train"], out["sample"] = {}, {}
    for i, k in enumerate(threads):
        torch.set_num_threads(k)
        again = dataclasses.replace(timing["train"], warmup=1) if i else timing["train"]
        out["train"][str(k)] = summary(time_calls(step, again, case.device))
        if i == 0:  # sampling at the first thread count only (the time limit of the whole run)
            out["sample"][str(k)] = summary(time_calls(sample, timing["sample"], case.device))
    if spec["yaml"] in OTHER_COUPLING:
        label, override = OTHER_COUPLING[spec["yaml"]]
        torch.set_num_threads(threads[0])
        other = build_case(spec["yaml"], [override], Path(spec["data_dir"]), spec["device"])
        other_step = train_step(other, other.model, bf16)
        other_step()
        coupling = {"coupling": label, "override": override, "train_flops": count_flops(other_step),
                    "train": {}}
        for k in threads:
            torch.set_num_threads(k)
            coupling["train"][str(k)] = summary(time_calls(other_step, timing["train"], other.device))
        objective = other.objective if getattr(other.objective, "costly_pairing", False) else case.objective
        if getattr(objective, "costly_pairing", False):
            from flowsci.rng import batch_generator
            x1 = {"x1": case.batch["x1"]}
            torch.set_num_threads(threads[0])
            coupling["pairing_alone"] = summary(time_calls(
                lambda: objective.pair(x1, batch_generator(0, 0)), timing["train"], case.device))
        out["other_coupling"] = coupling
    out["coupling"] = _coupling_name(case.cfg)
    return out


def _coupling_name(cfg: Any) -> str | None:
    coupling = getattr(cfg.objective, "coupling", None)
    if coupling is None:
        return None
    return coupling if isinstance(coupling, str) else json.dumps(coupling)


def measure_compiled(spec: dict[str, Any]) -> dict[str, Any]:
    """Compiled numbers of one model at one thread count: compile seconds (the first call) and
    step / sampling ms after it; where compiling fails, the reason (the calls then ran eagerly)."""
    from flowsci.compile import compile_model

    timing = SMOKE if spec["smoke"] else FULL
    threads = spec["compile_threads"]
    torch.set_num_threads(threads)
    case = build_case(spec["yaml"], [], Path(spec["data_dir"]), spec["device"])
    called, state = compile_model(case.model, True)
    step = train_step(case, called, spec["bf16"])
    out: dict[str, Any] = {"threads": threads}
    t0 = time.perf_counter()
    try:
        step()
    except Exception as exc:  # a failure in backward (double backward): the step runs eagerly
        state.retry_eagerly(exc, step)
    out["train_compile_seconds"] = time.perf_counter() - t0
    out["train_failure"] = state.failure
    out["train"] = summary(time_calls(step, timing["train"], case.device))
    Path(spec["result"]).write_text(json.dumps(out))  # kept if sampling runs past the time limit
    sample, _, _ = sampler_call(case, called, spec["bf16"])
    t0 = time.perf_counter()
    sample()
    out["sample_compile_seconds"] = time.perf_counter() - t0
    out["sample_failure"] = state.failure
    out["sample"] = summary(time_calls(sample, timing["sample"], case.device))
    return out


def worker(spec: dict[str, Any]) -> None:
    """Run one measurement (``spec["mode"]``: eager | compiled) and write its JSON."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    started = time.perf_counter()
    result = (measure_compiled if spec["mode"] == "compiled" else measure_eager)(spec)
    result["worker_seconds"] = time.perf_counter() - started
    Path(spec["result"]).write_text(json.dumps(result))


def run_worker(spec: dict[str, Any], timeout: float, scratch: Path) -> dict[str, Any]:
    """Run :func:`worker` in a fresh process (own inductor cache) with a time limit; returns its
    JSON, or {"error": ...}."""
    spec = {**spec, "result": str(scratch / f"{spec['model']}-{spec['mode']}.json")}
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(scratch / f"inductor-{spec['model']}"),
           "TORCHINDUCTOR_COMPILE_THREADS": "1", "OMP_NUM_THREADS": str(max(spec["threads"]))}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        late = f"over its time limit of {timeout:.0f} s"
        if Path(spec["result"]).exists():  # the training part finished
            return {**json.loads(Path(spec["result"]).read_text()), "sample_error": late}
        return {"error": late, "seconds": time.perf_counter() - started}
    warnings = [line for line in proc.stderr.splitlines() if "continuing eagerly" in line]
    if proc.returncode != 0 or not Path(spec["result"]).exists():
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)[-600:]}",
                "seconds": time.perf_counter() - started}
    result = json.loads(Path(spec["result"]).read_text())
    if warnings:
        result["warning"] = warnings[0][-400:]
    return result


# --- the run ---------------------------------------------------------------------------------------

def fractions(results: dict[str, Any]) -> None:
    """Add FLOP/s and the fraction of the matmul peak (same thread count) to every timing."""
    peak = results["peak_flops"]
    for row in results["models"]:
        eager, compiled = row.get("eager", {}), row.get("compiled", {})
        if "train" in eager:
            for key, flops in (("train", eager["train_flops"]["total"]),
                               ("sample", eager["sample_flops"]["total"])):
                for k, t in eager[key].items():
                    t["flops_per_s"] = flops / (t["ms"] / 1e3)
                    t["fraction_of_peak"] = t["flops_per_s"] / peak[k]
                if key in compiled and not compiled.get(f"{key}_failure"):
                    t = compiled[key]
                    t["flops_per_s"] = flops / (t["ms"] / 1e3)
                    t["fraction_of_peak"] = t["flops_per_s"] / peak[str(compiled["threads"])]


def best_peaks(measured: list[dict[str, float]], threads: list[int]) -> dict[str, float]:
    """The peak at k threads: the best matmul FLOP/s measured with at most k threads (a k-thread
    run could use fewer; on a shared machine a 2-thread sgemm can measure below a 1-thread one)."""
    return {str(k): max(m[str(j)] for m in measured for j in threads if j <= k) for k in threads}


Runner = Callable[[dict[str, Any], float, Path], dict[str, Any]]


def measure_all(args: argparse.Namespace, runner: Runner = run_worker) -> dict[str, Any]:
    """Every selected model: the eager workers first, then the compiled ones in the time left,
    cheapest eager step first. ``runner(spec, timeout, scratch)`` runs one worker (default: in
    its own process)."""
    device = "cuda" if args.device == "cuda" else "cpu"
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    started = time.perf_counter()
    configs = model_configs()
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - {c["model"] for c in configs})
        if unknown:
            raise SystemExit(f"--models: {', '.join(unknown)} not in a domain YAML; choose from "
                             f"{', '.join(c['model'] for c in configs)}")
        configs = [c for c in configs if c["model"] in wanted]
    n = 512 if args.smoke else 2048

    def peaks() -> dict[str, float]:
        return {str(k): matmul_peak(k, n, 3 if args.smoke else 5, device, dtype) for k in args.threads}

    results: dict[str, Any] = {
        "benchmark": "throughput", "command": " ".join(["python", "bench/throughput.py", *sys.argv[1:]]),
        "smoke": args.smoke, "device": device, "bf16": args.bf16, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
        "compile_threads": args.compile_threads,
        "load_average_before": os.getloadavg()[0], "matmul_n": n, "peak_flops_measured": [peaks()],
        "models": [],
    }
    if device == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="flowsci-throughput-") as tmp:
        scratch = Path(tmp)
        base = {"smoke": args.smoke, "threads": args.threads, "compile_threads": args.compile_threads,
                "device": device, "bf16": args.bf16, "data_dir": str(scratch)}
        for c in configs:
            remaining = args.budget - (time.perf_counter() - started)
            row = {**c}
            if remaining < 20:
                row["eager"] = {"error": "skipped: the run's time budget is spent"}
            else:
                row["eager"] = runner({**base, **c, "mode": "eager"}, min(args.model_timeout, remaining),
                                      scratch)
            print(f"{c['model']:<24} eager    {_line(row['eager'])}", flush=True)
            results["models"].append(row)
        results["peak_flops_measured"].append(peaks())  # between the eager and the compiled runs
        # fewest aten operations per step first: compile time grows with the graph
        todo = sorted((r for r in results["models"] if args.compile and "error" not in r["eager"]),
                      key=lambda r: r["eager"]["train_flops"]["aten_ops"])
        for row in todo:
            remaining = args.budget - (time.perf_counter() - started) - 30  # the last peak, the files
            if remaining < 20:
                row["compiled"] = {"error": f"skipped: {max(remaining, 0):.0f} s of the time budget left"}
            else:
                spec = {**base, "model": row["model"], "yaml": row["yaml"], "domain": row["domain"],
                        "mode": "compiled"}
                row["compiled"] = runner(spec, min(args.compile_timeout, remaining), scratch)
            print(f"{row['model']:<24} compiled {_line(row['compiled'])}", flush=True)
    results["peak_flops_measured"].append(peaks())
    results["peak_flops"] = best_peaks(results["peak_flops_measured"], args.threads)
    results["load_average_after"] = os.getloadavg()[0]
    results["seconds"] = time.perf_counter() - started
    fractions(results)
    return results


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]
    if "train_compile_seconds" in r:
        failure = f"  ({r['train_failure']})" if r["train_failure"] else ""
        sampling = (f"sampling call {r['sample']['ms']:.2f} ms" if "sample" in r
                    else f"sampling: {r.get('sample_error')}")
        return (f"compile {r['train_compile_seconds']:.1f} s, step {r['train']['ms']:.2f} ms, "
                f"{sampling}{failure}")
    steps = "  ".join(f"{k} thr: step {r['train'][k]['ms']:.2f} ms" for k in r["train"])
    return steps + "".join(f"  {k} thr: sampling call {t['ms']:.2f} ms" for k, t in r["sample"].items())


# --- report ------------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:.2f}%" if x < 0.1 else f"{100 * x:.1f}%"


def markdown_table(results: dict[str, Any]) -> str:
    """The main table, the coupling table and the run's conditions, as Markdown."""
    k1, k2 = (str(k) for k in (results["threads"] + results["threads"])[:2])
    ct = str(results["compile_threads"])
    lines = [f"| model (YAML, batch) | params | MFLOP / step | aten ops / step (µs / op, {k1} thr) "
             f"| step ms, {k1} thr | step ms, {k2} thr "
             f"| compiled step ms ({ct} thr; compile s) | % of peak, eager / compiled ({k1} thr) "
             f"| sampling ms / sample ({k1} thr; model calls) | compiled | sampling % of peak "
             "| memory MB: step / sampling |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["models"]:
        e, c = row.get("eager", {}), row.get("compiled", {})
        name = f"{row['model']} ({row['yaml']}, {e.get('batch_size', '?')})"
        if "error" in e:
            lines.append(f"| {name} | {e['error']} |" + " |" * 10)
            continue
        n = e["samples_per_call"]
        if "error" in c or not c:
            comp_step = comp_sample = c.get("error", "not run") if c else "not run"
            comp_frac = "–"
        else:
            fail = " (eager: compile failed)" if c["train_failure"] else ""
            comp_step = f"{c['train']['ms']:.2f} ({c['train_compile_seconds']:.0f} s){fail}"
            comp_sample = (f"{c['sample']['ms'] / n:.3f} ({c['sample_compile_seconds']:.0f} s)"
                           + (" (eager)" if c["sample_failure"] and not c["train_failure"] else "")
                           if "sample" in c else c.get("sample_error", "–"))
            comp_frac = _pct(c["train"].get("fraction_of_peak"))
        fft = e["train_flops"]["fft"]
        flops = f"{e['train_flops']['total'] / 1e6:.1f}" + (f" ({fft / 1e6:.1f} FFT)" if fft else "")
        ops = e["train_flops"].get("aten_ops", 0)
        per_op = f"{ops} ({1e3 * e['train'][k1]['ms'] / ops:.0f})" if ops else "–"
        lines.append(
            f"| {name} | {e['parameters'] / 1e3:.1f} k | {flops} | {per_op} "
            f"| {e['train'][k1]['ms']:.2f} | {e['train'][k2]['ms']:.2f} | {comp_step} "
            f"| {_pct(e['train'][k1].get('fraction_of_peak'))} / {comp_frac} "
            f"| {e['sample'][k1]['ms'] / n:.3f} (per {e['sample_unit']}; "
            f"{e['model_calls_per_sample_call']}) | {comp_sample} "
            f"| {_pct(e['sample'][k1].get('fraction_of_peak'))} "
            f"| {e['train_memory']['peak_mb']:.1f} / {e['sample_memory']['peak_mb']:.1f} |")
    coupled = [r for r in results["models"] if "other_coupling" in r.get("eager", {})]
    if coupled:
        lines += ["", f"| model | coupling | step ms, {k1} thr | step ms, {k2} thr "
                  f"| pairing alone ms ({k1} thr) |", "|---|---|---|---|---|"]
        for r in coupled:
            e, o = r["eager"], r["eager"]["other_coupling"]
            pairing = f"{o['pairing_alone']['ms']:.2f}" if "pairing_alone" in o else "–"
            mine = "OT" if o["coupling"] == "plain" else "plain"
            lines.append(f"| {r['model']} | {mine} (YAML: {e['coupling']}) | {e['train'][k1]['ms']:.2f} "
                         f"| {e['train'][k2]['ms']:.2f} | {pairing if mine == 'OT' else ''} |")
            lines.append(f"| {r['model']} | {o['coupling']} ({o['override']}) | {o['train'][k1]['ms']:.2f} "
                         f"| {o['train'][k2]['ms']:.2f} | {pairing if o['coupling'] == 'OT' else ''} |")
    measured = results["peak_flops_measured"]
    peaks = ", ".join(f"{k} thr {v / 1e9:.1f} GFLOP/s (its own sgemm measured "
                      f"{min(m[k] for m in measured) / 1e9:.1f}–{max(m[k] for m in measured) / 1e9:.1f})"
                      for k, v in results["peak_flops"].items())
    lines.append(
        f"\nMatmul peak (fp32 {results['matmul_n']}² sgemm; at k threads the best of "
        f"{3 if results['smoke'] else 5} repeats in "
        f"{len(results['peak_flops_measured'])} measurements with at most k threads): "
        f"{peaks}. torch {results['torch']}, {results['cpus']} CPUs, {results['machine']}, device "
        f"{results['device']}{' (bf16 autocast)' if results['bf16'] else ''}; 1-min load average "
        f"{results['load_average_before']:.2f} before, {results['load_average_after']:.2f} after; "
        f"{results['seconds'] / 60:.1f} min in all{' (smoke)' if results['smoke'] else ''}.")
    return "\n".join(lines)


def plot(results: dict[str, Any], out: Path) -> None:
    """Fraction of the matmul peak per model's training step: eager (each thread count) and
    compiled, log scale."""
    from matplotlib.figure import Figure

    rows = [r for r in results["models"] if "train" in r.get("eager", {})]
    bars = [(f"eager, {k} thr", lambda r, k=str(k): r["eager"]["train"][k].get("fraction_of_peak"))
            for k in results["threads"]]
    bars.append((f"compiled, {results['compile_threads']} thr",
                 lambda r: r.get("compiled", {}).get("train", {}).get("fraction_of_peak")))
    fig = Figure(figsize=(max(6.0, 0.8 * len(rows) + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(bars)
    for i, (label, get) in enumerate(bars):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [get(r) or 0.0 for r in rows], width, label=label)
    ax.set_xticks([j + width * (len(bars) - 1) / 2 for j in range(len(rows))],
                  [r["model"] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", linestyle=":", linewidth=1)
    ax.set(ylabel="training step FLOP/s ÷ matmul peak", title="Throughput against the fp32 matmul peak")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: every model in "
                        "domains/*.yaml; --smoke: mlp_velocity)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long check: few repeats, small peak")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="measure torch.compile too (default: yes, except with --smoke)")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts of the eager runs")
    parser.add_argument("--compile-threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (with --device cuda)")
    parser.add_argument("--budget", type=float, default=800.0, help="seconds for the whole run")
    parser.add_argument("--model-timeout", type=float, default=150.0, help="seconds per eager worker")
    parser.add_argument("--compile-timeout", type=float, default=200.0, help="seconds per compiled worker")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--report", metavar="JSON",
                        help="redraw the PNG and print the table of an earlier run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.report:
        results = json.loads(Path(args.report).read_text())
        plot(results, Path(args.report).with_suffix(".png"))
        print(markdown_table(results))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda: no CUDA device available (torch {torch.__version__}); skipping")
        return
    if args.bf16 and args.device != "cuda":
        print("--bf16: bf16 autocast is measured with --device cuda only; skipping")
        return
    args.threads = [int(k) for k in args.threads.split(",")]
    args.compile = (not args.smoke) if args.compile is None else args.compile
    if args.smoke and not args.models:
        args.models = "mlp_velocity"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = measure_all(args)
    stem = "throughput_smoke" if args.smoke else "throughput"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    plot(results, out / f"{stem}.png")
    table = markdown_table(results)
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
    print(f"written: {out / stem}.json, .md, .png")


if __name__ == "__main__":
    main()
