"""Tests of the population domain's data generators: letters (glyph point clouds, paired corrupted
sources, rotations) and patients x treatments (composition-dependent responses, splits).

Oracles: an Agg rasterisation of the glyph's Bezier outline (independent of the polygon sampler),
least-squares regression for the pairing, exact OT (ot.emd2) for rotations and shapes, sampling
standard errors for the responses."""

from __future__ import annotations

import functools
import math

import numpy as np
import ot
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import PathPatch
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D
from scipy.spatial.transform import Rotation

from flowsci_domains.population.letters import glyph_polygons, make_letters, sample_inside, split_letters
from flowsci_domains.population.patients import make_patients, split_patients

PIXELS = 1600   # raster of [-3, 3]^2: 0.00375 units per pixel


@functools.cache
def _raster(letter: str) -> np.ndarray:
    """(PIXELS, PIXELS) bool, row 0 at y = 3: the bold glyph, box-normalised to [-3, 3]^2 from its
    Bezier extents, filled by Agg."""
    path = TextPath((0, 0), letter, size=1, prop=FontProperties(family="DejaVu Sans", weight="bold"))
    box = path.get_extents()
    to_box = Affine2D().translate(-(box.x0 + box.x1) / 2, -(box.y0 + box.y1) / 2).scale(
        6 / max(box.width, box.height))
    fig = Figure(figsize=(PIXELS / 100, PIXELS / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-3, 3)
    ax.set_ylim(-3, 3)
    ax.set_axis_off()
    ax.add_patch(PathPatch(to_box.transform_path(path), facecolor="black", edgecolor="none",
                           antialiased=False))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., 0] < 128


def _lit(letter: str, points: np.ndarray) -> np.ndarray:
    """points: (n, 2) -> (n,) whether each falls on a lit pixel of the glyph."""
    col = np.clip(np.floor((points[:, 0] + 3) / 6 * PIXELS).astype(int), 0, PIXELS - 1)
    row = np.clip(np.floor((3 - points[:, 1]) / 6 * PIXELS).astype(int), 0, PIXELS - 1)
    return _raster(letter)[row, col]


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    return points @ Rotation.from_euler("z", angle).as_matrix()[:2, :2].T


def _w2_squared(a: np.ndarray, b: np.ndarray) -> float:
    return float(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), ot.dist(a, b)))


# ----------------------------------------------------------------------------------------- letters

@pytest.mark.parametrize("letter", ["A", "B", "O", "Q", "R", "W", "I"])
def test_points_fall_on_the_rasterised_glyph(letter: str) -> None:
    points = sample_inside(letter, 4000, np.random.default_rng(0))
    assert points.shape == (4000, 2)
    assert _lit(letter, points).mean() >= 0.99
    stacked = np.concatenate(glyph_polygons(letter))
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
    assert (hi - lo).max() == pytest.approx(6.0)


