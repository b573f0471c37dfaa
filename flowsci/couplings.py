"""Couplings: how the source and target samples of a batch are paired.

``coupling(x0, x1, extras) -> (x0', x1', extras')`` with x0: (B0, *D) source samples,
x1: (B1, *D) target samples and ``extras`` per-target tensors (B1, ...) (labels, conditions)
that travel with their x1. The output is a batch of pairs: x0' and x1' have the same length.

- :class:`IndependentCoupling`: pairs as drawn (x0 and x1 drawn independently).
- :class:`PairedCoupling`: stored pairs (reflow, distillation) keep their alignment.
- :class:`AnnealedPairedCoupling`: stored pairs whose source is perturbed by annealed noise
  (SlimFlow's annealing reflow), following the training progress (``set_progress``).
- :class:`OTCoupling`: minibatch optimal transport with POT (exact, entropic, unbalanced,
  partial), optionally blocked by a condition, with a pluggable ground cost.

Ground costs are looked up by name in :data:`COSTS` (``sqeuclidean``, ``euclidean``), passed
as a callable ``cost(x0, x1) -> (B0, B1)``, or ``geodesic``: the squared geodesic distance of
the coupling's ``space`` (supplied by
:meth:`FlowMatching.from_config <flowsci.flow_matching.FlowMatching.from_config>`).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from flowsci.errors import PluginError
from flowsci.registry import COSTS
from flowsci.spaces import Space

Extras = dict[str, torch.Tensor]
CostFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""cost(x0 (B0, *D), x1 (B1, *D)) -> (B0, B1) pairwise ground cost."""


def _flat64(x: torch.Tensor) -> np.ndarray:
    return x.detach().reshape(x.shape[0], -1).double().cpu().numpy()


def _pairwise(x0: torch.Tensor, x1: torch.Tensor, metric: str) -> torch.Tensor:
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x0 and x1 must have the same trailing shape, got {tuple(x0.shape[1:])} "
                         f"and {tuple(x1.shape[1:])}")
    # scipy's cdist sums (x - y)^2 directly in float64: torch.cdist and POT's ot.dist expand
    # |x|^2 + |y|^2 - 2 x.y, which loses the digits of small distances between points far
    # from the origin (1e-6 vs 1.013e-6 for |v| = 1e-3 at offset 1e4).
    return torch.from_numpy(cdist(_flat64(x0), _flat64(x1), metric))


def sqeuclidean_cost(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """|x0_i - x1_j|^2 over all trailing dimensions: (B0, *D), (B1, *D) -> (B0, B1) float64."""
    return _pairwise(x0, x1, "sqeuclidean")


def euclidean_cost(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """|x0_i - x1_j| over all trailing dimensions: (B0, *D), (B1, *D) -> (B0, B1) float64."""
    return _pairwise(x0, x1, "euclidean")


def _take(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """x[rows], or x itself when rows is 0, 1, ..., len(x) - 1."""
    if len(rows) == x.shape[0] and np.array_equal(rows, np.arange(len(rows))):
        return x
    return x[torch.from_numpy(rows).to(x.device)]


def _check_extras(extras: Extras, b1: int) -> None:
    for key, value in extras.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != b1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"extras['{key}'] must be a tensor with one row per target sample "
                             f"({b1}), got {shape}")


def _check_same_batch(x0: torch.Tensor, x1: torch.Tensor, why: str) -> None:
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"batch sizes differ: x0 {x0.shape[0]}, x1 {x1.shape[0]}; {why}")


class Coupling(ABC):
    """Pairs a source batch with a target batch.

    ``coupling(x0, x1, extras) -> (x0', x1', extras')`` with x0: (B0, *D), x1: (B1, *D) and
    ``extras`` per-target tensors (B1, ...) (labels, conditions) that travel with their x1.
    x0' and x1' have the same length; extras' rows follow x1'. A coupling that draws random
    numbers draws them from ``generator`` (torch's global stream when None).
    """

    needs_batch_x0: bool = False  # True: x0 must come with the batch, never from the source
    solves_plan: bool = False     # True: each call solves a transport problem (worth pairing ahead)

    @abstractmethod
    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: Extras,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, Extras]: ...

    def describe(self) -> str:
        """One line: the constructor call and what the coupling does."""
        summary = (type(self).__doc__ or "").strip().splitlines()[0]
        return f"{self!r}: {summary}"

    def __repr__(self) -> str:
        """The constructor call, with the arguments that differ from their defaults."""
        params = inspect.signature(type(self)).parameters.values()
        args = [f"{p.name}={getattr(self, p.name)!r}" for p in params
                if getattr(self, p.name) != p.default]
        return f"{type(self).__name__}({', '.join(args)})"


