"""A-priori evaluation and fitting of closures on snapshots (D, E, S:E, S:D) of kinetic data.

"A priori" means each snapshot is judged on its own: the closure gets the true D and E and its
S:E and S:D are compared with the true ones, with no time stepping. The error of a closure term
over a data set is the aggregate relative Frobenius error

    err = sqrt(Σ_n ‖pred_n − true_n‖²_F) / sqrt(Σ_n ‖true_n‖²_F)    (sum over all snapshots n).

Data are mappings with arrays "D", "E", "SE", "SD" of shape (..., d, d) (numpy or torch), e.g. the
output of :func:`orientation.generate_dataset`, (n_trajectories, T, d, d).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from flowsci_domains.kinetic.closures import Closure

FIELDS = ("D", "E", "SE", "SD")
Arrays = Mapping[str, np.ndarray | torch.Tensor]


def relative_error(pred: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor) -> float:
    """Aggregate relative Frobenius error (module docstring). pred, true: (..., d, d), same shape."""
    pred, true = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
                  for x in (pred, true))
    if pred.shape != true.shape or pred.ndim < 2:
        raise ValueError("pred and true must have the same shape (..., d, d), "
                         f"got {pred.shape} and {true.shape}")
    scale = float(np.sum(true**2))
    if scale == 0:
        raise ValueError("true is zero everywhere: the relative error is undefined")
    return math.sqrt(float(np.sum((pred - true) ** 2)) / scale)


def _flat(arrays: Arrays, fields: tuple[str, ...] = FIELDS) -> dict[str, torch.Tensor]:
    """The named arrays as float64 tensors (N, d, d), all snapshots in one batch dimension."""
    missing = [name for name in fields if name not in arrays]
    if missing:
        raise ValueError(f"arrays lacks {missing}; it needs {list(fields)}, got {sorted(arrays)}")
    out = {name: torch.as_tensor(np.asarray(arrays[name]) if not isinstance(arrays[name], torch.Tensor)
                                 else arrays[name].detach().cpu(), dtype=torch.float64) for name in fields}
    shape = out[fields[0]].shape
    if len(shape) < 2 or shape[-1] != shape[-2] or any(x.shape != shape for x in out.values()):
        raise ValueError(f"arrays {list(fields)} must share one shape (..., d, d), got "
                         f"{ {name: tuple(x.shape) for name, x in out.items()} }")
    return {name: x.reshape(-1, *shape[-2:]) for name, x in out.items()}


def _work_dtype(closure: Closure) -> tuple[torch.dtype, torch.device]:
    """The closure's parameter dtype and device (float64 on CPU for parameter-free closures)."""
    parameter = next(closure.parameters(), None)
    return (torch.float64, torch.device("cpu")) if parameter is None else (parameter.dtype, parameter.device)


def closure_predictions(closure: Closure, arrays: Arrays,
                        batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The closure's S:E and S:D at every snapshot of ``arrays`` (D, E: (..., d, d)), without
    gradients, in the closure's dtype. Returns two float64 arrays of D's shape."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    data = _flat(arrays, ("D", "E"))
    dtype, device = _work_dtype(closure)
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(data["D"]), batch_size):
            D, E = (data[name][start:start + batch_size].to(dtype=dtype, device=device)
                    for name in ("D", "E"))
            outputs.append(closure(D, E))
    shape = tuple(arrays["D"].shape)
    return tuple(torch.cat([out[k] for out in outputs]).cpu().double().numpy().reshape(shape) for k in (0, 1))


def closure_errors(closure: Closure, arrays: Arrays, batch_size: int = 4096) -> dict[str, float]:
    """{"SE": err(S:E), "SD": err(S:D)}: the aggregate relative errors of the closure over all
    snapshots of ``arrays`` (D, E, SE, SD: (..., d, d))."""
    SE, SD = closure_predictions(closure, arrays, batch_size)
    data = _flat(arrays)
    return {"SE": relative_error(SE.reshape(data["SE"].shape), data["SE"]),
            "SD": relative_error(SD.reshape(data["SD"].shape), data["SD"])}


