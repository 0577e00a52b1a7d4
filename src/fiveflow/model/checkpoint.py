"""FiVE checkpoints: ``torch.save`` of a plain dict, written atomically.

Contents: ``state_dict`` (everything trainable; not the frozen text encoder), ``model_cfg``
(the config's ``model`` section used to build it), ``feature_dim``, ``questions``,
``classes`` (the config's class entries), ``version`` (fiveflow's), and free-form ``extra``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..io import atomic_path
from .five import FiVEModel, build_model


def save_checkpoint(model: FiVEModel, model_cfg: dict, classes: list, feature_dim: int, out_path: str | Path,
                    extra: dict | None = None) -> None:
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_cfg": dict(model_cfg),
        "feature_dim": int(feature_dim),
        "questions": list(model.questions),
        "classes": [dict(c) for c in classes],
        "version": __version__,
        "extra": extra or {},
    }
    with atomic_path(out_path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[FiVEModel, dict]:
    """Rebuild the model from its own saved ``model_cfg``; returns ``(model, payload)``."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(payload["model_cfg"], payload["feature_dim"], payload["questions"], device)
    model.load_state_dict(payload["state_dict"])
    return model, payload
