"""Oracle tests of the couplings (docs/design.md).

The optimal pairings are checked against independent solvers: scipy's
``linear_sum_assignment`` (Hungarian / Jonker-Volgenant) for permutations and
``scipy.optimize.linprog`` for the partial-transport LP; entropic plans against their
optimality conditions and a derived sub-optimality bound.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from scipy.spatial.distance import cdist

from flowsci.couplings import COSTS, IndependentCoupling, OTCoupling, PairedCoupling, sqeuclidean_cost

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sq_cost(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    """Reference squared-distance matrix on flattened features (scipy, float64)."""
    return cdist(x0.reshape(len(x0), -1).double().numpy(), x1.reshape(len(x1), -1).double().numpy(),
                 "sqeuclidean")


def _assignment_cost(cost: np.ndarray) -> float:
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def _row_index(rows: torch.Tensor, pool: torch.Tensor) -> np.ndarray:
    """For each row of ``rows``, its index in ``pool`` (rows of pool are distinct)."""
    equal = (rows.reshape(len(rows), 1, -1) == pool.reshape(1, len(pool), -1)).all(-1)
    assert (equal.sum(1) == 1).all(), "an output row is not exactly one input row"
    return equal.int().argmax(1).numpy()


def _pair_cost(y0: torch.Tensor, y1: torch.Tensor) -> float:
    return float((y0.double() - y1.double()).reshape(len(y0), -1).pow(2).sum(1).mean())


# --- independent and paired ----------------------------------------------------------------


@pytest.mark.parametrize("coupling", [IndependentCoupling(), PairedCoupling()])
def test_alignment_is_kept(coupling) -> None:
    x0, x1 = torch.randn(6, 2, 3), torch.randn(6, 2, 3)
    extras = {"label": torch.arange(6), "cond": torch.randn(6, 4)}
    y0, y1, out = coupling(x0, x1, dict(extras))
    assert torch.equal(y0, x0) and torch.equal(y1, x1)
    assert set(out) == set(extras) and all(torch.equal(out[k], extras[k]) for k in extras)


@pytest.mark.parametrize("coupling", [IndependentCoupling(), PairedCoupling(), OTCoupling()])
def test_mismatched_batches_are_rejected(coupling) -> None:
    with pytest.raises(ValueError, match="batch sizes differ"):
        coupling(torch.randn(5, 2), torch.randn(4, 2), {})


@pytest.mark.parametrize("coupling", [IndependentCoupling(), PairedCoupling(), OTCoupling()])
def test_extras_of_the_wrong_length_are_rejected(coupling) -> None:
    with pytest.raises(ValueError, match=r"extras\['y'\]"):
        coupling(torch.randn(4, 2), torch.randn(4, 2), {"y": torch.arange(3)})


# --- exact OT: optimal permutation ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(1,), (3,), (2, 3)])
@pytest.mark.parametrize("batch", [1, 2, 7, 64, 200])
def test_exact_ot_is_an_optimal_permutation(batch: int, shape: tuple[int, ...]) -> None:
    """The returned pairing's cost equals the assignment optimum (the check that would have
    caught torchcfm's inverted pairing, TCFM #178) and x0 is permuted, not resampled."""
    g = _gen(batch * 10 + len(shape))
    x0 = torch.randn(batch, *shape, generator=g, dtype=F64)
    x1 = 1.5 * torch.randn(batch, *shape, generator=g, dtype=F64) + 0.5
    y0, y1, _ = OTCoupling()(x0, x1, {})
    assert y0.shape == x0.shape and torch.equal(y1, x1)
    assert sorted(_row_index(y0, x0)) == list(range(batch))
    assert _pair_cost(y0, y1) == pytest.approx(_assignment_cost(_sq_cost(x0, x1)), rel=1e-12, abs=1e-12)


