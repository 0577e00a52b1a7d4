"""Any timm architecture by name, with random, local or ``hf-hub:`` weights (UNI-style hub repos too).

Preprocessing comes from the model's pretrained config (mean/std and input size); tiles are resized
to that input size without cropping (a tile is already the field of view).
"""

from __future__ import annotations

from .base import (
    EncoderError,
    EncoderSpec,
    Preprocess,
    finish,
    hub_error,
    is_hub,
    load_into,
    load_state_dict,
    resolve_weights,
    seeded,
)

SPECS: dict[str, EncoderSpec] = {}


def create(name: str, weights: str, seed: int, arch: str | None = None, **kwargs):
    """A timm model without its classifier (``num_classes=0``), weights loaded; raises EncoderError.

    ``arch``: the timm architecture when it differs from the encoder ``name`` used in messages;
    ``weights``: ``random``, ``hf-hub:<id>`` or a local checkpoint file.
    """
    import timm

    if is_hub(weights):
        try:
            return timm.create_model(weights, pretrained=True, num_classes=0, **kwargs)
        except Exception as exc:  # network, auth, unknown id
            raise hub_error(name, weights, exc) from None
    try:
        with seeded(seed):
            model = timm.create_model(arch or name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as exc:  # "Unknown model (...)"
        raise EncoderError(
            f"unknown encoder {name!r} ({exc}). Fix: set `embedding.encoder` to a registered encoder "
            "(`fiveflow encoders` lists them) or a timm model name."
        ) from None
    if weights != "random":
        load_into(name, model, load_state_dict(weights), weights)
    return model


def preprocess_of(model, interpolation: str | None = None) -> Preprocess:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))[-1]
    interp = interpolation or ("bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear")
    return Preprocess(
        size=int(size),
        mean=tuple(cfg.get("mean", Preprocess.mean)),
        std=tuple(cfg.get("std", Preprocess.std)),
        interpolation=interp,
    )


def build(name: str, weights: str, seed: int):
    weights = resolve_weights(name, weights, None, "or `hf-hub:<org>/<model>`")
    model = create(name, weights, seed)
    return finish(name, model, preprocess_of(model), model.num_features, weights, "timm")
