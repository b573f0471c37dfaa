"""Sweeps: one YAML whose ``sweep:`` section lists values; every combination is a training run.

```yaml
sweep:
  grid:                              # the cartesian product of these lists
    model:                           # a whole section: each mapping replaces it
      - {name: pinn, width: 50, depth: 4}
      - {name: lpinn, width: 50, u_depth: 4, x_depth: 2}
    domain.beta: [1, 10, 30]         # a dotted key: each value replaces that entry
    seed: [0, 1]
    method:                          # not a section: each mapping sets several keys at once
      - {name: mse, objective.norm: mse, objective.weight_ic: 1}
      - {name: paper, objective.norm: l2}
  metrics: [rel_l2, train_seconds]   # final metrics in the table (default: all)
  target: {metric: rel_l2, below: 0.01}   # adds steps_to_target and seconds_to_target
  plot: {x: domain.beta, group: model.name, y: [rel_l2, seconds_to_target], log_y: true}
```

``flowsci sweep FILE`` writes ``<train.out_dir>/<file stem>-sweep/`` (or ``--out``): the
resolved ``sweep.yaml``, one run directory per combination under ``runs/``, and the table and
plot ``results.{csv,md,json,png}``. Running it again skips finished runs and resumes
interrupted ones. ``flowsci train FILE`` trains the base config and ignores the section.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from flowsci.atomic import atomic_open, atomic_write_text
from flowsci.config import (
    SWEEP_KEY,
    TOP_KEYS,
    Config,
    apply_override,
    config_from_dict,
    load_config,
    override_value,
)
from flowsci.errors import ConfigError, SweepRunsFailed
from flowsci.logs import configure_logging, current_level
from flowsci.metrics_log import read_metrics

log = logging.getLogger(__name__)

SWEEP_KEYS = ("grid", "metrics", "target", "plot")
RESULT = "result.json"


@dataclasses.dataclass
class SweepRun:
    """One combination: its directory name, the swept values, and the resolved config."""

    name: str
    values: dict[str, Any]
    config: Config


@dataclasses.dataclass
class Sweep:
    """A parsed sweep: the base config (as a mapping), the grid and what to report."""

    source: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    metrics: list[str] | None = None
    target: dict[str, Any] | None = None
    plot: dict[str, Any] | None = None

    def runs(self) -> list[SweepRun]:
        """Every combination of the grid, each validated as a full config."""
        runs = []
        keys = list(self.grid)
        for combination in itertools.product(*(self.grid[k] for k in keys)):
            raw = json.loads(json.dumps(self.base))
            values = dict(zip(keys, combination))
            for key, value in values.items():
                _assign(raw, key, value, self.source)
            name = "_".join(f"{_short(key)}={_label(value)}" for key, value in values.items())
            config = config_from_dict(raw, source=f"{self.source} [sweep run {name}]")
            runs.append(SweepRun(name, values, config))
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.source}: sweep.grid gives two runs the same name; give every "
                              "mapping in a list a distinct 'name'")
        return runs


def load_sweep(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Sweep:
    """Read a config file with a ``sweep:`` section; ``overrides`` apply to the base config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return sweep_from_dict(raw, overrides, source=str(path))


def sweep_from_dict(raw: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "<dict>") -> Sweep:
    """Parse and check a sweep (see the module docstring)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get(SWEEP_KEY), Mapping):
        raise ConfigError(f"{source}: no '{SWEEP_KEY}:' section (a mapping with {', '.join(SWEEP_KEYS)}); "
                          "see `flowsci sweep --help`")
    base = json.loads(json.dumps({k: v for k, v in raw.items() if k != SWEEP_KEY}))  # a deep copy
    for item in overrides:
        apply_override(base, item, source)
    base = _plain_values(base)
    section = dict(raw[SWEEP_KEY])
    for key in section:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{source}: unknown key 'sweep.{key}'; valid keys: "
                              + ", ".join(f"sweep.{k}" for k in SWEEP_KEYS))
    grid = section.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"{source}: 'sweep.grid' must map config keys (e.g. domain.beta) "
                          "to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: 'sweep.grid.{key}' must be a non-empty list, got {values!r}")
        if key.split(".")[0] not in TOP_KEYS and not all(
                isinstance(v, Mapping) and isinstance(v.get("name"), str) for v in values):
            raise ConfigError(f"{source}: 'sweep.grid.{key}' is not a config key (sections: "
                              f"{', '.join(TOP_KEYS)}); a name of your own needs a list of mappings, each "
                              "with a 'name' and the config keys it sets")
    target = section.get("target")
    if target is not None and (not isinstance(target, Mapping) or set(target) != {"metric", "below"}):
        raise ConfigError(f"{source}: 'sweep.target' must be {{metric: NAME, below: NUMBER}}, got {target!r}")
    plot = section.get("plot")
    if plot is not None:
        if not isinstance(plot, Mapping) or "x" not in plot or "y" not in plot:
            raise ConfigError(f"{source}: 'sweep.plot' needs x (a swept key) and y (a list of metrics)")
        if plot["x"] not in grid:
            raise ConfigError(f"{source}: 'sweep.plot.x' = {plot['x']!r} is not a key of sweep.grid "
                              f"({', '.join(grid)})")
    metrics = section.get("metrics")
    return Sweep(source, base, {k: list(v) for k, v in grid.items()},
                 list(metrics) if metrics else None, dict(target) if target else None,
                 dict(plot) if plot else None)


def _plain_values(value: Any) -> Any:
    """Nested copy in which the strings typed as overrides are parsed as YAML."""
    if isinstance(value, Mapping):
        return {k: _plain_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_values(v) for v in value]
    return override_value(value)


def _assign(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set a dotted key of the raw config; a mapping given for a whole section replaces it, and
    one under a key of the user's own (not a section) sets each of its keys but ``name``."""
    if key.split(".")[0] not in TOP_KEYS:
        for inner, inner_value in value.items():
            if inner != "name":
                _assign(raw, inner, inner_value, source)
        return
    parts = key.split(".")
    if len(parts) == 1:
        raw[key] = json.loads(json.dumps(value))
        return
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if isinstance(child, str) and i == 0:  # `domain: name` / `model: name` shorthand
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: sweep.grid.{key}: '{'.'.join(parts[:i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def _short(key: str) -> str:
    return key.split(".")[-1]


