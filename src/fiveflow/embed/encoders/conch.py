"""CONCH (Lu et al., Nature Medicine 2024): Mahmood Lab's pathology vision-language model, 512-d.

Loaded with the ``conch`` package (github.com/mahmoodlab/CONCH; not on PyPI) exactly as its README
and TRIDENT's ``Conchv1InferenceEncoder`` do: ``create_model_from_pretrained('conch_ViT-B-16',
checkpoint_path)`` with ``hf_hub:MahmoodLab/conch`` or the repo's ``pytorch_model.bin``. The feature
is ``encode_image(x, proj_contrast=False, normalize=False)``: the attention-pooled 512-d image
embedding before the contrastive projection and normalisation, the form the README recommends for
linear probes and multiple-instance learning. Preprocessing is the package's ``image_transform``
for the model's 448 px input: bicubic resize of the shortest side to 448, centre crop 448, OpenAI
CLIP mean/std (``conch_ViT-B-16.json``: ViT-B/16 trunk, ``image_size`` 448, ``embed_dim`` 512).

The hub repo is gated (accept the terms on huggingface.co and export ``HF_TOKEN``). Offline, copy its
``pytorch_model.bin`` and set ``embedding.weights`` to the file or its folder.
"""

from __future__ import annotations

import json
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
    hub_id,
    is_hub,
    load_state_dict,
    resolve_weights,
    seeded,
    strip_prefixes,
)

ARCH = "conch_ViT-B-16"
DEFAULT = "hf-hub:MahmoodLab/conch"
INSTALL = "pip install git+https://github.com/Mahmoodlab/CONCH.git"
PREPROCESS = Preprocess(size=448, crop=448, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic")
SPECS = {
    "conch": EncoderSpec(
        "conch",
        "CONCH (Mahmood Lab): CoCa ViT-B/16 on 1.17M pathology image-caption pairs, 448 px, 512-d",
        512,
        PREPROCESS,
        default_weights=DEFAULT,
        gated=True,
        requires="conch",
    )
}


class ImageEmbedding(torch.nn.Module):
    """Normalised ``[B, 3, 448, 448]`` -> CONCH's unprojected, unnormalised image embedding ``[B, 512]``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, proj_contrast=False, normalize=False)


def _package():
    try:
        import conch.open_clip_custom as occ
    except ImportError as exc:
        raise EncoderError(
            f"encoder 'conch' needs the `conch` package from github.com/mahmoodlab/CONCH, which is not on PyPI "
            f"({exc}). Fix: run `{INSTALL}` in the embedding environment (needs git and github.com access), "
            "or set `embedding.encoder` to another encoder."
        ) from None
    return occ


def random_model(occ) -> torch.nn.Module:
    """The architecture from the package's own config, randomly initialised (its loader needs a checkpoint)."""
    from conch.open_clip_custom.factory import CFG_DIR

    cfg = json.loads((Path(CFG_DIR) / f"{ARCH}.json").read_text())
    cfg.pop("custom_text", None)
    return occ.CoCa(**cfg)


#: the image-tower parts ``encode_image(proj_contrast=False)`` uses: ViT trunk, contrastive attention pool, its norm
USED = ("trunk.", "attn_pool_contrast.", "ln_contrast.")


def check_image_tower(name: str, model: torch.nn.Module, path: Path) -> None:
    """CONCH's loader is not strict; make sure the file really held every weight the feature uses."""
    try:  # mmap: only the keys and shapes are read
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    except Exception:
        sd = load_state_dict(path)
    sd = strip_prefixes(dict(sd), ("module.",))
    own = {f"visual.{k}": v for k, v in model.visual.state_dict().items() if k.startswith(USED)}
    bad = [k for k, v in own.items() if k not in sd or tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise EncoderError(
            f"{path}: checkpoint does not fit encoder {name!r} (image-tower weights missing or of "
            f"another shape: {bad[:4]}). Fix: set `embedding.encoder` to the architecture the file "
            "was saved from, or `embedding.weights` to CONCH's pytorch_model.bin."
        )


def build(name: str, weights: str, seed: int):
    occ = _package()
    weights = resolve_weights(name, weights, DEFAULT, "the `pytorch_model.bin` of MahmoodLab/conch")
    if weights == "random":
        with seeded(seed):
            model = random_model(occ)
    elif is_hub(weights):
        try:
            model, _ = occ.create_model_from_pretrained(ARCH, checkpoint_path=f"hf_hub:{hub_id(weights)}")
        except Exception as exc:  # offline node, gated without HF_TOKEN
            raise hub_error(name, weights, exc) from None
    else:
        path = checkpoint_file(weights)
        try:
            model, _ = occ.create_model_from_pretrained(ARCH, checkpoint_path=str(path))
        except Exception as exc:  # unreadable file, or a checkpoint of another model
            raise EncoderError(
                f"{path}: cannot load it as CONCH ({type(exc).__name__}: {str(exc)[:200]}). Fix: set "
                "`embedding.weights` to CONCH's pytorch_model.bin, or `embedding.encoder` to the "
                "encoder the file belongs to."
            ) from None
        check_image_tower(name, model, path)
    return finish(name, ImageEmbedding(model), PREPROCESS, 512, weights, "conch")
