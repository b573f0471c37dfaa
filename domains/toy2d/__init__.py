"""toy2d: flow matching between 2-D distributions (the spine's end-to-end domain)."""

from flowsci_domains.toy2d.domain import Toy2D

__all__ = ["Toy2D"]
