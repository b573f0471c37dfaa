"""The Domain contract: what a domain plugin provides, and :class:`DomainBase` with its defaults.

A plugin author needs this module only: subclass :class:`DomainBase`, build models with
:func:`build_model`, and register with :func:`register_domain` / :func:`register_model` (or an
entry point in the group ``flowsci.domains``). The registries themselves live in
:mod:`flowsci.registry`; the data lifecycle in :mod:`flowsci.data.lifecycle`. See
``docs/design.md`` (the Domain contract).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from flowsci.data.lifecycle import LOADER_KEYS, ensure_data
from flowsci.errors import PluginError
from flowsci.registry import build_model, create_domain, register_domain, register_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from flowsci.config import Config
    from flowsci.data import DataSplits

__all__ = ["Domain", "DomainBase", "Evaluation", "NoSettings", "Objective", "build_model",
           "create_domain", "register_domain", "register_model"]


class Objective(Protocol):
    """A training objective: ``loss(model, batch) -> (scalar loss, logs)``.

    Optional: ``costly_pairing`` (True), ``pair(batch, generator) -> batch`` and
    ``paired_loss(model, batch)``; the Trainer then pairs each batch ahead of its step
    (:mod:`flowsci.pairing`) and takes ``paired_loss`` of the paired batch. An objective with
    training state of its own (running per-point errors, say) gives ``state_dict()`` and
    ``load_state_dict(state)``: the Trainer keeps it in every checkpoint and restores it on resume.
    """

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclasses.dataclass
class Evaluation:
    """What one evaluation produced: scalar ``metrics``, and ``artifacts`` (e.g. rollouts) that
    the domain's :meth:`~Domain.figures` reuses when it runs at the same step."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, result: dict[str, float] | Evaluation) -> Evaluation:
        """What ``evaluate`` returned (a metrics dict or an Evaluation), with float metrics."""
        if isinstance(result, Evaluation):
            return cls({k: float(v) for k, v in result.metrics.items()}, result.artifacts)
        return cls({k: float(v) for k, v in result.items()})


@runtime_checkable
class Domain(Protocol):
    """What a domain plugin provides. Subclass :class:`DomainBase` for the defaults.

    ``Settings`` is the dataclass of the YAML ``domain:`` section. A domain may also narrow
    the ``data``, ``objective``, ``sample`` and ``eval`` sections by subclassing the base
    dataclasses of :mod:`flowsci.config` and naming them ``DataSettings``,
    ``ObjectiveSettings``, ``SampleSettings`` and ``EvalSettings``.

    Every run builds its own instance (no argument), so an instance may keep per-run state.
    A domain that generates its data set implements ``make_data`` (optional): the engine then
    makes the data file before ``build_data`` (:func:`flowsci.data.ensure_data`, with
    ``data_settings`` and ``data_name``), and ``build_data`` reads ``data_file(cfg)``. A domain
    without ``make_data`` builds its data in ``build_data`` or reads a given ``data.path``.
    """

    name: str
    Settings: type

    def data_settings(self, cfg: Config) -> dict[str, Any]: ...
    def data_name(self, cfg: Config) -> str: ...
    def build_data(self, cfg: Config) -> DataSplits: ...
    def build_model(self, cfg: Config) -> torch.nn.Module: ...
    def build_objective(self, cfg: Config) -> Objective: ...
    def evaluate(self, model: torch.nn.Module, data: DataSplits, cfg: Config
                 ) -> dict[str, float] | Evaluation: ...
    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]: ...
    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]: ...
    def source(self, cfg: Config) -> Any: ...


@dataclasses.dataclass
class NoSettings:
    """Settings of a domain that has none."""


class DomainBase:
    """Defaults for the optional parts of the Domain contract."""

    name: str = ""
    Settings: type = NoSettings
    data_version: int = 1            # raise it when make_data writes other data for the same settings
    # domains that read one data set (a model, its baselines and its autoencoder) share a group name:
    # their default data file is the same (None: the domain's own name)
    data_group: str | None = None

    # --- data ----------------------------------------------------------------------------

    # make_data(self, cfg, path: Path, progress: bool) -> None, when the domain generates its
    # data: write the data set of ``cfg`` to ``path`` (an HDF5 file of flowsci's schema), with
    # progress bars on long work when ``progress``.

    def data_settings(self, cfg: Config) -> dict[str, Any]:
        """The settings that determine the generated file (hashed into its default name and
        stored in it): the ``data:`` section without how it is loaded. Override to add
        settings from other sections or to drop keys that only select what is loaded."""
        return {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in LOADER_KEYS}

    def data_name(self, cfg: Config) -> str:
        """A readable stem of the default data file name (the settings hash follows it)."""
        return self.name

    def data_file(self, cfg: Config) -> Path:
        """The data file of ``cfg``, made first if it is the default one and missing (a domain
        without ``make_data`` needs ``data.path``)."""
        return ensure_data(self, cfg)

    # --- model, evaluation, sampling ------------------------------------------------------

    def build_model(self, cfg: Config) -> torch.nn.Module:
        """The registered model named in ``cfg.model.name`` with the YAML arguments."""
        return build_model(cfg.model.name, cfg.model.params)

    def figures(self, model: torch.nn.Module, data: DataSplits, cfg: Config,
                evaluation: Evaluation | None = None) -> dict[str, Figure]:
        return {}

    def sample(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int
               ) -> dict[str, torch.Tensor]:
        raise PluginError(f"domain '{self.name}' does not implement sampling")

    def sample_prompt(self, model: torch.nn.Module, data: DataSplits, cfg: Config, n: int, prompt: str
                      ) -> tuple[dict[str, torch.Tensor], Figure]:
        """n samples for a text prompt (``flowsci sample RUN --prompt TEXT``) and a figure of them."""
        raise PluginError(f"domain '{self.name}' does not take text prompts")

    def source(self, cfg: Config) -> Any:
        """The source distribution (t = 0) as a flowsci Source (needed by ``flowsci reflow``)."""
        raise PluginError(f"domain '{self.name}' has no source distribution to draw x0 from")
