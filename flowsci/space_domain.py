"""Defaults for a domain whose samples live on a :class:`~flowsci.spaces.Space`.

Such a domain says which space (``space(cfg)``); the source (the space's base distribution),
the flow-matching objective and the sampler then all get that space, so the geodesic path,
the geodesic OT cost and the manifold solvers apply without further code.
"""

from __future__ import annotations

from abc import abstractmethod

from flowsci.config import Config
from flowsci.flow_matching import FlowMatching, Sampler
from flowsci.plugins import DomainBase
from flowsci.sources import SpaceBase
from flowsci.spaces import Space


class SpaceDomainBase(DomainBase):
    """A domain on a space: subclasses implement ``space(cfg)`` (and data, evaluation)."""

    @abstractmethod
    def space(self, cfg: Config) -> Space:
        """The state space of this configuration."""

    def source(self, cfg: Config) -> SpaceBase:
        """The space's base distribution (t = 0)."""
        return SpaceBase(self.space(cfg))

    def build_objective(self, cfg: Config) -> FlowMatching:
        return FlowMatching.from_config(cfg.objective, source=self.source(cfg), space=self.space(cfg))

    def sampler(self, cfg: Config) -> Sampler:
        return Sampler.from_config(cfg.sample, space=self.space(cfg))
