"""The ``flowsci`` command line: train, resume, sweep, sample, eval, reflow, rectify, data make, list.

User errors (missing file, bad key, unknown name, corrupt checkpoint) exit with code 2 and one
message, without a traceback. Library messages go to stderr (:mod:`flowsci.logs`): ``-q``
keeps warnings only, ``-v`` adds debug messages.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from flowsci.errors import NonFiniteLossError, UserError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from flowsci.logs import configure_logging

    configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"flowsci: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLossError as exc:
        print(f"flowsci: training stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flowsci: interrupted; continue a training run with `flowsci resume RUN`", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    import flowsci

    parser = argparse.ArgumentParser(prog="flowsci", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"flowsci {flowsci.__version__}")
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbosity = add_verbosity()  # -q/-v also after COMMAND

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[verbosity], **kwargs)

    p = command("train", help="train a config: flowsci train CONFIG [key=value ...]")
    p.add_argument("config", help="YAML config file, e.g. domains/toy2d.yaml, or a run directory "
                   "(a new run with that run's config; with --resume, continue that run)")
    p.add_argument("overrides", nargs="*", help="overrides like train.steps=200 model.width=64")
    p.add_argument("--out", help="run directory (default: <train.out_dir>/<config name>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (or the given run directory, or the newest run of "
                   "this config)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.set_defaults(handler=cmd_train)

    p = command("resume", help="continue a run from its directory: flowsci resume RUN "
                       "[train.steps=N]")
    p.add_argument("run", help="run directory (holds config.yaml and checkpoints/)")
    p.add_argument("overrides", nargs="*",
                   help="only train.steps=N and train.lbfgs.steps=M may change (to train longer)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.set_defaults(handler=cmd_resume)

    p = command("sweep", help="train every combination of a config's sweep: section, then "
                       "write one table and one plot")
    p.add_argument("config", help="YAML config file with a sweep: section, e.g. domains/lpinn.yaml")
    p.add_argument("overrides", nargs="*", help="overrides of the base config (e.g. train.steps=200)")
    p.add_argument("--out", help="sweep directory (default: <train.out_dir>/<config name>-sweep)")
    p.add_argument("--workers", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--list", action="store_true", help="list the runs and exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars with one worker (default: when stderr is a terminal)")
    p.set_defaults(handler=cmd_sweep)

    p = command("sample", help="draw samples from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("overrides", nargs="*", help="overrides of the run's config (e.g. sample.steps=10)")
    p.add_argument("-n", "--num", type=int, default=1000, help="number of samples")
    p.add_argument("--checkpoint", help="checkpoint file (default: the newest of the run)")
    p.add_argument("--out", help="output .npz (default: RUN/samples/step-<N>.npz)")
    p.add_argument("--prompt", help="a caption to draw samples of (caption models); writes a PNG grid too")
    p.set_defaults(handler=cmd_sample)

    p = command("eval", help="evaluate a trained run and write its figures")
    p.add_argument("run", help="run directory")
    p.add_argument("overrides", nargs="*", help="overrides of the run's config (e.g. eval.n_samples=500)")
    p.add_argument("--checkpoint", help="checkpoint file (default: the newest of the run)")
    p.set_defaults(handler=cmd_eval)

    p = command("reflow", help="generate (x0, x1) pairs from a trained run for reflow / distillation")
    p.add_argument("run", help="run directory of the teacher flow")
    p.add_argument("overrides", nargs="*", help="overrides of the run's config (e.g. sample.steps=100)")
    p.add_argument("-n", "--num", type=int, default=20000, help="number of pairs")
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--checkpoint", help="checkpoint file (default: the newest of the run)")
    p.add_argument("--out", help="pair store (default: RUN/reflow/pairs-step-<N>.h5)")
    p.add_argument("--no-filter", action="store_true",
                   help="keep every pair even if the domain defines a reflow_filter")
    p.set_defaults(handler=cmd_reflow)

    p = command("rectify", help="reflow / distil a trained run in one command: pairs, training, "
                "evaluation per stage (resumable)")
    p.add_argument("run", help="run directory of the teacher flow")
    p.add_argument("overrides", nargs="*",
                   help="key=value for every stage (e.g. train.steps=600 'eval.steps=[1,2,4,8]'), "
                   "or STAGE:key=value for one kind of stage (distill:objective.loss=pseudo_huber)")
    p.add_argument("--stages", default="reflow",
                   help="comma-separated stages in order: reflow (the next rectified flow), distill "
                   "(k-step distillation); e.g. reflow,distill (InstaFlow) or distill (default: reflow)")
    p.add_argument("-n", "--num", type=int, default=4000, help="pairs per stage")
    p.add_argument("--batch-size", type=int, default=500, help="pairs generated per batch")
    p.add_argument("--pair-steps", type=int,
                   help="solver steps of pair generation (default: the previous model's sample.steps)")
    p.add_argument("--distill-steps", type=int, default=1, help="k of k-step distillation")
    p.add_argument("--out", help="pipeline folder (default: RUN/rectify)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress bars (default: when stderr is a terminal)")
    p.set_defaults(handler=cmd_rectify)

    p = command("data", help="data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("make", parents=[verbosity], help="generate a config's data set (HDF5)")
    q.add_argument("config")
    q.add_argument("overrides", nargs="*")
    q.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress bars (default: when stderr is a terminal)")
    q.set_defaults(handler=cmd_data_make)

    p = command("list", help="registered domains, models and engine components")
    p.add_argument("what", nargs="?", default="all",
                   help="domains | models | paths | timesteps | couplings | costs | losses | solvers | "
                   "grids | all")
    p.set_defaults(handler=cmd_list)
    return parser


def add_verbosity(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """-q/--quiet and -v/--verbose on ``parser`` (a new parent parser when None; there the
    defaults are left to the main parser, so that ``flowsci -q train`` keeps its -q)."""
    top = parser is not None
    parser = parser or argparse.ArgumentParser(add_help=False)
    parser.add_argument("-q", "--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="warnings and errors only")
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="debug messages")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from flowsci.config import load_config
    from flowsci.runs import open_run

    if Path(args.config).is_dir():  # a run directory stands for its resolved config
        run = open_run(args.config)
        cfg = run.load_config(args.overrides)
        out = args.out or (run.path if args.resume else None)
        return _train(cfg, out, resume=args.resume, progress=args.progress, config_name=cfg.domain)
    cfg = load_config(args.config, args.overrides)
    return _train(cfg, args.out, resume=args.resume, progress=args.progress,
                  config_name=Path(args.config).stem)


def cmd_resume(args: argparse.Namespace) -> int:
    from flowsci.runs import open_run

    run = open_run(args.run)
    return _train(run.load_config(args.overrides), run.path, resume=True, progress=args.progress,
                  config_name=None)


def _train(cfg, out: str | Path | None, *, resume: bool, progress: bool | None,
           config_name: str | None) -> int:
    """Train (or resume) and print the run directory, its final metrics and figures."""
    from flowsci.metrics_log import format_metrics
    from flowsci.training import TrainingInterrupted, train

    try:
        result = train(cfg, out, resume=resume, progress=progress, config_name=config_name)
    except TrainingInterrupted as stop:
        print(f"flowsci: interrupted at step {stop.step}; checkpoint {stop.checkpoint}\n"
              f"continue with: flowsci resume {stop.run_dir}", file=sys.stderr)
        return 130
    if result.metrics:
        print(f"run: {result.run_dir}")
        print(f"step {result.step}: {format_metrics(result.metrics)}")
        figures = sorted((result.run_dir / "figures").glob("*.png"))
        if figures:
            print("figures: " + ", ".join(str(f) for f in figures))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from flowsci.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.config, args.overrides)
    if args.list:
        for run in sweep.runs():
            print(run.name)
        return 0
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    root = run_sweep(sweep, args.out, workers=args.workers, progress=args.progress)
    table = root / "results.md"
    if table.is_file():
        print(table.read_text(), end="")
    print("written: " + ", ".join(str(p) for p in sorted(root.glob("results.*"))))
    return 0


def _load_run(args: argparse.Namespace):
    """(run, cfg, domain, data, model, checkpoint step) of a run directory; the domain is built
    for this command, the model compiled with the run's train.compile (or its override)."""
    from flowsci.checkpoint import latest_checkpoint, load_checkpoint, load_model
    from flowsci.compile import compile_model
    from flowsci.registry import create_domain
    from flowsci.runs import open_run

    run = open_run(args.run)
    cfg = run.load_config(args.overrides)
    path = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(run.checkpoints)
    step = int(load_checkpoint(path)["step"])
    model = compile_model(load_model(path, ema=cfg.eval.use_ema), cfg.train.compile)[0]
    domain = create_domain(cfg.domain)
    return run, cfg, domain, domain.build_data(cfg), model, step


