"""Slow tier: the LPINN paper's claim at CPU scale, at the budget of ``domains/lpinn.yaml`` and
``domains/lpinn_burgers.yaml`` (both models: 500 Adam steps, then at most 300 L-BFGS iterations,
on the 256 × 100 collocation grid; one torch thread per run, two runs in parallel).

The sweeps run through ``flowsci.sweep`` into ``$FLOWSCI_LPINN_SWEEPS`` (default: a temporary
directory; about 100 min on 2 cores). Point it at ``runs`` to reuse the runs of
``flowsci sweep domains/lpinn.yaml`` / ``domains/lpinn_burgers.yaml``: the sweep refuses runs
that were trained with another config.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from flowsci.sweep import collect, load_sweep, run_sweep

pytestmark = pytest.mark.slow
BETAS = (1.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0)
OFFSETS = (0.0, 10.0, 50.0)


def _sweep_rows(yaml_name: str, key: str, tmp_path_factory) -> list[dict]:
    sweep = load_sweep(REPO / "domains" / yaml_name)
    root = Path(os.environ.get("FLOWSCI_LPINN_SWEEPS") or tmp_path_factory.mktemp("sweeps"))
    root = run_sweep(sweep, root / f"{Path(yaml_name).stem}-sweep", workers=2, progress=False)
    rows = [{"method": r["method"], "x": float(r["_values"][key]), "seed": int(r["_values"]["seed"]),
             **{k: float(r[k]) for k in ("rel_l2", "adam_rel_l2", "lbfgs_iterations", "steps_to_target",
                                         "train_seconds")}} for r in collect(sweep, root)]
    print(f"\n{yaml_name}: method {key} seed | "
          "rel_l2 adam_rel_l2 lbfgs_iterations steps_to_target train_seconds")
    for r in sorted(rows, key=lambda r: (r["method"], r["x"], r["seed"])):
        print(f"  {r['method']:9} {r['x']:5g} {r['seed']} | {r['rel_l2']:.2e} {r['adam_rel_l2']:.2e} "
              f"{r['lbfgs_iterations']:4.0f} {r['steps_to_target']:5.0f} {r['train_seconds']:5.0f}")
    return rows


@pytest.fixture(scope="module")
def convection(tmp_path_factory) -> list[dict]:
    rows = _sweep_rows("lpinn.yaml", "domain.beta", tmp_path_factory)
    assert {r["x"] for r in rows} == set(BETAS) and {r["seed"] for r in rows} == {0, 1}
    return rows


@pytest.fixture(scope="module")
def burgers(tmp_path_factory) -> list[dict]:
    rows = _sweep_rows("lpinn_burgers.yaml", "domain.offset", tmp_path_factory)
    assert {r["x"] for r in rows} == set(OFFSETS)
    return rows


def _per_x(rows: list[dict], method: str, score: str) -> dict[float, list[float]]:
    out: dict[float, list[float]] = {}
    for r in rows:
        if r["method"] == method:
            out.setdefault(r["x"], []).append(r[score])
    return out


def test_lpinn_error_is_below_1e_2_at_every_beta_with_less_than_3x_variation(convection) -> None:
    errors = _per_x(convection, "lpinn", "rel_l2")
    assert all(e < 1e-2 for seeds in errors.values() for e in seeds), errors
    means = [np.mean(seeds) for seeds in errors.values()]
    assert max(means) / min(means) < 3.0, errors


def test_lpinn_reaches_the_error_at_every_beta_within_the_budget_and_the_pinn_does_not(convection) -> None:
    lpinn, pinn = (_per_x(convection, "lpinn", "steps_to_target"),
                   _per_x(convection, "pinn", "steps_to_target"))
    assert all(np.isfinite(s) for seeds in lpinn.values() for s in seeds), lpinn
    assert not any(np.isfinite(s) for beta, seeds in pinn.items() if beta >= 20 for s in seeds), pinn


def test_lpinn_cost_to_reach_the_error_does_not_grow_with_beta(convection) -> None:
    """The co-moving LPINN (the default): its steps to rel-L2 <= 1e-2 at β = 60, 80 are within
    10 % of those at β = 1, 10. (The lab-frame LPINN's grow, seed 0: 325 at β = 1 to 600 at β = 80;
    reported, not asserted.)"""
    steps = _per_x(convection, "lpinn", "steps_to_target")
    low, high = np.mean(steps[1.0] + steps[10.0]), np.mean(steps[60.0] + steps[80.0])
    assert high <= 1.1 * low, steps


def test_pinn_breaks_down_within_the_range_at_the_same_budget(convection) -> None:
    final, adam = _per_x(convection, "pinn", "rel_l2"), _per_x(convection, "pinn", "adam_rel_l2")
    assert all(e < 1e-2 for e in final[1.0]), final  # the PINN is not handicapped: it solves β = 1
    assert all(e > 0.1 for e in final[80.0]), final  # and fails at the top of the range
    assert np.mean(adam[80.0]) > 10 * np.mean(adam[1.0]), adam


def test_burgers_lpinn_error_is_below_5e_2_for_every_offset(burgers) -> None:
    errors = _per_x(burgers, "lpinn", "rel_l2")
    assert all(e < 5e-2 for seeds in errors.values() for e in seeds), errors
