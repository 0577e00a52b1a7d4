"""Encoder registry: a name in ``embedding.encoder`` -> the module that builds it.

One small module per encoder family; each exposes ``SPECS`` (name -> ``EncoderSpec``) and
``build(name, weights, seed) -> Encoder``. A name that is not registered is taken as a timm model name
(``resnet18``, ``vit_small_patch16_224``, ...), so any timm architecture or ``hf-hub:`` checkpoint works.
Modules are imported only when their encoder is used (transformers and open_clip are slow to import).
"""

from __future__ import annotations

import importlib

from .base import Encoder, EncoderSpec

#: encoder name -> module (in this package) that builds it
MODULES = {
    "demo": "demo",
    "resnet50-trunc": "resnet50_trunc",
    "dsmil-resnet18": "dsmil_resnet18",
    "uni": "uni",
    "uni2-h": "uni",
    "conch": "conch",
    "plip": "clip",
    "clip-vit-b16": "clip",
    "quiltnet-b32": "open_clip_enc",
}


def _module(name: str):
    return importlib.import_module(f"{__package__}.{MODULES.get(name, 'timm_generic')}")


def build_encoder(name: str, weights: str = "default", seed: int = 0) -> Encoder:
    """Build the encoder ``name`` with ``weights`` (random | default | local path | hf-hub:<id>)."""
    return _module(name).build(name, str(weights), int(seed))


def specs() -> dict[str, EncoderSpec]:
    """Every registered encoder's spec, in registry order."""
    out = {}
    for name in MODULES:
        out[name] = _module(name).SPECS[name]
    return out


def spec(name: str) -> EncoderSpec | None:
    return _module(name).SPECS.get(name) if name in MODULES else None


def check_weights(name: str, weights: str) -> str:
    """Preflight (no download, no model build): where ``weights`` for encoder ``name`` will come from.

    Raises ``EncoderError`` when the job would certainly fail: a missing local file, or a gated hub
    model that is neither in the local hub cache nor reachable with a token (``HF_TOKEN`` unset).
    """
    import os

    from .base import EncoderError, hub_id, is_hub, resolve_weights

    sp = spec(name)
    weights = resolve_weights(name, weights, sp.default_weights if sp else None)
    if weights == "random":
        return "random weights (seeded): fine for a smoke test, not for results"
    if not is_hub(weights):
        return f"local weights {weights}"
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(hub_id(weights), local_files_only=True)
        return f"{weights} (in the local hub cache: {path})"
    except Exception:  # not cached (or huggingface_hub missing): jobs will have to download
        pass
    if sp is not None and sp.gated and not os.environ.get("HF_TOKEN"):
        raise EncoderError(
            f"{weights} is gated and not in the local hub cache, and HF_TOKEN is not set. Fix: accept "
            "its terms on huggingface.co and export HF_TOKEN, or download it and set "
            "`embedding.weights` to the local copy."
        )
    return f"{weights}: not cached; each embedding job downloads it (needs network on the job's node)"
