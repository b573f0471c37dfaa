"""A-posteriori evaluation and fine-tuning of closures inside the 2-D active-suspension solver.

"A posteriori" means the closure is judged by the dynamics it produces: it is plugged into
:class:`active_suspension.ActiveSuspension2D` and the run is compared with a reference run
(the Bingham closure; Maddu, Weady & Shelley, J. Comput. Phys. 2024) through statistics over
a time window:

- the time means of the spatial mean speed ⟨|u|⟩ and of the order parameter ⟨λ₁ − λ₂⟩/c,
  compared by their relative differences;
- the time-averaged kinetic-energy spectrum E(k), compared by the largest ratio
  max(E/E_ref, E_ref/E) over the shells 0 < k < k_max/3 (k_max = π n/L, the Nyquist wave number).

Fine-tuning unrolls the solver: from start states (c, D) taken along a reference run, the
reference closure gives the targets D₁ … D_K of K steps, and the learned closure is trained on

    L = Σ_k ‖D_k − D_k^ref‖² / Σ_k ‖D_k^ref − D_0‖²     (sums over the K steps and the grid),

the squared error of the unrolled D relative to the change the reference makes over those steps
(so L = 1 for a closure that leaves D unchanged). Each start state's velocity is the fixed point
of the learned closure, computed without gradients: the gradient flows through the K steps,
each of which evaluates the closure once (differentiating the fixed point too would add the ~15
closure evaluations of its iteration to every start's graph).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from flowsci_domains.kinetic.a_priori import minimise
from flowsci_domains.kinetic.active_suspension import (
    ActiveSuspension2D,
    ActiveSuspensionParams,
    time_averaged_spectrum,
)
from flowsci_domains.kinetic.closures import Closure

ClosureFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


# --------------------------------------------------------------------------- runs and statistics

def simulate(closure: ClosureFn, params: ActiveSuspensionParams, seed: int, n_steps: int, record_every: int,
             progress: bool = False) -> dict:
    """Run the solver with ``closure`` from :meth:`ActiveSuspension2D.initial_state` (generator seeded
    by ``seed``), without gradients, recording every ``record_every`` steps (a divisor of ``n_steps``).

    Returns the series of :meth:`ActiveSuspension2D.rollout` as numpy arrays (time (R,),
    mean_speed (R,), order_parameter (R,), spectrum (R, K), wavenumber (K,)) and "seconds" (wall
    time of the steps), "steps" (steps completed) and "error" (None, or the message of the
    FloatingPointError or closure ValueError that stopped the run; the series then end at the
    last record before it)."""
    _check_int("seed", seed, 0)
    _check_int("n_steps", n_steps, 1)
    _check_int("record_every", record_every, 1)
    if n_steps % record_every:
        raise ValueError(f"record_every = {record_every} must divide n_steps = {n_steps}")
    solver = ActiveSuspension2D(params, closure)
    error, steps = None, 0
    start = time.perf_counter()
    with torch.no_grad(), tqdm(total=n_steps, desc="active suspension", unit="step",
                               disable=not progress) as bar:
        state = solver.initial_state(torch.Generator().manual_seed(seed))
        records = [solver.record(state)]
        try:
            for _ in range(n_steps // record_every):
                state, chunk = solver.rollout(state, record_every, record_every)
                records.append({key: value[-1] for key, value in chunk.items() if key != "wavenumber"})
                steps += record_every
                bar.update(record_every)
        except (FloatingPointError, ValueError) as failure:
            error = str(failure)
    out: dict = {key: torch.stack([r[key] for r in records]).numpy() for key in records[0]
                 if key != "wavenumber"}
    out["wavenumber"] = records[0]["wavenumber"].numpy()
    out.update(seconds=time.perf_counter() - start, steps=steps, error=error)
    return out


def window_statistics(series: dict[str, np.ndarray], start_time: float) -> dict[str, np.ndarray | float]:
    """Time means over the records with time >= ``start_time`` of a :func:`simulate` series:
    {"mean_speed": float, "order_parameter": float, "wavenumber": (K,), "spectrum": (K,)}."""
    tensors = {key: torch.as_tensor(series[key]) for key in ("time", "spectrum", "wavenumber")}
    k, spectrum = time_averaged_spectrum(tensors, start_time)
    keep = series["time"] >= start_time
    return {"mean_speed": float(series["mean_speed"][keep].mean()),
            "order_parameter": float(series["order_parameter"][keep].mean()),
            "wavenumber": k.numpy(), "spectrum": spectrum.numpy()}


def compare_statistics(stats: dict, reference: dict, n: int, length: float) -> dict[str, float]:
    """{"mean_speed", "order_parameter"}: relative differences |a − a_ref|/|a_ref| of the window
    means, and "spectrum": max over the shells 0 < k < k_max/3 (k_max = π n/``length``) of
    max(E/E_ref, E_ref/E), for :func:`window_statistics` of a run and of the reference run."""
    out = {name: abs(stats[name] - reference[name]) / abs(reference[name])
           for name in ("mean_speed", "order_parameter")}
    k = np.asarray(reference["wavenumber"])
    band = (k > 0) & (k < math.pi * n / length / 3)
    a, b = np.asarray(stats["spectrum"])[band], np.asarray(reference["spectrum"])[band]
    if not (np.all(a > 0) and np.all(b > 0)):
        out["spectrum"] = math.inf
    else:
        out["spectrum"] = float(np.max(np.maximum(a / b, b / a)))
    return out


# --------------------------------------------------------------------------- fine-tuning

@dataclasses.dataclass(frozen=True)
class UnrollTargets:
    """Start states c: (B, n, n), D: (B, n, n, 2, 2) and the reference's D after each of the K
    unrolled steps, targets: (B, K, n, n, 2, 2); all float64."""

    c: torch.Tensor
    D: torch.Tensor
    targets: torch.Tensor

    @property
    def n_unroll(self) -> int:
        return self.targets.shape[1]


def unroll_targets(reference: ClosureFn, params: ActiveSuspensionParams, seed: int, n_starts: int,
                   start_every: int, n_unroll: int, skip: int = 0, progress: bool = False) -> UnrollTargets:
    """Start states and targets for :func:`fine_tune`: the reference run from the seeded initial
    state is sampled every ``start_every`` steps after ``skip`` steps (``n_starts`` states); from
    each (as a fresh state, its velocity the reference's fixed point) the reference closure takes
    ``n_unroll`` steps, whose D are the targets."""
    for name, value, low in (("n_starts", n_starts, 1), ("start_every", start_every, 1),
                             ("n_unroll", n_unroll, 1), ("skip", skip, 0), ("seed", seed, 0)):
        _check_int(name, value, low)
    solver = ActiveSuspension2D(params, reference)
    cs, Ds = [], []
    with torch.no_grad():
        state = solver.initial_state(torch.Generator().manual_seed(seed))
        bar = tqdm(total=skip + n_starts * start_every, desc="reference run", unit="step",
                   disable=not progress)
        for index in range(1, skip + n_starts * start_every + 1):
            state = solver.step(state)
            bar.update()
            if index > skip and (index - skip) % start_every == 0:
                cs.append(state.c)
                Ds.append(state.D)
        bar.close()
        unrolled = solver.make_state(torch.stack(cs), torch.stack(Ds))
        targets = []
        for _ in range(n_unroll):
            unrolled = solver.step(unrolled)
            targets.append(unrolled.D)
    return UnrollTargets(torch.stack(cs), torch.stack(Ds), torch.stack(targets, 1))


def unrolled_loss(closure: Closure, params: ActiveSuspensionParams, targets: UnrollTargets,
                  index: torch.Tensor | None = None) -> torch.Tensor:
    """The loss L of the module docstring over the start states ``index`` (all if None), with
    gradients to the closure's parameters through the K unrolled steps. Returns a scalar."""
    rows = slice(None) if index is None else index
    c, D, target = targets.c[rows], targets.D[rows], targets.targets[rows]
    solver = ActiveSuspension2D(params, closure)
    with torch.no_grad():
        state = solver.make_state(c, D)
    error = change = 0.0
    for k in range(targets.n_unroll):
        state = solver.step(state)
        error = error + (state.D - target[:, k]).square().sum()
        change = change + (target[:, k] - D).square().sum()
    return error / change


def fine_tune(closure: Closure, params: ActiveSuspensionParams, targets: UnrollTargets, steps: int, lr: float,
              batch_size: int, seed: int, progress: bool = False) -> list[float]:
    """Minimise :func:`unrolled_loss` with :func:`a_priori.minimise` (Adam, cosine-decayed ``lr``),
    each step on ``batch_size`` start states drawn without replacement (generator seeded by
    ``seed``). The closure is trained in place and left in eval mode. Returns the losses."""
    _check_int("batch_size", batch_size, 1)
    n_starts = len(targets.c)
    if batch_size > n_starts:
        raise ValueError(f"batch_size = {batch_size} exceeds the {n_starts} start states of targets")

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        return unrolled_loss(closure, params, targets,
                             torch.randperm(n_starts, generator=generator)[:batch_size])

    return minimise(closure, batch_loss, steps, lr, seed, progress, desc="fine-tuning (unrolled)")
