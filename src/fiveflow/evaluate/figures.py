"""Matplotlib without a display, and figures written atomically: shared by every plot."""

from __future__ import annotations

from pathlib import Path

from ..fileio import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png: str | Path, dpi: int = 120) -> None:
    """Write ``fig`` as a PNG atomically (temp file, then rename) and close it, also on error."""
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
