"""Turbulence operators: factorized attention (IFactFormer-m/-o), FNO and implicit FNO.

Oracles: the kernel-application identities of the paper (concatenated axis contractions on a
separable V, Kronecker-product kernel on any V) against numpy, the rotary embedding's closed form
and relative-position property, structural properties of the axis kernels (bilinear in W_q, W_k,
low rank, Toeplitz for axis-constant inputs, blind to the pooled axes), the spectral layer
against numpy.fft truncation, periodic shift equivariance (constant in, constant out without
positional features), the instance norm's per-channel scale invariance, and forward-Euler
convergence of the weight-shared shells.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsci_domains.turbulence.factorized_attention import (
    ROTARY_MIN_FREQ,
    FactorizedAttention,
    apply_chained,
    apply_parallel,
    apply_rotary,
    axis_coordinates,
    rotary_tables,
)
from flowsci_domains.turbulence.fno import FNO, IFNO, SpectralConv
from flowsci_domains.turbulence.ifactformer import IFactFormer, IFactFormerM, IFactFormerO

GRIDS = {2: (5, 6), 3: (4, 5, 3)}


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _kernels(grid: tuple[int, ...], batch: int = 2, heads: int = 3) -> list[torch.Tensor]:
    return [_random(batch, heads, n, n, seed=10 + axis) for axis, n in enumerate(grid)]


def _axis_product(kernel: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(B, h, n, n) kernel times (B, h, d, n) vectors for every (B, h, d), by numpy matmul."""
    return (kernel[:, :, None] @ vectors[..., None])[..., 0]


def _outer(factors: list[np.ndarray]) -> np.ndarray:
    """a ⊗ b (⊗ c) of (B, h, d, n_a) factors -> (B, h, d, n_1, ..., n_D)."""
    out = factors[0]
    for factor in factors[1:]:
        spread = factor.reshape(factor.shape[:3] + (1,) * (out.ndim - 3) + factor.shape[3:])
        out = out[..., None] * spread
    return out


# --- kernel applications: the paper's identities -----------------------------------------------

