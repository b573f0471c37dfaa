"""What the images benchmarks share: the data file and its feature classifier made once before
parallel runs, and the result written as JSON, Markdown and PNG."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from flowsci.atomic import atomic_open, atomic_write_text
from flowsci.config import Config
from flowsci.data.lifecycle import ensure_data
from flowsci.registry import create_domain


def prepare(cfg: Config) -> None:
    """Make the data file of ``cfg`` and its feature classifier (before parallel runs race to)."""
    domain = create_domain(cfg.domain)
    ensure_data(domain, cfg, progress=False)
    domain.classifier(cfg, domain.build_data(cfg))


def write_result(out: Path, result: dict, markdown: str, figure: Figure,
                 extra: dict[str, Figure] | None = None) -> None:
    """``out`` (JSON), ``out`` .md and .png, and each ``extra`` figure as ``<out stem>_<name>.png``,
    atomically; the table is printed."""
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown)
    pngs = {out.with_suffix(".png"): figure,
            **{out.with_name(f"{out.stem}_{name}.png"): fig for name, fig in (extra or {}).items()}}
    for path, fig in pngs.items():
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
    print(markdown, end="")
    print(f"wrote {out}, {out.with_suffix('.md')}, " + ", ".join(str(p) for p in pngs))


def fd_against_steps(curves: dict[str, tuple[list[float], list[float] | None]], nfe: list[int], floor: float,
                     title: str) -> Figure:
    """Fréchet classifier distance against the number of Euler steps: one curve per label
    (means, and standard deviations or None), next to the real-vs-real floor."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, (means, stds) in curves.items():
        ax.errorbar(nfe, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.axhline(floor, color="gray", ls="--", label="floor (val vs test)")
    ax.set(xlabel="Euler steps", ylabel="Fréchet classifier distance", xscale="log", yscale="log",
           title=title)
    ax.set_xticks(nfe, [str(k) for k in nfe])
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
