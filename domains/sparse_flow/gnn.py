"""System 1 of Janny et al. (ICLR 2024): a message-passing GNN on the observation graph, and the
autoregressive GNN baseline built from the same blocks.

System 1 encodes the state at frame 0 on the observed nodes, then applies one shared stack of
``gnn_density`` graph layers recurrently: z_0 = Stack(Encode(phi_0)), z_{k+1} = Stack(z_k). The layers
are residual, so each application is z_k plus an update. The anchors z_0 ... z_{K-1} are the latent
states at the anchor times; a head decodes each anchor to phi at the nodes (the forecast).

Aggregation is the sum ("add", as in MeshGraphNets): the Delaunay degree is small and bounded on average
(< 6), and the sum keeps the degree visible to the node update (hull nodes have fewer neighbours); the
LayerNorm that ends each processor MLP keeps the updates' scale in check.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.nn import MessagePassing


class MLP(nn.Sequential):
    """Linear-SiLU-...-Linear with ``depth`` Linear layers, optionally a LayerNorm at the end.
    (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, depth: int = 2,
                 layer_norm: bool = False):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        for k in range(depth):
            last = k == depth - 1
            layers.append(nn.Linear(in_features if k == 0 else hidden, out_features if last else hidden))
            if not last:
                layers.append(nn.SiLU())
        if layer_norm:
            layers.append(nn.LayerNorm(out_features))
        super().__init__(*layers)