@pytest.mark.parametrize("n_dims", [2, 3])
def test_parallel_on_separable_values_is_concatenated_axis_contractions(n_dims):
    grid, d = GRIDS[n_dims], 4
    kernels = _kernels(grid)
    factors = [_random(2, 3, d, n, seed=20 + axis) for axis, n in enumerate(grid)]
    v = torch.from_numpy(_outer([f.numpy() for f in factors]))
    expected = []
    for axis in range(n_dims):  # K_a applied to the a-th factor only, the others untouched
        contracted = [f.numpy() for f in factors]
        contracted[axis] = _axis_product(kernels[axis].numpy(), contracted[axis])
        expected.append(_outer(contracted))
    result = apply_parallel(kernels, v)
    assert result.shape == (2, 3, n_dims * d, *grid)
    np.testing.assert_allclose(result.numpy(), np.concatenate(expected, axis=2), rtol=0, atol=1e-6)
    # the form: summing the D channel blocks gives the sum of the axis contractions
    np.testing.assert_allclose(result.view(2, 3, n_dims, d, *grid).sum(2).numpy(), sum(expected),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_dims", [2, 3])
@pytest.mark.parametrize("separable", [True, False])
def test_chained_is_the_kronecker_product_kernel(n_dims, separable):
    grid, d = GRIDS[n_dims], 4
    kernels = _kernels(grid)
    if separable:
        v = torch.from_numpy(_outer([_random(2, 3, d, n, seed=30 + a).numpy() for a, n in enumerate(grid)]))
    else:
        v = _random(2, 3, d, *grid, seed=3)
    result = apply_chained(kernels, v)
    assert result.shape == v.shape
    flat = v.numpy().reshape(2, 3, d, -1)  # vec(V): row-major over the grid axes
    for b in range(2):
        for h in range(3):
            kron = kernels[0][b, h].numpy()
            for kernel in kernels[1:]:
                kron = np.kron(kron, kernel[b, h].numpy())
            expected = flat[b, h] @ kron.T  # (d, N): the big kernel applied to every channel
            np.testing.assert_allclose(result[b, h].reshape(d, -1).numpy(), expected, rtol=0, atol=1e-6)


def test_kernel_application_rejects_mismatched_shapes():
    v = _random(2, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="kernel 1 must have shape"):
        apply_parallel([_random(2, 3, 5, 5), _random(2, 3, 5, 5)], v)
    with pytest.raises(ValueError, match="2 or 3 axis kernels"):
        apply_chained([_random(2, 3, 5, 5)], v)


# --- rotary embedding ------------------------------------------------------------------------------

def _rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return apply_rotary(x, *rotary_tables(positions, x.shape[-1]))


def test_rotary_turns_each_feature_pair_by_its_own_frequency():
    # RoFormer's rotation: pair (j, j + d/2) turns by position · 10000^(-2j/d) / min_freq
    d = 6
    x, positions = _random(4, d), _random(4)
    out = _rotary(x, positions)
    for j in range(d // 2):
        angle = positions * 10000.0 ** (-2 * j / d) / ROTARY_MIN_FREQ
        first, second = x[:, j], x[:, j + d // 2]
        torch.testing.assert_close(out[:, j], first * angle.cos() - second * angle.sin(), rtol=0, atol=1e-12)
        torch.testing.assert_close(out[:, j + d // 2], second * angle.cos() + first * angle.sin(),
                                   rtol=0, atol=1e-12)


def test_rotary_two_features_is_the_rotation_matrix():
    x, positions = _random(7, 2), _random(7)
    angles = positions / ROTARY_MIN_FREQ
    rotation = torch.stack([torch.stack([angles.cos(), -angles.sin()], -1),
                            torch.stack([angles.sin(), angles.cos()], -1)], -2)  # (7, 2, 2)
    expected = (rotation @ x[..., None])[..., 0]
    torch.testing.assert_close(_rotary(x, positions), expected, rtol=0, atol=1e-12)


def test_rotary_dot_product_depends_only_on_position_difference():
    q, k = _random(1, 16, seed=1), _random(1, 16, seed=2)

    def dot(p: float, p_prime: float) -> float:
        rq = _rotary(q, torch.tensor([p], dtype=torch.float64))
        rk = _rotary(k, torch.tensor([p_prime], dtype=torch.float64))
        return float((rq * rk).sum())

    assert dot(0.3, 1.1) == pytest.approx(dot(0.3 + 2.7, 1.1 + 2.7), abs=1e-9)
    assert dot(0.3, 1.1) == pytest.approx(dot(-4.0, -3.2), abs=1e-9)
    assert dot(0.9, 0.9) == pytest.approx(float((q * k).sum()), abs=1e-12)  # no offset, no rotation
    assert abs(dot(0.3, 1.1) - float((q * k).sum())) > 1e-3  # a real offset does rotate
    norms = _rotary(q.expand(5, 16), _random(5)).norm(dim=-1)
    torch.testing.assert_close(norms, q.norm().expand(5), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="even"):
        _rotary(_random(3, 5), _random(3))


# --- the block's axis kernels ---------------------------------------------------------------------

def _block(variant: str = "parallel", n_dims: int = 2, **kw) -> FactorizedAttention:
    torch.manual_seed(0)
    settings = dict(dim=8, n_dims=n_dims, heads=2, dim_head=2, kernel_multiplier=2, variant=variant)
    settings.update(kw)
    return FactorizedAttention(**settings).double()


def test_axis_kernels_are_bilinear_in_the_query_and_key_maps_with_no_softmax():
    block, u = _block(), _random(3, 12, 10, 8)
    kernels = block.axis_kernels(u)
    assert [k.shape for k in kernels] == [(3, 2, 12, 12), (3, 2, 10, 10)]
    with torch.no_grad():
        block.kernel_nets[0].to_q.weight.mul_(3.0)
        block.kernel_nets[1].to_q.weight.mul_(-2.0)
        block.kernel_nets[1].to_k.weight.mul_(5.0)
    scaled = block.axis_kernels(u)
    torch.testing.assert_close(scaled[0], 3.0 * kernels[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(scaled[1], -10.0 * kernels[1], rtol=1e-12, atol=0)
    for kernel in kernels:  # not a row-stochastic (softmax) matrix
        assert (kernel < 0).any()
        assert (kernel.sum(-1) - 1).abs().max() > 1e-3


def test_axis_kernels_have_rank_at_most_the_kernel_width():
    block = _block(dim_head=2, kernel_multiplier=2)  # q, k of width 4 per head
    singular = torch.linalg.svdvals(block.axis_kernels(_random(2, 12, 9, 8))[0])  # (2, 2, 12)
    assert (singular[..., 4:] < 1e-10 * singular[..., :1]).all()
    assert (singular[..., 3] > 1e-6 * singular[..., 0]).all()


def test_axis_kernel_of_an_axis_constant_field_is_toeplitz():
    # u independent of x -> the same pooled vector at every x -> K_x(i, j) depends on x_i - x_j only
    block = _block()
    u = _random(2, 1, 7, 8).expand(2, 11, 7, 8)
    kernel = block.axis_kernels(u)[0]
    torch.testing.assert_close(kernel[..., 1:, 1:], kernel[..., :-1, :-1], rtol=0, atol=1e-12)
    assert (kernel[..., 0, 1] - kernel[..., 0, 2]).abs().min() > 1e-9  # not constant


@pytest.mark.parametrize("n_dims", [2, 3])
def test_axis_kernel_pools_over_the_other_axes(n_dims):
    # K_a sees u only through its mean over the other axes: shuffling another axis leaves it alone
    block = _block(n_dims=n_dims)
    u = _random(2, *GRIDS[n_dims], 8)
    kernels = block.axis_kernels(u)
    shuffled = u[:, :, torch.randperm(u.shape[2], generator=torch.Generator().manual_seed(1))]
    new = block.axis_kernels(shuffled)
    torch.testing.assert_close(new[0], kernels[0], rtol=1e-12, atol=1e-14)
    assert (new[1] - kernels[1]).abs().max() > 1e-9


@pytest.mark.parametrize("variant", ["parallel", "chained"])
def test_block_output_ignores_the_scale_of_each_value_channel(variant):
    # the kernels act on the grid only, so scaling value channel c scales output channels of c
    # alone; the instance norm (each channel over the grid) removes that scale, once the
    # channel variances dwarf its epsilon (1e-5)
    block, u = _block(variant), _random(2, 7, 6, 8)
    with torch.no_grad():
        for net in block.kernel_nets:  # O(1) kernels instead of the small (gain 0.02) initial ones
            net.to_q.weight.mul_(30.0)
            net.to_k.weight.mul_(30.0)
    original = block.to_value.weight.detach().clone()
    outputs = []
    for seed in (1, 2):
        scales = 10 ** (3 + 2 * torch.rand(original.shape[0], 1, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(seed)))
        with torch.no_grad():
            block.to_value.weight.copy_(original * scales)
            outputs.append(block(u))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-6 * float(outputs[0].abs().max()))


@pytest.mark.parametrize("variant", ["parallel", "chained"])
@pytest.mark.parametrize("n_dims", [2, 3])
def test_block_output_shape_and_variant_channels(variant, n_dims):
    block = _block(variant, n_dims)
    u = _random(2, *GRIDS[n_dims], 8)
    assert block(u).shape == u.shape
    assert block.mix.in_features == 2 * 2 * (n_dims if variant == "parallel" else 1)


# --- spectral convolution -------------------------------------------------------------------------

def _identity_spectral(channels: int, n_dims: int, modes: int) -> SpectralConv:
    layer = SpectralConv(channels, channels, n_dims, modes).double()
    with torch.no_grad():
        layer.weight.zero_()
        for c in range(channels):
            layer.weight[..., 0, c, c] = 1.0
    return layer


def _numpy_truncation(x: np.ndarray, modes: int) -> np.ndarray:
    """Keep the Fourier modes with |k_a| < modes on every grid axis (integer wavenumbers)."""
    axes = tuple(range(2, x.ndim))
    spectrum = np.fft.fftn(x, axes=axes)
    for axis in axes:
        k = np.abs(np.fft.fftfreq(x.shape[axis]) * x.shape[axis])
        shape = [1] * x.ndim
        shape[axis] = -1
        spectrum = spectrum * (k < modes).reshape(shape)
    return np.fft.ifftn(spectrum, axes=axes).real


@pytest.mark.parametrize("grid,modes", [((16, 12), 5), ((15, 16), 7), ((8, 10, 9), 3)])
def test_identity_spectral_conv_is_the_sharp_spectral_truncation(grid, modes):
    x = _random(2, 3, *grid)
    layer = _identity_spectral(3, len(grid), modes)
    np.testing.assert_allclose(layer(x).detach().numpy(), _numpy_truncation(x.numpy(), modes),
                               rtol=0, atol=1e-10)


def test_spectral_conv_cutoff_mode():
    n, modes = 16, 5
    coords = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    x, y = torch.meshgrid(coords, coords, indexing="ij")
    layer = _identity_spectral(1, 2, modes)
    kept = torch.cos((modes - 1) * x + 2 * y)[None, None]
    torch.testing.assert_close(layer(kept), kept, rtol=0, atol=1e-12)
    for dropped in (torch.cos(modes * x), torch.sin(modes * y - 3 * x), torch.cos(2 * x - modes * y)):
        assert layer(dropped[None, None]).abs().max() < 1e-12


def test_spectral_conv_needs_modes_at_most_half_the_grid():
    layer = SpectralConv(2, 2, 2, modes=6)
    layer(torch.randn(1, 2, 12, 12))
    with pytest.raises(ValueError, match="modes=6"):
        layer(torch.randn(1, 2, 12, 11))
    with pytest.raises(ValueError, match="modes=6"):
        FNO(1, 1, modes=6)(torch.randn(1, 1, 10, 16))


# --- FNO / IFNO -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model_cls", [FNO, IFNO])
@pytest.mark.parametrize("grid,shift", [((16, 12), (3, 5)), ((8, 8, 10), (1, 6, 7))])
def test_fourier_operators_commute_with_periodic_shifts(model_cls, grid, shift):
    torch.manual_seed(0)
    model = model_cls(2, 3, n_dims=len(grid), modes=3, width=6, positional=False).double()
    u = _random(2, 2, *grid)
    dims = tuple(range(2, 2 + len(grid)))
    shifted = model(torch.roll(u, shift, dims))
    torch.testing.assert_close(shifted, torch.roll(model(u), shift, dims), rtol=0, atol=1e-10)


@pytest.mark.parametrize("model_cls", [FNO, IFNO])
def test_positional_features_let_the_output_depend_on_position(model_cls):
    # shift-equivariant maps send a constant field to a constant field; the periodic coordinate
    # features break exactly that, and nothing else
    u = torch.full((1, 2, 12, 10), 0.7, dtype=torch.float64)
    for positional in (False, True):
        torch.manual_seed(0)
        out = model_cls(2, 1, modes=3, width=6, positional=positional).double()(u).detach()
        spread = float(out.max() - out.min())
        assert spread < 1e-12 if not positional else spread > 1e-4


def test_fno_layers_count():
    model = FNO(1, 1, modes=4, width=8, n_layers=3)
    assert len(model.layers) == 3
    spectral = sum(p.numel() for p in model.layers[0].spectral.parameters())
    assert spectral == 8 * 8 * 7 * 4 * 2  # (2·4-1) x 4 complex modes per channel pair


# --- implicit shells ------------------------------------------------------------------------------

def _ifactformer(n_layer: int, variant: str = "parallel", n_dims: int = 2) -> IFactFormer:
    torch.manual_seed(0)
    return IFactFormer(2, 1, n_dims=n_dims, dim=8, heads=2, dim_head=4, kernel_multiplier=2,
                       n_layer=n_layer, variant=variant).double()


def _ifno(n_layer: int) -> IFNO:
    torch.manual_seed(0)
    return IFNO(2, 1, modes=3, width=8, n_layer=n_layer).double()


@pytest.mark.parametrize("build", [_ifactformer, _ifno])
def test_implicit_shells_share_weights_across_iterations(build):
    one, many = build(1), build(5)
    count = sum(p.numel() for p in one.parameters())
    assert sum(p.numel() for p in many.parameters()) == count
    many.load_state_dict(one.state_dict())  # the same parameters, iterated a different number of times
    u = _random(2, 2, 8, 8)
    assert (one(u) - many(u)).abs().max() > 1e-6


@pytest.mark.parametrize("build", [_ifactformer, _ifno])
def test_implicit_shells_converge_like_forward_euler(build):
    # u <- u + F(u)/L is forward Euler on du/ds = F(u), s in [0, 1]: error O(1/L), halving per doubling
    reference = build(8)
    u = _random(2, 2, 8, 8)
    outputs = {}
    for n_layer in (8, 16, 32, 64):
        model = build(n_layer)
        model.load_state_dict(reference.state_dict())
        outputs[n_layer] = model(u).detach()
    gaps = [(outputs[a] - outputs[2 * a]).norm() for a in (8, 16, 32)]
    for coarse, fine in zip(gaps, gaps[1:]):
        assert 1.6 < coarse / fine < 2.4


def test_ifactformer_variants_and_subclasses():
    torch.manual_seed(0)
    m, o = IFactFormerM(1, 1), IFactFormerO(1, 1)
    assert m.block.variant == "parallel" and o.block.variant == "chained"
    count = sum(p.numel() for p in m.parameters())
    assert count - sum(p.numel() for p in o.parameters()) == (2 - 1) * 4 * 32 * 48  # the wider mix
    kernels = m.attention_kernels(torch.randn(2, 1, 12, 10))
    assert len(kernels) == 6 and [k.shape for k in kernels[0]] == [(2, 4, 12, 12), (2, 4, 10, 10)]


# --- cached position tables (not in the state_dict) ------------------------------------------------

def test_rotary_tables_are_cached_per_grid_size_dtype_and_device():
    block, u = _block(), _random(2, 12, 10, 8)
    out = block(u)
    cpu = torch.device("cpu")
    assert set(block.rotary_cache) == {(12, torch.float64, cpu), (10, torch.float64, cpu)}
    for (n, dtype, device), tables in block.rotary_cache.items():
        fresh = rotary_tables(axis_coordinates(n, block.length, dtype, device), block.kernel_dim)
        assert all(torch.equal(cached, new) for cached, new in zip(tables, fresh))
    held = dict(block.rotary_cache)
    torch.testing.assert_close(block(u), out, rtol=0, atol=0)
    assert all(block.rotary_cache[key] is tables for key, tables in held.items())  # reused, not rebuilt
    block.rotary_cache.clear()
    torch.testing.assert_close(block(u), out, rtol=0, atol=0)  # rebuilt: the same output
    block.float()(u.float())
    assert {key[1] for key in block.rotary_cache} == {torch.float64, torch.float32}


def test_fourier_feature_cache_follows_its_frequency_buffer():
    model, other = _ifactformer(2), IFactFormer(2, 1, dim=8, heads=2, dim_head=4, kernel_multiplier=2,
                                                n_layer=2).double()
    features, grid, u = model.fourier_features, (8, 6), _random(2, 2, 8, 6)
    model(u)

    def fresh_matches(dtype: torch.dtype) -> bool:
        return torch.equal(features(grid, dtype), features.features(grid).to(dtype))

    assert fresh_matches(torch.float64)
    model.load_state_dict(other.state_dict())  # new frequencies, copied in place
    assert fresh_matches(torch.float64)
    torch.testing.assert_close(model(u), other(u), rtol=0, atol=0)
    with torch.no_grad():
        features.frequencies.mul_(0.5)
    assert fresh_matches(torch.float64)
    model.float()  # a new buffer in float32
    assert fresh_matches(torch.float32) and fresh_matches(torch.float64)


@pytest.mark.parametrize("variant", ["parallel", "chained"])
def test_caches_stay_out_of_the_state_dict(variant):
    model = _ifactformer(2, variant, n_dims=3)
    before = model.state_dict()
    expected = {name for name, _ in model.named_parameters()} | {"fourier_features.frequencies"}
    assert set(before) == expected
    model(_random(1, 2, 6, 4, 5))
    model(_random(1, 2, 8, 8, 8).float().double())
    assert set(model.state_dict()) == expected
    fresh = _ifactformer(2, variant, n_dims=3)
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_tables_first_made_in_inference_mode_serve_training():
    model, u = _ifactformer(2), _random(2, 2, 8, 6)
    with torch.inference_mode():
        model(u)
    model(u).square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_qk_gain_scales_only_the_initial_query_and_key_maps():
    states = []
    for gain in (1.0, 7.0):
        torch.manual_seed(0)
        states.append(IFactFormerO(2, 1, n_dims=3, dim=8, heads=2, dim_head=4, kernel_multiplier=2,
                                   qk_gain=gain).state_dict())
    assert list(states[0]) == list(states[1])
    for name, reference in states[0].items():
        if ".to_q." in name or ".to_k." in name:
            torch.testing.assert_close(states[1][name], 7.0 * reference, rtol=1e-6, atol=0)
        else:
            assert torch.equal(states[1][name], reference), name


MODELS = [
    lambda n: IFactFormerM(2, 3, n_dims=n, dim=8, heads=2, dim_head=4, kernel_multiplier=2, n_layer=2),
    lambda n: IFactFormerO(2, 3, n_dims=n, dim=8, heads=2, dim_head=4, kernel_multiplier=2, n_layer=2),
    lambda n: FNO(2, 3, n_dims=n, modes=2, width=6, n_layers=2),
    lambda n: IFNO(2, 3, n_dims=n, modes=2, width=6, n_layer=2),
]


@pytest.mark.parametrize("build", MODELS, ids=["ifactformer_m", "ifactformer_o", "fno", "ifno"])
@pytest.mark.parametrize("grid", [(8, 6), (6, 4, 5)], ids=["2d", "3d"])
def test_shapes_and_gradients_reach_every_parameter(build, grid):
    torch.manual_seed(0)
    model = build(len(grid))
    u = torch.randn(2, 2, *grid)
    out = model(u)
    assert out.shape == (2, 3, *grid)
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 0, name
    with pytest.raises(ValueError, match="expected u of shape"):
        model(torch.randn(2, 1, *grid))
    with pytest.raises(ValueError, match="expected u of shape"):
        model(torch.randn(2, 2, 8))


@pytest.mark.parametrize("build,match", [
    (lambda: IFactFormer(1, 1, variant="softmax"), "variant"),
    (lambda: IFactFormer(1, 1, n_dims=1), "n_dims"),
    (lambda: IFactFormer(1, 1, dim=47), "dim"),
    (lambda: IFactFormer(1, 1, dim_head=3, kernel_multiplier=3), "even"),
    (lambda: IFactFormer(1, 1, n_layer=0), "n_layer"),
    (lambda: IFactFormer(1, 1, length=0.0), "length"),
    (lambda: IFactFormer(1, 1, fourier_scale=-1.0), "fourier_scale"),
    (lambda: IFactFormerO(1, 1, qk_gain=0.0), "qk_gain"),
    (lambda: FNO(1, 1, n_dims=4), "n_dims"),
    (lambda: FNO(1, 1, modes=0), "modes"),
    (lambda: FNO(1, 1, n_layers=0), "n_layers"),
    (lambda: IFNO(0, 1), "in_channels"),
    (lambda: IFNO(1, 1, width=2.5), "width"),
    (lambda: FNO(1, 1, positional="yes"), "positional"),
])
def test_invalid_arguments_raise_value_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()
