"""Tests of the toy2d domain: the benchmark distributions against their definitions, and the
domain end to end (config -> data -> training -> evaluation) in a temporary folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from flowsci.config import Config, config_from_dict
from flowsci.data import ensure_data, load_split
from flowsci.data.lifecycle import default_path
from flowsci.errors import ConfigError
from flowsci.metrics import wasserstein
from flowsci.plugins import create_domain
from flowsci.training import TrainResult, train
from flowsci_domains.toy2d.distributions import DISTRIBUTIONS, DistributionSource

REPO = Path(__file__).resolve().parents[2]
TOY2D_YAML = REPO / "domains" / "toy2d.yaml"
N = 20_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- distributions -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_distributions_shape_dtype_and_reproducible(name: str) -> None:
    sampler = DISTRIBUTIONS[name]
    a, b, c = sampler(500, _gen(1)), sampler(500, _gen(1)), sampler(500, _gen(2))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert bool(torch.isfinite(a).all())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    source = DistributionSource(name)
    assert torch.equal(source.sample(500, generator=_gen(1)), a)


def test_eight_gaussians_clusters() -> None:
    """Nearest of the 8 centres 5 (cos k pi/4, sin k pi/4): equal frequencies (SE 0.0023),
    cluster means on the centres and per-axis std 0.1**0.25 = 0.562 (the centres are
    3.83 = 6.8 std apart, so nearest-centre assignment hardly truncates)."""
    x = DISTRIBUTIONS["8gaussians"](N, _gen(0)).double()
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = 5 * torch.stack([angles.cos(), angles.sin()], dim=1)
    k = torch.cdist(x, centres).argmin(dim=1)
    freq = torch.bincount(k, minlength=8).double() / N
    assert (freq - 1 / 8).abs().max() < 0.012, freq
    residual = x - centres[k]
    std = 0.1 ** 0.25
    for j in range(8):
        r = residual[k == j]
        assert r.mean(0).abs().max() < 0.06, (j, r.mean(0))       # SE ~0.011
        assert (r.std(0) - std).abs().max() < 0.04, (j, r.std(0))  # SE ~0.008
    assert (residual.std(0) - std).abs().max() < 0.012, residual.std(0)  # SE ~0.003
    # radius 5 on average (the ring is not shifted or scaled)
    assert abs(float(x.norm(dim=1).mean()) - 5.0) < 0.1


def test_checkerboard_dark_cells() -> None:
    """[-4, 4]^2 cut into 2x2 cells (i, j) = (floor(x/2), floor(y/2)) in {-2..1}^2: points lie
    only where i + j is even (8 cells), each about 1/8 of them, uniformly inside."""
    x = DISTRIBUTIONS["checkerboard"](N, _gen(0)).double()
    assert bool(((x >= -4) & (x <= 4)).all())
    cells = torch.floor(x / 2).long()
    assert bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())
    index = (cells[:, 0] + 2) * 4 + (cells[:, 1] + 2)
    counts = torch.bincount(index, minlength=16).double() / N
    dark = [(i + 2) * 4 + (j + 2) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
    assert len(dark) == 8
    assert (counts[dark] - 1 / 8).abs().max() < 0.012, counts[dark]
    # uniform inside a cell: offset from the cell's lower corner ~ U[0, 2]^2, mean 1, var 1/3
    offset = x - 2 * cells.double()
    assert (offset.mean(0) - 1).abs().max() < 0.02
    assert (offset.var(0) - 1 / 3).abs().max() < 0.02


def test_moons_moments() -> None:
    """Before 3x - 1: with theta ~ U(0, pi), upper (cos, sin), lower (1 - cos, 1/2 - sin), each
    w.p. 1/2, plus N(0, 0.2^2). E cos = 0, E sin = 2/pi, E sin^2 = E cos^2 = 1/2, so
    E x = 1/2, E y = 1/4, Var x = 1 - 1/4 = 3/4, Var y = 9/16 - 1/pi; then + 0.04 each.
    After 3x - 1: mean (1/2, -1/4), variances 9 (3/4 + 0.04) and 9 (9/16 - 1/pi + 0.04)."""
    x = DISTRIBUTIONS["moons"](N, _gen(0)).double()
    mean = x.mean(0)
    assert abs(float(mean[0]) - 0.5) < 0.08, mean    # SE 0.019
    assert abs(float(mean[1]) + 0.25) < 0.05, mean   # SE 0.011
    var = x.var(0)
    assert float(var[0]) == pytest.approx(9 * (0.75 + 0.04), rel=0.04)
    assert float(var[1]) == pytest.approx(9 * (9 / 16 - 1 / math.pi + 0.04), rel=0.04)


def _distance_to_half_circle(q: torch.Tensor, centre: tuple[float, float], upper: bool) -> torch.Tensor:
    d = q - torch.tensor(centre, dtype=q.dtype)
    on_side = d[:, 1] >= 0 if upper else d[:, 1] <= 0
    ends = torch.stack([(d - torch.tensor([1.0, 0.0], dtype=q.dtype)).norm(dim=1),
                        (d + torch.tensor([1.0, 0.0], dtype=q.dtype)).norm(dim=1)]).min(0).values
    return torch.where(on_side, (d.norm(dim=1) - 1).abs(), ends)


def test_moons_lie_on_two_half_circles() -> None:
    """Undo 3x - 1: points are within noise 0.2 of the upper unit half circle around (0, 0) or
    the lower one around (1, 1/2), half of them each. The mean squared distance to the nearest
    arc is a bit under 0.2^2 (the normal component of the noise; 0.0373 over 2e5 points)."""
    u = (DISTRIBUTIONS["moons"](N, _gen(0)).double() + 1) / 3
    upper = _distance_to_half_circle(u, (0.0, 0.0), True)
    lower = _distance_to_half_circle(u, (1.0, 0.5), False)
    d2 = torch.minimum(upper, lower) ** 2
    assert 0.033 < float(d2.mean()) < 0.041, float(d2.mean())
    assert abs(float((upper < lower).double().mean()) - 0.5) < 0.02
    assert float(torch.minimum(upper, lower).max()) < 1.2   # ~5 noise std at most


# --- the domain end to end -----------------------------------------------------------------


def _raw() -> dict:
    return yaml.safe_load(TOY2D_YAML.read_text())


SMALL = ["data.n_train=600", "data.n_val=100", "data.n_test=100", "eval.n_samples=100",
         "eval.steps=[1,4]", "sample.steps=10", "model.width=16", "model.depth=1",
         "train.batch_size=50", "train.warmup_steps=2", "train.eval_every=0",
         "train.checkpoint_every=0", "train.log_every=5"]


def _config(*overrides: str) -> Config:
    return config_from_dict(_raw(), [*SMALL, *overrides], source=str(TOY2D_YAML))


def test_yaml_config_builds() -> None:
    cfg = config_from_dict(_raw(), source=str(TOY2D_YAML))
    assert cfg.domain == "toy2d"
    assert (cfg.settings.source, cfg.settings.target) == ("8gaussians", "moons")
    assert cfg.model.name == "mlp_velocity"


def test_train_smoke_returns_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSCI_DATA", str(tmp_path / "data"))
    cfg = _config("train.steps=12")
    result = train(cfg, out=tmp_path / "run", progress=False)
    assert isinstance(result, TrainResult)
    assert result.step == 12
    for key in ("w2", "straightness", "w2_floor", "w2_nfe1", "w2_nfe4"):
        assert key in result.metrics, result.metrics
        assert math.isfinite(result.metrics[key]) and result.metrics[key] >= 0
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert list((tmp_path / "data" / "toy2d").glob("*.h5"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Config]:
    """A short real training: 400 steps, no EMA, 4000 training targets."""
    tmp = tmp_path_factory.mktemp("toy2d_train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWSCI_DATA", str(tmp / "data"))
        torch.manual_seed(0)
        cfg = config_from_dict(_raw(), [
            "train.steps=400", "train.ema=0", "train.warmup_steps=20", "train.eval_every=0",
            "train.checkpoint_every=0", "train.threads=1", "data.n_train=4000", "data.n_val=500",
            "data.n_test=500", "eval.n_samples=500", "sample.steps=50"], source=str(TOY2D_YAML))
        result = train(cfg, out=tmp / "run", progress=False)
        cfg.data.path = str(create_domain("toy2d").data_file(cfg))  # absolute, for the test
    return result, cfg


def test_short_training_transports_source_to_target(trained: tuple[TrainResult, Config]) -> None:
    """8 Gaussians -> moons: W2(source, target) is ~2.6; after 400 steps the generated samples
    are well below half of it (measured 0.75), and 1 Euler step is worse than 50."""
    result, cfg = trained
    test = load_split(cfg.data.path, "test", ["x0", "x1"])
    baseline = wasserstein(test["x0"], test["x1"])
    assert baseline > 2.0
    m = result.metrics
    assert m["w2"] < 0.5 * baseline, (m, baseline)
    assert m["w2_floor"] < m["w2"]
    assert m["w2_nfe1"] > m["w2"]
    assert m["straightness"] > 0


def test_settings_source_equal_to_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="moons"):
        config_from_dict(_raw(), ["domain.source=moons", "domain.target=moons"])


def test_unknown_distribution_is_a_config_error_listing_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(_raw(), ["domain.source=spiral"])
    message = str(info.value)
    assert "domain.source" in message and "spiral" in message
    for name in DISTRIBUTIONS:
        assert name in message, message


def test_data_file_is_created_reused_and_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSCI_DATA", str(tmp_path))
    domain = create_domain("toy2d")
    cfg = _config()
    path = default_path(domain, cfg)
    assert path.parent == tmp_path / "toy2d"
    assert not path.exists()
    first = domain.build_data(cfg)
    assert path.is_file()
    n = len(first.train), len(first.val), len(first.test)
    assert n == (600, 100, 100)

    old = 1_000_000_000  # 2001: any rewrite moves the mtime
    os.utime(path, (old, old))
    second = domain.build_data(_config())
    assert path.stat().st_mtime == old
    assert torch.equal(second.test.tensors["x1"], first.test.tensors["x1"])

    ensure_data(domain, _config(), force=True)  # data.regenerate=true / flowsci data make --force
    third = domain.build_data(_config())
    assert path.stat().st_mtime > old
    # same seed: the regenerated file holds the same samples
    assert torch.equal(third.test.tensors["x0"], first.test.tensors["x0"])

    other = _config("data.seed=1")
    assert default_path(domain, other) != path
    assert not torch.equal(domain.build_data(other).test.tensors["x1"], first.test.tensors["x1"])


def test_data_splits_follow_the_distributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored x0 come from the source and x1 from the target (checkerboard cells as oracle)."""
    monkeypatch.setenv("FLOWSCI_DATA", str(tmp_path))
    cfg = _config("domain.source=gaussian", "domain.target=checkerboard")
    data = create_domain("toy2d").build_data(cfg)
    x1 = data.test.tensors["x1"]
    cells = torch.floor(x1 / 2).long()
    assert bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())
    x0 = data.val.tensors["x0"]
    assert abs(float(x0.std()) - 1.0) < 0.15
    assert set(data.train.tensors) == {"x1"}