def test_exact_ot_pairing_cost_equals_the_network_simplex_lp_value() -> None:
    """An independent LP solver (POT's network simplex) gives the same optimal transport cost
    as the assignment solver the coupling uses."""
    import ot

    g = _gen(11)
    x0, x1 = torch.randn(128, 2, generator=g, dtype=F64), torch.randn(128, 2, generator=g, dtype=F64) + 1
    y0, y1, _ = OTCoupling()(x0, x1, {})
    uniform = torch.full((128,), 1 / 128, dtype=F64).numpy()
    lp = ot.emd2(uniform, uniform, _sq_cost(x0, x1))
    assert _pair_cost(y0, y1) == pytest.approx(lp, rel=1e-10)


def test_exact_ot_euclidean_cost_is_optimal_for_that_cost() -> None:
    g = _gen(3)
    x0, x1 = torch.randn(50, 2, generator=g, dtype=F64), torch.randn(50, 2, generator=g, dtype=F64) + 1
    y0, y1, _ = OTCoupling(cost="euclidean")(x0, x1, {})
    reference = cdist(x0.numpy(), x1.numpy())
    achieved = float((y0 - y1).norm(dim=1).mean())
    assert achieved == pytest.approx(_assignment_cost(reference), rel=1e-12)
    # the two costs have different optima here, so the cost choice is actually used
    assert _pair_cost(y0, y1) > _assignment_cost(_sq_cost(x0, x1)) + 1e-6


def test_exact_ot_keeps_input_dtype_and_values() -> None:
    x0, x1 = torch.randn(32, 4), torch.randn(32, 4)
    y0, y1, _ = OTCoupling()(x0, x1, {})
    assert y0.dtype == torch.float32 and y1.dtype == torch.float32
    assert sorted(_row_index(y0, x0)) == list(range(32))


def test_squared_cost_is_computed_from_differences() -> None:
    """|v|^2 = 1e-6 between points at 1e4 from the origin: the direct form is exact to
    ~1e-12 relative, the expansion |x|^2 + |y|^2 - 2x.y is off by ~1e-8 absolute."""
    x = torch.randn(40, 2, generator=_gen(4), dtype=F64) + 1e4
    v = torch.tensor([6e-4, -8e-4], dtype=F64)
    cost = sqeuclidean_cost(x, x + v)
    assert cost.dtype == F64
    torch.testing.assert_close(cost.diagonal(), torch.full((40,), 1e-6, dtype=F64), rtol=1e-8, atol=0)


# --- extras travel with their x1 -----------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {}, {"method": "sinkhorn"}, {"method": "unbalanced"}, {"method": "partial", "mass": 0.7},
    {"sample_plan": True}, {"method": "sinkhorn", "sample_plan": True},
    {"condition_key": "label"},
])
def test_extras_travel_with_their_target(kwargs: dict) -> None:
    g = _gen(5)
    x0 = torch.randn(40, 2, 3, generator=g)
    x1 = torch.randn(40, 2, 3, generator=g) + 1
    extras = {"id": torch.arange(40), "copy": x1.clone(), "label": torch.randint(0, 3, (40,), generator=g)}
    y0, y1, out = OTCoupling(**kwargs)(x0, x1, extras)
    assert len(y0) == len(y1) == len(out["id"]) == len(out["copy"]) == len(out["label"])
    assert torch.equal(y1, x1[out["id"]])
    assert torch.equal(out["copy"], y1)
    assert torch.equal(out["label"], extras["label"][out["id"]])
    _row_index(y0, x0)  # every x0 row is an input row


# --- condition-blocked OT ------------------------------------------------------------------


