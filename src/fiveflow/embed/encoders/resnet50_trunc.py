"""CLAM's ``resnet50_trunc``: ImageNet ResNet50 cut after layer 3, global average pooled (1024-d).

The CLAM convention (Lu et al. 2021) and the most common MIL baseline feature: torchvision's ImageNet
weights (timm's ``resnet50.tv_in1k``), tiles fed at their own size (256 px at 20x in CLAM), ImageNet
mean/std, no resize. A local torchvision or timm ResNet50 state dict also works (``layer4``/``fc``
are dropped).
"""

from __future__ import annotations

import torch

from . import timm_generic
from .base import EncoderSpec, Preprocess, finish, is_hub, load_into, load_state_dict, resolve_weights

PREPROCESS = Preprocess(size=None)
DEFAULT = "hf-hub:timm/resnet50.tv_in1k"
SPECS = {
    "resnet50-trunc": EncoderSpec(
        "resnet50-trunc",
        "ImageNet ResNet50 to layer 3 + average pool (CLAM's resnet50_trunc)",
        1024,
        PREPROCESS,
        default_weights=DEFAULT,
    )
}


def truncate(model: torch.nn.Module) -> torch.nn.Module:
    model.layer4 = torch.nn.Identity()
    model.num_features = 1024
    return model


def build(name: str, weights: str, seed: int):
    weights = resolve_weights(name, weights, DEFAULT)
    local = weights != "random" and not is_hub(weights)
    # a local ResNet50 state dict is loaded after truncation, so its layer4 and fc are dropped
    model = truncate(timm_generic.create(name, "random" if local else weights, seed, arch="resnet50"))
    if local:
        load_into(name, model, load_state_dict(weights), weights, ignore=("fc.", "layer4."))
    return finish(name, model, PREPROCESS, 1024, weights, "resnet50-trunc")
