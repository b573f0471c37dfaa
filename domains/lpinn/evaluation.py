"""Predictions on the Eulerian grid and their error against the reference solution."""

from __future__ import annotations

import numpy as np
import torch

from flowsci_domains.lpinn.problems import PERIOD


def lagrangian_to_eulerian(x: np.ndarray, u: np.ndarray, grid_x: np.ndarray) -> np.ndarray:
    """Map a Lagrangian solution back to fixed points: wrap x into [0, 2π) and interpolate.

    x, u: (n_labels, n_t) positions and values of the labelled particles; grid_x: (n_x,).
    Returns u on the grid (n_x, n_t), by periodic linear interpolation at each time.
    """
    out = np.empty((len(grid_x), x.shape[1]))
    for j in range(x.shape[1]):
        out[:, j] = np.interp(grid_x, np.mod(x[:, j], PERIOD), u[:, j], period=PERIOD)
    return out


@torch.no_grad()
def predict_eulerian(model: torch.nn.Module, grid_x: np.ndarray, grid_t: np.ndarray,
                     label_refinement: int = 2) -> dict[str, np.ndarray]:
    """u of a model on the Eulerian grid (n_x, n_t); for the LPINN also the characteristics.

    The LPINN is evaluated at ``label_refinement`` × n_x labels ξ (uniform in [0, 2π)) and
    interpolated; the result holds ``u`` and, for the LPINN, ``x_labels`` and ``u_labels``
    (n_labels, n_t) and ``labels`` (n_labels,).
    """
    t = torch.as_tensor(grid_t, dtype=torch.float32)
    if model.formulation == "eulerian":
        xx, tt = torch.meshgrid(torch.as_tensor(grid_x, dtype=torch.float32), t, indexing="ij")
        return {"u": model(xx.reshape(-1), tt.reshape(-1)).reshape(xx.shape).double().numpy()}
    labels = np.arange(label_refinement * len(grid_x)) * PERIOD / (label_refinement * len(grid_x))
    xi, tt = torch.meshgrid(torch.as_tensor(labels, dtype=torch.float32), t, indexing="ij")
    x, u = model(xi.reshape(-1), tt.reshape(-1))
    x, u = x.reshape(xi.shape).double().numpy(), u.reshape(xi.shape).double().numpy()
    return {"u": lagrangian_to_eulerian(x, u, grid_x), "x_labels": x, "u_labels": u, "labels": labels}


def error_metrics(u: np.ndarray, reference: np.ndarray, offset: float = 0.0) -> dict[str, float]:
    """rel_l2 = ‖u − u_ref‖ / ‖u_ref − C‖ over the space–time grid (C the constant offset of
    u₀, so that a large C does not make the error look small), and the max error ``linf``."""
    diff = u - reference
    return {"rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(reference - offset)),
            "linf": float(np.abs(diff).max())}
