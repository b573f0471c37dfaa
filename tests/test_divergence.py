"""The divergence of a velocity field (flowsci.divergence): exact trace and Hutchinson estimate
against closed forms for linear fields, and the module staying a leaf (only torch)."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

import flowsci.divergence
from flowsci.divergence import draw_probes, velocity_divergence

F64 = torch.float64


def _linear_field(batch: int, dims: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """v = x A^T per row (A: (D, D)); div v = tr A and eps^T (dv/dx) eps = eps^T A eps."""
    a = torch.randn(dims, dims, dtype=F64)
    x = torch.randn(batch, dims, dtype=F64, requires_grad=True)
    return a, x, x @ a.T


def test_exact_divergence_of_a_linear_field_is_the_trace() -> None:
    a, x, v = _linear_field(5, 4)
    div = velocity_divergence(v, x, None, create_graph=False)
    torch.testing.assert_close(div, torch.full((5,), float(torch.trace(a)), dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_the_mean_quadratic_form_of_the_probes(probe: str) -> None:
    a, x, v = _linear_field(5, 4)
    probes = draw_probes(3, x, probe, torch.Generator().manual_seed(0))
    assert probes.shape == (3, 5, 4)
    div = velocity_divergence(v, x, probes, create_graph=False)
    expected = torch.einsum("pbi,ij,pbj->pb", probes, a, probes).mean(0)
    torch.testing.assert_close(div, expected, rtol=0, atol=1e-12)


def test_a_field_independent_of_x_has_zero_divergence() -> None:
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    div = velocity_divergence(torch.ones(3, 2, dtype=F64), x, None, create_graph=False)
    assert torch.equal(div, torch.zeros(3, dtype=F64))


def test_unknown_probe_is_rejected() -> None:
    with pytest.raises(ValueError, match="probe"):
        draw_probes(1, torch.zeros(2, 2), "uniform")


def test_the_module_imports_only_torch() -> None:
    """A leaf module: spaces and likelihood import it, so it must not import them."""
    tree = ast.parse(inspect.getsource(flowsci.divergence))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "torch"}, imported