def split_trajectories(arrays: Arrays, n_train: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The first ``n_train`` trajectories (axis 0 of every array) and the rest."""
    lengths = {name: len(value) for name, value in arrays.items()}
    n = min(lengths.values(), default=0)
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every array must have the same number of trajectories (axis 0), got {lengths}")
    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 0 < n_train < n:
        raise ValueError(f"n_train must be an integer in [1, {n - 1}] ({n} trajectories), got {n_train!r}")
    return ({name: value[:n_train] for name, value in arrays.items()},
            {name: value[n_train:] for name, value in arrays.items()})


def closure_term_scales(arrays: Arrays) -> dict[str, torch.Tensor]:
    """{"SE": mean ‖S:E‖²_F, "SD": mean ‖S:D‖²_F} over all snapshots of ``arrays`` (SE, SD:
    (..., d, d)), float64 scalars: the normalisers of :func:`closure_loss`."""
    data = _flat(arrays, ("SE", "SD"))
    scales = {name: (x**2).sum((-2, -1)).mean() for name, x in data.items()}
    for name, scale in scales.items():
        if scale == 0:
            raise ValueError(f"{name} is zero in every snapshot: its relative error is undefined")
    return scales


def closure_loss(closure: Closure, batch: Mapping[str, torch.Tensor], scales: Mapping[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The fitting loss Σ_b‖ΔSE_b‖² / (B·scales["SE"]) + Σ_b‖ΔSD_b‖² / (B·scales["SD"]) over a batch
    (D, E, SE, SD: (B, d, d)): with the scales of :func:`closure_term_scales` over a data set, the
    sum of the squared relative errors of the two closure terms. The batch is cast to the
    closure's dtype and device. Returns (loss, {"SE": term, "SD": term}), scalars with gradients."""
    missing = [name for name in FIELDS if not isinstance(batch.get(name), torch.Tensor)]
    if missing:
        raise ValueError(f"batch lacks tensors {missing}; it needs {list(FIELDS)}, got {sorted(batch)}")
    shapes = {name: tuple(batch[name].shape) for name in FIELDS}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"batch tensors {list(FIELDS)} must share one shape (B, d, d), got {shapes}")
    dtype, device = _work_dtype(closure)
    data = {name: batch[name].to(dtype=dtype, device=device) for name in FIELDS}
    SE, SD = closure(data["D"], data["E"])
    terms = {name: ((pred - data[name]) ** 2).sum((-2, -1)).mean()
             / scales[name].to(dtype=dtype, device=device)
             for name, pred in (("SE", SE), ("SD", SD))}
    return terms["SE"] + terms["SD"], terms


def minimise(closure: Closure, batch_loss: Callable[[torch.Generator], torch.Tensor], steps: int, lr: float,
             seed: int, progress: bool = False, desc: str = "fitting") -> list[float]:
    """Adam on the closure's trainable parameters, the learning rate cosine-decayed from ``lr`` to
    0 over ``steps``; each step minimises ``batch_loss(generator)`` (a scalar; the generator,
    seeded by ``seed``, draws the batch). The closure is left in eval mode. Returns the losses."""
    for name, value, valid in (("steps", steps, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < valid:
            raise ValueError(f"{name} must be an integer >= {valid}, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    parameters = [p for p in closure.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"closure {type(closure).__name__} has no trainable parameters to fit")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    closure.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress):
        loss = batch_loss(generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    closure.eval()
    return losses


def fit_closure(closure: Closure, train_arrays: Arrays, steps: int, lr: float, batch_size: int,
                seed: int) -> list[float]:
    """Fit a learned closure in float64 with :func:`minimise` (Adam, cosine-decayed ``lr``).

    The closure is converted to float64 in place and left in eval mode. Each step draws
    ``batch_size`` snapshots (with replacement, from a generator seeded by ``seed``) of
    ``train_arrays`` (D, E, SE, SD: (..., d, d)) and minimises :func:`closure_loss` with the
    training-set scales: Σ‖ΔSE‖² / Σ‖SE‖² + Σ‖ΔSD‖² / Σ‖SD‖², batch sums over training-set sums
    (scaled to the batch size), the sum of the squared relative errors of the two closure terms.
    Returns the loss of every step (steps,).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    closure.to(torch.float64)
    device = next(closure.parameters(), torch.empty(0)).device
    data = {name: x.to(device) for name, x in _flat(train_arrays).items()}
    try:
        scales = closure_term_scales(data)
    except ValueError as error:
        raise ValueError(f"train_arrays: {error}; nothing to fit") from None

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(data["D"]), (batch_size,), generator=generator).to(device)
        return closure_loss(closure, {name: x[index] for name, x in data.items()}, scales)[0]

    return minimise(closure, batch_loss, steps, lr, seed)


def parity_figure(closures: Mapping[str, Closure], arrays: Arrays, max_points: int = 2000,
                  seed: int = 0) -> Figure:
    """Predicted against true components of S:E and S:D, one colour per closure, with the
    aggregate relative errors in the legend. ``arrays``: D, E, SE, SD (..., d, d); at most
    ``max_points`` snapshots (drawn at random with ``seed``) are plotted, the errors use all."""
    if not closures:
        raise ValueError("closures must name at least one closure, got an empty mapping")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise ValueError(f"max_points must be an integer >= 1, got {max_points!r}")
    data = {name: x.numpy() for name, x in _flat(arrays).items()}
    n = len(data["D"])
    shown = np.random.default_rng(seed).permutation(n)[:max_points]
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for index, (label, closure) in enumerate(closures.items()):
        predictions = closure_predictions(closure, data)
        for ax, name, pred in zip(axes, ("SE", "SD"), predictions):
            error = relative_error(pred, data[name])
            ax.scatter(data[name][shown].ravel(), pred[shown].ravel(), s=3, alpha=0.4, color=f"C{index}",
                       label=f"{label} (rel. err {error:.3g})")
    for ax, title in zip(axes, ("S:E", "S:D")):
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], color="k", lw=0.8)
        ax.set(title=f"{title} components", xlabel="true", ylabel="closure")
        ax.legend(fontsize=8, markerscale=3)
    return fig
