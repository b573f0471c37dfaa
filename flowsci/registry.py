"""Registries that turn names into classes: domains, models and engine components.

Each registry is filled from an entry-point group (``flowsci.domains``, ``flowsci.models``,
``flowsci.paths`` ...; first-party plugins use the same groups, declared in flowsci's own
``pyproject.toml``) and from code. Entry points are resolved lazily: listing names imports
nothing, and a plugin's module is imported the first time its name is looked up. A notebook or
a script registers in code with :func:`register_domain` / :func:`register_model`.

The ``flowsci.domains`` registry holds domain *classes*: every run builds its own instance
(:func:`create_domain`), so no domain state outlives a run or is shared between two runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

import torch

from flowsci.errors import ConfigError, PluginError, did_you_mean

T = TypeVar("T")

# what the config and the Trainer use of a domain class (the Domain contract in flowsci.plugins)
DOMAIN_CONTRACT = ("Settings", "build_data", "build_model", "build_objective", "evaluate")


class Registry(Generic[T]):
    """Names -> objects, filled from an entry-point group and from code.

    Entry points stay unloaded until their name is looked up.
    """

    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._loaded: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    def _scan(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            found: dict[str, metadata.EntryPoint] = {}
            for ep in metadata.entry_points(group=self.group):
                if ep.name in found and found[ep.name].value != ep.value:
                    raise PluginError(
                        f"{self.kind} '{ep.name}' is declared twice in entry-point group "
                        f"'{self.group}': '{found[ep.name].value}' and '{ep.value}'; "
                        "uninstall one of the two distributions")
                found[ep.name] = ep
            self._entry_points = found
        return self._entry_points

    def names(self) -> list[str]:
        """All registered names, sorted, without importing any plugin."""
        return sorted(set(self._scan()) | set(self._loaded))

    def __contains__(self, name: str) -> bool:
        return name in self._loaded or name in self._scan()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def source(self, name: str) -> str:
        """Where a name comes from: its entry point's 'module:attr', or the registered object's."""
        return self._origin.get(name) or self._scan()[name].value

    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Register ``obj`` under ``name``; a name already in use is an error unless ``replace``
        or ``obj`` is the same definition again (a re-run notebook cell, a reloaded module)."""
        origin = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"
        if not replace and name in self and self._origin.get(name) != origin:
            raise PluginError(
                f"{self.kind} '{name}' is already registered (from {self.source(name)}); "
                f"pick another name or pass replace=True. Registered: {', '.join(self.names())}")
        self._loaded[name] = obj
        self._origin[name] = origin
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing its plugin on first use."""
        if name in self._loaded:
            return self._loaded[name]
        eps = self._scan()
        if name not in eps:
            available = self.names()
            raise PluginError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, available)}; "
                f"available: {', '.join(available) or '(none)'}")
        ep = eps[name]
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of a third-party plugin
            raise PluginError(
                f"{self.kind} '{name}' failed to load from entry point '{ep.value}' "
                f"(group '{self.group}'): {type(exc).__name__}: {exc}. "
                f"Other {self.kind}s: {', '.join(n for n in self.names() if n != name) or '(none)'}"
            ) from exc
        self._loaded[name] = obj
        self._origin[name] = ep.value
        return obj

    def create(self, spec: str | dict[str, Any], where: str, *, optional: dict[str, Any] | None = None,
               **inputs: Any) -> Any:
        """Call the factory named by ``spec`` ("name" or {"name": ..., **params}).

        ``inputs`` are supplied by the caller (e.g. dimensions derived from the data); a
        parameter that the factory does not accept or that is missing is a ConfigError naming
        ``where`` (the config key). ``optional`` inputs (e.g. the state space) go only to
        factories that declare a parameter of that name.
        """
        params = dict(spec) if isinstance(spec, dict) else {"name": spec}
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"'{where}' needs a name; available: {', '.join(self.names())}")
        try:
            factory = self.get(name)
        except PluginError as exc:
            raise ConfigError(f"'{where}': {exc}") from None
        accepted = inspect.signature(factory).parameters
        inputs.update({k: v for k, v in (optional or {}).items() if k in accepted and k not in params})
        for key in params:
            if key not in accepted:
                raise ConfigError(f"'{where}.{key}' is not a parameter of {self.kind} '{name}'"
                                  f"{did_you_mean(key, accepted)}; "
                                  f"parameters: {', '.join(accepted) or '(none)'}")
        try:
            return factory(**params, **inputs)
        except TypeError as exc:
            raise ConfigError(f"'{where}': cannot build {self.kind} '{name}': {exc}") from None


DOMAINS: Registry[Any] = Registry("domain", "flowsci.domains")
MODELS: Registry[Callable[..., torch.nn.Module]] = Registry("model", "flowsci.models")
PATHS: Registry[Any] = Registry("path", "flowsci.paths")
TIME_SAMPLERS: Registry[Any] = Registry("time sampler", "flowsci.timesteps")
COUPLINGS: Registry[Any] = Registry("coupling", "flowsci.couplings")
LOSSES: Registry[Any] = Registry("loss", "flowsci.losses")
SOLVERS: Registry[Any] = Registry("solver", "flowsci.solvers")
GRIDS: Registry[Any] = Registry("time grid", "flowsci.grids")
COSTS: Registry[Any] = Registry("coupling cost", "flowsci.costs")
REGISTRIES: dict[str, Registry[Any]] = {
    "domains": DOMAINS, "models": MODELS, "paths": PATHS, "timesteps": TIME_SAMPLERS,
    "couplings": COUPLINGS, "costs": COSTS, "losses": LOSSES, "solvers": SOLVERS, "grids": GRIDS,
}


def register_domain(domain: type, name: str | None = None, *, replace: bool = False) -> type:
    """Register a Domain class (from a notebook or a script); each run builds its own instance."""
    if not isinstance(domain, type):
        raise PluginError(f"register_domain takes a domain class, not an instance of "
                          f"{type(domain).__name__}: every run builds its own instance")
    name = name or getattr(domain, "name", "")
    if not name:
        raise PluginError("register_domain needs a name: set `name` on the domain or pass name=...")
    return DOMAINS.register(name, domain, replace=replace)


def register_model(name: str, *, replace: bool = False) -> Callable[[type[T]], type[T]]:
    """Decorator registering a model class (or factory) under ``name``."""

    def decorate(cls: type[T]) -> type[T]:
        MODELS.register(name, cls, replace=replace)
        return cls

    return decorate


def domain_class(name: str) -> type:
    """The domain class registered as ``name``, checked against the Domain contract."""
    cls = DOMAINS.get(name)
    if not isinstance(cls, type):
        raise PluginError(f"domain '{name}' ({DOMAINS.source(name)}) is a {type(cls).__name__} "
                          "instance; register the class (each run builds its own instance)")
    for attr in DOMAIN_CONTRACT:
        if not hasattr(cls, attr):
            raise PluginError(f"domain '{name}' ({DOMAINS.source(name)}) lacks '{attr}'; "
                              "see the Domain contract in flowsci.plugins")
    return cls


def create_domain(name: str) -> Any:
    """A new instance of the domain registered as ``name`` (one per run)."""
    domain = domain_class(name)()
    if not getattr(domain, "name", None):
        domain.name = name
    return domain


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    """Constructor parameters of the registered model ``name`` (for config validation)."""
    factory = MODELS.get(name)
    try:
        sig = inspect.signature(factory, eval_str=True)
    except (NameError, TypeError):  # annotations that cannot be evaluated stay strings
        sig = inspect.signature(factory)
    return {k: p for k, p in sig.parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def build_model(name: str, params: dict[str, Any]) -> torch.nn.Module:
    """Instantiate the registered model ``name``; the spec is kept for checkpoints.

    The arguments must be plain values (numbers, strings, lists, dicts) so that a checkpoint
    can rebuild the model with ``weights_only=True`` loading.
    """
    _check_plain(params, f"model '{name}' arguments")
    model = MODELS.get(name)(**params)
    model.flowsci_spec = {"name": name, "params": dict(params)}
    return model


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise PluginError(f"{where}: key {k!r} is not a string")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise PluginError(f"{where} is a {type(value).__name__}; only numbers, strings, "
                          "booleans, None, lists and dicts can be stored in a checkpoint")
