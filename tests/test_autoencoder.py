"""Oracle tests of the mel autoencoder and its objective: the KL against torch.distributions, shapes,
the sampled latent's law, the loss against closed forms and finite differences, and overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from flowsci.audio.autoencoder import MelAutoencoder, gaussian_kl
from flowsci.audio.autoencoder_objective import AutoencoderConfig, AutoencoderObjective
from flowsci.registry import build_model

F64 = torch.float64


def _tiny(seed: int = 0, **kwargs: int) -> MelAutoencoder:
    torch.manual_seed(seed)
    return MelAutoencoder(**{"channels": 1, "latent_channels": 4, "width": 8, "levels": 2, **kwargs})


def _smooth_fields(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """(n, 1, h, w): random sums of low-frequency sinusoids, amplitudes ~ 1 / (ky kx)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.linspace(0, 1, h)[:, None], torch.linspace(0, 1, w)[None, :]
    fields = torch.zeros(n, 1, h, w)
    for ky in range(1, 4):
        for kx in range(1, 4):
            amplitude = torch.randn(n, 1, 1, 1, generator=g) / (ky * kx)
            phase = 2 * math.pi * torch.rand(n, 1, 1, 1, generator=g)
            fields += amplitude * torch.sin(math.pi * ky * y + phase) * torch.cos(math.pi * kx * x)
    return fields


class _Fixed(torch.nn.Module):
    """A stand-in autoencoder returning (x + offset, mean, logvar) with given posteriors."""

    def __init__(self, offset: float, mean: torch.Tensor, logvar: torch.Tensor):
        super().__init__()
        self.offset, self.mean, self.logvar = offset, mean, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x + self.offset, self.mean, self.logvar


# --- gaussian_kl ------------------------------------------------------------------------------------

def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 5, 6, generator=g, dtype=F64)
    logvar = 2 * torch.randn(3, 4, 5, 6, generator=g, dtype=F64)
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    kl = gaussian_kl(mean, logvar)
    assert kl.shape == (3,)
    torch.testing.assert_close(kl, reference, rtol=1e-12, atol=1e-12)
    assert torch.all(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)


def test_gaussian_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))


# --- the autoencoder --------------------------------------------------------------------------------

def test_mel_spectrogram_shapes():
    model = build_model("mel_autoencoder", {"channels": 1, "latent_channels": 8, "width": 8, "levels": 2})
    assert isinstance(model, MelAutoencoder)
    x = torch.randn(2, 1, 64, 256)
    with torch.no_grad():
        reconstruction, mean, logvar = model(x)
        assert mean.shape == logvar.shape == (2, 8, 16, 64)
        assert reconstruction.shape == x.shape
        assert model.decode(mean).shape == x.shape
    assert model.latent_shape((2, 1, 64, 256)) == (2, 8, 16, 64)
    assert model.latent_shape((1, 64, 256)) == (8, 16, 64)
    assert _tiny(levels=3, channels=2).latent_shape((5, 2, 16, 8)) == (5, 4, 2, 1)


def test_bad_shapes_and_arguments_are_errors():
    model = _tiny()
    for shape in [(1, 1, 62, 32), (1, 1, 64, 30)]:
        with pytest.raises(ValueError, match="divisible by 2\\^levels = 4"):
            model.encode(torch.zeros(shape))
        with pytest.raises(ValueError, match="divisible"):
            model.latent_shape(shape)
    with pytest.raises(ValueError, match="channels=1"):
        model.encode(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="B, channels, H, W"):
        model.encode(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="latent_channels=4"):
        model.decode(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="width"):
        MelAutoencoder(width=0)


def test_logvar_is_clamped():
    model = _tiny()
    head = model.encoder[-1]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        for bias, bound in [(1e3, 20.0), (-1e3, -30.0)]:
            head.bias[4:] = bias
            assert torch.all(model.encode(x)[1] == bound)


def test_deterministic_and_seeded_sampling():
    model = _tiny()
    x = _smooth_fields(2, 8, 16, seed=1)
    with torch.no_grad():
        mean_reconstruction, mean, _ = model(x, sample=False)
        torch.testing.assert_close(model(x, sample=False)[0], mean_reconstruction, rtol=0, atol=0)
        torch.testing.assert_close(model.decode(mean), mean_reconstruction, rtol=0, atol=0)
        first = model(x, generator=torch.Generator().manual_seed(7))[0]
        again = model(x, generator=torch.Generator().manual_seed(7))[0]
        other = model(x, generator=torch.Generator().manual_seed(8))[0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, mean_reconstruction)


