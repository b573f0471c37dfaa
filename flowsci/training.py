"""The Trainer: one loop for every domain and objective.

AdamW with warm-up + cosine/constant schedule, then optionally an L-BFGS phase (PINNs), EMA,
gradient clipping, periodic evaluation and figures, CSV (and optional TensorBoard) metrics, a
NaN/inf guard, atomic checkpoints with every state needed to continue bit-for-bit (CPU, same
seed), DistributedDataParallel under torchrun and ``train.compile`` (torch.compile). The Trainer
builds the run's domain and owns it for the whole run.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import flowsci
from flowsci.batches import BatchPlan, PlannedBatches, collate
from flowsci.checkpoint import (
    FORMAT,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from flowsci.compile import compile_model
from flowsci.config import Config, TrainConfig, save_config
from flowsci.data.lifecycle import ensure_data, generates_data
from flowsci.distributed import DistContext, init_from_env, shutdown
from flowsci.ema import ema_model
from flowsci.errors import CheckpointError, ConfigError, NonFiniteLossError, RunError
from flowsci.figures import save_figures
from flowsci.lbfgs import LBFGSPhase
from flowsci.metrics_log import MetricsLog, format_metrics
from flowsci.pairing import paired_batches
from flowsci.plugins import Evaluation, create_domain
from flowsci.rng import EVAL_SEED_OFFSET, isolated_rng, rng_state, seed_everything, set_rng_state
from flowsci.runs import RunDir, latest_run_path, new_run_path

log = logging.getLogger(__name__)


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


class Trainer:
    """Trains ``cfg``'s domain into ``run`` (see :func:`train` for the entry point)."""

    def __init__(self, cfg: Config, run: RunDir, ctx: DistContext, *, resume: bool = False,
                 progress: bool | None = None):
        self.cfg, self.run, self.ctx = cfg, run, ctx
        self.tc: TrainConfig = cfg.train
        if resume:
            self._check_resumable()
        self.domain = create_domain(cfg.domain)  # this run's own instance
        self.progress = progress
        self.device = ctx.device

        # rank 0 makes a missing data file while the others wait; before seeding, so that the
        # initial weights do not depend on whether the file had to be made
        if ctx.is_main and generates_data(self.domain):
            ensure_data(self.domain, cfg, force=cfg.data.regenerate, progress=self._show_progress())
        ctx.barrier()
        seed_everything(cfg.seed)  # identical initial weights on every process
        self.data = self.domain.build_data(cfg)
        self.model = self.domain.build_model(cfg).to(self.device)
        if not hasattr(self.model, "flowsci_spec"):
            raise ConfigError(f"domain '{cfg.domain}': build_model must build through "
                              "flowsci.plugins.build_model so that checkpoints can rebuild it")
        if self.tc.init_from and not resume:
            self._init_weights(self.tc.init_from)
        self.objective = self.domain.build_objective(cfg)
        # an OT coupling pairs each batch with the batch's own random stream, ahead of its step
        # (train.prefetch_pairs) or inline; the step then takes the loss of the paired batch
        self.separate_pairing = bool(getattr(self.objective, "costly_pairing", False))
        self.batch_loss = self.objective.paired_loss if self.separate_pairing else self.objective.loss
        # an objective that follows the training progress (annealing reflow's beta) has
        # set_progress(step, total), called before each step with the 0-based step about to run
        self.set_progress = getattr(self.objective, "set_progress", None)
        if self.tc.lbfgs.steps > 0 and self.tc.ema > 0:
            raise ConfigError(f"{cfg.source}: train.ema={self.tc.ema} averages first-order steps only, so "
                              "the L-BFGS result would be evaluated through stale weights; set train.ema=0 "
                              "with train.lbfgs.steps > 0")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable and self.tc.total_steps > 0:
            raise ConfigError(f"{cfg.source}: model '{cfg.model.name}' has no trainable parameters (e.g. a "
                              "classical solver); set train.steps=0 to evaluate it as it is")
        # None without parameters: such a run is evaluated, never optimised (train.steps = 0)
        self.optimizer = torch.optim.AdamW(trainable, lr=self.tc.lr, betas=self.tc.betas,
                                           weight_decay=self.tc.weight_decay,
                                           amsgrad=self.tc.amsgrad) if trainable else None
        self.lbfgs = LBFGSPhase(list(self.model.parameters()), self.tc.lbfgs, ctx.mean)
        self.train_seconds = 0.0  # training wall-clock, without evaluation and checkpoints
        self.adam_metrics: dict[str, float] = {}
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, functools.partial(
            lr_factor, warmup=self.tc.warmup_steps, total=self.tc.steps, schedule=self.tc.schedule,
            min_ratio=self.tc.min_lr_ratio)) if trainable else None
        self.ema = ema_model(self.model, self.tc.ema) if self.tc.ema > 0 else None
        # train.compile: the model is compiled, then wrapped by DDP (torch's documented order);
        # self.model stays the plain module for checkpoints, the EMA and the optimizers
        self.compiled, self.compile_state = compile_model(self.model, self.tc.compile)
        self.eval_compiled = (compile_model(self.ema.module, self.tc.compile, self.compile_state)[0]
                              if self.ema is not None and cfg.eval.use_ema else self.compiled)
        self.wrapped = (torch.nn.parallel.DistributedDataParallel(
            self.compiled, device_ids=[self.device] if self.device.type == "cuda" else None)
            if ctx.enabled else self.compiled)
        self.compile_seconds: float | None = None  # the first compiled step of this process
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
            log.info("%s: training into %s%s (%d process%s, %s)", cfg.domain, run.path, start,
                     ctx.world_size, "es" if ctx.enabled else "", self.device)

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
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None, "rng": rng,
            **self.lbfgs.state_dict(),
            "train_seconds": self.train_seconds,
            "adam_metrics": self.adam_metrics,
            # an objective with training state (e.g. scheduled query sampling's running errors)
            "objective": self.objective.state_dict() if hasattr(self.objective, "state_dict") else None,
        }

    def _check_resumable(self) -> None:
        """The run's saved config must equal this one but for the step counts (checked before
        anything is built)."""
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

    def _resume(self) -> None:
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
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise CheckpointError(f"{path} has no EMA state but train.ema={self.tc.ema}")
            self.ema.load_state_dict(state["ema"])
        if len(state["rng"]) == self.ctx.world_size:
            set_rng_state(state["rng"][self.ctx.rank])
        self.step = int(state["step"])
        self.lbfgs.load_state_dict(state)
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.adam_metrics = dict(state.get("adam_metrics", {}))
        if state.get("objective") is not None and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(state["objective"])

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
        """The EMA weights when enabled (and eval.use_ema), otherwise the trained weights;
        compiled with train.compile."""
        return self.eval_compiled

    def evaluate(self, figures_dir: Path | None, with_metrics: bool = True) -> dict[str, float]:
        """Domain metrics and/or figures on rank 0, with fixed evaluation seeds."""
        metrics: dict[str, float] = {}
        if self.ctx.is_main:
            model = self.eval_model()
            was_training = model.training
            model.eval()
            with isolated_rng(self.cfg.seed + EVAL_SEED_OFFSET):
                evaluation = None
                if with_metrics:
                    evaluation = Evaluation.of(self.domain.evaluate(model, self.data, self.cfg))
                    metrics = evaluation.metrics
                    self.log.write(self.step, "eval", {**metrics, "train_seconds": self.train_seconds})
                if figures_dir is not None:
                    save_figures(self.domain.figures(model, self.data, self.cfg, evaluation=evaluation),
                                 figures_dir)
            model.train(was_training)
        self.ctx.barrier()
        return metrics

    # --- loop ----------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train from the current step to ``train.steps`` (+ ``train.lbfgs.steps``); returns the
        final metrics."""
        tc = self.tc
        total = tc.total_steps
        if self.lbfgs.converged:
            raise RunError(f"{self.run.path}: L-BFGS converged at step {self.step}; nothing to continue")
        if self.step >= total > 0:  # train.steps = 0: evaluate the model as built (or initialised)
            raise RunError(f"{self.run.path} is already at step {self.step} >= train.steps + "
                           f"train.lbfgs.steps = {total}; raise them to continue it")
        plan = BatchPlan(self.data.train, tc.batch_size, self.cfg.seed, self.ctx)
        loader = DataLoader(self.data.train, batch_sampler=PlannedBatches(plan, self.step, total),
                            collate_fn=collate, num_workers=self.cfg.data.num_workers,
                            # its own generator: drawing worker seeds from the global RNG would
                            # shift the training stream on every (re)start and break --resume
                            generator=torch.Generator().manual_seed(self.cfg.seed))
        bar = tqdm(total=total, initial=self.step, desc=f"train {self.cfg.domain}", unit="step",
                   disable=not (self._show_progress() and self.ctx.is_main), dynamic_ncols=True)
        self.model.train()
        self._clock = (time.perf_counter(), self.step)  # (time, step) of the last seconds_per_step log
        # One process: Ctrl-C stops cleanly at a step boundary with a checkpoint. Under torchrun
        # the processes could stop at different steps, so the default behaviour stays.
        try:
            with (deferred_sigint(active=not self.ctx.enabled) as interrupted,
                  closing(self._batches(loader)) as batches):
                self._waiting_since = time.perf_counter()
                for batch in batches:
                    self._train_step(batch, bar)
                    self._waiting_since = time.perf_counter()
                    if self.lbfgs.converged:
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

    def _batches(self, loader: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """The loader's batches from the current step on; paired (ahead of their step with
        train.prefetch_pairs) when the objective's coupling solves a plan per batch."""
        if not self.separate_pairing:
            yield from loader
            return
        yield from paired_batches(loader, self.objective.pair, start=self.step, seed=self.cfg.seed,
                                  rank=self.ctx.rank, ahead=self.tc.prefetch_pairs)

    def _train_step(self, batch: dict[str, torch.Tensor], bar: tqdm) -> None:
        """One optimizer step with logging, periodic evaluation and checkpoints. Its time starts
        when the previous step ended: waiting for the batch (loading, inline pairing) counts."""
        tc = self.tc
        started = self._waiting_since
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.set_progress is not None:
            self.set_progress(self.step, tc.total_steps)
        compiling = self.compile_state.active and self.compile_seconds is None
        mean_loss, grad_norm, logs, lr = (self._first_compiled_step(batch) if compiling
                                          else self._optimizer_step(batch))
        self.step += 1
        elapsed = time.perf_counter() - started
        self.train_seconds += elapsed  # compilation included: it is part of the run's cost
        bar.update(1)
        if compiling:
            self.compile_seconds = elapsed
            if self.log is not None:
                self.log.write(self.step, "train", {"compile_seconds": elapsed})
            self._clock = (time.perf_counter(), self.step)  # seconds_per_step leaves compilation out
        if self.step % tc.log_every == 0 and self.log is not None:
            clock, since = self._clock
            values = {"loss": mean_loss, "lr": lr, "grad_norm": grad_norm}
            if self.step > since:
                values["seconds_per_step"] = (time.perf_counter() - clock) / (self.step - since)
            self.log.write(self.step, "train", {**values, "train_seconds": self.train_seconds, **logs})
            bar.set_postfix(loss=f"{mean_loss:.4g}")
            self._clock = (time.perf_counter(), self.step)
        if self.step == tc.total_steps or self.lbfgs.converged:
            return  # the final evaluation, figures and checkpoint follow in fit()
        if self.step == tc.steps:  # the first-order phase ends, L-BFGS follows
            self.adam_metrics = self.evaluate(self.run.figures / f"step-{self.step:08d}-adam")
            self._say(f"step {self.step} (end of the first-order phase): "
                      + format_metrics(self.adam_metrics), bar)
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

    def _optimizer_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, dict[str, float], float]:
        """One AdamW step or L-BFGS iteration; returns (mean loss, gradient norm, logs, learning rate)."""
        if self.step < self.tc.steps:
            return *self._first_order_step(batch), self.scheduler.get_last_lr()[0]
        return (*self.lbfgs.step(lambda: self.batch_loss(self.wrapped, batch), self.step + 1),
                self.tc.lbfgs.lr)

    def _first_compiled_step(self, batch: dict[str, torch.Tensor]
                             ) -> tuple[float, float, dict[str, float], float]:
        """The first step of this process through the compiled model (compilation included). A
        step that fails compiled but succeeds eagerly, with the same random numbers, continues
        eagerly: a failure in the backward pass, such as a double backward (PINN residuals),
        which torch.compile does not support."""
        state = rng_state()
        try:
            return self._optimizer_step(batch)
        except Exception as exc:
            def eager_step() -> tuple[float, float, dict[str, float], float]:
                set_rng_state(state)
                return self._optimizer_step(batch)

            return self.compile_state.retry_eagerly(exc, eager_step)

    def _first_order_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, dict[str, float]]:
        """One AdamW step; returns (mean loss over processes, gradient norm, objective logs)."""
        tc = self.tc
        loss, logs = self.batch_loss(self.wrapped, batch)
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

    def _cost_metrics(self) -> dict[str, float]:
        """Training cost of the run and, after an L-BFGS phase, the metrics at its start."""
        cost = {"train_seconds": self.train_seconds}
        if self.compile_seconds is not None:
            cost["compile_seconds"] = self.compile_seconds
        if self.tc.lbfgs.steps > 0:
            cost["lbfgs_iterations"] = float(max(0, self.step - self.tc.steps))
            cost["lbfgs_converged"] = float(self.lbfgs.converged)
            cost["lbfgs_restarts"] = float(self.lbfgs.restarts)
            cost.update({f"adam_{k}": v for k, v in self.adam_metrics.items()})
        return cost

    def _say(self, text: str, bar: tqdm) -> None:
        """A progress message: above the progress bar when it is shown, else logged."""
        if not self.ctx.is_main:
            return
        if bar.disable:
            log.info(text)
        else:
            bar.write(text, file=sys.stderr)

    def _show_progress(self) -> bool:
        return self.progress if self.progress is not None else sys.stderr.isatty()


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
