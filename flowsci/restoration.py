"""Posterior-Mean Rectified Flow (PMRF; Ohayon, Michaeli & Elad, ICLR 2025) for restoration.

Among estimators of X from a measurement Y whose outputs follow the data's law (a perfect
perceptual index), the one with the least MSE is T*(X*), with X* = E[X | Y] the posterior mean and
T* the W2-optimal transport map from the law of X* to that of X; its MSE is
MSE(X*) + W2^2(p_X*, p_X), where posterior sampling has 2 MSE(X*). PMRF approximates it in two
stages:

1. the posterior mean: :class:`PosteriorMean`, fitted with :func:`fit_regression` (MSE);
2. an *unconditional* rectified flow from z0 = f(y) + sigma_s eps (t = 0) to x (t = 1), f frozen,
   fitted with :func:`fit_flow` on the sources of :func:`pmrf_source`; y enters only through z0.
   :func:`restore` integrates it from z0 (Euler, K steps).

The baselines use the same two functions: posterior sampling is a flow from pure noise
(``pmrf_source(torch.zeros_like(x), 1.0)``) conditioned on y by channel concatenation
(:class:`flowsci.nn.concat.ConcatConditioned`, ``conditions={"observation": y_lifted}``), and a
flow from the lifted observation is ``pmrf_source(y_lifted, sigma_s)``.

Time convention: t = 0 is the source (here the noisy posterior mean), t = 1 the data, as
everywhere in flowsci; PMRF writes its flow the same way (Z_t = t X + (1 - t) Z_0), so nothing
is adapted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from flowsci.ema import ema_model
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig, sample
from flowsci.registry import build_model
from flowsci.rng import isolated_rng

# sources(indices (B,), generator) -> x0 (B, *D): the training sources of the samples ``indices``
SourceFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class PosteriorMean(nn.Module):
    """f(y_lifted) = y_lifted + net(y_lifted, 0): a residual estimate of E[X | Y], (B, *D) -> (B, *D).

    ``y_lifted`` is the observation brought to the data's shape by the operator's plain inverse
    (zero fill, bicubic upsampling; the caller lifts). ``net``: a model called as net(x, t) with
    t = 0, built, or {name: a registered model, params: {...}} to build here with the ``inputs`` a
    domain derives from its data (``channels``, ``dim``); with a zero-initialised last layer
    (``unet``) f starts as the identity.
    """

    def __init__(self, net: nn.Module | dict, **inputs: Any):
        super().__init__()
        if isinstance(net, nn.Module):
            if inputs:
                raise ValueError(f"inputs {sorted(inputs)} are for a net given as a spec, not a built model")
            self.net = net
            return
        if not isinstance(net, dict) or set(net) - {"name", "params"} or "name" not in net:
            raise ValueError(f"net must be a model or {{name: MODEL, params: {{...}}}}, got {net!r}")
        params = dict(net.get("params", {}))
        for key, value in inputs.items():
            if params.setdefault(key, value) != value:
                raise ValueError(f"net.params.{key} = {params[key]!r} disagrees with {key} = {value!r}")
        self.net = build_model(net["name"], params)

    def forward(self, y_lifted: torch.Tensor) -> torch.Tensor:
        """y_lifted: (B, *D) -> the posterior-mean estimate (B, *D)."""
        t = torch.zeros(y_lifted.shape[0], dtype=y_lifted.dtype, device=y_lifted.device)
        return y_lifted + self.net(y_lifted, t)


def fit_regression(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int,
                   batch_size: int, lr: float, seed: int, progress: bool = True) -> list[float]:
    """Fit ``model(inputs) ≈ targets`` by AdamW on the MSE (learning rate ``lr`` decayed to 0 on a
    cosine); inputs (N, ...), targets (N, *D).

    Each step takes ``batch_size`` random rows. Returns the loss of every step; the same seed
    (and initial weights) gives the same weights and losses. The global random streams are left
    as they were; the model is left in eval mode.
    """
    _check_rows(targets, inputs=inputs)

    def step_loss(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (model(inputs[rows]) - targets[rows]).square().mean()

    return _fit(model, step_loss, len(targets), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                progress=progress, desc="regression")


def fit_flow(model: nn.Module, sources: SourceFn, targets: torch.Tensor, *,
             conditions: Mapping[str, torch.Tensor] | None = None, steps: int, batch_size: int, lr: float,
             seed: int, path: str | dict = "linear", timesteps: str | dict = "uniform", ema: float = 0.999,
             progress: bool = True) -> nn.Module:
    """Train the velocity field ``model(x_t, t, **conditions)`` by flow matching; returns its EMA.

    Each step takes ``batch_size`` random rows of ``targets`` (N, *D) as x1 and draws fresh
    sources x0 = ``sources(rows, generator)`` (B, *D); ``conditions`` (name -> (N, ...)) are taken
    at the same rows. ``path`` and ``timesteps`` are registered names (or {name: ..., ...}) of the
    objective (:class:`flowsci.flow_matching.FlowMatching`'s ``paired_loss``: the pairs are the ones
    given, no coupling). ``ema``: decay of the returned weight average (0: the trained model itself). The
    same seed (and initial weights) gives the same weights; the global random streams are left as
    they were.
    """
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema must be in [0, 1) (0: no averaging), got {ema}")
    conditions = dict(conditions or {})
    _check_rows(targets, **conditions)
    objective = FlowMatching.from_config(FlowMatchingConfig(path=path, timesteps=timesteps))
    averaged = ema_model(model, ema) if ema > 0 else None

    def step_loss(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x1 = targets[rows]
        x0 = sources(rows, generator).to(device=x1.device, dtype=x1.dtype)
        if x0.shape != x1.shape:
            raise ValueError(f"sources returned shape {tuple(x0.shape)} for targets of shape "
                             f"{tuple(x1.shape)}")
        batch = {"x0": x0, "x1": x1, **{k: v[rows] for k, v in conditions.items()}}
        return objective.paired_loss(model, batch)[0]

    def after_step() -> None:
        if averaged is not None:
            averaged.update_parameters(model)

    _fit(model, step_loss, len(targets), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
         progress=progress, desc="flow", after_step=after_step)
    return (averaged.module if averaged is not None else model).eval()


def pmrf_source(posterior_mean_estimates: torch.Tensor, sigma_s: float) -> SourceFn:
    """PMRF's training sources z0 = f(y_i) + sigma_s eps for the rows i asked for.

    posterior_mean_estimates: (N, *D), f(y) of each training sample (f frozen); ``sigma_s``: the
    source noise (the paper: 0.1, 0.025 for denoising). The noise is drawn afresh at every call.
    """
    if not 0.0 <= sigma_s < float("inf"):
        raise ValueError(f"sigma_s must be a finite number >= 0, got {sigma_s}")
    estimates = posterior_mean_estimates.detach()

    def sources(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = estimates[rows.to(estimates.device)]
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + sigma_s * noise.to(x.device)

    return sources


def restore(model: nn.Module, x0: torch.Tensor, steps: int, solver: str = "euler",
            **cond: torch.Tensor) -> torch.Tensor:
    """Integrate the flow from x0 (B, *D) at t = 0 to t = 1 with ``steps`` steps of ``solver``
    (a registered name) on a uniform grid, without gradients -> (B, *D)."""
    with torch.no_grad():
        return sample(model, x0, steps=steps, solver=solver, **cond).x


def _check_rows(targets: torch.Tensor, **others: torch.Tensor) -> None:
    if targets.dim() < 1 or len(targets) == 0:
        raise ValueError(f"targets must be (N, *D) with N >= 1, got shape {tuple(targets.shape)}")
    for name, value in others.items():
        if value.dim() < 1 or len(value) != len(targets):
            raise ValueError(f"{name} must have one row per target ({len(targets)}), got shape "
                             f"{tuple(value.shape)}")


def _fit(model: nn.Module, step_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor], n: int, *,
         steps: int, batch_size: int, lr: float, seed: int, progress: bool, desc: str,
         after_step: Callable[[], None] | None = None) -> list[float]:
    """AdamW (cosine learning-rate decay) on ``step_loss(rows, generator)`` for ``steps`` steps of
    ``batch_size`` random rows (without replacement within a batch) out of ``n``; returns the losses."""
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got steps={steps}, "
                         f"batch_size={batch_size}, lr={lr}")
    generator = torch.Generator().manual_seed(seed)
    # the Trainer's defaults: no weight decay, a cosine decay of the learning rate to 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    model.train()
    with isolated_rng(seed):  # the objective's times come from the global stream
        for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False):
            rows = torch.randperm(n, generator=generator)[:batch_size]
            loss = step_loss(rows, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
            history.append(float(loss.detach()))
    model.eval()
    return history