@pytest.mark.parametrize("vector_labels", [False, True])
def test_condition_blocked_ot_stays_within_groups_and_is_optimal_there(vector_labels: bool) -> None:
    """Three groups of unequal sizes whose targets sit far apart. Global OT would send the
    x0 nearest a group's targets to that group; blocked OT gives each group the x0 block of
    its size (groups in sorted-label order, consecutive x0 rows, as documented) and is
    optimal within each group."""
    g = _gen(6)
    sizes = {2: 5, 0: 12, 1: 7}                         # label -> group size
    label = torch.cat([torch.full((n,), k) for k, n in sizes.items()])
    label = label[torch.randperm(len(label), generator=g)]
    centre = torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]], dtype=F64)
    x1 = centre[label] + 0.3 * torch.randn(len(label), 2, generator=g, dtype=F64)
    x0 = torch.randn(len(label), 2, generator=g, dtype=F64)
    key = torch.stack([label.double(), -label.double()], 1) if vector_labels else label
    y0, y1, out = OTCoupling(condition_key="y")(x0, x1, {"y": key, "label": label})
    assert torch.equal(y1, x1) and torch.equal(out["label"], label)
    start = 0
    for k in sorted(sizes):
        members = torch.nonzero(label == k).flatten()
        block = torch.arange(start, start + sizes[k])
        start += sizes[k]
        paired = _row_index(y0[members], x0)
        assert sorted(paired) == block.tolist()        # no pair crosses groups
        assert _pair_cost(y0[members], x1[members]) == pytest.approx(
            _assignment_cost(_sq_cost(x0[block], x1[members])), rel=1e-12)
    # the blocking matters: unblocked OT pairs the groups with other x0
    z0, _, _ = OTCoupling()(x0, x1, {})
    first = torch.nonzero(label == 0).flatten()
    assert sorted(_row_index(z0[first], x0)) != list(range(sizes[0]))


def test_condition_blocked_plan_is_block_diagonal() -> None:
    g = _gen(7)
    label = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    x0, x1 = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    plan = OTCoupling(method="sinkhorn", reg=0.1, condition_key="y").plan(x0, x1, {"y": label}).numpy()
    group_of_x0 = np.array([0, 0, 0, 0, 1, 1, 1, 1])     # sorted labels 0, 1; four rows each
    crossing = group_of_x0[:, None] != label.numpy()[None, :]
    assert np.all(plan[crossing] == 0)
    np.testing.assert_allclose(plan.sum(), 1.0, rtol=1e-9)
    np.testing.assert_allclose(plan.sum(0), np.full(8, 1 / 8), rtol=1e-6)


def test_condition_key_must_be_among_the_extras() -> None:
    with pytest.raises(ValueError, match="condition_key 'y'"):
        OTCoupling(condition_key="y")(torch.randn(4, 2), torch.randn(4, 2), {"label": torch.arange(4)})


# --- entropic OT ---------------------------------------------------------------------------


@pytest.mark.parametrize("reg", [0.1, 0.02, 0.005])
def test_sinkhorn_plan_is_entropic_optimum_within_derived_bound(reg: float) -> None:
    """POT's sinkhorn minimises <M, P> + reg sum P log P over couplings, with M = C / max C.
    (a) Optimality: log P + M / reg = f_i + g_j (the plan is a diagonal scaling of the Gibbs
    kernel), so the double-centred matrix vanishes; marginals are uniform.
    (b) Comparing the objective at P_reg and at the optimal permutation P* (entropy log n)
    and using H(P) <= 2 log n: <C, P_reg> - <C, P*> <= reg * log(n) * max C."""
    n = 40
    g = _gen(8)
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64) + 1
    plan = OTCoupling(method="sinkhorn", reg=reg, max_iter=100_000).plan(x0, x1).numpy()
    cost = _sq_cost(x0, x1)
    np.testing.assert_allclose(plan.sum(1), np.full(n, 1 / n), rtol=1e-7)
    np.testing.assert_allclose(plan.sum(0), np.full(n, 1 / n), rtol=1e-7)
    r = np.log(plan) + cost / cost.max() / reg
    r = r - r.mean(0, keepdims=True) - r.mean(1, keepdims=True) + r.mean()
    assert np.abs(r).max() < 1e-6
    excess = float((plan * cost).sum()) - _assignment_cost(cost)
    assert 0 <= excess <= reg * math.log(n) * cost.max()


