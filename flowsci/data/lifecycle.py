"""The data lifecycle shared by every domain: where a config's data file is, when it is made,
and when a file may be reused (``docs/design.md``, Data).

- Without ``data.path`` the file is ``<data dir>/<domain>/<data_name>_<hash>.h5``, the hash
  covering the domain, its ``data_version`` and its generator settings
  (``domain.data_settings(cfg)``). It is generated on first use and reused afterwards.
- An explicit ``data.path`` that does not exist is an error naming the command that makes it.
- Generation writes a temporary file, records the settings in it (attribute
  :data:`SETTINGS_ATTR`) and renames it into place: a crash never leaves a half-written file.
- A file whose recorded settings differ from the config's is an error listing the
  differences; a file without recorded settings (the user's own data) is used as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py

from flowsci.data.reader import default_data_dir
from flowsci.errors import DataError

if TYPE_CHECKING:
    from flowsci.config import Config

log = logging.getLogger(__name__)

SETTINGS_ATTR = "flowsci_data_settings"
LOADER_KEYS = ("path", "regenerate", "num_workers")  # data: keys that say how a file is loaded, not made


def generates_data(domain: Any) -> bool:
    """Whether ``domain`` makes its own data file (it implements ``make_data``)."""
    return callable(getattr(domain, "make_data", None))


def data_group(domain: Any) -> str:
    """The name under which a domain's data is made and stored: its ``data_group`` when it
    shares a data set with other domains, else its own name."""
    return getattr(domain, "data_group", None) or domain.name


def generator_settings(domain: Any, cfg: Config) -> dict[str, Any]:
    """Everything that determines the generated file, as plain JSON values."""
    settings = {"domain": data_group(domain), "data_version": domain.data_version,
                **domain.data_settings(cfg)}
    return json.loads(json.dumps(settings, sort_keys=True))


def settings_hash(settings: dict[str, Any]) -> str:
    """Eight hex digits of the SHA-1 of the settings' canonical JSON."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def default_path(domain: Any, cfg: Config) -> Path:
    """``<data dir>/<domain>/<data_name>_<settings hash>.h5``."""
    digest = settings_hash(generator_settings(domain, cfg))
    return default_data_dir() / data_group(domain) / f"{domain.data_name(cfg)}_{digest}.h5"


def data_file(domain: Any, cfg: Config) -> Path:
    """``data.path`` when given, else :func:`default_path` (nothing is checked or made)."""
    return Path(cfg.data.path).expanduser() if cfg.data.path else default_path(domain, cfg)


def ensure_data(domain: Any, cfg: Config, *, force: bool = False, progress: bool | None = None) -> Path:
    """The data file of ``cfg``, generated first when it is the default one and missing, or when
    ``force`` (at ``data.path`` if given). ``progress``: progress bars while generating
    (default: when stderr is a terminal). Raises DataError for a missing explicit path or a
    file made with other generator settings. A domain without ``make_data`` needs an existing
    ``data.path`` (used as it is)."""
    if not generates_data(domain):
        if not cfg.data.path:
            raise DataError(f"{cfg.source}: domain '{domain.name}' does not generate data; give "
                            "data.path=<an HDF5 file of flowsci's schema> (see data/README.md)")
        path = data_file(domain, cfg)
        if not path.exists():
            raise DataError(f"{cfg.source}: data.path={path} does not exist (domain '{domain.name}' "
                            "does not generate data; give an HDF5 file of flowsci's schema)")
        return path
    path = data_file(domain, cfg)
    if not force and not path.exists():
        if cfg.data.path:
            raise DataError(
                f"{cfg.source}: data.path={path} does not exist; generate it with "
                f"`flowsci data make {cfg.source} data.path={path}`, or remove data.path to use the "
                "default data set (generated on first use)")
        force = True
    if force:
        make_data(domain, cfg, path, sys.stderr.isatty() if progress is None else progress)
    check_settings(domain, cfg, path)
    return path


def make_data(domain: Any, cfg: Config, path: Path, progress: bool) -> None:
    """Run ``domain.make_data`` into a temporary file next to ``path``, record the generator
    settings in it, then rename it to ``path``."""
    settings = generator_settings(domain, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial.h5")
    log.info("%s: generating the data set into %s", domain.name, path)
    try:
        domain.make_data(cfg, partial, progress)
        if not partial.is_file():
            raise DataError(f"domain '{domain.name}': make_data wrote nothing at the path it was given "
                            f"({partial})")
        with h5py.File(partial, "a") as f:
            f.attrs[SETTINGS_ATTR] = json.dumps(settings, sort_keys=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def recorded_settings(path: Path) -> dict[str, Any] | None:
    """The generator settings recorded in a data file, or None (a file made elsewhere)."""
    if not path.is_file():
        raise DataError(f"{path}: not a file; give the path of an HDF5 data file")
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(SETTINGS_ATTR)
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated, corrupted or not HDF5): {exc}; "
                        "regenerate it with `flowsci data make CONFIG --force`") from exc
    if text is None:
        return None
    return json.loads(text.decode() if isinstance(text, bytes) else str(text))


def check_settings(domain: Any, cfg: Config, path: Path) -> None:
    """DataError if ``path`` records generator settings other than those of ``cfg``."""
    recorded = recorded_settings(path)
    if recorded is None:
        return
    wanted = generator_settings(domain, cfg)
    if recorded != wanted:
        diffs = [f"{k}: file {recorded.get(k, '(none)')!r}, config {wanted.get(k, '(none)')!r}"
                 for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k)]
        raise DataError(f"{path} was generated with other settings ({'; '.join(diffs)}); make one for "
                        f"this config with `flowsci data make {cfg.source}"
                        f"{' data.path=OTHER' if cfg.data.path else ''}`, or match the config to the file")
