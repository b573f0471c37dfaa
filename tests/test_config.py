"""Config: typed sections, overrides with coercion, unknown keys with suggestions, domain settings."""

from __future__ import annotations

import pytest
import yaml
from conftest import TOY2D_YAML

from flowsci.config import TrainConfig, config_from_dict, load_config, save_config
from flowsci.errors import ConfigError
from flowsci.flow_matching import FlowMatchingConfig


def test_yaml_becomes_typed_sections():
    cfg = load_config(TOY2D_YAML)
    assert cfg.domain == "toy2d"
    assert type(cfg.train) is TrainConfig and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.objective, FlowMatchingConfig)
    assert type(cfg.settings).__name__ == "Toy2DSettings" and cfg.settings.target == "moons"
    assert type(cfg.data).__name__ == "Toy2DData" and cfg.data.n_train == 20000
    assert cfg.model.name == "mlp_velocity" and cfg.model.params == {"width": 128, "depth": 3}
    assert cfg.train.betas == (0.9, 0.999)


def test_overrides_are_coerced_to_the_field_types():
    cfg = load_config(TOY2D_YAML, ["train.steps=200", "train.lr=3e-4", "train.tensorboard=true",
                                   "eval.steps=[2, 8]", "model.width=64", "domain.source=gaussian",
                                   "data.path=null", "train.betas=[0.8,0.9]", "seed=7"])
    assert cfg.train.steps == 200 and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.tensorboard is True
    assert cfg.eval.steps == [2, 8]
    assert cfg.model.params["width"] == 64 and isinstance(cfg.model.params["width"], int)
    assert cfg.settings.source == "gaussian"
    assert cfg.data.path is None and cfg.train.betas == (0.8, 0.9) and cfg.seed == 7


@pytest.mark.parametrize("override, pattern", [
    ("train.stepz=5", r"toy2d.yaml: unknown key 'train.stepz' \(did you mean 'train.steps'\?\)"),
    ("model.widht=5", r"unknown key 'model.widht' \(did you mean 'model.width'\?\)"),
    ("eval.n_sample=5", r"unknown key 'eval.n_sample' \(did you mean 'eval.n_samples'\?\)"),
    ("domain.sorce=moons", r"unknown key 'domain.sorce' \(did you mean 'domain.source'\?\)"),
    ("trian.steps=5", r"unknown key 'trian' \(did you mean 'train'\?\)"),
])
def test_unknown_key_names_file_key_and_closest(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(TOY2D_YAML, [override])


@pytest.mark.parametrize("override, pattern", [
    ("train.steps=abc", r"'train.steps' must be an integer, got 'abc'"),
    ("train.steps=1.5", r"'train.steps' must be an integer"),
    ("train.tensorboard=maybe", r"'train.tensorboard' must be true or false"),
    ("train.schedule=linear", r"'train.schedule' must be one of 'cosine', 'constant'"),
    ("domain.source=circle",
     r"'domain.source' must be one of 'gaussian', '8gaussians', 'moons', 'checkerboard'"),
    ("domain.source=moons", r"domain: source and target are both 'moons'"),
    ("model.width=wide", r"'model.width' must be an integer"),
    ("train.steps", r"override 'train.steps' must look like key.path=value"),
])
def test_bad_values_are_clear_errors(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(TOY2D_YAML, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: [toy2d\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_unknown_domain_and_model_list_what_exists():
    with pytest.raises(ConfigError,
                       match=r"unknown domain 'toy3d' \(did you mean 'toy2d'\?\); available: .*toy2d"):
        config_from_dict({"domain": "toy3d", "model": "mlp_velocity"})
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'mlp'.*available: .*mlp_velocity"):
        config_from_dict({"domain": "toy2d", "model": "mlp"})
    with pytest.raises(ConfigError, match=r"'model' is required|section 'model' is required"):
        config_from_dict({"domain": "toy2d"})


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(TOY2D_YAML, ["train.steps=123", "domain.target=checkerboard"])
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert yaml.safe_load(path.read_text())["train"]["steps"] == 123


def test_name_overrides_are_plain_strings(tmp_path):
    cfg = load_config(TOY2D_YAML, ["model.name=mlp_velocity", "domain.name=toy2d", "objective.path=linear"])
    assert type(cfg.model.name) is str and type(cfg.domain) is str and type(cfg.objective.path) is str
    assert load_config(save_config(cfg, tmp_path / "c.yaml")).to_dict() == cfg.to_dict()


def test_component_specs_from_the_command_line():
    cfg = load_config(TOY2D_YAML, ["objective.timesteps={name: u_shaped, a: 4}", "objective.coupling=ot",
                                   "sample.grid={name: edm, rho: 7}"])
    assert cfg.objective.timesteps == {"name": "u_shaped", "a": 4}
    assert cfg.objective.coupling == "ot" and cfg.sample.grid == {"name": "edm", "rho": 7}


def test_a_mapping_override_replaces_a_whole_section():
    # switching models on the command line drops the previous model's arguments
    cfg = load_config(TOY2D_YAML, ["model={name: mlp_velocity, width: 16}", "train={steps: 5}"])
    assert cfg.model.name == "mlp_velocity" and cfg.model.params == {"width": 16}
    assert cfg.train.steps == 5 and cfg.train.lr == TrainConfig().lr
    with pytest.raises(ConfigError, match="unknown key 'model.widht'"):
        load_config(TOY2D_YAML, ["model={name: mlp_velocity, widht: 16}"])
