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
