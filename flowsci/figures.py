"""Saving a domain's figures as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowsci.atomic import atomic_open


def save_figures(figures: dict[str, Any], directory: Path) -> list[Path]:
    """Save matplotlib figures as ``directory/<name>.png`` (atomically; pyplot-managed figures
    are closed). A value with a ``save_to(directory, name) -> Path`` method (a listening
    example, :class:`flowsci.audio.io.AudioClip`) saves itself. Returns the paths written."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        if hasattr(fig, "save_to"):
            paths.append(fig.save_to(directory, name))
            continue
        path = directory / f"{name}.png"
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