def _label(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("name", "+".join(f"{k}{v}" for k, v in value.items())))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _value_of(run_values: Mapping[str, Any], key: str) -> Any:
    """The value of a swept key, or of a key inside a swept section (``model.name``)."""
    if key in run_values:
        value = run_values[key]
        return _label(value) if isinstance(value, Mapping) else value
    head, _, rest = key.partition(".")
    if isinstance(run_values.get(head), Mapping) and rest in run_values[head]:
        return run_values[head][rest]
    raise ConfigError(f"sweep: '{key}' is neither a swept key nor inside a swept section")


# --- running -------------------------------------------------------------------------------


def sweep_dir(sweep: Sweep) -> Path:
    """Default output directory: <train.out_dir>/<config stem>-sweep."""
    out_dir = sweep.base.get("train", {}).get("out_dir", "runs")
    return Path(out_dir) / f"{Path(sweep.source).stem}-sweep"


def run_sweep(sweep: Sweep, out: str | os.PathLike | None = None, *, workers: int = 1,
              progress: bool | None = None) -> Path:
    """Train every run not finished yet (``workers`` processes), then write the results.

    Returns the sweep directory. A run with ``result.json`` is done; one with a checkpoint is
    resumed; the others start fresh. A run that raises is reported (traceback on stderr) and the
    others go on; the results of the finished runs are written, then SweepRunsFailed names the
    failed runs.
    """
    root = Path(out) if out is not None else sweep_dir(sweep)
    runs = sweep.runs()  # validates every combination before any training
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.yaml", yaml.safe_dump(
        {**sweep.base, SWEEP_KEY: {"grid": sweep.grid, "metrics": sweep.metrics, "target": sweep.target,
                                   "plot": sweep.plot}}, sort_keys=False))
    for run in runs:
        _check_not_stale(run, root / "runs" / run.name)
    todo = [(run, root / "runs" / run.name) for run in runs
            if not (root / "runs" / run.name / RESULT).is_file()]
    log.info("sweep %s: %d runs, %d done, %d to train (%d worker%s)", root, len(runs),
             len(runs) - len(todo), len(todo), workers, "s" if workers > 1 else "")
    failed: dict[str, str] = {}

    def record_failure(name: str, error: Exception) -> None:
        failed[name] = f"{type(error).__name__}: {error}"
        log.error("sweep run %s failed:\n%s", name, "".join(traceback.format_exception(error)).rstrip())

    if workers <= 1:
        for run, path in todo:
            try:
                _train_run(run.config.to_dict(), run.config.source, run.name, run.values, str(path),
                           sweep.target, progress)
            except Exception as error:  # one failed run must not stop the others
                record_failure(run.name, error)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                                    initargs=(current_level(),)) as pool:
            futures = {pool.submit(_train_run, run.config.to_dict(), run.config.source, run.name, run.values,
                                   str(path), sweep.target, False): run.name for run, path in todo}
            for future in concurrent.futures.as_completed(futures):
                try:
                    future.result()
                except Exception as error:
                    record_failure(futures[future], error)
    write_results(sweep, root, runs)
    if failed:
        listing = "; ".join(f"{name}: {message}" for name, message in failed.items())
        raise SweepRunsFailed(f"{len(failed)} of {len(runs)} runs of {root} failed ({listing}); the others' "
                              "results are written; run the sweep again to retry the failed runs "
                              "(finished runs are skipped)")
    return root


def _start_worker(log_level: int) -> None:
    """Worker initializer: messages at the sweep's level, and on Linux, ask the kernel to end
    this worker when the sweep process dies (killing ``flowsci sweep`` would otherwise leave its
    workers training)."""
    configure_logging(log_level)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _check_not_stale(run: SweepRun, path: Path) -> None:
    """A finished run is reused only if it was trained with the same config."""
    saved = path / "config.yaml"
    if not (path / RESULT).is_file() or not saved.is_file():
        return
    if load_config(saved).to_dict() != run.config.to_dict():
        raise ConfigError(f"{path} was trained with another config than sweep run {run.name} has now "
                          f"(compare {saved}); delete it or write the sweep elsewhere with --out")


