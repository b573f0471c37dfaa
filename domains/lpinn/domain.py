"""The ``lpinn`` domain: Lagrangian PINNs against Eulerian PINNs on convection and Burgers.

The model chooses the formulation: ``pinn`` (u(x, t), Eulerian residual) or ``lpinn`` (u-branch
u(ξ, t) and x-branch x(ξ, t) along the characteristics). Training is full batch on the
collocation grid n_x × n_t (x uniform in [0, 2π), t uniform in [0, t_end]), first Adam
(``train.steps``, ``train.amsgrad``) then L-BFGS (``train.lbfgs``). Evaluation maps the
solution onto the Eulerian grid and compares it with the reference solution (exact Fourier
solution for convection(–diffusion), pseudo-spectral Burgers), stored in HDF5.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure

from flowsci.config import Config, DataConfig, EvalConfig
from flowsci.data import DataSplits, InMemoryDataset, load_split, read_meta, write_dataset
from flowsci.data.schema import BoundaryCondition
from flowsci.plugins import DomainBase, Evaluation, build_model
from flowsci.registry import model_parameters
from flowsci_domains.lpinn.evaluation import error_metrics, predict_eulerian
from flowsci_domains.lpinn.figures import characteristics_figure, solution_figure
from flowsci_domains.lpinn.objective import PINNLoss, PINNObjectiveConfig
from flowsci_domains.lpinn.problems import EQUATIONS, Problem
from flowsci_domains.lpinn.reference import grid, reference_solution


@dataclasses.dataclass
class LPINNSettings:
    """YAML ``domain:`` section: the PDE and the collocation grid."""

    equation: Literal["convection", "convection_diffusion", "burgers"] = "convection"
    beta: float = 30.0               # convection speed
    nu: float = 0.01                 # viscosity (convection_diffusion, burgers)
    offset: float = 0.0              # C in u0 = sin x + C (burgers)
    t_end: float = 1.0
    n_x: int = 256                   # collocation points in x (uniform, periodic)
    n_t: int = 100                   # collocation points in t (uniform, t = 0 and t_end included)

    def __post_init__(self) -> None:
        if self.equation not in EQUATIONS:
            raise ValueError(f"equation must be one of {', '.join(EQUATIONS)}, got {self.equation!r}")
        if self.n_x < 4 or self.n_t < 2:
            raise ValueError(f"the grid needs n_x >= 4 and n_t >= 2, got n_x={self.n_x}, n_t={self.n_t}")
        Problem(self.equation, self.beta, self.nu, self.offset, self.t_end)  # validates the rest

    @property
    def problem(self) -> Problem:
        return Problem(self.equation, self.beta, self.nu, self.offset, self.t_end)


@dataclasses.dataclass
class LPINNEval(EvalConfig):
    """The evaluation grid (defaults: the collocation grid), the Fourier modes of the Burgers
    reference, and the label refinement of the LPINN's interpolation."""

    n_x: int = 256
    n_t: int = 100
    n_modes: int = 1024
    label_refinement: int = 2


