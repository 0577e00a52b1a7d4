"""OpenCLIP image towers (``open_clip_torch``): the projected image embedding, ``encode_image``.

- ``quiltnet-b32``: QuiltNet-B-32 (Ikezogwo et al., NeurIPS 2023 Datasets & Benchmarks; "Quilt-1M",
  arXiv:2306.11207; huggingface.co/wisdomik/QuiltNet-B-32), CLIP ViT-B/32 trained on 1M pathology
  image-text pairs from educational videos. Its ``open_clip_config.json`` is open_clip's built-in
  ``ViT-B-32`` (width 768, 12 layers, patch 32, 224 px, GELU, 512-d embedding) with OpenAI CLIP
  mean/std; open_clip's defaults add bicubic resize of the shortest side and a centre crop to 224.

Only the image tower is kept (``encode_image(x) == visual(x)`` for CLIP models); features are not
L2-normalised. Local weights: an open_clip checkpoint (``open_clip_pytorch_model.bin`` of the hub
repo, or a training checkpoint with ``state_dict``), or the folder holding it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import (
    CLIP_MEAN,
    CLIP_STD,
    EncoderError,
    EncoderSpec,
    Preprocess,
    checkpoint_file,
    finish,
    hub_error,
    is_hub,
    load_into,
    load_state_dict,
    resolve_weights,
    seeded,
    strip_prefixes,
)

#: encoder name -> (open_clip architecture of the local/random model, published weights)
MODELS = {"quiltnet-b32": ("ViT-B-32", "hf-hub:wisdomik/QuiltNet-B-32")}
SPECS = {
    "quiltnet-b32": EncoderSpec(
        "quiltnet-b32",
        "QuiltNet-B-32: CLIP ViT-B/32 trained on Quilt-1M pathology image-text pairs, 512-d",
        512,
        Preprocess(size=224, crop=224, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic"),
        default_weights=MODELS["quiltnet-b32"][1],
        requires="open_clip_torch",
    )
}
#: checkpoint names open_clip looks for in a folder, preferred first
_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise EncoderError(
            "this encoder needs open_clip. Fix: `pip install open_clip_torch==3.3.0` "
            "(it is in tools/requirements.txt and envs/embed.yaml)."
        ) from None
    return open_clip


def load_visual(name: str, visual: torch.nn.Module, path: Path) -> None:
    """Load the image tower from a full open_clip checkpoint (``visual.*`` keys) or an image-tower one."""
    sd = strip_prefixes(load_state_dict(path), ("module.",))
    if any(k.startswith("visual.") for k in sd):
        sd = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    load_into(name, visual, sd, str(path), ignore=())


def preprocess_of(model) -> Preprocess:
    """open_clip's eval transform for this model: resize to ``size`` (shortest side), centre crop, mean/std."""
    cfg = _open_clip().get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    interp = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
    return Preprocess(
        size=size,
        crop=size,
        mean=tuple(cfg.get("mean", CLIP_MEAN)),
        std=tuple(cfg.get("std", CLIP_STD)),
        interpolation=interp,
    )


def build(name: str, weights: str, seed: int):
    arch, default = MODELS[name]
    open_clip = _open_clip()
    weights = resolve_weights(name, weights, default, "an open_clip checkpoint such as `open_clip_pytorch_model.bin`")
    if is_hub(weights):
        try:
            model = open_clip.create_model(weights, require_pretrained=True)
        except Exception as exc:  # offline node, unknown id, no weights in the repo
            raise hub_error(name, weights, exc) from None
    else:
        with seeded(seed):
            model = open_clip.create_model(arch)
        if weights != "random":
            load_visual(name, model.visual, checkpoint_file(weights, _FILES))
    if not hasattr(model, "visual") or type(model).__name__ not in ("CLIP", "CustomTextCLIP"):
        raise EncoderError(
            f"encoder {name!r}: {type(model).__name__} models are not supported (image tower "
            "expected). Fix: set `embedding.encoder` to a CLIP-type model."
        )
    visual = model.visual
    dim = getattr(visual, "output_dim", None) or SPECS[name].dim
    return finish(name, visual, preprocess_of(model), int(dim), weights, "open_clip")
