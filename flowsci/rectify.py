"""The reflow pipeline in one call: pairs from a flow, the next flow trained on them, evaluated.

``rectify(teacher, stages)`` runs stages in order; each stage draws (x0, x1) pairs from the
previous model (the teacher first) with that model's sampler, guidance and conditions
(:func:`flowsci.reflow.generate_pairs`), trains the next model on them starting from the
previous model's weights, and evaluates it with the teacher's evaluation:

- ``reflow``: the next rectified flow (2-RF after the teacher, 3-RF after that), the
  teacher's objective with the ``paired`` coupling;
- ``distill``: k-step distillation (Liu et al. 2023): the times fixed to {0, 1/k, ...,
  (k-1)/k} and k sampling steps; after a reflow stage this is InstaFlow's reflow-then-distil,
  as the first stage it distils the teacher directly.

Layout of ``out`` (default ``TEACHER/rectify``): ``0-teacher/metrics.json`` (the teacher
evaluated as the students are), then per stage ``<i>-<stage>/pairs.h5`` and
``<i>-<stage>/run/`` (a run directory), ``<i>-<stage>/pairs.json`` (the seconds the pairs
took and the run they came from), and ``summary.json`` with every stage's metrics.
Every stage resumes where it stopped: pair generation batch by batch, training from its last
checkpoint, and a finished stage (``<i>-<stage>/metrics.json``) is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from flowsci.atomic import atomic_write_text
from flowsci.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, load_model
from flowsci.config import Config
from flowsci.errors import ConfigError
from flowsci.flow_matching import Sampler
from flowsci.plugins import Evaluation
from flowsci.reflow import condition_pool, distillation_times, generate_pairs
from flowsci.registry import create_domain
from flowsci.rng import EVAL_SEED_OFFSET, isolated_rng
from flowsci.runs import RunDir, open_run

log = logging.getLogger(__name__)

STAGES = ("reflow", "distill")


@dataclasses.dataclass
class StageResult:
    """One finished stage: its name, run directory (None for the teacher), metrics and the
    seconds it took to make its pairs and to train (0 for the teacher)."""

    name: str
    run: Path | None
    metrics: dict[str, float]
    pair_seconds: float = 0.0
    train_seconds: float = 0.0


def stage_overrides(stage: str, pairs: Path, init_from: Path, distill_steps: int) -> list[str]:
    """The config changes that turn the teacher's config into a ``stage``'s (before the user's)."""
    common = [f"data.pairs={pairs}", "objective.coupling=paired", f"train.init_from={init_from}"]
    if stage == "reflow":
        return common
    times = ", ".join(f"{t:g}" for t in distillation_times(distill_steps))
    return [*common, f"objective.timesteps={{name: discrete, values: [{times}]}}",
            f"sample.steps={distill_steps}", "sample.solver=euler"]


def split_overrides(overrides: Sequence[str]) -> dict[str | None, list[str]]:
    """``STAGE:key=value`` applies to that stage only, ``key=value`` to every stage (key None)."""
    out: dict[str | None, list[str]] = {None: []}
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            if head not in STAGES:
                raise ConfigError(f"override {item!r}: stage {head!r} is not one of {', '.join(STAGES)}")
            out.setdefault(head, []).append(rest)
        else:
            out[None].append(item)
    return out


def rectify(teacher: str | Path, stages: Sequence[str] = ("reflow",), *, n_pairs: int = 4000,
            batch_size: int = 500, pair_steps: int | None = None, distill_steps: int = 1,
            overrides: Sequence[str] = (), out: str | Path | None = None,
            progress: bool | None = None,
            train_fn: Callable[..., Any] | None = None) -> list[StageResult]:
    """Run ``stages`` after the ``teacher`` run directory; returns the teacher's and each
    stage's :class:`StageResult`.

    ``n_pairs`` pairs per stage, generated in batches of ``batch_size`` with the previous
    model's ``sample:`` settings (``pair_steps`` solver steps instead of ``sample.steps`` when
    given); ``distill_steps``: the k of ``distill`` stages; ``overrides``: ``key=value`` for
    every stage's config (the evaluation's too, e.g. ``eval.steps=[1,2,4,8]``) or
    ``STAGE:key=value`` for one kind of stage (e.g. ``distill:objective.loss=pseudo_huber``).
    """
    from flowsci.training import train

    train_fn = train_fn or train
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ConfigError(f"stages must be a non-empty list of {', '.join(STAGES)}, got {list(stages)}")
    if n_pairs < 1 or batch_size < 1 or distill_steps < 1 or (pair_steps is not None and pair_steps < 1):
        raise ConfigError(f"n_pairs, batch_size, distill_steps and pair_steps must be >= 1, got {n_pairs}, "
                          f"{batch_size}, {distill_steps}, {pair_steps}")
    teacher_run = open_run(teacher)
    latest_checkpoint(teacher_run.checkpoints)  # a RunError now if the teacher has no checkpoint
    root = Path(out) if out is not None else teacher_run.path / "rectify"
    per_stage = split_overrides(overrides)
    common = per_stage[None]

    results = [_evaluated(teacher_run, common, root / "0-teacher", "teacher")]
    previous = teacher_run.path
    for index, stage in enumerate(stages, start=1):
        folder = root / f"{index}-{stage}"
        done = folder / "metrics.json"
        if done.is_file():
            results.append(_read_result(done))
            previous = folder / "run"
            continue
        source_cfg = open_run(previous).load_config()  # pairs as the previous model samples
        pairs, pair_time = folder / "pairs.h5", folder / "pairs.json"
        if not pairs.is_file():
            log.info("rectify: stage %d (%s): %d pairs from %s", index, stage, n_pairs, previous)
            started = time.perf_counter()
            _make_pairs(previous, source_cfg, pairs, n_pairs, batch_size, pair_steps, progress)
            atomic_write_text(pair_time, json.dumps({"seconds": time.perf_counter() - started,
                                                     "source": str(previous.resolve())}) + "\n")
        changes = stage_overrides(stage, pairs.resolve(), previous.resolve(), distill_steps)
        cfg = teacher_run.load_config([*changes, *common, *per_stage.get(stage, [])])
        run = RunDir(folder / "run")
        resume = run.checkpoints.is_dir() and bool(list_checkpoints(run.checkpoints))
        if resume and _step(run) >= cfg.train.total_steps:
            metrics = _evaluate(run, cfg)  # trained; stopped before its metrics were written
        else:
            log.info("rectify: stage %d (%s): training %s%s", index, stage, run.path,
                     " (resumed)" if resume else "")
            metrics = dict(train_fn(cfg, run.path, resume=resume, progress=progress).metrics)
        state = load_checkpoint(latest_checkpoint(run.checkpoints))
        result = StageResult(stage, run.path, metrics, _stored_seconds(pair_time),
                             float(state.get("train_seconds", 0.0)))
        _write_result(done, result)
        results.append(result)
        previous = run.path
    summary = {"teacher": str(teacher_run.path), "stages": list(stages), "n_pairs": n_pairs,
               "results": [_as_json(r) for r in results]}
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    return results


def _make_pairs(run_path: Path, cfg: Config, out: Path, n: int, batch_size: int,
                steps: int | None, progress: bool | None) -> None:
    """``n`` pairs from the model of ``run_path`` with its sampler and its conditions (the
    condition fields of its training data, drawn at random per pair)."""
    domain = create_domain(cfg.domain)
    data = domain.build_data(cfg)
    sampler = domain.sampler(cfg) if hasattr(domain, "sampler") else Sampler.from_config(cfg.sample)
    if steps is not None:
        sampler.steps = steps
    model = load_model(run_path, ema=cfg.eval.use_ema)
    generate_pairs(model, domain.source(cfg), n, out, sampler=sampler, batch_size=batch_size,
                   seed=cfg.seed, conditions=condition_pool(data.train), progress=progress)


def _evaluated(run: RunDir, overrides: Sequence[str], folder: Path, name: str) -> StageResult:
    """The teacher's metrics under the stages' evaluation settings (cached in ``folder``)."""
    done = folder / "metrics.json"
    if done.is_file():
        return _read_result(done)
    result = StageResult(name, run.path, _evaluate(run, run.load_config(overrides)))
    _write_result(done, result)
    return result


def _evaluate(run: RunDir, cfg: Config) -> dict[str, float]:
    """The domain's evaluation of the newest checkpoint of ``run`` (as ``flowsci eval``)."""
    domain = create_domain(cfg.domain)
    data = domain.build_data(cfg)
    model = load_model(run.path, ema=cfg.eval.use_ema)
    with isolated_rng(cfg.seed + EVAL_SEED_OFFSET), torch.no_grad():
        return Evaluation.of(domain.evaluate(model, data, cfg)).metrics


def _step(run: RunDir) -> int:
    return int(load_checkpoint(latest_checkpoint(run.checkpoints))["step"])


def _stored_seconds(path: Path) -> float:
    """The seconds written to ``path`` (0 when pairs were made before it was written)."""
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0


def _as_json(result: StageResult) -> dict[str, Any]:
    return {**dataclasses.asdict(result), "run": str(result.run) if result.run else None}


def _write_result(path: Path, result: StageResult) -> None:
    atomic_write_text(path, json.dumps(_as_json(result), indent=2) + "\n")


def _read_result(path: Path) -> StageResult:
    raw = json.loads(path.read_text())
    return StageResult(raw["name"], Path(raw["run"]) if raw["run"] else None, raw["metrics"],
                       raw.get("pair_seconds", 0.0), raw.get("train_seconds", 0.0))
