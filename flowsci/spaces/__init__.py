"""State spaces (see :mod:`flowsci.spaces.base` for the contract)."""

from flowsci.spaces.base import Space
from flowsci.spaces.euclidean import Euclidean
from flowsci.spaces.igso3 import IGSO3
from flowsci.spaces.population import PopulationSpace
from flowsci.spaces.product import Power, Product
from flowsci.spaces.se3 import SE3N
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion
from flowsci.spaces.sphere import Sphere
from flowsci.spaces.torus import FlatTorus

__all__ = ["IGSO3", "SE3N", "Euclidean", "FlatTorus", "PopulationSpace", "Power", "Product", "SO3Matrix",
           "SO3Quaternion", "Space", "Sphere"]
