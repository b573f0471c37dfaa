"""YAML configuration -> typed dataclasses, with ``key.path=value`` overrides and clear errors.

A config file has the sections ``domain`` (a name, or a mapping with ``name`` plus the
domain's own ``Settings``), ``seed``, ``data``, ``model`` (``name`` of a registered model plus
its constructor arguments), ``objective``, ``sample``, ``train`` and ``eval``. A domain may
narrow the ``data``/``objective``/``sample``/``eval`` sections by subclassing
:class:`DataConfig`, :class:`ObjectiveConfig`, :class:`SampleConfig` and :class:`EvalConfig`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from flowsci.atomic import atomic_write_text
from flowsci.errors import ConfigError, PluginError, closest
from flowsci.registry import domain_class, model_parameters


@dataclasses.dataclass
class DataConfig:
    """Where the data lives and how it is generated."""

    path: str | None = None          # HDF5 file; None: generated under $FLOWSCI_DATA or ./data
    seed: int = 0                    # generator seed (independent of the training seed)
    regenerate: bool = False         # regenerate even if the file exists
    num_workers: int = 0             # DataLoader worker processes


@dataclasses.dataclass
class ModelConfig:
    """A registered model name and its constructor arguments (flat in YAML)."""

    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ObjectiveConfig:
    """Base of objective sections; the engine's flow matching narrows it."""


@dataclasses.dataclass
class SampleConfig:
    """How samples are drawn (evaluation, ``flowsci sample``); entries are registered names
    or mappings ``{name: ..., <parameters>}``."""

    solver: str | dict[str, Any] = "euler"
    steps: int = 100                 # solver steps (NFE = steps x the solver's evaluations per step)
    grid: str | dict[str, Any] = "uniform"
    guidance: float = 1.0            # classifier-free guidance weight w (1: conditional, 0: unconditional)
    # On a product space, a sampling schedule per factor different from the trained linear one,
    # e.g. [linear, {name: exp, rate: 10, normalized: false}] on SE(3)^N (FrameFlow); null: as trained.
    schedule: str | dict[str, Any] | list[Any] | None = None


