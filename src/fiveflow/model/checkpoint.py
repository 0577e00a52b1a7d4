"""FiVE checkpoints: ``torch.save`` of a plain dict, written atomically.

Contents: ``state_dict`` (everything trainable; not the frozen text encoder), ``model_cfg``
(the config's ``model`` section used to build it), ``feature_dim``, ``questions``,
``classes`` (the config's class entries), ``version`` (fiveflow's), and free-form ``extra``.

With LoRA (``model.text_lora_r > 0``) the state dict holds the adapters (``text_lora.*lora_*``)
but not the encoder's frozen base weights: loading rebuilds the encoder from
``model.text_encoder`` and loads strictly (a hook on the LoRA encoder excuses exactly the base
weights, so a missing adapter tensor is still an error). Checkpoints from before LoRA have no
``text_lora_*`` keys in ``model_cfg`` and load as frozen (r = 0). Checkpoints from before the
learned pad vector have no ``pad_token``: it is filled with zeros (its initial value).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..fileio import atomic_path
from .five import FiVEModel, build_model


def save_checkpoint(
    model: FiVEModel, model_cfg: dict, classes: list, feature_dim: int, out_path: str | Path, extra: dict | None = None
) -> None:
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


#: state-dict entries added after checkpoints were first written, with their initial values
_ADDED_LATER = {"pad_token": torch.zeros_like, "feature_mean": torch.zeros_like, "feature_std": torch.ones_like}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[FiVEModel, dict]:
    """Rebuild the model from its own saved ``model_cfg``; returns ``(model, payload)``."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(payload["model_cfg"], payload["feature_dim"], payload["questions"], device)
    state = dict(payload["state_dict"])
    # Tensors that older checkpoints lack get their initial values, so the strict load below
    # still catches every other missing tensor: the pad vector (only used when bags of different
    # lengths are batched) and the feature statistics (identity: feature_norm was "none").
    for key, init in _ADDED_LATER.items():
        if key not in state:
            state[key] = init(getattr(model, key), device="cpu")
    model.load_state_dict(state)
    return model, payload