def test_points_are_uniform_over_the_glyph() -> None:
    """Fraction of points in each cell of a 4 x 4 grid = fraction of the glyph's lit pixels there."""
    points = sample_inside("R", 20000, np.random.default_rng(1))
    lit = _raster("R")
    cells = lit.reshape(4, PIXELS // 4, 4, PIXELS // 4).sum(axis=(1, 3)) / lit.sum()
    row = np.clip(((3 - points[:, 1]) / 1.5).astype(int), 0, 3)
    col = np.clip(((points[:, 0] + 3) / 1.5).astype(int), 0, 3)
    counts = np.zeros((4, 4))
    np.add.at(counts, (row, col), 1)
    np.testing.assert_allclose(counts / len(points), cells, atol=0.012)


def test_hole_of_o_is_empty() -> None:
    points = sample_inside("O", 20000, np.random.default_rng(2))
    radius = np.linalg.norm(points, axis=1)
    assert not _lit("O", np.zeros((1, 2)))[0]          # the raster agrees the centre is a hole
    assert (radius < 1.0).sum() == 0
    assert (radius > 2.0).sum() > 10000


def test_sizes_follow_the_glyph_area() -> None:
    populations = make_letters("IJMNW", 1, seed=0)
    sizes = np.array([len(p["x1"]) for p in populations])
    assert len(set(sizes)) == 5 and sizes.min() >= 100 and sizes.max() <= 500
    assert sizes.max() > 2 * sizes.min()
    areas = np.array([_raster(c).sum() for c in "IJMNW"], float)
    np.testing.assert_allclose(sizes / sizes.sum(), areas / areas.sum(), rtol=0.03)
    for p in populations:
        assert p["x0"].dtype == np.float32 and p["x0"].shape == p["x1"].shape == (len(p["x1"]), 2)


def test_letters_are_deterministic_by_seed() -> None:
    a, b = make_letters("AK", 2, seed=3), make_letters("AK", 2, seed=3)
    for p, q in zip(a, b):
        assert p["letter"] == q["letter"] and p["rotation"] == q["rotation"]
        np.testing.assert_array_equal(p["x0"], q["x0"])
        np.testing.assert_array_equal(p["x1"], q["x1"])
    c = make_letters("AK", 2, seed=4)
    assert not np.allclose(a[0]["x1"], c[0]["x1"])
    alone = make_letters("K", 2, seed=3)          # a letter's populations ignore the other letters
    np.testing.assert_array_equal(alone[1]["x0"], a[3]["x0"])
    assert [p["letter"] for p in a] == ["A", "A", "K", "K"]
    assert len({p["rotation"] for p in a}) == 4 and all(0 <= p["rotation"] < 2 * math.pi for p in a)


@pytest.mark.parametrize("source_noise", [0.2, 0.5])
def test_source_is_an_affine_noisy_copy_of_its_target(source_noise: float) -> None:
    """Regress x0 on [x1, 1] per population: residual std = source_noise (within 10 %), the fitted
    map is near the identity, and a shuffled pairing leaves far larger residuals."""
    residuals, shuffled = [], []
    rng = np.random.default_rng(0)
    for p in make_letters("ABCS", 3, seed=1, source_noise=source_noise):
        x0, x1 = p["x0"].astype(float), p["x1"].astype(float)
        design = np.column_stack([x1, np.ones(len(x1))])
        coef, *_ = np.linalg.lstsq(design, x0, rcond=None)
        residuals.append(x0 - design @ coef)
        assert np.abs(coef[:2].T - np.eye(2)).max() < 1.0
        perm = rng.permutation(len(x1))
        coef_s, *_ = np.linalg.lstsq(design[perm], x0, rcond=None)
        shuffled.append(x0 - design[perm] @ coef_s)
    dof = sum(2 * (len(r) - 3) for r in residuals)
    std = math.sqrt(sum((r ** 2).sum() for r in residuals) / dof)
    assert std == pytest.approx(source_noise, rel=0.1)
    assert math.sqrt(sum((r ** 2).sum() for r in shuffled) / dof) > 2 * std


def test_targets_of_one_letter_differ_by_their_rotation() -> None:
    a, b = make_letters("K", 2, seed=5, noise=0.0)
    x1a, x1b = a["x1"].astype(float), b["x1"].astype(float)
    for p in (a, b):                                   # rotated back, the points fill the glyph
        assert _lit("K", _rotate(p["x1"].astype(float), -p["rotation"])).mean() >= 0.99
    turn = b["rotation"] - a["rotation"]
    aligned = _w2_squared(_rotate(x1a, turn), x1b)
    assert aligned < 0.3                              # two samples of ~380 points: ~0.1-0.25
    others = [_w2_squared(_rotate(x1a, turn + k * math.pi / 6), x1b) for k in range(1, 12)]
    assert min(others) > 2 * aligned


def test_split_letters_and_bad_inputs() -> None:
    train, test = split_letters("YX")
    assert test == "XY" and len(train) == 24 and not set(train) & set(test)
    for bad in ["", "AA", "a", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]:
        with pytest.raises(ValueError, match="held_out"):
            split_letters(bad)
    with pytest.raises(ValueError, match="letter"):
        make_letters("Ab", 1, seed=0)
    with pytest.raises(ValueError, match="n_rotations"):
        make_letters("A", 0, seed=0)
    with pytest.raises(ValueError, match="font"):
        glyph_polygons("A", font="No Such Font 123")


# ---------------------------------------------------------------------------------------- patients

@pytest.fixture(scope="module")
def patients() -> list[dict]:
    return make_patients()


def _shifts(records: list[dict], treatment: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Under one treatment: mean shifts (P, d), their sampling variances (P,), compositions (P, K)."""
    rows = [r for r in records if r["treatment"] == treatment]
    shift = np.array([r["x1"].mean(0) - r["x0"].mean(0) for r in rows], float)
    var = np.array([r["x1"].var(0).sum() / len(r["x1"]) + r["x0"].var(0).sum() / len(r["x0"]) for r in rows])
    return shift, var, np.array([r["composition"] for r in rows], float)


def test_patients_layout_and_sizes(patients: list[dict]) -> None:
    assert len(patients) == 12 * 3 * 6
    assert [(r["patient"], r["replicate"], r["treatment"]) for r in patients[:7]] == \
        [(0, 0, t) for t in range(6)] + [(0, 1, 0)]
    sizes = [len(r[k]) for r in patients for k in ("x0", "x1")]
    assert min(sizes) >= 200 and max(sizes) <= 400 and len(set(sizes)) > 50
    for r in patients:
        assert r["x0"].dtype == r["x1"].dtype == r["composition"].dtype == np.float32
        assert r["x0"].shape[1] == r["x1"].shape[1] == 10 and r["composition"].shape == (4,)
        assert r["composition"].sum() == pytest.approx(1.0, abs=1e-5) and r["composition"].min() >= 0
    first = patients[:6]                               # one control per (patient, replicate)
    assert all(np.array_equal(r["x0"], first[0]["x0"]) for r in first)
    assert len({len(r["x1"]) for r in first}) > 1       # fresh treated draws per treatment


def test_patients_are_deterministic_by_seed() -> None:
    kwargs = dict(n_patients=3, n_replicates=2, n_treatments=2, dim=5)
    a, b = make_patients(seed=7, **kwargs), make_patients(seed=7, **kwargs)
    for r, s in zip(a, b):
        for key in ("x0", "x1", "composition"):
            np.testing.assert_array_equal(r[key], s[key])
    assert not np.array_equal(a[0]["x1"], make_patients(seed=8, **kwargs)[0]["x1"])
    fewer = make_patients(seed=7, **{**kwargs, "n_patients": 2})   # a patient ignores the others
    np.testing.assert_array_equal(fewer[-1]["x1"], a[len(fewer) - 1]["x1"])


@pytest.mark.parametrize("treatment", range(6))
def test_mean_shift_varies_across_populations(patients: list[dict], treatment: int) -> None:
    norms = np.linalg.norm(_shifts(patients, treatment)[0], axis=1)
    assert norms.std() > 0.3 * norms.mean()


def test_response_depends_on_composition(patients: list[dict]) -> None:
    """Under each treatment, the two populations with the most different compositions have mean
    shifts far apart relative to their sampling error."""
    for treatment in range(6):
        shift, var, pi = _shifts(patients, treatment)
        dist = np.abs(pi[:, None] - pi[None]).sum(-1)
        i, j = np.unravel_index(dist.argmax(), dist.shape)
        assert np.sum((shift[i] - shift[j]) ** 2) > 10 * (var[i] + var[j])


@pytest.fixture(scope="module")
def many_patients() -> list[dict]:
    """40 patients x 2 replicates x 3 treatments: compositions dense enough to compare neighbours."""
    return make_patients(n_patients=40, n_replicates=2, n_treatments=3, seed=1)


@pytest.mark.parametrize("treatment", range(3))
def test_response_is_predicted_by_composition_not_patient(many_patients: list[dict], treatment: int) -> None:
    """A population's mean shift is much closer to that of the other patient's population with
    the nearest composition than to a random population's."""
    shift, _, pi = _shifts(many_patients, treatment)
    patient = np.array([r["patient"] for r in many_patients if r["treatment"] == treatment])
    dist = np.abs(pi[:, None] - pi[None]).sum(-1)
    dist[patient[:, None] == patient[None]] = np.inf
    gap = np.linalg.norm(shift[:, None] - shift[None], axis=-1)
    nearest = gap[np.arange(len(gap)), dist.argmin(axis=1)]
    assert nearest.mean() < 0.6 * gap[np.triu_indices(len(gap), 1)].mean()


@pytest.mark.parametrize("treatment", range(3))
def test_cell_response_depends_on_composition(many_patients: list[dict], treatment: int) -> None:
    """If a cell's move depended on its type only, the mean shift would be linear in the
    composition (sum_k pi_k Delta_k): the least-squares residual of shift ~ pi would then be
    sampling noise (ratio ~ 1 +- 0.05 over 80 x 10 values). It is well above."""
    shift, var, pi = _shifts(many_patients, treatment)
    coef, *_ = np.linalg.lstsq(pi, shift, rcond=None)
    residual = ((shift - pi @ coef) ** 2).sum()
    assert residual > 1.5 * var.sum() * (1 - pi.shape[1] / len(pi))


@pytest.mark.parametrize("treatment", range(6))
def test_treated_population_is_not_a_translate(patients: list[dict], treatment: int) -> None:
    """A translate keeps the covariance: for the population with the largest mean shift, the
    covariance of treated cells differs from the control's far more than two halves of the control
    differ (equal subset sizes)."""
    shift = _shifts(patients, treatment)[0]
    r = [r for r in patients if r["treatment"] == treatment][int(np.linalg.norm(shift, axis=1).argmax())]
    half = len(r["x0"]) // 2
    control_a, control_b = np.cov(r["x0"][:half].T), np.cov(r["x0"][half:2 * half].T)
    treated = np.cov(r["x1"][:half].T)
    assert np.linalg.norm(treated - control_a) > 3 * np.linalg.norm(control_b - control_a)


def test_split_patients(patients: list[dict]) -> None:
    split = split_patients(patients)
    every = split["train"] + split["test_replicates"] + split["test_patients"]
    assert sorted(every) == list(range(len(patients)))
    assert {patients[i]["patient"] for i in split["test_patients"]} == {10, 11}
    assert all(patients[i]["patient"] not in (10, 11) and patients[i]["replicate"] != 2
               for i in split["train"])
    assert all(patients[i]["patient"] not in (10, 11) and patients[i]["replicate"] == 2
               for i in split["test_replicates"])
    assert len(split["train"]) == 10 * 2 * 6 and len(split["test_replicates"]) == 10 * 6
    with pytest.raises(ValueError, match="held_out_patients"):
        split_patients(patients, held_out_patients=(12,))
    with pytest.raises(ValueError, match="held_out_replicate"):
        split_patients(patients, held_out_replicate=3)
    with pytest.raises(ValueError, match="n_types"):
        make_patients(n_types=1)
    with pytest.raises(ValueError, match="max_cells"):
        make_patients(min_cells=300, max_cells=200)
