"""The Trainer: one loop for every domain and objective.

AdamW with warm-up + cosine/constant schedule, then optionally an L-BFGS phase (PINNs), EMA,
gradient clipping, periodic evaluation and figures, CSV (and optional TensorBoard) metrics, a NaN/inf guard, atomic checkpoints
with every state needed to continue bit-for-bit (CPU, same seed), and DistributedDataParallel
under torchrun.
"""

from __future__ import annotations

import functools
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

import flowsci
from flowsci.atomic import atomic_open
from flowsci.checkpoint import (
    FORMAT,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from flowsci.config import Config, TrainConfig, save_config
from flowsci.distributed import DistContext, init_from_env, shutdown
from flowsci.errors import CheckpointError, ConfigError, NonFiniteLossError, RunError
from flowsci.metrics_log import MetricsLog
from flowsci.plugins import get_domain
from flowsci.runs import RunDir, latest_run_path, new_run_path

EVAL_SEED_OFFSET = 10_007


@dataclass
class TrainResult:
    """What a finished training run returns."""

    run_dir: Path
    step: int
    metrics: dict[str, float]
    checkpoint: Path | None  # the final checkpoint (None on processes other than rank 0)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at a step boundary after writing a checkpoint."""

    def __init__(self, step: int, checkpoint: Path | None, run_dir: Path):
        self.step, self.checkpoint, self.run_dir = step, checkpoint, run_dir
        super().__init__(f"interrupted at step {step}; checkpoint {checkpoint}")


@contextmanager
def deferred_sigint(active: bool) -> Iterator[list[bool]]:
    """While active, a first Ctrl-C only raises a flag (``flag[0]``) that the loop checks at
    the end of a step; a second Ctrl-C interrupts at once. Inactive outside the main thread."""
    flag = [False]
    if not active or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@torch.no_grad()
def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor,
               *, decay: float) -> None:
    """EMA step with the warm-up decay min(decay, (1 + n) / (10 + n)) after n updates.

    torch's ``get_ema_multi_avg_fn`` uses the full decay from the first step, so the EMA keeps
    a large share of the initial weights for ~1/(1 - decay) steps; the warm-up removes that.
    """
    n = int(num_averaged)
    d = min(decay, (1 + n) / (10 + n))
    for avg, cur in zip(averaged, current):
        if avg.is_floating_point():
            avg.lerp_(cur, 1 - d)
        else:  # integer buffers (e.g. batch-norm counters) follow the model
            avg.copy_(cur)


class BatchPlan:
    """Per-process batch indices; batch k of the run depends only on (seed, k).

    Uses :class:`DistributedSampler` (one replica in a single process), so that the union of
    the processes' k-th batches is the k-th batch of a single process with the same global
    batch size.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, ctx: DistContext):
        if batch_size % ctx.world_size:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the number of "
                              f"processes ({ctx.world_size})")
        self.per_rank = batch_size // ctx.world_size
        self.sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.per_epoch = len(self.sampler) // self.per_rank
        if self.per_epoch == 0:
            raise ConfigError(f"train.batch_size={batch_size} is larger than the training set "
                              f"({len(dataset)} samples)")
        self._epoch, self._order = -1, []

    def batch(self, k: int) -> list[int]:
        epoch, offset = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        return self._order[offset * self.per_rank:(offset + 1) * self.per_rank]


class _PlannedBatches(Sampler[list[int]]):
    def __init__(self, plan: BatchPlan, start: int, stop: int):
        self.plan, self.start, self.stop = plan, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        return (self.plan.batch(k) for k in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def collate(items: Any) -> dict[str, torch.Tensor]:
    """A batch dict from ``__getitems__`` passes through; a list of item dicts is stacked."""
    if isinstance(items, dict):
        return items
    return torch.utils.data.default_collate(items)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as checkpoint-safe values."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with fixed seeds, restoring the training RNG streams afterwards."""
    saved = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