class IndependentCoupling(Coupling):
    """The product coupling: pairs stay as drawn.

    Assumes x0 and x1 were drawn independently (x0 from the source, x1 from the data), so
    the row alignment is already a sample of the product measure. Batch sizes must agree.
    """

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: Extras,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, Extras]:
        _check_same_batch(x0, x1, "the independent coupling pairs row i of x0 with row i of x1")
        _check_extras(extras, x1.shape[0])
        return x0, x1, extras


class PairedCoupling(Coupling):
    """Stored pairs (reflow, distillation): row i of x0 belongs to row i of x1.

    The same operation as :class:`IndependentCoupling` with another meaning: the batch must
    hold its own x0 (the pairs come from a pair store), and the alignment is the coupling.
    """

    needs_batch_x0 = True

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: Extras,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, Extras]:
        _check_same_batch(x0, x1, "stored pairs need one x0 per x1")
        _check_extras(extras, x1.shape[0])
        return x0, x1, extras


ANNEAL_SCHEDULES = ("linear", "cosine", "exp")


def _check_anneal(anneal_fraction: float, schedule: str, rate: float) -> None:
    if not 0 < anneal_fraction <= 1:
        raise ValueError(f"anneal_fraction must be in (0, 1] (the share of training over which beta "
                         f"goes from 1 to 0; the 'paired' coupling is pure reflow), got {anneal_fraction}")
    if schedule not in ANNEAL_SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(ANNEAL_SCHEDULES)}; got {schedule!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite number > 0 (the exp schedule's decay), got {rate}")


def anneal_beta(step: int, total: int, anneal_fraction: float = 0.6, schedule: str = "linear",
                rate: float = 5.0) -> float:
    """The source perturbation beta of annealing reflow before training step ``step`` (0-based)
    of ``total``: a pure function of its arguments, so a resumed run gets the same values.

    With p = min(1, step / (anneal_fraction * total)), the share of the annealing phase done:

    - ``linear``: beta = 1 - p;
    - ``cosine``: beta = (1 + cos(pi p)) / 2;
    - ``exp``: beta = (exp(-rate p) - exp(-rate)) / (1 - exp(-rate)), an exponential decay
      rescaled to end at 0 (SlimFlow's code uses exp(-step / K), which never reaches 0: 0.37
      at the end of its warm-up K).

    Each gives beta = 1 at step 0, decreases monotonically and is 0 from step
    anneal_fraction * total on.
    """
    _check_anneal(anneal_fraction, schedule, rate)
    if not (isinstance(step, int) and isinstance(total, int) and 0 <= step and total >= 1):
        raise ValueError(f"step and total must be integers with step >= 0 and total >= 1, got "
                         f"step={step!r}, total={total!r}")
    p = min(1.0, step / (anneal_fraction * total))
    if schedule == "linear":
        return 1.0 - p
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return (math.exp(-rate * p) - math.exp(-rate)) / -math.expm1(-rate)


class AnnealedPairedCoupling(PairedCoupling):
    """Stored pairs with an annealed perturbation of the source (SlimFlow's annealing reflow).

    Returns (z0', x1) with z0' = sqrt(1 - beta^2) x0 + beta eps, eps ~ N(0, I) drawn from
    ``generator``, and beta = :func:`anneal_beta` at the progress last given to
    :meth:`set_progress` (the Trainer gives it before each step). For a source N(0, I), z0' is
    N(0, I) for every beta: beta = 1 makes it independent of x1 (a new student learns its own
    noise -> data flow), beta = 0 is reflow on the teacher's pairs.

    ``flip_p``: each pair is flipped along its last axis, x0 and x1 together, with this
    probability (SlimFlow flips images horizontally). That is right only where the teacher is
    flip-equivariant and the conditions flip-invariant: the extras are not flipped.
    """

    # solves_plan stays False, so the Trainer pairs each batch inline, inside its step and after
    # set_progress(step, total): beta is that step's. Pairing ahead on the background thread
    # would pair batch k + 1 while the coupling still holds step k's progress, and the
    # perturbation (one randn per batch) is not worth taking off the step.

    def __init__(self, anneal_fraction: float = 0.6, schedule: str = "linear", rate: float = 5.0,
                 flip_p: float = 0.0):
        _check_anneal(anneal_fraction, schedule, rate)
        if not 0 <= flip_p <= 1:
            raise ValueError(f"flip_p must be a probability in [0, 1], got {flip_p}")
        self.anneal_fraction, self.schedule = float(anneal_fraction), schedule
        self.rate, self.flip_p = float(rate), float(flip_p)
        self._progress: tuple[int, int] | None = None

    def set_progress(self, step: int, total: int) -> None:
        """The training step about to run (0-based) and the number of steps of the run."""
        anneal_beta(step, total, self.anneal_fraction, self.schedule, self.rate)  # checks them
        self._progress = (step, total)

    @property
    def beta(self) -> float:
        """beta at the progress last given to :meth:`set_progress`."""
        if self._progress is None:
            raise RuntimeError("AnnealedPairedCoupling needs the training progress: call "
                               "set_progress(step, total) first (the Trainer does, before each step)")
        return anneal_beta(*self._progress, self.anneal_fraction, self.schedule, self.rate)

    def describe(self) -> str:
        return (f"{self!r}: stored pairs, source perturbed by beta = 1 -> 0 ({self.schedule}) over "
                f"the first {self.anneal_fraction:g} of training")

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: Extras,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, Extras]:
        x0, x1, extras = super().__call__(x0, x1, extras, generator)
        beta = self.beta
        if beta > 0:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            x0 = math.sqrt(1.0 - beta * beta) * x0 + beta * eps
        if self.flip_p > 0:
            if x0.dim() < 2:
                raise ValueError(f"flip_p > 0 flips each sample along its last axis; samples of shape "
                                 f"{tuple(x0.shape[1:])} have none")
            flip = torch.rand(x0.shape[0], generator=generator, device=x0.device) < self.flip_p
            flip = flip.reshape(-1, *[1] * (x0.dim() - 1))
            x0 = torch.where(flip, x0.flip(-1), x0)
            x1 = torch.where(flip, x1.flip(-1), x1)
        return x0, x1, extras


OT_METHODS = ("exact", "sinkhorn", "unbalanced", "partial")


class OTCoupling(Coupling):
    """Minibatch optimal transport: pairs x0 with x1 along an OT plan of the batch.

    The plan is solved with POT on CPU in float64 between the uniform empirical measures of
    the batch, for the ground cost ``cost`` (a name in :data:`COSTS`, a callable
    ``cost(x0, x1) -> (B0, B1)`` receiving the batches in their own shape, or ``"geodesic"``:
    the squared geodesic distance of ``space``, e.g. the squared relative rotation angle on
    SO(3) as in FoldFlow-OT):

    - ``exact``: ``ot.emd`` (network simplex). For B0 = B1 its plan is a permutation matrix / B.
      (scipy's assignment solver reaches the same optimum; at B = 256 it was ~2x faster on
      i.i.d. Gaussian batches but ~10 % slower on 8-Gaussian -> moons batches.)
    - ``sinkhorn``: entropic OT, ``ot.sinkhorn(method="sinkhorn_stabilized")`` (log-domain
      absorption, stable for small ``reg``; ~10x faster than ``sinkhorn_log``). Small
      ``reg`` converges slowly: raise ``max_iter`` (POT warns when it stops early).
    - ``unbalanced``: ``ot.unbalanced.sinkhorn_unbalanced`` (KL-relaxed marginals with weight
      ``reg_m``, KL entropic term ``reg``, ``method="sinkhorn_stabilized"``).
    - ``partial``: ``ot.partial.partial_wasserstein`` moving the mass k / B with
      k = max(1, round(mass * B)): the exact optimum among plans that match only k pairs
      (for B0 != B1, only possible with ``sample_plan``, the mass ``mass`` itself).

    For the entropic solvers the cost is divided by its maximum over the block first, so
    ``reg`` and ``reg_m`` are in units of the largest pairwise cost (scale-free); exact and
    partial use the cost as given.

    Output (B0 = B1 = B required):

    - default: a permutation of x0 (x1 and extras keep their order). ``exact`` reads it off
      the permutation plan (argmax per row); ``sinkhorn`` and ``unbalanced`` round their
      plan to the permutation with the largest plan mass (``linear_sum_assignment``); this
      rounding is a heuristic, not always the exact optimum even for small ``reg``.
      ``partial`` returns only its k matched pairs: the batch shrinks to k rows, extras
      with it (x1 rows in their original order).
    - ``sample_plan=True``: B1 pairs (i, j) drawn with replacement from the normalised
      plan (from ``generator``, else torch's global RNG), as torchcfm does; here B0 may
      differ from B1. Points may repeat or be left out.

    Condition-blocked OT (``condition_key="y"``): ``extras["y"]`` (B,) or (B, k) labels the
    targets; rows with equal labels form a group. x0 carries no label and, being drawn
    independently of the labels, any label-blind split of it is a fair source sample for
    each group: the groups are taken in the order of their sorted labels and receive
    consecutive blocks of x0 rows of their sizes (group 1 the first n_1 rows, ...). OT is
    solved within each group, so no pair crosses groups and each label's x0 are still
    distributed as the source (global OT would bias them toward their targets). Continuous
    conditions give singleton groups (independent pairing): bin them first.
    """

    solves_plan = True

    def __init__(self, method: str = "exact", reg: float = 0.05, reg_m: float = 1.0,
                 mass: float = 0.9, sample_plan: bool = False, condition_key: str | None = None,
                 cost: str | CostFn = "sqeuclidean", num_threads: int = 1, max_iter: int = 1000,
                 space: Space | None = None):
        if method not in OT_METHODS:
            raise ValueError(f"method must be one of {', '.join(OT_METHODS)}; got {method!r}")
        if not reg > 0:
            raise ValueError(f"reg must be > 0 (in units of the largest pairwise cost), got {reg}")
        if not reg_m > 0:
            raise ValueError(f"reg_m must be > 0, got {reg_m}")
        if not 0 < mass <= 1:
            raise ValueError(f"mass must be in (0, 1] (the fraction of pairs kept), got {mass}")
        if not (isinstance(num_threads, int) and num_threads >= 1):
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if cost == "geodesic":
            if space is None:
                raise ValueError("cost 'geodesic' needs the state space: pass space=... (flow matching "
                                 "built with FlowMatching.from_config(..., space=...) supplies it)")
            self._cost_fn = lambda a, b: space.pairwise_dist(a.double(), b.double()) ** 2
        elif isinstance(cost, str):
            try:
                self._cost_fn = COSTS.get(cost)
            except PluginError:
                raise ValueError(f"cost {cost!r} is not a registered cost; available: "
                                 f"{', '.join(COSTS.names())}, 'geodesic', or pass a callable") from None
        elif callable(cost):
            self._cost_fn = cost
        else:
            raise ValueError(f"cost must be a registered name or a callable, got {cost!r}")
        self.method, self.reg, self.reg_m, self.mass = method, float(reg), float(reg_m), float(mass)
        self.sample_plan, self.condition_key, self.cost = bool(sample_plan), condition_key, cost
        self.num_threads, self.max_iter, self.space = num_threads, max_iter, space

    def describe(self) -> str:
        output = ("pairs drawn from the plan" if self.sample_plan
                  else "matched pairs only" if self.method == "partial" else "permutation of x0")
        blocks = f", blocked by extras['{self.condition_key}']" if self.condition_key else ""
        return f"{self!r}: {self.method} minibatch OT, {output}{blocks}"

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, extras: Extras,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, Extras]:
        b1 = x1.shape[0]
        _check_extras(extras, b1)
        if not self.sample_plan or self.condition_key is not None:
            _check_same_batch(x0, x1, "a permutation or a condition-blocked plan needs B0 = B1 "
                                      "(sample_plan=True without condition_key allows B0 != B1)")
        rows, cols = [], []
        for src, tgt in self._blocks(x0.shape[0], extras, b1):
            i, j = self._pairs(self._solve(_take(x0, src), _take(x1, tgt)), generator)
            rows.append(src[i])
            cols.append(tgt[j])
        i, j = np.concatenate(rows), np.concatenate(cols)
        order = np.argsort(j, kind="stable")            # x1 rows keep their original order
        i, j = i[order], j[order]
        return _take(x0, i), _take(x1, j), {k: _take(v, j) for k, v in extras.items()}

    def plan(self, x0: torch.Tensor, x1: torch.Tensor, extras: Extras | None = None) -> torch.Tensor:
        """The (B0, B1) float64 CPU plan behind the pairing (block diagonal with conditions;
        each block carries the mass n_g / B of its group, before any rounding)."""
        extras = extras or {}
        _check_extras(extras, x1.shape[0])
        if self.condition_key is not None:
            _check_same_batch(x0, x1, "a condition-blocked plan needs B0 = B1")
        full = np.zeros((x0.shape[0], x1.shape[0]))
        for src, tgt in self._blocks(x0.shape[0], extras, x1.shape[0]):
            full[np.ix_(src, tgt)] = self._solve(_take(x0, src), _take(x1, tgt)) * (len(tgt) / x1.shape[0])
        return torch.from_numpy(full)

    def _blocks(self, b0: int, extras: Extras, b1: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(x0 rows, x1 rows) of each block: one block, or one per condition group."""
        if self.condition_key is None:
            return [(np.arange(b0), np.arange(b1))]
        if self.condition_key not in extras:
            raise ValueError(f"condition_key {self.condition_key!r} is not among the extras "
                             f"({', '.join(extras) or 'none'})")
        labels = extras[self.condition_key].detach().reshape(b1, -1).cpu()
        _, group = torch.unique(labels, dim=0, return_inverse=True)
        group = group.numpy()
        targets = np.argsort(group, kind="stable")
        sizes = np.bincount(group)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return [(np.arange(s, s + n), targets[s:s + n]) for s, n in zip(starts, sizes)]

    def _cost(self, x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
        """The (n0, n1) float64 ground cost of one block, checked."""
        n0, n1 = x0.shape[0], x1.shape[0]
        cost = self._cost_fn(x0, x1)
        cost = (cost.detach().double().cpu().numpy() if isinstance(cost, torch.Tensor)
                else np.asarray(cost, dtype=np.float64))
        if cost.shape != (n0, n1):
            raise ValueError(f"the cost returned shape {cost.shape}, expected ({n0}, {n1})")
        if not np.isfinite(cost).all():
            raise ValueError("the cost has non-finite entries; forbid a pair with a large finite "
                             "cost instead")
        return cost

    def _solve(self, x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
        """The plan (n0, n1) between uniform measures on one block; sums to 1 (balanced)."""
        n0, n1 = x0.shape[0], x1.shape[0]
        cost = self._cost(x0, x1)
        a, b = np.full(n0, 1.0 / n0), np.full(n1, 1.0 / n1)
        if self.method == "exact":
            return ot.emd(a, b, cost, numItermax=10_000_000, numThreads=self.num_threads)
        if self.method == "partial":
            # Equal sizes: the mass k/n moves exactly k whole pairs (an integral vertex).
            mass = max(1, round(self.mass * n0)) / n0 if n0 == n1 else self.mass
            if mass >= 1:
                return ot.emd(a, b, cost, numItermax=10_000_000, numThreads=self.num_threads)
            return ot.partial.partial_wasserstein(a, b, cost, m=mass, numItermax=10_000_000)
        scale = cost.max()
        scaled = cost / scale if scale > 0 else cost
        if self.method == "sinkhorn":
            # Subtracting row and then column minima moves only the dual potentials (the
            # balanced plan is unchanged) and leaves a zero in every row and column, so the
            # first Gibbs kernel exp(-cost / reg) has no all-underflowed row or column: POT's
            # stabilised solver otherwise returns NaN for reg below ~1e-3 and converges slower.
            scaled = scaled - scaled.min(1, keepdims=True)
            scaled = scaled - scaled.min(0, keepdims=True)
            plan = ot.sinkhorn(a, b, scaled, self.reg, method="sinkhorn_stabilized",
                               numItermax=self.max_iter)
        else:
            plan = ot.unbalanced.sinkhorn_unbalanced(a, b, scaled, self.reg, self.reg_m,
                                                     method="sinkhorn_stabilized",
                                                     numItermax=self.max_iter)
        if not (np.isfinite(plan).all() and plan.sum() > 0):
            raise ValueError(f"the {self.method} solver failed on this batch (reg={self.reg} "
                             "may be too small for the cost's spread); increase reg")
        return plan

    def _pairs(self, plan: np.ndarray, generator: torch.Generator | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the pairs taken from one block's plan."""
        n0, n1 = plan.shape
        if self.sample_plan:
            weights = torch.from_numpy(plan)
            i = torch.multinomial(weights.sum(1), n1, replacement=True, generator=generator)
            j = torch.multinomial(weights[i], 1, generator=generator).squeeze(1)
            return i.numpy(), j.numpy()
        if self.method == "partial":
            # The partial LP with uniform weights 1/B and mass k/B has integral vertices, so
            # the plan matches k rows with k columns at 1/B each; keep those rows/columns.
            used_rows = np.flatnonzero(plan.sum(1) > 0.5 / n0)
            used_cols = np.flatnonzero(plan.sum(0) > 0.5 / n1)
            r, c = linear_sum_assignment(plan[np.ix_(used_rows, used_cols)], maximize=True)
            return used_rows[r], used_cols[c]
        if self.method == "exact":
            j = plan.argmax(1)
            if len(np.unique(j)) == n1:      # a vertex of the Birkhoff polytope: a permutation
                return np.arange(n0), j
        # Entropic plans (and a degenerate exact one): the permutation carrying most mass.
        r, c = linear_sum_assignment(plan, maximize=True)
        return r, c
