"""The continuous model of Janny et al. (ICLR 2024): System 1 (GNN anchors from the state at frame 0 on
the observed nodes) and System 2 (the observer, phi at any (x, y, tau)).

Values enter normalised by (v - mean) / std and leave de-normalised: every output is in physical units.
"""

from __future__ import annotations

import torch
from torch import nn

from flowsci_domains.sparse_flow.gnn import System1, check_normalisation
from flowsci_domains.sparse_flow.observer import Observer


class ContinuousObserverModel(nn.Module):
    """System 1 + System 2.

    forward(values (B, N), positions (N, 2), edge_index (2, E), anchor_times (K,), queries (B, Q, 3))
    -> (prediction (B, Q) at the queries, forecast (B, K, N) at the nodes at the anchor times).
    For chunked evaluation: anchors(...) once, then forecast(anchors) and observe(anchors, ...) per chunk.
    """

    def __init__(self, latent: int = 64, gnn_density: int = 2, heads: int = 4, max_frequency: int = 6,
                 time_frequencies: int = 8, gru_layers: int = 2, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        check_normalisation(mean, std)
        self.system1 = System1(latent, gnn_density)
        self.observer = Observer(latent, heads, max_frequency, time_frequencies, gru_layers)
        self.mean, self.std = float(mean), float(std)

    def anchors(self, values: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor,
                n_anchors: int) -> torch.Tensor:
        """values (B, N) physical -> anchors (B, K, N, latent), K = n_anchors."""
        return self.system1.anchors((values - self.mean) / self.std, positions, edge_index, n_anchors)

    def forecast(self, anchors: torch.Tensor) -> torch.Tensor:
        """anchors (B, K, N, latent) -> phi at the nodes at the anchor times (B, K, N), physical."""
        return self.mean + self.std * self.system1.forecast(anchors)

    def observe(self, anchors: torch.Tensor, positions: torch.Tensor, anchor_times: torch.Tensor,
                queries: torch.Tensor) -> torch.Tensor:
        """anchors (B, K, N, latent), positions (N, 2), anchor_times (K,) in tau units,
        queries (B, Q, 3) = (x, y, tau) -> phi (B, Q), physical."""
        return self.mean + self.std * self.observer(anchors, positions, anchor_times, queries)

    def forward(self, values: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor,
                anchor_times: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if anchor_times.dim() != 1 or anchor_times.numel() < 1:
            raise ValueError(f"anchor_times must have shape (K,) with K >= 1, got "
                             f"{tuple(anchor_times.shape)}")
        anchors = self.anchors(values, positions, edge_index, anchor_times.numel())
        return self.observe(anchors, positions, anchor_times, queries), self.forecast(anchors)