def test_sampled_latent_follows_the_posterior():
    """The decoded z of many copies of one field, standardised by the posterior, is N(0, 1); the
    log-variance is moved far from 0 so that std = exp(logvar) (not exp(logvar / 2)) would fail."""
    model = _tiny()
    with torch.no_grad():
        model.encoder[-1].bias[4:] -= 3.0
    decoded = []
    model.decoder.register_forward_pre_hook(lambda module, args: decoded.append(args[0]))
    x = _smooth_fields(1, 8, 8, seed=2).expand(4000, -1, -1, -1)
    with torch.no_grad():
        _, mean, logvar = model(x, generator=torch.Generator().manual_seed(0))
    assert logvar.max() < -1.5
    standardised = (decoded[0] - mean) / (0.5 * logvar).exp()          # (4000, 4, 2, 2)
    assert standardised.mean(0).abs().max() < 0.1                       # 4.5 standard errors
    assert (standardised.std(0) - 1).abs().max() < 0.06                 # ~5 standard errors


# --- the objective ----------------------------------------------------------------------------------

def test_loss_is_zero_for_a_perfect_reconstruction_and_the_prior():
    x = torch.randn(3, 1, 8, 8)
    objective = AutoencoderObjective(kl_weight=0.5)
    loss, logs = objective.loss(_Fixed(0.0, torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)), {"x1": x})
    assert loss.item() == 0 and logs == {"reconstruction": 0.0, "kl": 0.0, "loss": 0.0}


@pytest.mark.parametrize("reconstruction, error", [("l1", 0.3), ("mse", 0.09)])
def test_loss_normalisation_against_closed_forms(reconstruction: str, error: float):
    """A constant offset 0.3 gives |0.3| (l1) or 0.09 (mse); the KL enters as kl_weight · KL / N per
    sample, N the input elements, with the KL from torch.distributions."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 8, 4, generator=g, dtype=F64)
    mean = torch.randn(3, 5, 2, 1, generator=g, dtype=F64)
    logvar = torch.randn(3, 5, 2, 1, generator=g, dtype=F64)
    kl = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum()
    objective = AutoencoderObjective.from_config(AutoencoderConfig(reconstruction=reconstruction,
                                                                   kl_weight=0.25))
    loss, logs = objective.loss(_Fixed(0.3, mean, logvar), {"x1": x})
    assert loss.item() == pytest.approx(error + 0.25 * kl.item() / (3 * 64), rel=1e-12)
    assert logs["reconstruction"] == pytest.approx(error, rel=1e-12)
    assert logs["kl"] == pytest.approx(kl.item() / (3 * 10), rel=1e-12)
    assert logs["loss"] == pytest.approx(loss.item())


def test_objective_gradient_matches_finite_differences():
    """The derivative along a random unit direction in parameter space, with the latent noise fixed
    by the seed; central differences, error O(h²)."""
    model = _tiny(seed=4, width=4).double()
    x = _smooth_fields(2, 8, 8, seed=4).double()
    objective = AutoencoderObjective(reconstruction="mse", kl_weight=0.1)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=g, dtype=F64) for p in params]
    norm = math.sqrt(sum(d.square().sum().item() for d in direction))
    direction = [d / norm for d in direction]          # unit length over all parameters

    def loss_at(step: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(step * d)
            torch.manual_seed(11)
            loss = objective.loss(model, {"x1": x})[0].item()
            for p, d in zip(params, direction):
                p.sub_(step * d)
        return loss

    torch.manual_seed(11)
    grads = torch.autograd.grad(objective.loss(model, {"x1": x})[0], params)
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction))
    h = 1e-5
    numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
    assert analytic.item() == pytest.approx(numeric, rel=1e-6)


def test_tiny_model_overfits_smooth_fields():
    x = _smooth_fields(8, 16, 32, seed=0)
    model = _tiny(seed=0)
    objective = AutoencoderObjective()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = (model(x, sample=False)[0] - x).abs().mean().item()
    for _ in range(150):
        loss, logs = objective.loss(model, {"x1": x})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = (model(x, sample=False)[0] - x).abs().mean().item()
    assert after < before / 5
    assert logs["kl"] > 0 and math.isfinite(logs["loss"])


def test_config_validation():
    with pytest.raises(ValueError, match="reconstruction must be one of l1, mse"):
        AutoencoderConfig(reconstruction="huber")
    with pytest.raises(ValueError, match="kl_weight"):
        AutoencoderConfig(kl_weight=-1.0)
    with pytest.raises(ValueError, match="kl_weight"):
        AutoencoderObjective(kl_weight=float("nan"))
