"""The data lifecycle (flowsci.data.lifecycle), the same in every domain: a default file is made
once and reused, a missing explicit data.path is an error, a file made with other generator
settings is never silently reused, and a failed generation leaves nothing behind."""

from __future__ import annotations

import h5py
import pytest
from conftest import REPO, SMALL, TOY2D_YAML

from flowsci.config import load_config
from flowsci.data import ensure_data, read_meta
from flowsci.data.lifecycle import SETTINGS_ATTR, default_path
from flowsci.errors import DataError
from flowsci.registry import create_domain

CONFIGS = sorted((REPO / "domains").glob("*.yaml"))


def test_every_first_party_domain_has_a_config_here():
    domains = {load_config(path).domain for path in CONFIGS}
    assert domains == {"toy2d", "turbulence", "turbulence3d", "rotations", "backbones", "population",
                       "letter_clouds", "lpinn", "kinetic", "images", "separation", "separation_mask",
                       "separation_autoencoder", "sparse_flow"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_a_missing_explicit_data_path_is_an_error_naming_the_command(config, tmp_path):
    missing = tmp_path / "absent.h5"
    cfg = load_config(config, [f"data.path={missing}"])
    domain = create_domain(cfg.domain)
    with pytest.raises(DataError, match=rf"data.path={missing} does not exist; generate it with "
                                        rf"`flowsci data make {config} data.path={missing}`"):
        ensure_data(domain, cfg)
    with pytest.raises(DataError, match="does not exist"):
        domain.build_data(cfg)
    assert not missing.exists()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_the_default_file_name_hashes_the_generator_settings(config):
    cfg, other = load_config(config), load_config(config, ["data.seed=12345"])
    domain = create_domain(cfg.domain)
    path = default_path(domain, cfg)
    assert path.parent.name == (domain.data_group or cfg.domain) and path.suffix == ".h5"
    assert default_path(domain, load_config(config)) == path  # deterministic
    if cfg.domain == "lpinn":  # the reference solution is not random: data.seed is no setting of it
        assert default_path(domain, other) == path
    else:
        assert default_path(domain, other) != path
    loader_only = load_config(config, ["data.num_workers=2"])
    assert default_path(domain, loader_only) == path


def test_domains_of_one_data_group_share_their_default_file():
    configs = {name: load_config(REPO / "domains" / f"{name}.yaml")
               for name in ("separation", "separation_mask", "separation_autoencoder")}
    paths = {default_path(create_domain(name), cfg) for name, cfg in configs.items()}
    assert len(paths) == 1 and next(iter(paths)).parent.name == "separation"
    # a generator setting still makes another file
    other = load_config(REPO / "domains" / "separation_mask.yaml", ["data.n_test=7"])
    assert default_path(create_domain("separation_mask"), other) not in paths


def test_default_data_is_generated_once_then_reused(monkeypatch):
    cfg = load_config(TOY2D_YAML, [*SMALL, "data.n_train=300", "data.seed=41"])
    domain = create_domain("toy2d")
    calls = []
    make = type(domain).make_data
    monkeypatch.setattr(
        type(domain), "make_data",
        lambda self, cfg, path, progress: calls.append(path) or make(self, cfg, path, progress))
    path = ensure_data(domain, cfg)
    assert path == default_path(domain, cfg) and path.is_file() and len(calls) == 1
    stamp = path.stat().st_mtime_ns
    for _ in range(2):
        assert ensure_data(domain, cfg) == path
        create_domain("toy2d").build_data(cfg)
    assert len(calls) == 1 and path.stat().st_mtime_ns == stamp
    assert calls[0] != path and calls[0].parent == path.parent  # written beside, then renamed
    assert read_meta(path).splits["train"] == 300
    ensure_data(domain, cfg, force=True)  # flowsci data make --force / data.regenerate
    assert len(calls) == 2


def test_a_file_made_with_other_settings_is_refused(tmp_path):
    explicit = tmp_path / "mine.h5"
    made = load_config(TOY2D_YAML, [*SMALL, "data.n_train=300", f"data.path={explicit}"])
    domain = create_domain("toy2d")
    ensure_data(domain, made, force=True)  # what `flowsci data make CONFIG data.path=...` does
    assert ensure_data(domain, made) == explicit
    other = load_config(TOY2D_YAML, [*SMALL, "data.n_train=400", f"data.path={explicit}"])
    with pytest.raises(DataError, match=r"mine.h5 was generated with other settings \(n_train: file 300, "
                                        r"config 400\)"):
        ensure_data(domain, other)
    with pytest.raises(DataError, match="other settings"):  # also when a run builds its data
        domain.build_data(other)


def test_a_users_own_file_without_recorded_settings_is_used_as_it_is(tmp_path):
    explicit = tmp_path / "mine.h5"
    cfg = load_config(TOY2D_YAML, [*SMALL, f"data.path={explicit}"])
    domain = create_domain("toy2d")
    ensure_data(domain, cfg, force=True)
    with h5py.File(explicit, "a") as f:
        del f.attrs[SETTINGS_ATTR]
    other = load_config(TOY2D_YAML, [*SMALL, "data.n_train=999", f"data.path={explicit}"])
    assert len(domain.build_data(other).train) == 2000  # what the file holds


def test_a_failed_generation_leaves_no_file(monkeypatch):
    cfg = load_config(TOY2D_YAML, [*SMALL, "data.seed=43"])
    domain = create_domain("toy2d")

    def crash(self, cfg, path, progress):
        path.write_bytes(b"half a file")
        raise RuntimeError("generator crashed")

    monkeypatch.setattr(type(domain), "make_data", crash)
    with pytest.raises(RuntimeError, match="generator crashed"):
        ensure_data(domain, cfg)
    folder = default_path(domain, cfg).parent
    assert not default_path(domain, cfg).exists()
    assert folder.is_dir()  # made for the partial file, which is gone
    assert not [p for p in folder.iterdir() if "partial" in p.name]
