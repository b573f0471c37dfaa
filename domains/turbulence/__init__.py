"""turbulence: filtered 2-D Kolmogorov-flow DNS from a pseudo-spectral solver, and what steps it
forward on the coarse grid: classical solvers (no closure, Smagorinsky, Leith, finer grids), the
solver-in-the-loop hybrid, and one-step surrogates (IFactFormer-m/-o, FNO, IFNO; deterministic or
flow matching)."""

from flowsci_domains.turbulence.domain import Turbulence

__all__ = ["Turbulence"]
