"""The demo encoder: timm resnet18 with seeded random weights (offline, 512-d, fast on a CPU).

Not a pathology model: it exists so the whole pipeline runs anywhere without downloads. Its features
still separate tiles that look different, which is what the demo cohort needs.
"""

from __future__ import annotations

from . import timm_generic
from .base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, Preprocess, finish, resolve_weights

PREPROCESS = Preprocess(size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD)
SPECS = {
    "demo": EncoderSpec(
        "demo",
        "timm resnet18, seeded random weights (offline demo, not a pathology model)",
        512,
        PREPROCESS,
        default_weights="random",
    )
}


def build(name: str, weights: str, seed: int):
    weights = resolve_weights(name, "random" if weights == "default" else weights, None)
    model = timm_generic.create("resnet18", weights, seed)
    return finish(name, model, PREPROCESS, 512, weights, "demo")