@dataclasses.dataclass
class LBFGSConfig:
    """A quasi-Newton phase (torch.optim.LBFGS) after the first-order steps, as PINNs use.

    One training step is one L-BFGS iteration (up to ``max_eval`` loss evaluations with the
    line search). An iteration that leaves the loss unchanged (relative change <=
    ``tolerance_change``) restarts L-BFGS with its curvature history cleared; the phase ends
    early when the iterations after a restart leave it unchanged too, or when the gradient is
    below ``tolerance_grad``.
    """

    steps: int = 0                   # L-BFGS iterations after train.steps; 0: no L-BFGS phase
    lr: float = 1.0
    history_size: int = 50
    max_eval: int = 25               # loss evaluations per iteration
    line_search: Literal["strong_wolfe", "none"] = "strong_wolfe"
    tolerance_grad: float = 1e-9     # max |gradient| at which L-BFGS has converged
    tolerance_change: float = 0.0    # relative loss change at which L-BFGS has converged


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing."""

    steps: int = 1000                # first-order (AdamW) steps
    batch_size: int = 256            # global batch (split over processes under torchrun)
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    amsgrad: bool = False
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0        # cosine floor as a fraction of lr
    ema: float = 0.0                 # EMA decay; 0 disables
    grad_clip: float = 0.0           # max global grad norm; 0 disables
    log_every: int = 10
    eval_every: int = 0              # 0: evaluate only at the end
    figures_every: int = 0           # 0: figures only at the end
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    out_dir: str = "runs"
    device: str = "cpu"              # cpu | cuda | cuda:N | auto
    threads: int = 0                 # torch intra-op threads; 0: $OMP_NUM_THREADS or torch's default
    compile: bool = False            # torch.compile the model, also to evaluate and sample; eager if it fails
    prefetch_pairs: bool = True      # OT couplings: pair batch k+1 on a thread while k trains (same pairs)
    tensorboard: bool = False
    init_from: str | None = None     # checkpoint or run directory whose model weights start training
    lbfgs: LBFGSConfig = dataclasses.field(default_factory=LBFGSConfig)

    @property
    def total_steps(self) -> int:
        """First-order steps plus L-BFGS iterations."""
        return self.steps + self.lbfgs.steps


@dataclasses.dataclass
class EvalConfig:
    """Evaluation shared by all domains."""

    n_samples: int = 2000
    use_ema: bool = True             # evaluate the EMA weights when train.ema > 0


SECTION_BASES: dict[str, type] = {"data": DataConfig, "objective": ObjectiveConfig,
                                  "sample": SampleConfig, "eval": EvalConfig}
SECTION_ATTRS = {"data": "DataSettings", "objective": "ObjectiveSettings",
                 "sample": "SampleSettings", "eval": "EvalSettings"}
TOP_KEYS = ("domain", "seed", "data", "model", "objective", "sample", "train", "eval")
SWEEP_KEY = "sweep"  # read by flowsci.sweep; a single run ignores it


@dataclasses.dataclass
class Config:
    """A resolved configuration."""

    domain: str
    settings: Any                    # the domain's Settings instance (YAML `domain:` mapping)
    model: ModelConfig
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    source: str = "<dict>"           # the file it came from (not saved)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict in YAML layout (round-trips through :func:`config_from_dict`)."""
        return {
            "domain": {"name": self.domain, **_plain(self.settings)},
            "seed": self.seed,
            "data": _plain(self.data),
            "model": {"name": self.model.name, **_plain(self.model.params)},
            "objective": _plain(self.objective),
            "sample": _plain(self.sample),
            "train": _plain(self.train),
            "eval": _plain(self.eval),
        }


class _Override(str):
    """A value typed on the command line: parsed as YAML where the type is not known."""


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config file and apply ``key.path=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_dict(raw if raw is not None else {}, overrides, source=str(path))


def config_from_dict(raw: Mapping[str, Any], overrides: Sequence[str] = (),
                     source: str = "<dict>") -> Config:
    """Build a typed :class:`Config` from a nested mapping (a parsed YAML file)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections {list(TOP_KEYS)}")
    raw = _deep_copy(raw)
    if isinstance(raw.get("domain"), str):
        raw["domain"] = {"name": raw["domain"]}
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    for item in overrides:
        apply_override(raw, item, source)
    raw.pop(SWEEP_KEY, None)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(_unknown(source, key, TOP_KEYS + (SWEEP_KEY,)))

    domain_raw = _section(raw, "domain", source, required=True)
    name = domain_raw.pop("name", None)
    name = str(name) if isinstance(name, str) else name  # a plain str, also from an override
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: 'domain.name' is required (the registered domain to use)")
    try:
        domain = domain_class(name)
    except PluginError as exc:
        raise ConfigError(f"{source}: domain: {exc}") from None

    sections: dict[str, Any] = {}
    for key, base in SECTION_BASES.items():
        cls = getattr(domain, SECTION_ATTRS[key], base)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(f"domain '{name}': {SECTION_ATTRS[key]} must subclass {base.__name__}")
        sections[key] = _build(cls, _section(raw, key, source), key, source)
    settings = _build(domain.Settings, domain_raw, "domain", source)
    train = _build(TrainConfig, _section(raw, "train", source), "train", source)

    model_raw = _section(raw, "model", source, required=True)
    model_name = model_raw.pop("name", None)
    model_name = str(model_name) if isinstance(model_name, str) else model_name
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"{source}: 'model.name' is required (see `flowsci list models`)")
    try:
        params_spec = model_parameters(model_name)
    except PluginError as exc:
        raise ConfigError(f"{source}: model.name: {exc}") from None
    params = {}
    for key, value in model_raw.items():
        if key not in params_spec:
            raise ConfigError(_unknown(source, f"model.{key}", [f"model.{k}" for k in params_spec]))
        annotation = params_spec[key].annotation
        params[key] = (override_value(value)
                       if annotation is inspect.Parameter.empty or isinstance(annotation, str)
                       else _coerce(value, annotation, f"model.{key}", source))

    seed = _coerce(raw.get("seed", 0), int, "seed", source)
    return Config(domain=name, settings=settings, model=ModelConfig(model_name, params), seed=seed,
                  train=train, source=source, **sections)


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    text = f"# resolved flowsci config (from {cfg.source})\n" + yaml.safe_dump(
        cfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return path


# --- parsing helpers ---------------------------------------------------------------------


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    """Apply one ``key.path=value`` override to a raw (parsed YAML) config, in place; the value
    stays a string typed on the command line until the key's type is known."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like key.path=value (e.g. train.steps=200)")
    parts = key.strip().split(".")
    if len(parts) == 1 and parts[0] in TOP_KEYS:
        try:
            section = yaml.safe_load(value)
        except yaml.YAMLError:
            section = None
        if isinstance(section, dict):  # a whole section, e.g. model='{name: fno, modes: 12}'
            raw[parts[0]] = section
            return
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{'.'.join(parts[:i + 1])}' is not a section")
        node = child
    node[parts[-1]] = _Override(value.strip())


