"""Populations: sets of points in R^d (empirical measures), batched with padding.

A batch of populations is ``points (B, N, d)`` with ``mask (B, N)`` bool (True = a real
point; None = all real). Padding may sit anywhere along N and never changes a result.

- :mod:`~flowsci.population.batch`: padding, unpadding, masked means, padding-invariant sampling;
- :mod:`~flowsci.population.matching`: OT plans, optimal assignments, matched populations and
  McCann displacement interpolation;
- :mod:`~flowsci.population.distances`: W_p, RBF MMD, energy distance and the
  feature-correlation r between populations.
"""

from flowsci.population.batch import (
    gather_points,
    masked_mean,
    pad_populations,
    population_sizes,
    sample_indices,
    unpad,
)
from flowsci.population.distances import (
    MFM_GAMMAS,
    feature_correlation_r,
    population_energy_distance,
    population_mmd,
    population_wasserstein,
)
from flowsci.population.matching import (
    assignment,
    barycentric_targets,
    match_populations,
    mccann_interpolation,
    ot_plan,
)

__all__ = ["MFM_GAMMAS", "assignment", "barycentric_targets", "feature_correlation_r", "gather_points",
           "masked_mean", "match_populations", "mccann_interpolation", "ot_plan", "pad_populations",
           "population_energy_distance", "population_mmd", "population_sizes", "population_wasserstein",
           "sample_indices", "unpad"]
