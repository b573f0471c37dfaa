"""The mel autoencoder of a separation run: a trained run, or a config trained on first use.

``domain.autoencoder`` names either a run directory of ``separation_autoencoder`` (trained with
``flowsci train domains/separation_autoencoder.yaml``) or such a config file (a path, or the name
of one shipped in ``domains/``). A config is trained once per data file by flowsci's Trainer into
``<data dir>/separation/autoencoder_<hash>/`` (the hash covers the resolved config, with
``domain.autoencoder_overrides``, and the data file) and reused afterwards, like a generated data
set; an interrupted training resumes. The config's ``data:`` and spectrogram settings are
replaced by the run's, so the autoencoder always sees the separator's data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import yaml

import flowsci_domains
from flowsci.atomic import atomic_write_text
from flowsci.checkpoint import list_checkpoints, load_model
from flowsci.config import Config, config_from_dict
from flowsci.data import default_data_dir
from flowsci.data.lifecycle import settings_hash
from flowsci.errors import ConfigError
from flowsci.rng import isolated_rng

log = logging.getLogger(__name__)

DONE = "finished.json"          # written when the cached training has ended
RUN_ONLY = ("threads", "out_dir", "device", "log_every", "tensorboard")  # train keys that change no weight


def autoencoder_file(spec: str) -> Path:
    """The run directory or config file named by ``domain.autoencoder``."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    shipped = Path(flowsci_domains.__file__).parent / spec
    if shipped.is_file():
        return shipped
    raise ConfigError(f"domain.autoencoder={spec}: neither a run directory, a config file, nor a config "
                      f"shipped in {shipped.parent} (e.g. separation_autoencoder.yaml)")


def autoencoder_config(cfg: Config, file: Path) -> Config:
    """The autoencoder config in ``file`` with ``domain.autoencoder_overrides`` and the separation
    run's data, spectrogram and threads."""
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    run = cfg.to_dict()
    raw["domain"] = {**(raw.get("domain") or {}), **{k: run["domain"][k] for k in ("n_fft", "hop", "n_mels")}}
    raw["data"] = run["data"]
    raw.setdefault("train", {})["threads"] = cfg.train.threads
    ae = config_from_dict(raw, cfg.settings.autoencoder_overrides, source=str(file))
    if ae.domain != "separation_autoencoder":
        raise ConfigError(f"domain.autoencoder={file}: a config of domain 'separation_autoencoder' is "
                          f"needed, got '{ae.domain}'")
    return ae


def cache_dir(ae: Config, data_file: Path) -> Path:
    config = ae.to_dict()
    config["train"] = {k: v for k, v in config["train"].items() if k not in RUN_ONLY}
    digest = settings_hash({"config": config, "data_file": data_file.name})
    return default_data_dir() / "separation" / f"autoencoder_{digest}"


def ensure_autoencoder(cfg: Config, data_file: Path, progress: bool = False) -> tuple[torch.nn.Module, Path]:
    """The autoencoder of ``cfg`` (eval mode, frozen) and its run directory: loaded from a run, or
    trained from a config on first use (under its own seed: the caller's random streams are left
    as they were)."""
    from flowsci.training import train  # the Trainer imports the domains' registry lazily

    source = autoencoder_file(cfg.settings.autoencoder)
    if source.is_dir():
        if not list_checkpoints(source / "checkpoints"):
            raise ConfigError(f"domain.autoencoder={source}: a run directory without checkpoints")
        model, out = load_model(source), source
    else:
        ae = autoencoder_config(cfg, source)
        out = cache_dir(ae, data_file)
        if not (out / DONE).is_file():
            resume = bool(list_checkpoints(out / "checkpoints"))
            log.info("separation: training the mel autoencoder (%d steps) into %s%s", ae.train.steps, out,
                     " (resuming)" if resume else "")
            with isolated_rng(ae.seed):
                result = train(ae, out, resume=resume, progress=progress,
                               config_name="separation_autoencoder")
            summary = {"step": result.step, **result.metrics}
            atomic_write_text(out / DONE, json.dumps(summary, indent=2) + "\n")
        model = load_model(out, ema=ae.eval.use_ema)
    return model.requires_grad_(False).eval(), out