def _section(raw: dict[str, Any], key: str, source: str, required: bool = False) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{source}: section '{key}' is required")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__} {value!r}")
    return dict(value)


def _unknown(source: str, key: str, valid: Sequence[str]) -> str:
    best = closest(key, valid)
    hint = f" (did you mean '{best}'?)" if best else ""
    return f"{source}: unknown key '{key}'{hint}; valid keys: {', '.join(valid) or '(none)'}"


def _build(cls: type, values: Mapping[str, Any], where: str, source: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values`` with type checks and coercion."""
    if not dataclasses.is_dataclass(cls):
        raise PluginError(f"{where}: {cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown(source, f"{where}.{key}", [f"{where}.{k}" for k in fields]))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}", source)
    for name, f in fields.items():
        if (name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise ConfigError(f"{source}: '{where}.{name}' is required")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation of a domain's Settings
        raise ConfigError(f"{source}: {where}: {exc}") from None
    return obj


def override_value(value: Any) -> Any:
    """A value typed as an override parsed as YAML (where no type says more); others as they are."""
    return yaml.safe_load(value) if isinstance(value, _Override) else value


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check ``value`` against type ``tp``; convert strings and ints where that is lossless."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: '{where}' must be {expected}, got {value!r}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return override_value(value)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.strip().lower() in ("null", "none", "~") and type(None) in args:
            return None
        if value is None and type(None) in args:
            return None
        candidates = [value]
        if isinstance(value, _Override):  # a mapping or list typed on the command line
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = None
            if isinstance(parsed, (dict, list)):
                candidates.insert(0, parsed)
        for candidate in candidates:
            for option in (a for a in args if a is not type(None)):
                try:
                    return _coerce(candidate, option, where, source)
                except ConfigError:
                    continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        for option in args:
            if value == option or (isinstance(value, str) and str(option) == value):
                return option
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp):
        value = yaml.safe_load(value) if isinstance(value, _Override) else value
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields")
        return _build(tp, value, where, source)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise fail(f"a list of {len(args)} items")
            return tuple(_coerce(v, a, f"{where}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{where}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1",
                                                                 "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                raise fail("an integer") from None
            if as_float.is_integer():
                return int(as_float)
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail("a number") from None
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise fail("a string")
    if tp is type(None):
        if value is None:
            return None
        raise fail("null")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail(_type_name(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _plain(obj: Any) -> Any:
    """Dataclasses/tuples -> dicts/lists of plain YAML values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
