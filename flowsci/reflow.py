"""Reflow and distillation.

Reflow (Liu et al. 2023) trains the next rectified flow on pairs (x0, x1 = flow(x0)) drawn
from a trained flow, which straightens the paths. :func:`generate_pairs` streams those pairs
into a pair store: a flowsci HDF5 file with one ``train`` split holding the fields ``x0`` and
``x1`` and, for a conditional flow, the condition each pair was drawn for (class labels,
caption tokens: InstaFlow's text-conditioned reflow). Generation is resumable (each batch is
written atomically to a side folder and is a pure function of the seed and its index) and can
keep only the pairs that pass a predicate (ReQFlow's filtered reflow).

Training the next flow is configuration, not new code: the stored pairs with the ``paired``
coupling (and usually ``train.init_from`` the previous run). k-step distillation is the same
with the times fixed to {0, 1/k, ..., (k-1)/k} (:func:`distillation_times`) and sampling with
k Euler steps; k = 1 gives the one-step map x1 = x0 + v(x0, 0).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flowsci.atomic import atomic_open
from flowsci.data import write_dataset
from flowsci.flow_matching import Sampler
from flowsci.sources import Source

PairFilter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""accept(x0, x1) -> (B,) bool: which generated pairs to keep."""


def distillation_times(k: int) -> list[float]:
    """The k fixed training times {0, 1/k, ..., (k-1)/k} of k-step distillation."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return [i / k for i in range(k)]


def generate_pairs(model: torch.nn.Module, source: Source, n: int, out: str | os.PathLike, *,
                   sampler: Sampler, batch_size: int = 1000, seed: int = 0,
                   accept: PairFilter | None = None, max_batches: int | None = None,
                   progress: bool | None = None,
                   conditions: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write ``n`` pairs (x0 ~ source, x1 = sampler(model, x0)) to the pair store ``out``.

    ``conditions``: a pool of conditions {name: (M, ...)} (e.g. the training labels or caption
    tokens); each pair is drawn for a random row of the pool, passed to the model (with the
    sampler's guidance) and stored with the pair under the same names. Batches go to
    ``<out>.partial/`` first; an interrupted call resumes from the batches already there when
    called again with the same arguments. ``accept`` filters pairs; generation stops with an
    error after ``max_batches`` batches (default: 100 n / batch_size) if too few pairs pass.
    Returns the path of the finished pair store.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    conditions = dict(conditions or {})
    pool = _pool_size(conditions)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    stamp = (f"n={n} batch_size={batch_size} seed={seed} filter={accept is not None} "
             f"conditions={sorted(conditions)} pool={pool}")
    stamp_file = partial / "settings.txt"
    if stamp_file.exists() and stamp_file.read_text() != stamp:
        raise ValueError(f"{partial} holds batches of another run ({stamp_file.read_text()}); "
                         f"delete it to start over with {stamp}")
    stamp_file.write_text(stamp)
    max_batches = max_batches or max(1, 100 * n // batch_size)

    accepted, index = 0, 0
    bar = tqdm(total=n, desc="reflow pairs", unit="pair",
               disable=not (progress if progress is not None else os.isatty(2)))
    was_training = model.training
    model.eval()
    try:
        while accepted < n:
            if index >= max_batches:
                raise RuntimeError(f"only {accepted} of {n} pairs passed the filter after {index} batches")
            path = partial / f"batch-{index:06d}.npz"
            if not path.exists():
                generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
                x0 = source.sample(batch_size, generator=generator)
                rows = torch.randint(pool, (batch_size,), generator=generator) if conditions else None
                cond = {k: v[rows] for k, v in conditions.items()}
                with torch.no_grad():
                    x1 = sampler.sample(model, x0, **cond).x
                keep = accept(x0, x1) if accept is not None else torch.ones(len(x0), dtype=torch.bool)
                with atomic_open(path, "wb") as fh:
                    np.savez(fh, x0=x0[keep].numpy(), x1=x1[keep].numpy(),
                             **{k: v[keep].numpy() for k, v in cond.items()})
            with np.load(path) as batch:
                got = len(batch["x0"])
            bar.update(min(got, n - accepted))
            accepted += got
            index += 1
    finally:
        bar.close()
        model.train(was_training)

    names = ["x0", "x1", *conditions]
    arrays = [np.load(partial / f"batch-{i:06d}.npz") for i in range(index)]
    fields = {k: np.concatenate([a[k] for a in arrays])[:n] for k in names}
    vector = fields["x0"].ndim == 2
    scalars = [k for k in conditions if fields[k].ndim == 1]
    tensors = [k for k in conditions if fields[k].ndim > 1]
    orders = {"x0": 1 if vector else 0, "x1": 1 if vector else 0, **{k: 1 for k in tensors}}
    dims = {k: [] if vector else [f"axis{i}" for i in range(1, fields["x0"].ndim)] for k in ("x0", "x1")}
    dims.update({k: [f"{k}_axis{i}" for i in range(1, fields[k].ndim - 1)] for k in tensors})
    write_dataset(out, name="reflow pairs", splits={"train": fields}, orders=orders, dims=dims,
                  sample_scalars=scalars,
                  attrs={"kind": "reflow_pairs", "seed": seed, "batch_size": batch_size,
                         "filtered": accept is not None, "batches": index,
                         "conditions": sorted(conditions), "guidance": float(sampler.guidance),
                         "solver": type(sampler.solver).__name__, "steps": sampler.steps})
    shutil.rmtree(partial)
    return out


def condition_pool(dataset: object) -> dict[str, torch.Tensor]:
    """The conditions of a training split ({name: (N, ...)}: every tensor but x0 and x1) to draw
    pairs for; empty for an unconditional flow or a dataset that is not held in memory."""
    return {k: v for k, v in getattr(dataset, "tensors", {}).items() if k not in ("x0", "x1")}


def _pool_size(conditions: Mapping[str, torch.Tensor]) -> int:
    """The common number of rows of the condition pool (0 when there are no conditions)."""
    sizes = {k: v.shape[0] for k, v in conditions.items() if isinstance(v, torch.Tensor) and v.ndim >= 1}
    if len(sizes) != len(conditions) or len(set(sizes.values())) > 1 or 0 in sizes.values():
        shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                  for k, v in conditions.items()}
        raise ValueError(f"conditions must be tensors with the same number (> 0) of rows, got {shapes}")
    return next(iter(sizes.values()), 0)
