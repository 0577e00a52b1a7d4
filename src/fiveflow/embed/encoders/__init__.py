"""Patch encoders: one module per encoder family, looked up by name (see ``registry``)."""

from .base import Encoder, EncoderError, EncoderSpec, Preprocess, state_dict_sha256
from .registry import build_encoder, spec, specs

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderSpec",
    "Preprocess",
    "build_encoder",
    "spec",
    "specs",
    "state_dict_sha256",
]