def cmd_eval(args: argparse.Namespace) -> int:
    from flowsci.atomic import atomic_write_text
    from flowsci.figures import save_figures
    from flowsci.metrics_log import format_metrics
    from flowsci.plugins import Evaluation
    from flowsci.rng import EVAL_SEED_OFFSET, isolated_rng

    run, cfg, domain, data, model, step = _load_run(args)
    with isolated_rng(cfg.seed + EVAL_SEED_OFFSET):
        evaluation = Evaluation.of(domain.evaluate(model, data, cfg))
        metrics = evaluation.metrics
        figures = save_figures(domain.figures(model, data, cfg, evaluation=evaluation),
                               run.path / "eval" / f"step-{step:08d}")
    out = run.path / "eval" / f"step-{step:08d}" / "metrics.json"
    atomic_write_text(out, json.dumps({"step": step, **metrics}, indent=2) + "\n")
    print(f"step {step}: {format_metrics(metrics)}")
    print(f"written: {out}" + "".join(f", {f}" for f in figures))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from flowsci.atomic import atomic_open
    from flowsci.rng import seed_everything

    run, cfg, domain, data, model, step = _load_run(args)
    seed_everything(cfg.seed)
    figure = None
    if args.prompt is not None:
        samples, figure = domain.sample_prompt(model, data, cfg, args.num, args.prompt)
    else:
        samples = domain.sample(model, data, cfg, args.num)
    arrays = {k: v.detach().cpu().numpy() for k, v in samples.items()}
    out = Path(args.out) if args.out else run.path / "samples" / f"step-{step:08d}.npz"
    with atomic_open(out, "wb") as fh:
        np.savez(fh, **arrays)
    print(f"{args.num} samples ({', '.join(f'{k} {v.shape}' for k, v in arrays.items())}) -> {out}")
    if figure is not None:
        with atomic_open(out.with_suffix(".png"), "wb") as fh:
            figure.savefig(fh, format="png", dpi=120, bbox_inches="tight")
        print(f"grid -> {out.with_suffix('.png')}")
    return 0


