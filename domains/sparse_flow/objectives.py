"""Training objectives of the sparse-observation models.

:class:`ObserverObjective` trains the continuous model (System 1 + System 2, Janny et al. 2024):
the MSE at query points drawn with probability proportional to a running per-point error
(scheduled query sampling), plus ``forecast_weight`` × the MSE of the anchor forecasts on the
observed nodes, with random node dropout on System 1's input. The input is always the initial
state on the observed points; queries come from the observed frames only, at every grid point
(``supervision: full``, the paper's set-up: dense simulations supervise training) or at the
observed points only (``supervision: observed``: no value off the sparse set is ever seen).

:class:`RolloutObjective` trains the autoregressive GNN baseline on the observed nodes: the MSE
of its rollout from frame 0 over every observed frame (backpropagation through the rollout).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from flowsci.flow_matching import FlowMatchingConfig
from flowsci_domains.sparse_flow.graph import delaunay_graph
from flowsci_domains.sparse_flow.observations import grid_positions


@dataclasses.dataclass
class SparseFlowObjective(FlowMatchingConfig):
    """YAML ``objective:``. ``kind: observer`` trains ``sparse_observer`` (queries + forecasts);
    ``kind: rollout`` trains ``sparse_autoregressive`` on rollouts over the observed frames;
    ``kind: flow`` trains a conditional flow on full fields (the engine's keys: path, timesteps,
    coupling, loss; :mod:`~flowsci_domains.sparse_flow.flow_ensemble`)."""

    kind: Literal["observer", "rollout", "flow"] = "observer"
    supervision: Literal["full", "observed"] = "full"   # where the observer's queries are drawn
    queries: int = 256               # query points per trajectory and step
    forecast_weight: float = 1.0     # weight of the anchor forecast loss
    node_keep: float = 0.75          # fraction of observed nodes fed to System 1 per step
    error_floor: float = 0.05        # sampling weight = running error + floor × its mean

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise ValueError(f"queries must be >= 1, got {self.queries}")
        if self.forecast_weight < 0:
            raise ValueError(f"forecast_weight must be >= 0, got {self.forecast_weight}")
        if not 0 < self.node_keep <= 1:
            raise ValueError(f"node_keep must be in (0, 1], got {self.node_keep}")
        if self.error_floor <= 0:
            raise ValueError(f"error_floor must be > 0 (every point keeps a chance), got {self.error_floor}")


@dataclasses.dataclass
class Observation:
    """What the objectives and the evaluation share about the sparse set.

    observed: (N,) flat indices of the observed grid points; positions: (N, 2) their (x, y);
    frames: (F,) the observed frames; anchor_frames: (K,) the frames of System 1's anchors;
    n_frames: frames per trajectory; n: grid points per side.
    """

    observed: torch.Tensor
    positions: torch.Tensor
    frames: torch.Tensor
    anchor_frames: torch.Tensor
    n_frames: int
    n: int

    @property
    def anchor_times(self) -> torch.Tensor:
        """(K,) normalised anchor times tau = frame / (n_frames - 1)."""
        return self.anchor_frames.float() / (self.n_frames - 1)

    @property
    def anchor_slots(self) -> torch.Tensor:
        """(K',) positions in ``frames`` of the anchor frames inside the trajectory (anchors are
        every anchor_every-th observed frame, so they are observed frames)."""
        inside = self.anchor_frames[self.anchor_frames < self.n_frames]
        return torch.searchsorted(self.frames, inside)

    def on_sparse_set(self, trajectories: torch.Tensor) -> torch.Tensor:
        """(B, T, n * n) full-grid trajectories -> (B, F, N) at the observed frames and points."""
        return trajectories[:, self.frames][:, :, self.observed]


class ObserverObjective:
    """Scheduled query sampling + anchor forecasts (see the module docstring).

    The running error W (n_train, F, P) (P: grid points or observed points) starts at 1
    everywhere; each step replaces the entries it queried with their squared error, so points the
    model gets wrong are queried more often. Its state is checkpointed (``state_dict``), so a
    resumed run draws the same queries.
    """

    def __init__(self, settings: SparseFlowObjective, observation: Observation, n_train: int):
        self.settings, self.obs = settings, observation
        n = observation.n
        self.points = (torch.arange(n * n) if settings.supervision == "full" else observation.observed)
        self.point_positions = grid_positions(n)[self.points]
        self.errors = torch.ones(n_train, len(observation.frames), len(self.points))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"errors": self.errors.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["errors"].shape != self.errors.shape:
            raise ValueError(f"the checkpoint's running query errors have shape "
                             f"{tuple(state['errors'].shape)}, this run's {tuple(self.errors.shape)}: "
                             "the data or the observation differ")
        self.errors = state["errors"].clone()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        s, obs = self.settings, self.obs
        at_frames = batch["trajectory"][:, obs.frames]                        # (B, F, n²)
        sparse = at_frames[:, :, obs.observed]                                # (B, F, N)
        index = batch["index"]
        n_nodes = sparse.shape[-1]
        kept = torch.randperm(n_nodes)[:max(3, round(s.node_keep * n_nodes))].sort().values
        edges, _ = delaunay_graph(obs.positions[kept])
        anchors = model.anchors(sparse[:, 0, kept], obs.positions[kept], edges, len(obs.anchor_frames))

        # forecast loss on the kept nodes at the anchors inside the trajectory
        slots = obs.anchor_slots
        forecast = model.forecast(anchors)[:, :len(slots)]                     # (B, K', N')
        forecast_loss = (forecast - sparse[:, slots][:, :, kept]).square().mean()

        # queries: observed frame f, supervised point p, drawn ~ running error
        weights = self.errors[index].flatten(1)                               # (B, F * P)
        weights = weights + s.error_floor * weights.mean(dim=1, keepdim=True) + 1e-12  # all-zero: uniform
        picks = torch.multinomial(weights, s.queries, replacement=True)        # (B, Q)
        slot, point = picks // len(self.points), picks % len(self.points)
        taus = obs.frames[slot].float() / (obs.n_frames - 1)
        queries = torch.cat([self.point_positions[point], taus.unsqueeze(-1)], dim=-1)  # (B, Q, 3)
        supervised = at_frames[:, :, self.points]                             # (B, F, P)
        target = torch.gather(supervised.flatten(1), 1, picks)
        prediction = model.observe(anchors, obs.positions[kept], obs.anchor_times, queries)
        squared = (prediction - target).square()
        with torch.no_grad():
            flat = self.errors.view(self.errors.shape[0], -1)
            flat[index.unsqueeze(1).expand_as(picks), picks] = squared.detach()
        query_loss = squared.mean()
        loss = query_loss + s.forecast_weight * forecast_loss
        return loss, {"query_loss": float(query_loss.detach()),
                      "forecast_loss": float(forecast_loss.detach())}


class RolloutObjective:
    """MSE of the autoregressive GNN's rollout from frame 0 over every observed frame (B, F, N)."""

    def __init__(self, observation: Observation):
        self.obs = observation
        self.edges, _ = delaunay_graph(observation.positions)  # one graph for the whole run

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        obs = self.obs
        sparse = obs.on_sparse_set(batch["trajectory"])
        rolled = model.rollout(sparse[:, 0], obs.positions, self.edges, sparse.shape[1] - 1)
        errors = (rolled[:, 1:] - sparse[:, 1:]).square().mean(dim=(0, 2))
        return errors.mean(), {"last_frame_loss": float(errors[-1].detach())}
