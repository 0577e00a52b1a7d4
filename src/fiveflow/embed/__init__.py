"""Stage 2: patch embedding (encoders, tile reading, feature bags, importers)."""

from __future__ import annotations

from pathlib import Path

from ..settings import with_defaults


def is_local_weights(weights: str) -> bool:
    """``embedding.weights`` names a file or folder (not ``random``, ``default`` or ``hf-hub:<id>``)."""
    return weights not in ("random", "default") and not weights.startswith("hf-hub:")


def embed_settings(cfg: dict, root: str | Path | None = None) -> dict:
    """The ``embedding`` config section with defaults filled in and a relative weights path made absolute."""
    out = with_defaults(cfg, "embedding")
    w = str(out["weights"])
    if root is not None and is_local_weights(w) and not Path(w).is_absolute():
        out["weights"] = str(Path(root) / w)
    return out
