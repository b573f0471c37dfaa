"""Synthetic "letters" populations (Meta Flow Matching, letters experiment, reduced to CPU scale).

A population is a point cloud filling a bold capital letter, normalised so the glyph's bounding box
fits [-3, 3]^2 (aspect ratio kept, box centred at 0). For a letter L and rotation angle theta:

    target   x1_j = R(theta) (p_j + noise * e_j),          p_j ~ Uniform(glyph L),  e_j ~ N(0, I_2)
    source   x0_j = A x1_j + b + source_noise * e'_j,      e'_j ~ N(0, I_2)
    A = I + distortion * G,  G_ab ~ N(0, 1/2),  b ~ N(0, distortion^2 I_2)

so source and target share their size and index j (a natural pairing). The number of points is
proportional to the glyph's area (clipped to [min_points, max_points]), so sizes vary by letter.
Holes (A, B, D, O, P, Q, R) are honoured with the even-odd rule over the glyph's outlines.
"""

from __future__ import annotations

import functools
import math
import string

import numpy as np
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.path import Path
from matplotlib.textpath import TextPath

HALF_WIDTH = 3.0                    # normalised glyphs fit [-HALF_WIDTH, HALF_WIDTH]^2
ALPHABET = string.ascii_uppercase
LETTER_SPLIT_DEFAULT = "XY"         # held-out letters of the default split
_GLYPH_SIZE = 1000.0                # TextPath size: large, so Bezier curves are flattened finely
_AREA_GRID = 400                    # grid points per side of the bounding box for the area estimate


def _check_letter(letter: str) -> None:
    if not (isinstance(letter, str) and len(letter) == 1 and letter in ALPHABET):
        raise ValueError(f"letter must be one capital letter A-Z, got {letter!r}")


@functools.cache
def _glyph(letter: str, font: str) -> tuple[tuple[np.ndarray, ...], tuple[float, float], float]:
    """Normalised outlines, bounding-box half sizes (hx, hy) and even-odd area of one glyph."""
    _check_letter(letter)
    prop = FontProperties(family=font, weight="bold")
    try:
        findfont(prop, fallback_to_default=False)
    except ValueError as err:
        raise ValueError(f"font {font!r} is not available to matplotlib ({err})") from None
    polygons = TextPath((0.0, 0.0), letter, size=_GLYPH_SIZE, prop=prop).to_polygons()
    stacked = np.concatenate(polygons)
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)
    scale = 2.0 * HALF_WIDTH / float((hi - lo).max())
    normalised = tuple((p - (lo + hi) / 2) * scale for p in polygons)
    hx, hy = (hi - lo) * scale / 2
    g = (np.arange(_AREA_GRID) + 0.5) / _AREA_GRID
    gx, gy = np.meshgrid((2 * g - 1) * hx, (2 * g - 1) * hy)
    inside = _even_odd(normalised, np.column_stack([gx.ravel(), gy.ravel()]))
    return normalised, (float(hx), float(hy)), float(inside.mean() * 4 * hx * hy)


def _even_odd(polygons: tuple[np.ndarray, ...], points: np.ndarray) -> np.ndarray:
    """Even-odd rule: inside where an odd number of outlines contain the point. points: (n, 2)."""
    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        inside ^= Path(polygon).contains_points(points)
    return inside


def glyph_polygons(letter: str, font: str = "DejaVu Sans") -> list[np.ndarray]:
    """Closed outlines (each (m, 2), first vertex repeated last) of the bold capital `letter`,
    normalised so the glyph's bounding box fits [-3, 3]^2, centred at 0, aspect ratio kept."""
    return [p.copy() for p in _glyph(letter, font)[0]]


def glyph_area(letter: str, font: str = "DejaVu Sans") -> float:
    """Area of the normalised glyph (holes excluded), from a 400 x 400 grid of its bounding box."""
    return _glyph(letter, font)[2]


def sample_inside(letter: str, n: int, rng: np.random.Generator, font: str = "DejaVu Sans") -> np.ndarray:
    """n points uniform inside the normalised glyph (holes empty), by rejection in its bounding
    box. Returns (n, 2) float64."""
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    polygons, (hx, hy), area = _glyph(letter, font)
    accept = area / (4 * hx * hy)
    points = np.empty((0, 2))
    while len(points) < n:
        m = int(math.ceil(1.2 * (n - len(points)) / accept)) + 16
        candidates = rng.uniform((-hx, -hy), (hx, hy), size=(m, 2))
        points = np.concatenate([points, candidates[_even_odd(polygons, candidates)]])
    return points[:n]


def split_letters(held_out: str = LETTER_SPLIT_DEFAULT) -> tuple[str, str]:
    """(train letters, test letters): the alphabet A-Z without `held_out`, and `held_out` sorted."""
    if not held_out or len(set(held_out)) != len(held_out) or not set(held_out) < set(ALPHABET):
        raise ValueError(f"held_out must be distinct capital letters A-Z, not all of them, got {held_out!r}")
    return "".join(c for c in ALPHABET if c not in held_out), "".join(sorted(held_out))


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def make_letters(letters: str, n_rotations: int, seed: int, points_per_unit_area: float = 19.0,
                 min_points: int = 100, max_points: int = 500, noise: float = 0.05,
                 source_noise: float = 0.5, distortion: float = 0.3) -> list[dict]:
    """One population per (letter, rotation), letters in the given order, rotations inner.

    Each dict: {"letter": str, "rotation": float in [0, 2 pi), "x0": float32 (n, 2) source,
    "x1": float32 (n, 2) target}, x0[j] paired with x1[j]. The default density gives 146-442
    points per population. Population (letter, k) is drawn from
    np.random.default_rng([seed, ord(letter), k]): it does not depend on the other letters asked for.
    """
    if not letters:
        raise ValueError("letters must name at least one capital letter A-Z, got ''")
    for letter in letters:
        _check_letter(letter)
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(n_rotations, (int, np.integer)) and n_rotations >= 1):
        raise ValueError(f"n_rotations must be an integer >= 1, got {n_rotations!r}")
    if not 1 <= min_points <= max_points:
        raise ValueError(f"need 1 <= min_points <= max_points, got min_points={min_points}, "
                         f"max_points={max_points}")
    for name, value in [("points_per_unit_area", points_per_unit_area), ("noise", noise),
                        ("source_noise", source_noise), ("distortion", distortion)]:
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    populations = []
    for letter in letters:
        n = int(np.clip(round(points_per_unit_area * glyph_area(letter)), min_points, max_points))
        for k in range(n_rotations):
            rng = np.random.default_rng([seed, ord(letter), k])
            theta = float(rng.uniform(0.0, 2 * math.pi))
            clean = sample_inside(letter, n, rng) + noise * rng.standard_normal((n, 2))
            x1 = clean @ _rotation(theta).T
            a = np.eye(2) + distortion * rng.standard_normal((2, 2)) / math.sqrt(2)
            b = distortion * rng.standard_normal(2)
            x0 = x1 @ a.T + b + source_noise * rng.standard_normal((n, 2))
            populations.append({"letter": letter, "rotation": theta,
                                 "x0": x0.astype(np.float32), "x1": x1.astype(np.float32)})
    return populations