def cmd_reflow(args: argparse.Namespace) -> int:
    from flowsci.flow_matching import Sampler
    from flowsci.reflow import condition_pool, generate_pairs

    run, cfg, domain, data, model, step = _load_run(args)
    out = Path(args.out) if args.out else run.path / "reflow" / f"pairs-step-{step:08d}.h5"
    # A domain on a non-Euclidean space supplies its sampler (which knows the space); a domain
    # may supply a quality filter for the pairs (ReQFlow's filtered reflow).
    sampler = domain.sampler(cfg) if hasattr(domain, "sampler") else Sampler.from_config(cfg.sample)
    accept = (domain.reflow_filter(cfg, data)
              if hasattr(domain, "reflow_filter") and not args.no_filter else None)
    # a conditional flow draws each pair for a random training condition, stored with the pair
    path = generate_pairs(model, domain.source(cfg), args.num, out, sampler=sampler,
                          batch_size=args.batch_size, seed=cfg.seed, accept=accept,
                          conditions=condition_pool(data.train))
    kept = " (filtered by the domain's reflow_filter)" if accept is not None else ""
    print(f"{args.num} pairs ({cfg.sample.steps} steps of {cfg.sample.solver}){kept} -> {path}")
    print(f"next rectified flow:  flowsci train CONFIG data.pairs={path} objective.coupling=paired "
          f"train.init_from={run.path}")
    return 0


def cmd_rectify(args: argparse.Namespace) -> int:
    from flowsci.metrics_log import format_metrics
    from flowsci.rectify import rectify

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    root = Path(args.out) if args.out else Path(args.run) / "rectify"
    results = rectify(args.run, stages, n_pairs=args.num, batch_size=args.batch_size,
                      pair_steps=args.pair_steps, distill_steps=args.distill_steps,
                      overrides=args.overrides, out=root, progress=args.progress)
    for result in results:
        cost = (f" (pairs {result.pair_seconds:.0f} s, training {result.train_seconds:.0f} s)"
                if result.name != "teacher" else "")
        print(f"{result.name}{cost}: {format_metrics(result.metrics)}")
    print(f"written: {root / 'summary.json'}")
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    from flowsci.config import load_config
    from flowsci.data import ensure_data, read_meta
    from flowsci.data.lifecycle import data_file, generates_data
    from flowsci.registry import create_domain

    cfg = load_config(args.config, args.overrides)
    domain = create_domain(cfg.domain)
    if not generates_data(domain):
        raise UserError(f"domain '{cfg.domain}' does not generate data (it has no make_data); its "
                        "data come from build_data or from a data.path you give")
    # an explicit data.path is made here (this command is what its error message points to)
    force = args.force or cfg.data.regenerate or not data_file(domain, cfg).exists()
    meta = read_meta(ensure_data(domain, cfg, force=force, progress=args.progress))
    splits = ", ".join(f"{k}: {v}" for k, v in meta.splits.items())
    print(f"{meta.path}: {meta.name} ({splits}; fields {', '.join(meta.fields)})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from flowsci.registry import REGISTRIES

    if args.what != "all" and args.what not in REGISTRIES:
        raise UserError(f"unknown list '{args.what}'; choose one of: all, {', '.join(REGISTRIES)}")
    for kind, registry in REGISTRIES.items():
        if args.what in ("all", kind):
            if args.what == "all":
                print(f"{kind}:")
            for name in registry.names():
                print(f"  {name:<20} {registry.source(name)}" if args.what == "all"
                      else f"{name:<20} {registry.source(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
