"""Synthetic "patients x treatments" cell populations in R^d (stand-in for an organoid drug screen).

Generative model (K cell types, d dimensions, u = (1/K, ..., 1/K)):

    cell types      mu_k ~ N(0, 1.5^2 I_d),  sigma_k ~ Uniform(0.3, 0.7)^d             k = 1..K
    patient p       alpha_p ~ Dirichlet(1.5 * 1_K),  delta_p ~ N(0, 0.5^2 I_d)
    replicate r     pi = pi_{p,r} ~ Dirichlet(30 * alpha_p)                 (composition jitter)
    control cell    k ~ Cat(pi),  x = mu_k + delta_p + sigma_k * z,  z ~ N(0, I_d)
    treatment t     Delta_{t,k} ~ N(0, I_d),  w_t ~ N(0, I_K),  a_{t,k} ~ N(0, 0.5^2),  c_{t,k} ~ N(0, 1.5^2)
    response gain   g_t(pi) = tanh(4 w_t . (pi - u))                  (takes both signs over pi)
    survival        s_{t,k}(pi) = sigmoid(a_{t,k} + c_{t,k} g_t(pi)),
                    pi'_k = pi_k s_{t,k} / sum_j pi_j s_{t,j}
    treated cell    k ~ Cat(pi'),  y = mu_k + delta_p + sigma_k * z + g_t(pi) Delta_{t,k} + 0.2 eps

so a treatment's effect (cell-type-specific moves and a change of composition) depends on the
population's own composition pi and cannot be predicted from the treatment alone. Control and
treated cells are unpaired: every treated population is a fresh draw (as in mass cytometry), and
the control population of (p, r) is shared by its T treatments. Sizes n0, n1 ~ Uniform{min_cells,
..., max_cells} independently. Random streams are keyed by (seed, role, indices), so a patient's
data does not depend on how many other patients are generated.
"""

from __future__ import annotations

import numpy as np

TYPE_SPREAD = 1.5               # std of the cell-type means
CELL_STD = (0.3, 0.7)           # range of the per-type, per-dimension cell std
PATIENT_CONCENTRATION = 1.5     # Dirichlet concentration of a patient's mean composition
PATIENT_SHIFT = 0.5             # std of the patient-specific shift
REPLICATE_CONCENTRATION = 30.0  # Dirichlet concentration of a replicate around its patient
GAIN = 4.0                      # slope of the response gain g_t(pi)
SURVIVAL_BASE, SURVIVAL_SLOPE = 0.5, 1.5
RESPONSE_NOISE = 0.2


def _check_int(name: str, value: object, low: int) -> None:
    if not (isinstance(value, (int, np.integer)) and value >= low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _cells(rng: np.random.Generator, n: int, weights: np.ndarray, means: np.ndarray,
           stds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """n cells of the Gaussian mixture (weights (K,), means (K, d), stds (K, d))
    -> (cells (n, d), types (n,))."""
    types = rng.choice(len(weights), size=n, p=weights)
    return means[types] + stds[types] * rng.standard_normal((n, means.shape[1])), types


def make_patients(n_patients: int = 12, n_replicates: int = 3, n_treatments: int = 6, dim: int = 10,
                  n_types: int = 4, seed: int = 0, min_cells: int = 200, max_cells: int = 400) -> list[dict]:
    """One record per (patient, replicate, treatment), in that nesting order.

    Each record: {"patient": int, "replicate": int, "treatment": int, "x0": float32 (n0, d) control
    cells, "x1": float32 (n1, d) treated cells, "composition": float32 (K,) the control composition pi}.
    """
    for name, value, low in [("n_patients", n_patients, 1), ("n_replicates", n_replicates, 1),
                             ("n_treatments", n_treatments, 1), ("dim", dim, 1), ("n_types", n_types, 2),
                             ("seed", seed, 0), ("min_cells", min_cells, 1)]:
        _check_int(name, value, low)
    _check_int("max_cells", max_cells, min_cells)
    rng = np.random.default_rng([seed, 0])
    means = TYPE_SPREAD * rng.standard_normal((n_types, dim))
    stds = rng.uniform(*CELL_STD, size=(n_types, dim))
    treatments = []
    for t in range(n_treatments):
        rng = np.random.default_rng([seed, 1, t])
        treatments.append({"delta": rng.standard_normal((n_types, dim)), "w": rng.standard_normal(n_types),
                           "a": SURVIVAL_BASE * rng.standard_normal(n_types),
                           "c": SURVIVAL_SLOPE * rng.standard_normal(n_types)})
    records = []
    for p in range(n_patients):
        rng = np.random.default_rng([seed, 2, p])
        alpha = rng.dirichlet(np.full(n_types, PATIENT_CONCENTRATION))
        shifted = means + PATIENT_SHIFT * rng.standard_normal(dim)
        for r in range(n_replicates):
            rng = np.random.default_rng([seed, 3, p, r])
            pi = rng.dirichlet(REPLICATE_CONCENTRATION * alpha)
            x0, _ = _cells(rng, int(rng.integers(min_cells, max_cells + 1)), pi, shifted, stds)
            for t, treatment in enumerate(treatments):
                rng = np.random.default_rng([seed, 4, p, r, t])
                g = np.tanh(GAIN * treatment["w"] @ (pi - 1.0 / n_types))
                survived = pi / (1.0 + np.exp(-(treatment["a"] + treatment["c"] * g)))
                x1, types = _cells(rng, int(rng.integers(min_cells, max_cells + 1)),
                                   survived / survived.sum(), shifted, stds)
                x1 += g * treatment["delta"][types] + RESPONSE_NOISE * rng.standard_normal(x1.shape)
                records.append({"patient": p, "replicate": r, "treatment": t, "x0": x0.astype(np.float32),
                                "x1": x1.astype(np.float32), "composition": pi.astype(np.float32)})
    return records


def split_patients(records: list[dict], held_out_patients: tuple[int, ...] = (10, 11),
                   held_out_replicate: int = 2) -> dict[str, list[int]]:
    """Indices into `records`: "train" (other patients, replicates != held_out_replicate),
    "test_replicates" (other patients, the held-out replicate), "test_patients" (all records of
    the held-out patients). Together they cover every record exactly once."""
    patients = {r["patient"] for r in records}
    replicates = {r["replicate"] for r in records}
    missing = sorted(set(held_out_patients) - patients)
    if missing or not patients - set(held_out_patients):
        raise ValueError(f"held_out_patients must be a proper subset of the patients {sorted(patients)}, "
                         f"got {tuple(held_out_patients)}")
    if held_out_replicate not in replicates or len(replicates) < 2:
        raise ValueError(f"held_out_replicate must be one of at least two replicates {sorted(replicates)}, "
                         f"got {held_out_replicate!r}")
    split: dict[str, list[int]] = {"train": [], "test_replicates": [], "test_patients": []}
    for i, record in enumerate(records):
        if record["patient"] in held_out_patients:
            split["test_patients"].append(i)
        elif record["replicate"] == held_out_replicate:
            split["test_replicates"].append(i)
        else:
            split["train"].append(i)
    return split