class LPINN(DomainBase):
    """PINN vs LPINN on periodic 1-D convection, convection–diffusion and viscous Burgers."""

    name = "lpinn"
    Settings = LPINNSettings
    DataSettings = DataConfig
    ObjectiveSettings = PINNObjectiveConfig
    EvalSettings = LPINNEval

    # --- data ----------------------------------------------------------------------------

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The problem and the evaluation grid of the reference solution (not data.seed:
        nothing is random)."""
        e = cfg.eval
        return {"problem": dataclasses.asdict(cfg.settings.problem), "n_x": e.n_x, "n_t": e.n_t,
                "n_modes": e.n_modes}

    def data_name(self, cfg: Config) -> str:
        p, e = cfg.settings.problem, cfg.eval
        params = {"convection": f"beta{p.beta:g}", "convection_diffusion": f"beta{p.beta:g}_nu{p.nu:g}",
                  "burgers": f"C{p.offset:g}_nu{p.nu:g}_modes{e.n_modes}"}[p.equation]
        return f"{p.equation}_{params}_T{p.t_end:g}_x{e.n_x}_t{e.n_t}"

    def make_data(self, cfg: Config, path: Path, progress: bool) -> None:
        """Solve the reference problem on the evaluation grid and write it to ``path``."""
        p, e = cfg.settings.problem, cfg.eval
        x, t = grid(e.n_x, e.n_t, p.t_end)
        u = reference_solution(p, e.n_x, e.n_t, n_modes=e.n_modes)
        write_dataset(
            path, name=f"lpinn reference: {p.describe()}",
            splits={"reference": {"u": u[None].astype(np.float64)}}, orders={"u": 0}, dims={"u": ["x", "t"]},
            dimensions={"x": x, "t": t}, n_spatial_dims=1, grid_type="cartesian",
            boundary_conditions={"x_periodic": BoundaryCondition("periodic", ("x",))},
            scalars={"beta": p.beta, "nu": p.viscosity, "offset": p.offset},
            attrs={"domain": "lpinn", "problem": dataclasses.asdict(p), "n_modes": e.n_modes})

    def build_data(self, cfg: Config) -> DataSplits:
        """train: the collocation grid (one full batch); val = test: the reference solution."""
        path = self.data_file(cfg)
        s = cfg.settings
        x, t = grid(s.n_x, s.n_t, s.t_end)
        xx, tt = np.meshgrid(x, t, indexing="ij")
        collocation = {"x": xx.reshape(1, -1), "t": tt.reshape(1, -1), "x0": x[None],
                       "u0": s.problem.initial(x)[None]}
        train = InMemoryDataset({k: torch.as_tensor(v, dtype=torch.float32) for k, v in collocation.items()})
        reference = InMemoryDataset(load_split(path, "reference"))
        return DataSplits(train, reference, reference, meta=read_meta(path))

    # --- model and objective -------------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered model. The LPINN's ``frame_speed`` defaults to the problem's mean
        speed (β, or C for Burgers: the co-moving frame), its ``speed_scale`` to the largest
        speed relative to that frame, and ``u_offset`` to the C of u₀."""
        params = dict(cfg.model.params)
        accepted = model_parameters(cfg.model.name)
        problem = cfg.settings.problem
        if "frame_speed" in accepted and "frame_speed" not in params:
            params["frame_speed"] = problem.mean_speed
        if "speed_scale" in accepted and "speed_scale" not in params:
            params["speed_scale"] = problem.speed_scale(params.get("frame_speed", 0.0))
        if "u_offset" in accepted and "u_offset" not in params:
            params["u_offset"] = problem.offset if problem.equation == "burgers" else 0.0
        model = build_model(cfg.model.name, params)
        if getattr(model, "formulation", None) not in ("eulerian", "lagrangian"):
            raise ValueError(f"model '{cfg.model.name}' is not a PINN of this domain: its class needs "
                             "formulation = 'eulerian' (u(x, t)) or 'lagrangian' (forward -> (x, u))")
        return model

    def build_objective(self, cfg: Config) -> PINNLoss:
        return PINNLoss(cfg.settings.problem, cfg.objective)

    # --- evaluation ----------------------------------------------------------------------

    def _prediction(self, model: torch.nn.Module, data: DataSplits, cfg: Config
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
        coords = data.meta.dimensions
        predicted = predict_eulerian(model, coords["x"], coords["t"], cfg.eval.label_refinement)
        return coords["x"], coords["t"], predicted, data.test.tensors["u"][0].numpy()

    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config) -> Evaluation:
        """Errors of the prediction on the reference grid (kept for :meth:`figures`)."""
        prediction = self._prediction(model, data, cfg)
        _, _, predicted, reference = prediction
        return Evaluation(error_metrics(predicted["u"], reference, cfg.settings.problem.offset),
                          {"prediction": prediction})

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        x, t, predicted, reference = (evaluation.artifacts["prediction"] if evaluation is not None
                                      else self._prediction(model, data, cfg))
        title = f"{cfg.model.name}: {cfg.settings.problem.describe()}"
        figures = {"solution": solution_figure(x, t, predicted["u"], reference, title)}
        if "x_labels" in predicted:
            figures["characteristics"] = characteristics_figure(predicted["labels"], t, predicted["x_labels"],
                                                                title)
        return figures