@pytest.mark.parametrize("method", ["sinkhorn", "unbalanced"])
def test_entropic_plans_round_to_the_permutation_of_largest_plan_mass(method: str) -> None:
    """Brute force over all 6! permutations: none carries more plan mass than the returned
    one (the documented rounding), and the returned x0 rows are a permutation."""
    n = 6
    g = _gen(9)
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)
    coupling = OTCoupling(method=method, reg=0.2)
    plan = coupling.plan(x0, x1).numpy()
    y0, y1, _ = coupling(x0, x1, {})
    assert torch.equal(y1, x1)
    chosen = _row_index(y0, x0)                         # x0 row paired with x1 row j
    assert sorted(chosen) == list(range(n))
    best = max(plan[list(p), range(n)].sum() for p in itertools.permutations(range(n)))
    assert plan[chosen, range(n)].sum() == pytest.approx(best, rel=1e-12)
    # the plan is diffuse here, so the rounding is not trivially the argmax of every row
    assert plan.max(1).sum() < 0.9 * plan.sum()


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_sinkhorn_with_tiny_reg_returns_a_valid_permutation() -> None:
    """reg = 1e-4 of the largest cost: exp(-cost / reg) underflows for whole rows unless the
    cost is shifted first; the result must still be a finite plan and a permutation."""
    g = _gen(19)
    x0, x1 = torch.randn(50, 2, generator=g, dtype=F64), 3 * torch.randn(50, 2, generator=g, dtype=F64)
    coupling = OTCoupling(method="sinkhorn", reg=1e-4)
    assert np.isfinite(coupling.plan(x0, x1).numpy()).all()
    y0, _, _ = coupling(x0, x1, {})
    assert sorted(_row_index(y0, x0)) == list(range(50))


def test_unbalanced_plan_satisfies_its_optimality_condition() -> None:
    """POT's unbalanced problem: min <M, P> + reg KL(P | a b^T) + reg_m KL(P 1 | a)
    + reg_m KL(P^T 1 | b) with M = C / max C. Its gradient vanishes at the (positive) optimum:
    M_ij + reg log(P_ij / a_i b_j) + reg_m log((P1)_i / a_i) + reg_m log((P^T 1)_j / b_j) = 0."""
    n = 30
    g = _gen(10)
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64) + 2
    reg, reg_m = 0.1, 0.3
    plan = OTCoupling(method="unbalanced", reg=reg, reg_m=reg_m, max_iter=100_000).plan(x0, x1).numpy()
    cost = _sq_cost(x0, x1)
    a = np.full(n, 1 / n)

    def residual(m: float) -> float:
        return np.abs(cost / cost.max() + reg * np.log(plan / np.outer(a, a))
                      + m * np.log(plan.sum(1) / a)[:, None] + m * np.log(plan.sum(0) / a)[None, :]).max()

    assert residual(reg_m) < 1e-5
    assert residual(2 * reg_m) > 1e-2                   # the condition pins reg_m down
    assert plan.sum() < 0.99                            # mass is destroyed: not a balanced plan


def test_unbalanced_ot_gives_an_outlier_little_mass_and_still_a_permutation() -> None:
    n = 32
    g = _gen(11)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    x1 = torch.randn(n, 2, generator=g, dtype=F64)
    x1[0] = torch.tensor([30.0, 0.0], dtype=F64)
    plan = OTCoupling(method="unbalanced", reg=0.05, reg_m=0.05).plan(x0, x1).numpy()
    column = plan.sum(0)
    assert column[0] < 0.2 * np.median(column[1:])
    balanced = OTCoupling(method="sinkhorn", reg=0.05).plan(x0, x1).numpy().sum(0)
    np.testing.assert_allclose(balanced[0], 1 / n, rtol=1e-6)
    y0, y1, _ = OTCoupling(method="unbalanced", reg=0.05, reg_m=0.05)(x0, x1, {})
    assert torch.equal(y1, x1) and sorted(_row_index(y0, x0)) == list(range(n))


