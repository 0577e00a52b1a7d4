"""Patch encoders from timm: random (seeded, offline), a local checkpoint, or a hub id.

Every encoder comes with its preprocessing (mean/std) and a checksum of its weights, stored with
the feature bags so features from different weights can never be mixed silently.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Encoder:
    name: str
    model: torch.nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    weights: str
    weights_sha256: str


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Checksum of the parameters and buffers (names, shapes and bytes), independent of file format."""
    h = hashlib.sha256()
    for key, val in sorted(model.state_dict().items()):
        h.update(key.encode())
        t = val.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _load_checkpoint(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def build_encoder(name: str, weights: str = "random", seed: int = 0) -> Encoder:
    """Create a timm encoder with its classification head removed (``num_classes=0``)."""
    import timm

    if weights.startswith("hf-hub:"):
        try:
            model = timm.create_model(weights, pretrained=True, num_classes=0)
        except Exception as exc:  # network, auth or unknown id
            raise RuntimeError(
                f"could not load encoder weights {weights!r} from the hub ({exc}). Fix: download them on a "
                "machine with access and set `embedding.weights` to the local checkpoint file."
            ) from None
    else:
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, num_classes=0)
        if weights != "random":
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"encoder checkpoint not found: {path}. Fix: correct `embedding.weights`.")
            sd = _load_checkpoint(path)
            sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "head.", "classifier."))}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{path}: checkpoint does not fit timm model {name!r} (missing {list(missing)[:5]}, "
                    f"unexpected {list(unexpected)[:5]}). Fix: set `embedding.encoder` to the architecture it was saved from."
                )
    model.eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    return Encoder(
        name=name, model=model, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        dim=int(model.num_features), weights=weights, weights_sha256=state_dict_sha256(model),
    )


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("`device: cuda` was requested but no CUDA GPU is visible. Fix: use auto or cpu.")
    return torch.device(device)