class GraphLayer(MessagePassing):
    """One residual graph-network layer on node features h and edge features e.

    e' = e + MLP([h_s, h_r, e]) on each edge (s -> r); h' = h + MLP([h, sum of the incoming e']).
    h: (B, N, F) or (N, F); e: (E, F) (broadcast over the batch) or (B, E, F) / (E, F) matching h;
    edge_index (2, E) long, shared by the batch -> (h' like h, e' (B, E, F) or (E, F)).
    """

    def __init__(self, features: int):
        super().__init__(aggr="add", node_dim=-2)
        self.edge_mlp = MLP(3 * features, features, features, layer_norm=True)
        self.node_mlp = MLP(2 * features, features, features, layer_norm=True)

    def forward(self, h: torch.Tensor, e: torch.Tensor,
                edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = e.expand(*h.shape[:-2], *e.shape[-2:])
        e = e + self.edge_updater(edge_index, h=h, e=e)
        incoming = self.propagate(edge_index, h=h, e=e)
        return h + self.node_mlp(torch.cat([h, incoming], dim=-1)), e

    def edge_update(self, h_j: torch.Tensor, h_i: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # flow source_to_target: j = edge_index[0] (sender), i = edge_index[1] (receiver)
        return self.edge_mlp(torch.cat([h_j, h_i, e], dim=-1))

    def message(self, e: torch.Tensor) -> torch.Tensor:
        return e


def check_graph_inputs(values: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor) -> None:
    """Validate values (B, N) float, positions (N, 2) float, edge_index (2, E) long in [0, N)."""
    if values.dim() != 2 or not values.is_floating_point():
        raise ValueError(f"values must be a float tensor of shape (B, N), got shape {tuple(values.shape)} "
                         f"and dtype {values.dtype}")
    n = values.shape[1]
    if tuple(positions.shape) != (n, 2) or not positions.is_floating_point():
        raise ValueError(f"positions must be a float tensor of shape (N, 2) = ({n}, 2), got shape "
                         f"{tuple(positions.shape)} and dtype {positions.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise ValueError(f"edge_index must be a long tensor of shape (2, E), got shape "
                         f"{tuple(edge_index.shape)} and dtype {edge_index.dtype}")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n):
        raise ValueError(f"edge_index entries must lie in [0, N) = [0, {n}), got "
                         f"[{edge_index.min().item()}, {edge_index.max().item()}]")


class System1(nn.Module):
    """Encoder, a shared stack of ``gnn_density`` GraphLayers, and a decoder head, in normalised units.

    Node input [phi, x, y]; edge input [x_s, y_s, x_r, y_r, |p_s - p_r|^2].
    """

    def __init__(self, latent: int = 64, gnn_density: int = 2):
        super().__init__()
        if latent < 1 or gnn_density < 1:
            raise ValueError(f"latent and gnn_density must be >= 1, got latent={latent}, "
                             f"gnn_density={gnn_density}")
        self.node_encoder = MLP(3, latent, latent, layer_norm=True)
        self.edge_encoder = MLP(5, latent, latent, layer_norm=True)
        self.stack = nn.ModuleList(GraphLayer(latent) for _ in range(gnn_density))
        self.decoder = MLP(latent, latent, 1)

    def encode(self, values: torch.Tensor, positions: torch.Tensor,
               edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """values (B, N) normalised, positions (N, 2), edge_index (2, E) -> h (B, N, L), e (E, L)."""
        check_graph_inputs(values, positions, edge_index)
        positions = positions.to(values.dtype)
        nodes = torch.cat([values.unsqueeze(-1), positions.expand(values.shape[0], -1, -1)], dim=-1)
        sender, receiver = positions[edge_index[0]], positions[edge_index[1]]
        distance2 = (sender - receiver).square().sum(-1, keepdim=True)
        return self.node_encoder(nodes), self.edge_encoder(torch.cat([sender, receiver, distance2], dim=-1))

    def process(self, h: torch.Tensor, e: torch.Tensor,
                edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the stack: h (B, N, L), e (E, L) or (B, E, L) -> (h (B, N, L), e (B, E, L))."""
        for layer in self.stack:
            h, e = layer(h, e, edge_index)
        return h, e

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., N, L) -> phi (..., N), normalised."""
        return self.decoder(h).squeeze(-1)

    def anchors(self, values: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor,
                n_anchors: int) -> torch.Tensor:
        """values (B, N) normalised -> anchors (B, K, N, L), K = n_anchors: z_0 = Stack(Encode(values)),
        z_{k+1} = Stack(z_k) (node and edge states carried along)."""
        if n_anchors < 1:
            raise ValueError(f"n_anchors must be >= 1, got {n_anchors}")
        h, e = self.encode(values, positions, edge_index)
        states = []
        for _ in range(n_anchors):
            h, e = self.process(h, e, edge_index)
            states.append(h)
        return torch.stack(states, dim=1)

    def forecast(self, anchors: torch.Tensor) -> torch.Tensor:
        """anchors (B, K, N, L) -> phi at the nodes at the anchor times (B, K, N), normalised."""
        return self.decode(anchors)


def check_normalisation(mean: float, std: float) -> None:
    """Validate the value normalisation (v - mean) / std."""
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"mean must be finite and std finite and > 0, got mean={mean}, std={std}")


class AutoregressiveGNN(nn.Module):
    """Autoregressive baseline: next = values + std * decode(Stack(Encode((values - mean) / std))),
    the System-1 blocks applied once per step (a residual step in normalised units)."""

    def __init__(self, latent: int = 64, gnn_density: int = 2, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        check_normalisation(mean, std)
        self.system1 = System1(latent, gnn_density)
        self.mean, self.std = float(mean), float(std)

    def forward(self, values: torch.Tensor, positions: torch.Tensor,
                edge_index: torch.Tensor) -> torch.Tensor:
        """values (B, N), positions (N, 2), edge_index (2, E) -> next values (B, N), physical units."""
        h, e = self.system1.encode((values - self.mean) / self.std, positions, edge_index)
        h, _ = self.system1.process(h, e, edge_index)
        return values + self.std * self.system1.decode(h)

    def rollout(self, values: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor,
                steps: int) -> torch.Tensor:
        """values (B, N) -> (B, steps + 1, N): the initial state, then ``steps`` applications of forward."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        states = [values]
        for _ in range(steps):
            states.append(self(states[-1], positions, edge_index))
        return torch.stack(states, dim=1)