def test_unbalanced_with_stiff_marginals_tends_to_sinkhorn() -> None:
    """reg_m -> inf recovers the balanced problem; the plan's deviation shrinks in
    proportion to 1 / reg_m (measured: ~reg / reg_m relative to the largest entry)."""
    g = _gen(12)
    x0, x1 = torch.randn(20, 2, generator=g, dtype=F64), torch.randn(20, 2, generator=g, dtype=F64)
    balanced = OTCoupling(method="sinkhorn", reg=0.1).plan(x0, x1).numpy()

    def deviation(reg_m: float) -> float:
        plan = OTCoupling(method="unbalanced", reg=0.1, reg_m=reg_m, max_iter=10_000).plan(x0, x1).numpy()
        return float(np.abs(plan - balanced).max() / balanced.max())

    loose, stiff = deviation(10.0), deviation(100.0)
    assert stiff < 3e-3 and stiff < 0.2 * loose


# --- partial OT ----------------------------------------------------------------------------


@pytest.mark.parametrize("mass", [0.5, 0.7, 0.75])
def test_partial_ot_keeps_round_mass_b_pairs_with_the_lp_optimal_cost(mass: float) -> None:
    """Reference: the partial-transport LP min <C, P> s.t. P >= 0, P1 <= 1/n, P^T 1 <= 1/n,
    sum P = k/n, solved by scipy's linprog (HiGHS)."""
    n = 8
    k = round(mass * n)
    g = _gen(13)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    x1 = torch.randn(n, 2, generator=g, dtype=F64) + 1.5
    extras = {"id": torch.arange(n)}
    y0, y1, out = OTCoupling(method="partial", mass=mass)(x0, x1, extras)
    assert len(y0) == len(y1) == len(out["id"]) == k
    assert len(set(_row_index(y0, x0))) == k and len(set(out["id"].tolist())) == k
    assert torch.equal(y1, x1[out["id"]])
    cost = _sq_cost(x0, x1)
    rows = np.kron(np.eye(n), np.ones(n))               # sum_j P_ij
    cols = np.kron(np.ones(n), np.eye(n))               # sum_i P_ij
    lp = scipy.optimize.linprog(cost.ravel(), A_ub=np.vstack([rows, cols]), b_ub=np.full(2 * n, 1 / n),
                                A_eq=np.ones((1, n * n)), b_eq=[k / n], bounds=(0, None), method="highs")
    assert lp.status == 0
    achieved = _pair_cost(y0, y1) * k / n               # each kept pair carries mass 1/n
    assert achieved == pytest.approx(lp.fun, rel=1e-9)
    # fewer pairs than a full matching, and cheaper per pair
    assert _pair_cost(y0, y1) < _assignment_cost(cost)


def test_partial_ot_with_full_mass_is_exact_ot() -> None:
    g = _gen(14)
    x0, x1 = torch.randn(16, 3, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64)
    y0, y1, _ = OTCoupling(method="partial", mass=1.0)(x0, x1, {})
    assert len(y0) == 16
    assert _pair_cost(y0, y1) == pytest.approx(_assignment_cost(_sq_cost(x0, x1)), rel=1e-12)


# --- sampling from the plan ----------------------------------------------------------------


def test_sample_plan_frequencies_match_the_plan() -> None:
    """Draws pooled over many calls follow the normalised plan (chi-square, 35 dof); the
    same counts are far from the independent (uniform) coupling."""
    n, calls = 6, 2000
    g = _gen(15)
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)
    coupling = OTCoupling(method="sinkhorn", reg=0.3, sample_plan=True)
    plan = coupling.plan(x0, x1).numpy()
    counts = np.zeros((n, n))
    torch.manual_seed(0)
    for _ in range(calls):
        y0, _, out = coupling(x0, x1, {"id": torch.arange(n)})
        np.add.at(counts, (_row_index(y0, x0), out["id"].numpy()), 1)
    expected = plan.ravel() / plan.sum() * counts.sum()
    assert expected.min() > 20
    assert scipy.stats.chisquare(counts.ravel(), expected).pvalue > 1e-3
    uniform = np.full(n * n, counts.sum() / (n * n))
    assert scipy.stats.chisquare(counts.ravel(), uniform).pvalue < 1e-10


