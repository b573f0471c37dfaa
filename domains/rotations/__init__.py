"""rotations: flow matching on SO(3) (a density benchmark) and on SE(3)^N (protein backbone frames)."""

from flowsci_domains.rotations.backbone_domain import Backbones
from flowsci_domains.rotations.density_domain import Rotations

__all__ = ["Backbones", "Rotations"]
