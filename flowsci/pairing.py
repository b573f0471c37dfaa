"""Pairing ahead: the coupling of batch k+1 is solved on a background thread while batch k trains.

An OT coupling solves a transport problem per batch (POT's network simplex: ~6 ms at B = 256,
single-threaded C that releases the GIL). :func:`paired_batches` takes that solve, and the
source draw of x0, off the training step's critical path. Batch k is paired with its own
random stream (:func:`flowsci.rng.batch_generator`, from (seed, rank, k) only), so the pairs do
not depend on the thread, on ``ahead``, or on where a resumed run starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from flowsci.rng import batch_generator

Batch = dict[str, torch.Tensor]
PairFn = Callable[[Batch, torch.Generator], Batch]
"""pair(batch, generator) -> batch with x0 (B, *D), x1 (B, *D) and conditions (B, ...) paired."""


def paired_batches(batches: Iterable[Batch], pair: PairFn, *, start: int, seed: int, rank: int = 0,
                   ahead: bool = True) -> Iterator[Batch]:
    """Batches ``start, start + 1, ...`` of ``batches``, each passed through ``pair`` with the
    generator of its index.

    With ``ahead`` one background thread loads and pairs batch k+1 while the caller works on
    batch k; without it each batch is paired inline. Both give the same tensors. An exception
    raised while pairing reaches the caller at the batch it belongs to, with a note naming it.
    Close the iterator (or exhaust it) to stop the thread.
    """
    source = iter(batches)

    def prepare(k: int) -> Batch | None:
        batch = next(source, None)
        return None if batch is None else pair(batch, batch_generator(seed, k, rank))

    if not ahead:
        k = start
        while (batch := prepare(k)) is not None:
            yield batch
            k += 1
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowsci-pairing") as pool:
        k = start
        pending = pool.submit(prepare, k)
        while (batch := _result(pending, k)) is not None:
            k += 1
            pending = pool.submit(prepare, k)
            yield batch


def _result(pending: Future, k: int) -> Batch | None:
    """The prepared batch k, or its error re-raised in the caller's thread."""
    try:
        return pending.result()
    except Exception as exc:
        exc.add_note(f"raised while pairing batch {k} ahead on a background thread "
                     "(train.prefetch_pairs=false pairs inline)")
        raise
