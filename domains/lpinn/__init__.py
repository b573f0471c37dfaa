"""Lagrangian PINNs (Mojgani, Balajewicz, Hassanzadeh) against Eulerian PINNs."""

from flowsci_domains.lpinn.domain import LPINN

__all__ = ["LPINN"]
