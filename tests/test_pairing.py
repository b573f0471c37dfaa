"""Pairing ahead (flowsci/pairing.py): the same pairs as inline pairing, batch by batch, for every
coupling kind; the same batches after a resume; errors of the background thread in the caller."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import SMALL, TOY2D_YAML

from flowsci.checkpoint import load_checkpoint
from flowsci.config import load_config
from flowsci.couplings import OTCoupling
from flowsci.flow_matching import FlowMatching, FlowMatchingConfig
from flowsci.pairing import paired_batches
from flowsci.rng import batch_generator
from flowsci.sources import SpaceBase, StandardNormal
from flowsci.spaces import SO3Matrix
from flowsci.training import train

B, N_BATCHES, SEED = 32, 5, 7
COUPLINGS = {
    "exact": {"name": "ot"},
    "sinkhorn": {"name": "ot", "method": "sinkhorn", "reg": 0.1},
    "unbalanced": {"name": "ot", "method": "unbalanced", "reg": 0.1},
    "partial": {"name": "ot", "method": "partial", "mass": 0.75},
    "sample_plan": {"name": "ot", "method": "sinkhorn", "reg": 0.1, "sample_plan": True},
    "blocked": {"name": "ot", "condition_key": "y"},
}


def _euclidean_case(coupling: dict) -> tuple[FlowMatching, list[dict[str, torch.Tensor]]]:
    """Flow matching on R^2 from N(0, I), and batches of x1 (B, 2) with labels y (B,)."""
    fm = FlowMatching.from_config(FlowMatchingConfig(coupling=coupling), source=StandardNormal((2,)))
    g = torch.Generator().manual_seed(0)
    batches = [{"x1": torch.randn(B, 2, generator=g) + 3, "y": torch.randint(0, 3, (B,), generator=g)}
               for _ in range(N_BATCHES)]
    return fm, batches


def _geodesic_case() -> tuple[FlowMatching, list[dict[str, torch.Tensor]]]:
    """Geodesic OT on SO(3) from its Haar measure; batches of x1 (B, 3, 3)."""
    space = SO3Matrix()
    cfg = FlowMatchingConfig(path="geodesic", coupling={"name": "ot", "cost": "geodesic"})
    fm = FlowMatching.from_config(cfg, source=SpaceBase(space), space=space)
    g = torch.Generator().manual_seed(0)
    return fm, [{"x1": space.random_base(B, generator=g)} for _ in range(N_BATCHES)]


CASES = {**{name: (lambda c=c: _euclidean_case(c)) for name, c in COUPLINGS.items()},
         "geodesic": _geodesic_case}


@pytest.mark.parametrize("case", list(CASES))
def test_pipelined_pairs_equal_inline_pairs_batch_by_batch(case: str) -> None:
    fm, batches = CASES[case]()
    ahead = list(paired_batches(batches, fm.pair, start=0, seed=SEED, ahead=True))
    inline = list(paired_batches(batches, fm.pair, start=0, seed=SEED, ahead=False))
    assert len(ahead) == len(inline) == N_BATCHES
    for k, (a, b) in enumerate(zip(ahead, inline)):
        # by hand in this thread: the coupling of batch k with the stream of (seed, k)
        c = fm.pair(batches[k], batch_generator(SEED, k))
        assert a.keys() == b.keys() == c.keys() and "x0" in a
        for key in a:
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), (k, key)
    assert not torch.equal(ahead[0]["x0"], ahead[1]["x0"])  # every batch draws its own x0
    if case == "partial":
        assert len(ahead[0]["x1"]) == round(0.75 * B)


def test_a_resumed_run_sees_the_same_paired_batches() -> None:
    fm, batches = _euclidean_case(COUPLINGS["sample_plan"])
    full = list(paired_batches(batches, fm.pair, start=0, seed=SEED))
    resumed = list(paired_batches(batches[3:], fm.pair, start=3, seed=SEED))
    for a, b in zip(full[3:], resumed, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)


def _ot_config(*extra: str):
    return load_config(TOY2D_YAML, [*SMALL, "objective.coupling={name: ot}", "train.steps=20",
                                    "train.checkpoint_every=10", "train.keep_checkpoints=0",
                                    "train.ema=0.9", "eval.n_samples=50", "eval.steps=[1]", "sample.steps=4",
                                    *extra])


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in ("model", "ema") for k in a[part])


def test_training_with_pairs_ahead_equals_training_with_inline_pairs(tmp_path) -> None:
    inline = train(_ot_config("train.prefetch_pairs=false"), tmp_path / "inline", progress=False)
    ahead = train(_ot_config(), tmp_path / "ahead", progress=False)
    assert _same_weights(load_checkpoint(ahead.checkpoint), load_checkpoint(inline.checkpoint))


def test_a_resumed_run_with_pairs_ahead_is_bit_for_bit_the_uninterrupted_one(tmp_path) -> None:
    run = train(_ot_config(), tmp_path / "run", progress=False)
    final = load_checkpoint(run.checkpoint)
    run.checkpoint.unlink()  # resume from step 10: steps 11..20 must see the same pairs
    resumed = train(_ot_config(), run.run_dir, resume=True, progress=False)
    assert load_checkpoint(resumed.checkpoint)["step"] == 20
    assert _same_weights(load_checkpoint(resumed.checkpoint), final)


def _consume(batches) -> BaseException | None:
    """Iterate in a helper thread with a deadline, so that a hang fails instead of blocking."""
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            for _ in batches:
                pass
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome[0] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the pipeline hung"
    return outcome[0]


def test_an_error_while_pairing_ahead_reaches_the_caller_with_its_batch() -> None:
    def pair(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        if batch["k"] == 2:
            raise ValueError("the cost has non-finite entries")
        return batch

    seen = []
    batches = ({"k": k} for k in range(5))
    error = _consume(seen.append(b) or b for b in paired_batches(batches, pair, start=0, seed=0))
    assert isinstance(error, ValueError) and "non-finite" in str(error)
    assert "pairing batch 2 ahead on a background thread" in "".join(error.__notes__)
    assert [b["k"] for b in seen] == [0, 1]
    assert not [t for t in threading.enumerate() if t.name.startswith("flowsci-pairing")]


def test_a_solver_error_in_training_stops_the_run_with_its_message(tmp_path, monkeypatch) -> None:
    solve, calls = OTCoupling._solve, [0]

    def failing_solve(self, x0, x1):
        calls[0] += 1
        if calls[0] == 4:
            raise ValueError("the sinkhorn solver failed on this batch")
        return solve(self, x0, x1)

    monkeypatch.setattr(OTCoupling, "_solve", failing_solve)
    with pytest.raises(ValueError, match="solver failed") as info:
        train(_ot_config(), tmp_path / "run", progress=False)
    assert "pairing batch 3" in "".join(info.value.__notes__)
    assert not [t for t in threading.enumerate() if t.name.startswith("flowsci-pairing")]


def test_closing_early_stops_the_background_thread() -> None:
    fm, batches = _euclidean_case(COUPLINGS["exact"])
    pairs = paired_batches(batches, fm.pair, start=0, seed=SEED)
    next(pairs)
    pairs.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("flowsci-pairing")]
