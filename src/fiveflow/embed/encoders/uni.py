"""UNI and UNI2-h (Mahmood Lab): self-supervised (DINOv2) pathology ViTs, class-token features.

Architectures and preprocessing as in the model cards (huggingface.co/MahmoodLab/uni and
huggingface.co/MahmoodLab/UNI2-h), the UNI repository's ``uni/get_encoder/get_encoder.py``
(github.com/mahmoodlab/UNI) and TRIDENT's ``UNIInferenceEncoder``/``UNIv2InferenceEncoder``
(github.com/mahmoodlab/TRIDENT, ``trident/patch_encoder_models/load.py``):

- ``uni``: timm ``vit_large_patch16_224`` (ViT-L/16, 303M parameters) with ``init_values=1e-5`` and
  ``dynamic_img_size=True``; 1024-d.
- ``uni2-h``: timm ``vit_giant_patch14_224`` rebuilt as ViT-H/14 with 8 register tokens (681M
  parameters): ``patch_size=14, depth=24, num_heads=24, embed_dim=1536, mlp_ratio=2.66667*2,
  mlp_layer=SwiGLUPacked, act_layer=SiLU, no_embed_class=True, reg_tokens=8, init_values=1e-5,
  dynamic_img_size=True``; 1536-d.

Both: ``Resize(224)`` + ``CenterCrop(224)`` + ImageNet mean/std. Both hub repos are gated (accept
the terms on huggingface.co and export ``HF_TOKEN``). Offline, download the repo's
``pytorch_model.bin`` elsewhere and set ``embedding.weights`` to the file or to its folder.
"""

from __future__ import annotations

from . import timm_generic
from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    Preprocess,
    checkpoint_file,
    finish,
    hub_id,
    is_hub,
    resolve_weights,
)

PREPROCESS = Preprocess(size=224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
HUB = {"uni": "hf-hub:MahmoodLab/uni", "uni2-h": "hf-hub:MahmoodLab/UNI2-h"}
SPECS = {
    "uni": EncoderSpec(
        "uni",
        "UNI (Mahmood Lab): ViT-L/16 DINOv2 on 100k pathology slides, 1024-d",
        1024,
        PREPROCESS,
        default_weights=HUB["uni"],
        gated=True,
    ),
    "uni2-h": EncoderSpec(
        "uni2-h",
        "UNI2-h (Mahmood Lab): ViT-H/14 with 8 registers, 350k+ slides, 1536-d",
        1536,
        PREPROCESS,
        default_weights=HUB["uni2-h"],
        gated=True,
    ),
}


def architecture(name: str) -> tuple[str, dict]:
    """The timm model name and keyword arguments from the model card (tests swap in a tiny ViT)."""
    if name == "uni":
        return "vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5, dynamic_img_size=True)
    import timm
    import torch

    return "vit_giant_patch14_224", dict(
        img_size=224,
        patch_size=14,
        depth=24,
        num_heads=24,
        init_values=1e-5,
        embed_dim=1536,
        mlp_ratio=2.66667 * 2,
        no_embed_class=True,
        mlp_layer=timm.layers.SwiGLUPacked,
        act_layer=torch.nn.SiLU,
        reg_tokens=8,
        dynamic_img_size=True,
    )


def build(name: str, weights: str, seed: int):
    weights = resolve_weights(name, weights, HUB[name], f"the `pytorch_model.bin` of {hub_id(HUB[name])}")
    arch, kwargs = architecture(name)
    local = weights != "random" and not is_hub(weights)
    model = timm_generic.create(name, str(checkpoint_file(weights)) if local else weights, seed, arch=arch, **kwargs)
    return finish(name, model, PREPROCESS, model.num_features, weights, "uni")
