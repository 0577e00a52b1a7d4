"""CLIP-style image towers through ``transformers``: the projected image embedding (512-d).

The feature is what ``CLIPModel.get_image_features`` returns: the pooled class token through the
vision projection (``CLIPVisionModelWithProjection.image_embeds``), not L2-normalised. Only the
vision tower is loaded. Preprocessing is the models' ``CLIPImageProcessor``: shortest side to 224 px
(bicubic), centre crop 224, OpenAI CLIP mean/std.

- ``plip``: PLIP (Huang et al., Nature Medicine 2023; huggingface.co/vinid/plip,
  github.com/PathologyFoundation/plip), OpenAI CLIP ViT-B/32 fine-tuned on 208k pathology
  image-text pairs (OpenPath).
- ``clip-vit-b16``: OpenAI CLIP ViT-B/16 (huggingface.co/openai/clip-vit-base-patch16), a
  natural-image baseline.

Local weights: a folder written by ``save_pretrained`` (``config.json`` + weights; a snapshot of the
hub repo, a full ``CLIPModel`` or a ``CLIPVisionModelWithProjection``). ``random`` builds the
published architecture from its known sizes, offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from .base import (
    CLIP_MEAN,
    CLIP_STD,
    EncoderError,
    EncoderSpec,
    Preprocess,
    finish,
    hub_error,
    hub_id,
    is_hub,
    resolve_weights,
    seeded,
)

PREPROCESS = Preprocess(size=224, crop=224, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic")
HUB = {"plip": "hf-hub:vinid/plip", "clip-vit-b16": "hf-hub:openai/clip-vit-base-patch16"}
#: ViT-B vision tower sizes of the published checkpoints (their ``config.json``); patch size differs
PATCH = {"plip": 32, "clip-vit-b16": 16}
SPECS = {
    "plip": EncoderSpec(
        "plip",
        "PLIP: CLIP ViT-B/32 fine-tuned on OpenPath pathology image-text pairs, 512-d",
        512,
        PREPROCESS,
        default_weights=HUB["plip"],
        requires="transformers",
    ),
    "clip-vit-b16": EncoderSpec(
        "clip-vit-b16",
        "OpenAI CLIP ViT-B/16 image embedding (natural images), 512-d",
        512,
        PREPROCESS,
        default_weights=HUB["clip-vit-b16"],
        requires="transformers",
    ),
}
HOW = "a folder saved with `save_pretrained` (config.json + weights), e.g. a download of the hub repo"


class ImageEmbedding(torch.nn.Module):
    """Normalised ``[B, 3, H, W]`` -> projected CLIP image embedding ``[B, projection_dim]``."""

    def __init__(self, vision: torch.nn.Module) -> None:
        super().__init__()
        self.vision = vision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=x).image_embeds


def vision_config(name: str):
    """The published model's vision tower (ViT-B, QuickGELU, 224 px, 512-d projection), built offline."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        patch_size=PATCH[name],
        image_size=224,
        projection_dim=512,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers logs a table of the (expected) unused text-tower keys; missing keys are checked in ``load``."""
    log = logging.getLogger("transformers.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def load(name: str, source: str):
    """``CLIPVisionModelWithProjection`` from a local folder or hub id (a CLIPModel checkpoint is fine)."""
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    cfg = AutoConfig.from_pretrained(source)
    if cfg.model_type == "clip":  # full CLIPModel: the projection size lives on the top-level config
        vcfg = cfg.vision_config
        vcfg.projection_dim = cfg.projection_dim
    elif cfg.model_type == "clip_vision_model":
        vcfg = cfg
    else:
        raise EncoderError(
            f"{source}: a {cfg.model_type!r} model, not CLIP. Fix: set `embedding.encoder` to the "
            "encoder these weights belong to, or `embedding.weights` to a CLIP model folder."
        )
    try:
        with _quiet_load_report():  # fp32 whatever the checkpoint's dtype: the pipeline applies autocast itself
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                source, config=vcfg, dtype=torch.float32, output_loading_info=True
            )
    except RuntimeError as exc:
        if "mismatch" not in str(exc):  # e.g. a failed download: the caller reports it
            raise
        raise EncoderError(
            f"{source}: checkpoint does not fit encoder {name!r} ({str(exc).splitlines()[0][:200]}). "
            "Fix: set `embedding.encoder` to the architecture the folder was saved from."
        ) from None
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise EncoderError(
            f"{source}: checkpoint does not fit encoder {name!r} (missing "
            f"{sorted(info.get('missing_keys', []))[:4]}). Fix: set `embedding.encoder` to the "
            "architecture the folder was saved from."
        )
    return model


def local_folder(name: str, path: str) -> str:
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not (folder / "config.json").is_file():
        raise EncoderError(f"encoder {name!r}: {folder} has no config.json. Fix: set `embedding.weights` to {HOW}.")
    return str(folder)


def build(name: str, weights: str, seed: int):
    from transformers import CLIPVisionModelWithProjection

    weights = resolve_weights(name, weights, HUB[name], HOW)
    if weights == "random":
        with seeded(seed):
            vision = CLIPVisionModelWithProjection(vision_config(name))
    elif is_hub(weights):
        try:
            vision = load(name, hub_id(weights))
        except EncoderError:
            raise
        except Exception as exc:  # offline node, unknown id, no access
            raise hub_error(name, weights, exc) from None
    else:
        folder = local_folder(name, weights)
        try:
            vision = load(name, folder)
        except EncoderError:
            raise
        except Exception as exc:  # unreadable config or weights
            raise EncoderError(
                f"encoder {name!r}: cannot load {folder} ({type(exc).__name__}: {str(exc)[:200]}). "
                f"Fix: set `embedding.weights` to {HOW}."
            ) from None
    size = int(vision.config.image_size)  # 224 for both; another CLIP from the hub keeps its own size
    preprocess = PREPROCESS if size == PREPROCESS.crop else dataclasses.replace(PREPROCESS, size=size, crop=size)
    return finish(name, ImageEmbedding(vision), preprocess, int(vision.config.projection_dim), weights, "clip")
