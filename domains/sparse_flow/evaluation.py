"""Full-grid reconstructions of test trajectories and the paper's four errors.

Every model is judged on the whole n × n grid at every frame, split In/Out of the observed
frames × In/Out of the observed points (``mse_in_t_in_s``, ``mse_in_t_out_s``, ``mse_out_t_in_s``,
``mse_out_t_out_s``), plus the anchor forecast error on the observed nodes.
"""

from __future__ import annotations

import torch
from torch import nn

from flowsci_domains.sparse_flow.graph import delaunay_graph
from flowsci_domains.sparse_flow.interpolation import interpolate_trajectories
from flowsci_domains.sparse_flow.objectives import Observation
from flowsci_domains.sparse_flow.observations import error_splits, grid_positions, split_mse

OUT_SPLITS = ("mse_in_t_out_s", "mse_out_t_in_s", "mse_out_t_out_s")


@torch.no_grad()
def observer_fields(model: nn.Module, initial: torch.Tensor, obs: Observation, n: int,
                    chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The continuous model's fields on the full grid at every frame.

    initial: (B, N) values at the observed points at frame 0. Returns the fields (B, T, n * n)
    and the anchor forecasts (B, K, N). Queries run in chunks of ``chunk`` points per trajectory.
    """
    edges, _ = delaunay_graph(obs.positions)
    anchors = model.anchors(initial, obs.positions, edges, len(obs.anchor_frames))
    grid = grid_positions(n)
    taus = torch.arange(obs.n_frames, dtype=torch.float32) / (obs.n_frames - 1)
    queries = torch.cat([grid.repeat(obs.n_frames, 1), taus.repeat_interleave(n * n).unsqueeze(-1)], dim=-1)
    batch = initial.shape[0]
    fields = torch.cat([model.observe(anchors, obs.positions, obs.anchor_times,
                                      part.unsqueeze(0).expand(batch, -1, -1))
                        for part in queries.split(chunk)], dim=1)
    return fields.view(batch, obs.n_frames, n * n), model.forecast(anchors)


@torch.no_grad()
def rollout_fields(model: nn.Module, initial: torch.Tensor, obs: Observation, n: int,
                   method: str = "cubic") -> tuple[torch.Tensor, torch.Tensor]:
    """The interpolation baseline: the autoregressive GNN rolled out on the observed nodes over
    the observed frames, then interpolated (``method`` in space, linear in time).

    initial: (B, N). Returns the fields (B, T, n * n) and the rollout (B, F, N)."""
    edges, _ = delaunay_graph(obs.positions)
    rolled = model.rollout(initial, obs.positions, edges, len(obs.frames) - 1)
    fields = interpolate_trajectories(rolled, obs.positions, obs.frames, n, obs.n_frames, method=method)
    return fields.flatten(2).to(initial.dtype), rolled


def truth_interpolation(trajectories: torch.Tensor, obs: Observation, n: int,
                        method: str = "cubic") -> torch.Tensor:
    """The true sparse observations (every observed frame) interpolated to the grid, (B, T, n * n):
    what interpolation alone gives with a perfect forecast."""
    fields = interpolate_trajectories(obs.on_sparse_set(trajectories), obs.positions, obs.frames, n,
                                      obs.n_frames, method=method)
    return fields.flatten(2).to(trajectories.dtype)


def field_errors(fields: torch.Tensor, trajectories: torch.Tensor, obs: Observation, n: int,
                 prefix: str = "") -> dict[str, float]:
    """The four In/Out MSEs of ``fields`` against ``trajectories`` (both (B, T, n * n)), their
    ratios to the In/In error (``ratio_*``, worst: ``worst_out_ratio``), and the relative L2 error
    over the whole grid; keys prefixed with ``prefix``."""
    masks = error_splits(n, obs.n_frames, obs.observed, obs.frames)
    metrics = split_mse(fields, trajectories, masks)
    inside = metrics["mse_in_t_in_s"]
    if inside > 0:  # interpolated true observations are exact on the sparse set: no ratio
        ratios = {key.replace("mse_", "ratio_"): metrics[key] / inside
                  for key in OUT_SPLITS if key in metrics}
        metrics.update(ratios, worst_out_ratio=max(ratios.values()))
    metrics["rel_l2"] = float((fields - trajectories).norm() / trajectories.norm())
    return {prefix + key: value for key, value in metrics.items()}


def forecast_error(forecast: torch.Tensor, trajectories: torch.Tensor, obs: Observation) -> float:
    """MSE of forecasts (B, K', N) on the observed nodes at the K' anchor frames inside the
    trajectory, against (B, T, n * n)."""
    truth = trajectories[:, obs.frames[obs.anchor_slots]][:, :, obs.observed]
    return float((forecast - truth).square().mean())
