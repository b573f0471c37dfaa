"""Sample-quality metrics on features: the Fréchet distance of Gaussian fits, and improved
precision / recall of k-NN manifolds.

The features come from a network the caller chooses. On features of a small classifier
trained here this is a *Fréchet classifier distance*, not FID (FID means Inception-v3 features,
whose weights cannot be downloaded here): name it for what it is, and print the real-vs-real
floor next to it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import cdist


def _features(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"{name}: features must be (N, D) with N >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: features contain NaN or inf")
    return array


def gaussian_frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray,
                              cov_b: np.ndarray) -> float:
    """||m_a - m_b||² + Tr(C_a + C_b - 2 (C_a^½ C_b C_a^½)^½): the squared 2-Wasserstein distance
    between N(m_a, C_a) and N(m_b, C_b) (Dowson & Landau 1982). Means (D,), covariances (D, D)."""
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """The Fréchet distance between Gaussian fits (mean, unbiased covariance) of two feature
    sets (N_a, D) and (N_b, D). As in FID, it is the *squared* W2 of the fits."""
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def precision_recall(real: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray,
                     k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the fraction of
    generated features inside the real manifold (the union of balls around each real feature
    reaching its k-th nearest real neighbour), recall the fraction of real features inside the
    generated manifold. real (N, D), generated (M, D); k < min(N, M)."""
    r, g = _features(real, "real"), _features(generated, "generated")
    if not 1 <= k < min(len(r), len(g)):
        raise ValueError(f"k must be in [1, {min(len(r), len(g)) - 1}], got {k}")

    def inside(points: np.ndarray, centres: np.ndarray) -> float:
        radii = np.partition(cdist(centres, centres), k, axis=1)[:, k]  # column 0: the centre itself
        return float((cdist(points, centres) <= radii[None]).any(axis=1).mean())

    return {"precision": inside(g, r), "recall": inside(r, g)}