class Trainer:
    """Trains ``cfg``'s domain into ``run`` (see :func:`train` for the entry point)."""

    def __init__(self, cfg: Config, run: RunDir, ctx: DistContext, *, resume: bool = False,
                 progress: bool | None = None):
        self.cfg, self.run, self.ctx = cfg, run, ctx
        self.tc: TrainConfig = cfg.train
        self.domain = get_domain(cfg.domain)
        self.progress = progress
        self.device = ctx.device

        seed_everything(cfg.seed)  # identical initial weights on every process
        if ctx.is_main:
            self.data = self.domain.build_data(cfg)
        ctx.barrier()
        if not ctx.is_main:
            self.data = self.domain.build_data(cfg)
        self.model = self.domain.build_model(cfg).to(self.device)
        if not hasattr(self.model, "flowsci_spec"):
            raise ConfigError(f"domain '{cfg.domain}': build_model must build through "
                              "flowsci.plugins.build_model so that checkpoints can rebuild it")
        if self.tc.init_from and not resume:
            self._init_weights(self.tc.init_from)
        self.objective = self.domain.build_objective(cfg)
        if self.tc.lbfgs.steps > 0 and self.tc.ema > 0:
            raise ConfigError(f"{cfg.source}: train.ema={self.tc.ema} averages first-order steps only, so "
                              "the L-BFGS result would be evaluated through stale weights; set train.ema=0 "
                              "with train.lbfgs.steps > 0")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.tc.lr, betas=self.tc.betas,
                                           weight_decay=self.tc.weight_decay, amsgrad=self.tc.amsgrad)
        self.lbfgs: torch.optim.LBFGS | None = None  # built when the L-BFGS phase starts
        self.lbfgs_converged = False
        self.lbfgs_last_loss: float | None = None  # loss at the start of the last L-BFGS iteration
        self.lbfgs_restarts = 0
        self.lbfgs_since_restart = 0  # iterations since the phase started or the history was cleared
        self.lbfgs_evaluations = 0  # loss evaluations before the last restart
        self.train_seconds = 0.0  # training wall-clock, without evaluation and checkpoints
        self.adam_metrics: dict[str, float] = {}
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(
            lr_factor, warmup=self.tc.warmup_steps, total=self.tc.steps, schedule=self.tc.schedule,
            min_ratio=self.tc.min_lr_ratio))
        self.ema = (AveragedModel(self.model, multi_avg_fn=functools.partial(ema_update, decay=self.tc.ema),
                                  use_buffers=True)
                    if self.tc.ema > 0 else None)
        self.wrapped = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if ctx.enabled else self.model)
        self.step = 0
        seed_everything(cfg.seed + 1_000_003 * ctx.rank)  # independent noise per process
        if resume:
            self._resume()
        if ctx.is_main and not resume:
            save_config(cfg, run.config)
        self.log = MetricsLog(run.metrics, run.tensorboard if self.tc.tensorboard else None) \
            if ctx.is_main else None
        if resume and self.log is not None:
            self.log.truncate_after(self.step)
        if ctx.is_main:
            start = f" from step {self.step}" if resume else ""
            print(f"{cfg.domain}: training into {run.path}{start} ({ctx.world_size} process"
                  f"{'es' if ctx.enabled else ''}, {self.device})", flush=True)

    # --- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (the RNG states of all processes)."""
        rng = [rng_state()]
        if self.ctx.enabled:
            rng = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(rng, rng_state())
        return {
            "format": FORMAT, "flowsci_version": flowsci.__version__, "step": self.step,
            "domain": self.cfg.domain, "config": self.cfg.to_dict(), "world_size": self.ctx.world_size,
            "model_spec": self.model.flowsci_spec, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None, "rng": rng,
            "lbfgs": self.lbfgs.state_dict() if self.lbfgs is not None else None,
            "lbfgs_converged": self.lbfgs_converged, "lbfgs_last_loss": self.lbfgs_last_loss,
            "lbfgs_restarts": self.lbfgs_restarts, "lbfgs_since_restart": self.lbfgs_since_restart,
            "lbfgs_evaluations": self.lbfgs_evaluations,
            "train_seconds": self.train_seconds,
            "adam_metrics": self.adam_metrics,
        }

    def _resume(self) -> None:
        saved = self.run.load_config().to_dict()
        current = self.cfg.to_dict()
        for train_section in (saved["train"], current["train"]):
            train_section.pop("steps")
            train_section["lbfgs"].pop("steps", None)
        if saved != current:
            diffs = [f"{section}.{k}: {saved[section].get(k)!r} -> {v!r}"
                     for section in current for k, v in (current[section].items()
                                                          if isinstance(current[section], dict) else [])
                     if saved.get(section, {}).get(k) != v]
            raise RunError(f"--resume: the config differs from {self.run.config} "
                           f"({'; '.join(diffs) or 'top-level keys'}); only train.steps and "
                           "train.lbfgs.steps may change. "
                           "Start a new run instead")
        found = list_checkpoints(self.run.checkpoints)
        if not found:
            raise CheckpointError(f"--resume: no checkpoint in {self.run.checkpoints}")
        path = found[-1][1]
        try:
            state = load_checkpoint(path, map_location=self.device)
        except CheckpointError as exc:
            previous = [str(p) for _, p in found[:-1]]
            hint = (f"; the previous checkpoint {previous[-1]} is intact: delete {path} to resume from it"
                    if previous else "")
            raise CheckpointError(f"{exc}{hint}") from None
        if state["model_spec"] != self.model.flowsci_spec:
            raise CheckpointError(f"{path}: model {state['model_spec']} does not match the config's "
                                  f"{self.model.flowsci_spec}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise CheckpointError(f"{path} has no EMA state but train.ema={self.tc.ema}")
            self.ema.load_state_dict(state["ema"])
        if len(state["rng"]) == self.ctx.world_size:
            set_rng_state(state["rng"][self.ctx.rank])
        self.step = int(state["step"])
        if state.get("lbfgs") is not None:
            self._start_lbfgs()
            self.lbfgs.load_state_dict(state["lbfgs"])
        self.lbfgs_converged = bool(state.get("lbfgs_converged", False))
        self.lbfgs_last_loss = state.get("lbfgs_last_loss")
        self.lbfgs_restarts = int(state.get("lbfgs_restarts", 0))
        self.lbfgs_since_restart = int(state.get("lbfgs_since_restart", 0))
        self.lbfgs_evaluations = int(state.get("lbfgs_evaluations", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.adam_metrics = dict(state.get("adam_metrics", {}))

    def _init_weights(self, source: str) -> None:
        """Start from the weights (EMA when present) of another run's checkpoint (reflow,
        fine-tuning); the model spec must match."""
        from flowsci.checkpoint import load_model

        donor = load_model(source, ema=True)
        if donor.flowsci_spec != self.model.flowsci_spec:
            raise ConfigError(f"train.init_from={source}: its model {donor.flowsci_spec} differs from "
                              f"this config's {self.model.flowsci_spec}")
        self.model.load_state_dict(donor.state_dict())

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0), keeping the newest few."""
        state = self.state_dict()
        if not self.ctx.is_main:
            return None
        path = save_checkpoint(checkpoint_path(self.run.checkpoints, self.step), state)
        prune_checkpoints(self.run.checkpoints, self.tc.keep_checkpoints)
        return path

    # --- evaluation ----------------------------------------------------------------------

    def eval_model(self) -> torch.nn.Module:
        """The EMA weights when enabled (and eval.use_ema), otherwise the trained weights."""
        return self.ema.module if self.ema is not None and self.cfg.eval.use_ema else self.model

    def evaluate(self, figures_dir: Path | None, with_metrics: bool = True) -> dict[str, float]:
        """Domain metrics and/or figures on rank 0, with fixed evaluation seeds."""
        metrics: dict[str, float] = {}
        if self.ctx.is_main:
            model = self.eval_model()
            was_training = model.training
            model.eval()
            with isolated_rng(self.cfg.seed + EVAL_SEED_OFFSET):
                if with_metrics:
                    metrics = {k: float(v) for k, v in self.domain.evaluate(model, self.data, self.cfg).items()}
                    self.log.write(self.step, "eval", {**metrics, "train_seconds": self.train_seconds})
                if figures_dir is not None:
                    save_figures(self.domain.figures(model, self.data, self.cfg), figures_dir)
            model.train(was_training)
        self.ctx.barrier()
        return metrics

    # --- loop ----------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train from the current step to ``train.steps`` (+ ``train.lbfgs.steps``); returns the
        final metrics."""
        tc = self.tc
        total = tc.total_steps
        if self.lbfgs_converged:
            raise RunError(f"{self.run.path}: L-BFGS converged at step {self.step}; nothing to continue")
        if self.step >= total:
            raise RunError(f"{self.run.path} is already at step {self.step} >= train.steps + "
                           f"train.lbfgs.steps = {total}; raise them to continue it")
        plan = BatchPlan(self.data.train, tc.batch_size, self.cfg.seed, self.ctx)
        loader = DataLoader(self.data.train, batch_sampler=_PlannedBatches(plan, self.step, total),
                            collate_fn=collate, num_workers=self.cfg.data.num_workers,
                            # its own generator: drawing worker seeds from the global RNG would
                            # shift the training stream on every (re)start and break --resume
                            generator=torch.Generator().manual_seed(self.cfg.seed))
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.step, desc=f"train {self.cfg.domain}", unit="step",
                   disable=not (show and self.ctx.is_main), dynamic_ncols=True)
        self.model.train()
        self._clock = (time.perf_counter(), self.step)  # (time, step) of the last seconds_per_step log
        # One process: Ctrl-C stops cleanly at a step boundary with a checkpoint. Under torchrun
        # the processes could stop at different steps, so the default behaviour stays.
        try:
            with deferred_sigint(active=not self.ctx.enabled) as interrupted:
                for batch in loader:
                    self._train_step(batch, bar)
                    if self.lbfgs_converged:
                        self._say(f"L-BFGS converged after {self.step - tc.steps} iterations", bar)
                        break
                    if interrupted[0] and self.step < total:
                        bar.close()
                        raise TrainingInterrupted(self.step, self.save(), self.run.path)
            bar.close()
            metrics = self.evaluate(self.run.figures)
            if self.ctx.is_main:  # the other processes return no metrics
                metrics.update(self._cost_metrics())
            checkpoint = self.save()
        finally:
            if self.log is not None:
                self.log.close()
        return TrainResult(run_dir=self.run.path, step=self.step, metrics=metrics, checkpoint=checkpoint)

    def _train_step(self, batch: dict[str, torch.Tensor], bar: tqdm) -> None:
        """One optimizer step with logging, periodic evaluation and checkpoints."""
        tc = self.tc
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        started = time.perf_counter()
        if self.step < tc.steps:
            mean_loss, grad_norm, logs = self._first_order_step(batch)
            lr = self.scheduler.get_last_lr()[0]
        else:
            mean_loss, grad_norm, logs = self._lbfgs_step(batch)
            lr = tc.lbfgs.lr
        self.step += 1
        self.train_seconds += time.perf_counter() - started
        bar.update(1)
        if self.step % tc.log_every == 0 and self.log is not None:
            clock, since = self._clock
            self.log.write(self.step, "train", {"loss": mean_loss, "lr": lr, "grad_norm": grad_norm,
                                                "seconds_per_step": (time.perf_counter() - clock) / (self.step - since),
                                                "train_seconds": self.train_seconds, **logs})
            bar.set_postfix(loss=f"{mean_loss:.4g}")
            self._clock = (time.perf_counter(), self.step)
        if self.step == tc.total_steps or self.lbfgs_converged:
            return  # the final evaluation, figures and checkpoint follow in fit()
        if self.step == tc.steps:  # the first-order phase ends, L-BFGS follows
            self.adam_metrics = self.evaluate(self.run.figures / f"step-{self.step:08d}-adam")
            self._say(f"step {self.step} (end of the first-order phase): " + format_metrics(self.adam_metrics), bar)
            self.save()
            self._clock = (time.perf_counter(), self.step)
            return
        with_metrics = bool(tc.eval_every) and self.step % tc.eval_every == 0
        with_figures = bool(tc.figures_every) and self.step % tc.figures_every == 0
        if with_metrics or with_figures:
            metrics = self.evaluate(self.run.figures / f"step-{self.step:08d}" if with_figures else None,
                                    with_metrics=with_metrics)
            if metrics:
                self._say(f"step {self.step}: " + format_metrics(metrics), bar)
        with_checkpoint = bool(tc.checkpoint_every) and self.step % tc.checkpoint_every == 0
        if with_checkpoint:
            self.save()
        if with_metrics or with_figures or with_checkpoint:
            self._clock = (time.perf_counter(), self.step)  # seconds_per_step counts training only

    def _first_order_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, dict[str, float]]:
        """One AdamW step; returns (mean loss over processes, gradient norm, objective logs)."""
        tc = self.tc
        loss, logs = self.objective.loss(self.wrapped, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        mean_loss = float(self.ctx.mean(loss.detach()))
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(self.step + 1, mean_loss, logs)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return mean_loss, float(grad_norm), logs

    def _start_lbfgs(self) -> None:
        lb = self.tc.lbfgs
        # torch's own stopping tests are switched off (one iteration per call): the phase's
        # convergence test is in _lbfgs_step, so that it ends the run instead of one call.
        self.lbfgs = torch.optim.LBFGS(
            self.model.parameters(), lr=lb.lr, max_iter=1, max_eval=lb.max_eval,
            history_size=lb.history_size, tolerance_grad=lb.tolerance_grad, tolerance_change=0.0,
            line_search_fn=None if lb.line_search == "none" else lb.line_search)

    def _lbfgs_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, dict[str, float]]:
        """One L-BFGS iteration on a fixed batch.

        An iteration that leaves the loss unchanged (a failed line search along a direction
        built from stale curvature pairs) clears the curvature history, so that the next one
        starts again from a steepest-descent step; ``lbfgs_converged`` is set when that
        restart makes no progress either, or when the gradient is below ``tolerance_grad``.
        An iteration whose line search left the parameters non-finite (e.g. a trial point where
        the loss divides by zero) is undone and treated the same way.

        The closure returns the loss averaged over processes, so that every process takes the
        same line-search decisions (the gradients are averaged by DDP).
        """
        if self.lbfgs is None:
            self._start_lbfgs()
        logs: dict[str, float] = {}

        def closure() -> torch.Tensor:
            self.lbfgs.zero_grad(set_to_none=True)
            loss, step_logs = self.objective.loss(self.wrapped, batch)
            loss.backward()
            logs.update(step_logs)
            return self.ctx.mean(loss.detach())

        params = self.lbfgs.param_groups[0]["params"]
        state = self.lbfgs.state[params[0]]
        iterations = state.get("n_iter", 0)
        start = [p.detach().clone() for p in params]
        loss = float(self.lbfgs.step(closure))  # the loss where this iteration started
        if not math.isfinite(loss):
            raise NonFiniteLossError(self.step + 1, loss, logs)
        diverged = not all(bool(torch.isfinite(p).all()) for p in params)
        if diverged:
            with torch.no_grad():
                for p, value in zip(params, start):
                    p.copy_(value)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf")))  # norm only
        no_step = state.get("n_iter", 0) == iterations  # the gradient was below tolerance_grad
        evaluations = self.lbfgs_evaluations + state.get("func_evals", 0)
        # the previous iteration left the loss unchanged
        stalled = (self.lbfgs_last_loss is not None
                   and abs(self.lbfgs_last_loss - loss) <= self.tc.lbfgs.tolerance_change * abs(loss))
        self.lbfgs_since_restart += 1
        # stalled tells about the previous iteration: with since_restart == 1 it ran before the
        # history was cleared (this one already ran after), with 2 it was the first one after.
        # diverged tells about this one (first after the clear with since_restart == 1).
        self.lbfgs_converged = (no_step or (stalled and self.lbfgs_since_restart == 2)
                                or (diverged and self.lbfgs_since_restart == 1))
        if not self.lbfgs_converged and (diverged or (stalled and self.lbfgs_since_restart > 2)):
            self.lbfgs_evaluations = evaluations
            self.lbfgs.state.clear()
            self.lbfgs_restarts += 1
            self.lbfgs_since_restart = 0
        self.lbfgs_last_loss = loss
        return loss, grad_norm, {**logs, "lbfgs_evaluations": float(evaluations)}

    def _cost_metrics(self) -> dict[str, float]:
        """Training cost of the run and, after an L-BFGS phase, the metrics at its start."""
        cost = {"train_seconds": self.train_seconds}
        if self.tc.lbfgs.steps > 0:
            cost["lbfgs_iterations"] = float(max(0, self.step - self.tc.steps))
            cost["lbfgs_converged"] = float(self.lbfgs_converged)
            cost["lbfgs_restarts"] = float(self.lbfgs_restarts)
            cost.update({f"adam_{k}": v for k, v in self.adam_metrics.items()})
        return cost

    def _say(self, text: str, bar: tqdm) -> None:
        if self.ctx.is_main:
            bar.write(text) if not bar.disable else print(text, flush=True)


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def save_figures(figures: dict[str, Any], directory: Path) -> list[Path]:
    """Save matplotlib figures as ``directory/<name>.png`` (closing pyplot-managed ones)."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = directory / f"{name}.png"
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def set_threads(tc: TrainConfig) -> None:
    """Honour ``train.threads`` (else $OMP_NUM_THREADS, which torch reads itself)."""
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)


def train(cfg: Config, out: str | Path | None = None, *, resume: bool = False,
          progress: bool | None = None, config_name: str | None = None) -> TrainResult:
    """Train ``cfg`` in a run directory: ``out`` if given, else a new one under train.out_dir.

    ``resume`` continues the run in ``out`` (or the newest run of this config under
    train.out_dir). Works in one process and under torchrun.
    """
    set_threads(cfg.train)
    ctx = init_from_env(cfg.train.device)
    try:
        name = config_name or cfg.domain
        if out is not None:
            path = Path(out)
        elif resume:
            path = latest_run_path(cfg.train.out_dir, name) if ctx.is_main else None
        else:
            path = new_run_path(cfg.train.out_dir, name) if ctx.is_main else None
        path = Path(ctx.broadcast(str(path)))
        run = RunDir(path)
        if resume and not run.config.is_file():
            raise RunError(f"--resume: {path} is not a run directory (no config.yaml)")
        if not resume and run.checkpoints.is_dir() and list_checkpoints(run.checkpoints):
            raise RunError(f"{path} already holds a run; pass --resume to continue it or choose "
                           "another --out")
        result = Trainer(cfg, run, ctx, resume=resume, progress=progress).fit()
        # every rank leaves the group together: a gloo rank whose peer has already exited can
        # abort at exit ("terminate called without an active exception", seen under load)
        ctx.barrier()
        return result
    finally:
        shutdown(ctx)
