"""Kinetic closures of an active suspension: homogeneous orientation solvers and closure models."""

from flowsci_domains.kinetic import learned  # registers learned2d / learned3d in closures.CLOSURES

__all__ = ["learned"]