def test_sample_plan_of_an_exact_plan_stays_on_the_permutation_and_allows_unequal_sizes() -> None:
    g = _gen(16)
    x0, x1 = torch.randn(12, 2, generator=g, dtype=F64), torch.randn(12, 2, generator=g, dtype=F64)
    support = OTCoupling().plan(x0, x1).numpy() > 0
    torch.manual_seed(1)
    y0, _, out = OTCoupling(sample_plan=True)(x0, x1, {"id": torch.arange(12)})
    assert support[_row_index(y0, x0), out["id"].numpy()].all()
    # B0 != B1: B1 pairs, each on the support of the (non-permutation) exact plan
    x0 = torch.randn(20, 2, generator=g, dtype=F64)
    support = OTCoupling().plan(x0, x1).numpy() > 0
    y0, y1, out = OTCoupling(sample_plan=True)(x0, x1, {"id": torch.arange(12)})
    assert len(y0) == len(y1) == 12
    assert support[_row_index(y0, x0), out["id"].numpy()].all()


# --- pluggable costs -----------------------------------------------------------------------


def test_custom_cost_callable_is_used_on_the_unflattened_batch() -> None:
    """Forbidding the optimal partner of x0[0] with a huge cost moves the optimum; the result
    equals the assignment optimum of the modified cost."""
    g = _gen(17)
    x0, x1 = torch.randn(10, 2, 3, generator=g, dtype=F64), torch.randn(10, 2, 3, generator=g, dtype=F64)
    base = _sq_cost(x0, x1)
    _, best = scipy.optimize.linear_sum_assignment(base)
    modified = base.copy()
    modified[0, best[0]] = 1e6

    def cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert a.shape[1:] == (2, 3) and b.shape[1:] == (2, 3)
        c = sqeuclidean_cost(a, b)
        c[0, best[0]] = 1e6
        return c

    y0, y1, out = OTCoupling(cost=cost)(x0, x1, {"id": torch.arange(10)})
    i, j = _row_index(y0, x0), out["id"].numpy()
    assert not np.any((i == 0) & (j == best[0]))
    assert float(modified[i, j].mean()) == pytest.approx(_assignment_cost(modified), rel=1e-12)


def _manhattan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.flatten(1).double(), b.flatten(1).double(), p=1)


def test_registered_cost_is_found_by_name() -> None:
    COSTS.register("test_manhattan", _manhattan)
    g = _gen(18)
    x0, x1 = torch.randn(30, 3, generator=g, dtype=F64), torch.randn(30, 3, generator=g, dtype=F64)
    y0, y1, _ = OTCoupling(cost="test_manhattan")(x0, x1, {})
    reference = cdist(x0.numpy(), x1.numpy(), "cityblock")
    assert float((y0 - y1).abs().sum(1).mean()) == pytest.approx(_assignment_cost(reference), rel=1e-12)


def test_non_finite_cost_is_rejected() -> None:
    def cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = sqeuclidean_cost(a, b)
        c[0, 0] = math.inf
        return c

    with pytest.raises(ValueError, match="non-finite"):
        OTCoupling(cost=cost)(torch.randn(4, 2), torch.randn(4, 2), {})


# --- construction --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, name", [
    ({"method": "emd"}, "method"), ({"reg": 0.0}, "reg"), ({"reg_m": -1.0}, "reg_m"),
    ({"mass": 1.5}, "mass"), ({"mass": 0.0}, "mass"), ({"num_threads": 0}, "num_threads"),
    ({"max_iter": 0}, "max_iter"), ({"cost": "sqeuclidian"}, "cost"), ({"cost": 3}, "cost"),
])
def test_bad_arguments_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        OTCoupling(**kwargs)


def test_repr_and_describe_show_the_settings() -> None:
    assert repr(OTCoupling()) == "OTCoupling()"
    coupling = OTCoupling(method="sinkhorn", reg=0.01, condition_key="y")
    assert repr(coupling) == "OTCoupling(method='sinkhorn', reg=0.01, condition_key='y')"
    assert "sinkhorn" in coupling.describe() and "extras['y']" in coupling.describe()
    assert repr(PairedCoupling()) == "PairedCoupling()"
    assert "stored pairs" in PairedCoupling().describe().lower()
