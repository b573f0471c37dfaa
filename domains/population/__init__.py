"""population: Meta Flow Matching over pairs of populations (letters; patients x treatments), and
a generative flow on population space (letter point clouds)."""

from flowsci_domains.population.cloud_domain import LetterClouds
from flowsci_domains.population.domain import Population

__all__ = ["LetterClouds", "Population"]
