"""The velocity network of the SO(3) density benchmark: an MLP with a tangent projection."""

from __future__ import annotations

import torch
from torch import nn

from flowsci.nn.embeddings import SinusoidalTimeEmbedding
from flowsci.spaces.rotations import quat_to_matrix
from flowsci.spaces.so3 import SO3Matrix

CHARTS = ("matrix", "quaternion")


class SO3VelocityMLP(nn.Module):
    """v(x, t): x (B, 3, 3) rotation matrices or (B, 4) unit quaternions, t (B,) -> (B, 3)
    body-frame angular velocities.

    The input is read as the rotation matrix R whatever the chart (q and -q give the same R,
    so the field is well defined on quaternions), an MLP on [vec(R), embed(t)] gives an ambient
    3x3 matrix M, and its orthogonal projection onto the tangent space at R, vee(skew(R^T M))
    (FoldFlow's R skew(M) written in the body frame), is the output.
    """

    def __init__(self, chart: str = "matrix", width: int = 256, depth: int = 4, time_dim: int = 32):
        super().__init__()
        if chart not in CHARTS:
            raise ValueError(f"chart must be one of {', '.join(CHARTS)}, got {chart!r}")
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        self.chart = chart
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = []
        features = 9 + time_dim
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.SiLU()]
            features = width
        layers.append(nn.Linear(features, 9))
        self.net = nn.Sequential(*layers)
        self._so3 = SO3Matrix()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rotation = quat_to_matrix(x) if self.chart == "quaternion" else x
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        h = torch.cat([rotation.flatten(1), self.time_embedding(t).to(x.dtype)], dim=-1)
        ambient = self.net(h).reshape(-1, 3, 3)
        return self._so3.proj_tangent(rotation, ambient)