def _train_run(raw: dict[str, Any], source: str, name: str, values: dict[str, Any], path: str,
               target: dict[str, Any] | None, progress: bool | None) -> None:
    """Train (or resume) one run and write its result.json (runs in a worker process)."""
    from flowsci.checkpoint import list_checkpoints
    from flowsci.training import train

    cfg = config_from_dict(raw, source=source)
    run_dir = Path(path)
    resume = (run_dir / "checkpoints").is_dir() and bool(list_checkpoints(run_dir / "checkpoints"))
    log.info("sweep run %s: %s in %s", name, "resuming" if resume else "training", run_dir)
    result = train(cfg, run_dir, resume=resume, progress=progress)
    record = {"name": name, "values": values, "step": result.step, "metrics": result.metrics}
    if target is not None:
        record["metrics"].update(time_to_target(run_dir / "metrics.csv", target["metric"],
                                                float(target["below"])))
    atomic_write_text(run_dir / RESULT, json.dumps(record, indent=2) + "\n")


def time_to_target(metrics_csv: Path, metric: str, below: float) -> dict[str, float]:
    """The first evaluation at which ``metric`` <= ``below``: its step and training seconds
    (NaN when never reached)."""
    rows = read_metrics(metrics_csv)
    seconds = {step: value for step, phase, name, value in rows
               if phase == "eval" and name == "train_seconds"}
    for step, phase, name, value in sorted(rows):
        if phase == "eval" and name == metric and value <= below:
            return {"steps_to_target": float(step), "seconds_to_target": seconds.get(step, math.nan)}
    return {"steps_to_target": math.nan, "seconds_to_target": math.nan}


# --- results -------------------------------------------------------------------------------


def collect(sweep: Sweep, root: Path, runs: list[SweepRun] | None = None) -> list[dict[str, Any]]:
    """One row per finished run: the swept values (labels) and its final metrics."""
    rows = []
    for run in runs if runs is not None else sweep.runs():
        path = root / "runs" / run.name / RESULT
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        metrics = record["metrics"]
        names = sweep.metrics or sorted(metrics)
        if sweep.target is not None:
            names = names + [k for k in ("steps_to_target", "seconds_to_target") if k not in names]
        row = {key: _label(value) for key, value in run.values.items()}
        row.update({name: metrics.get(name, math.nan) for name in names})
        row["_values"] = run.values
        rows.append(row)
    return rows


def write_results(sweep: Sweep, root: Path, runs: list[SweepRun] | None = None) -> list[Path]:
    """results.csv / .md / .json and, with ``sweep.plot``, results.png; returns the paths.
    ``runs``: the expanded grid when the caller has it already."""
    rows = collect(sweep, root, runs)
    if not rows:
        return []
    columns = [c for c in rows[0] if c != "_values"]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    atomic_write_text(root / "results.csv", text.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    atomic_write_text(root / "results.md", "\n".join(lines) + "\n")
    atomic_write_text(root / "results.json", json.dumps(
        {"source": sweep.source, "target": sweep.target,
         "rows": [{c: row[c] for c in columns} for row in rows]}, indent=2, default=str) + "\n")
    paths = [root / "results.csv", root / "results.md", root / "results.json"]
    if sweep.plot is not None:
        paths.append(plot_results(sweep, rows, root / "results.png"))
    return paths


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def plot_results(sweep: Sweep, rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per y metric against plot.x, one line (mean) per plot.group value, every run
    as a marker (e.g. the seeds)."""
    from matplotlib.figure import Figure

    plot = sweep.plot
    names = plot["y"] if isinstance(plot["y"], list) else [plot["y"]]
    fig = Figure(figsize=(4.2 * len(names), 3.4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    group_key = plot.get("group")
    groups = sorted({str(_value_of(r["_values"], group_key)) if group_key else "" for r in rows})
    for ax, name in zip(axes, names):
        for colour, group in enumerate(groups):
            mine = [r for r in rows if not group_key or str(_value_of(r["_values"], group_key)) == group]
            points = sorted((float(_value_of(r["_values"], plot["x"])), float(r.get(name, math.nan)))
                            for r in mine)
            xs = sorted({x for x, _ in points})
            means = [_nanmean([y for x2, y in points if x2 == x]) for x in xs]
            ax.plot([p[0] for p in points], [p[1] for p in points], "o", color=f"C{colour}", alpha=0.5, ms=4)
            ax.plot(xs, means, "-", color=f"C{colour}", label=group or None)
        if sweep.target is not None and name == sweep.target["metric"]:
            ax.axhline(float(sweep.target["below"]), color="k", ls=":", lw=1, label="target")
        ax.set(xlabel=plot["x"], title=name)
        if plot.get("log_y", False):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if group_key:
            ax.legend(fontsize=8)
    fig.suptitle(f"{Path(sweep.source).name}: sweep over {plot['x']} (markers: runs, lines: mean)")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    return path


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
