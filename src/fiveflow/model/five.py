"""The FiVE model: patch-feature projection, prompt bank, TFS aggregator, text projection.

``logits = s * cos(slide, text)`` with ``s = model.logit_scale`` (fixed 300 as the authors)
unless ``learn_logit_scale`` is on (then ``log s`` is a trainable parameter).

The frozen text encoder is held by reference and is *not* part of ``state_dict`` (it is
re-created from ``model.text_encoder`` when a checkpoint is loaded). With LoRA
(``model.text_lora_r > 0``) the encoder is the submodule ``text_lora``: its adapters train at the
text-side learning rate and only its ``lora_`` tensors are in ``state_dict``.

Batching slides of different lengths (:meth:`FiVEModel.encode_slides`) pads each projected bag
to the longest with the learned ``pad_token`` (model space d) and masks the pads; with
``model.attend_to_padding`` (authors' quirk) the self-attention block still attends to them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .aggregator import TFSAggregator
from .text import FrozenTextEncoder, LoraTextEncoder

PROMPT_INIT_STD = 0.01
#: model.feature_norm: none (the authors: raw features) | standardize (z-score each feature
#: dimension with the pre-training instances' mean and std)
FEATURE_NORMS = ("none", "standardize")


class FiVEModel(nn.Module):
    def __init__(self, feature_dim: int, text_encoder: FrozenTextEncoder | LoraTextEncoder, questions: Sequence[str],
                 dim: int = 512, heads: int = 8, n_prompts: int = 16, prompt_mode: str = "vector",
                 logit_scale: float = 300.0, learn_logit_scale: bool = False,
                 attend_to_padding: bool = False, cross_residual: bool = False,
                 feature_norm: str = "none", tfs: bool = True) -> None:
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"model.feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        if isinstance(text_encoder, nn.Module):
            self.text_lora: LoraTextEncoder | None = text_encoder  # submodule: LoRA tensors train and are saved
            self._frozen_text = None
        else:
            self.text_lora = None
            self._frozen_text = text_encoder  # plain attribute: not a submodule, not saved
        self.questions = list(questions)
        self.dim = dim
        self.prompt_mode = prompt_mode
        self.feature_proj: nn.Module = nn.Identity() if feature_dim == dim else nn.Linear(feature_dim, dim)
        self.aggregator = TFSAggregator(dim, heads, attend_to_padding=attend_to_padding,
                                        cross_residual=cross_residual, tfs=tfs)
        # learned pad vector (model space, after feature_proj); used only when bags of different
        # lengths are batched (encode_slides). Zero init consumes no RNG, so initialisation of
        # every other parameter is unchanged.
        self.pad_token = nn.Parameter(torch.zeros(dim))
        # per-dimension standardisation of the patch features (model.feature_norm); statistics are
        # set once from the pre-training bags (set_feature_stats) and travel in the checkpoint
        self.feature_norm = feature_norm
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.text_proj = nn.Linear(text_encoder.hidden_size, dim, bias=False)
        if prompt_mode == "vector":
            self.prompts = nn.Parameter(torch.randn(n_prompts, dim) * PROMPT_INIT_STD)
        elif prompt_mode == "sequence":
            # authors: n x 308 x 768 input-embedding sequences run through the text encoder
            self.prompts = nn.Parameter(
                torch.randn(n_prompts, text_encoder.max_tokens, text_encoder.hidden_size) * PROMPT_INIT_STD)
        else:
            raise ValueError(f"model.prompt_mode must be vector or sequence, got {prompt_mode!r}")
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        else:
            self.register_buffer("log_logit_scale", torch.tensor(math.log(logit_scale)))

    # -- helpers -------------------------------------------------------------------------
    @property
    def text_encoder(self) -> FrozenTextEncoder | LoraTextEncoder:
        """The text encoder (frozen and shared, or the LoRA submodule ``text_lora``)."""
        return self.text_lora if self.text_lora is not None else self._frozen_text

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()

    # -- text side -------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit vectors ``[len(texts), d]`` for strings (encoder, frozen and cached or LoRA, + trainable projection)."""
        vec = self.text_encoder.encode(list(texts)).to(self.device)
        return F.normalize(self.text_proj(vec), dim=-1)

    def prompt_bank(self, keep_questions: Sequence[int] | None = None) -> torch.Tensor:
        """L2-normalised bank ``[(n_kept_questions + n_prompts), d]``; ``None`` keeps every question."""
        idx = range(len(self.questions)) if keep_questions is None else keep_questions
        parts = []
        texts = [self.questions[i] for i in idx]
        if texts:
            parts.append(self.text_proj(self.text_encoder.encode(texts).to(self.device)))
        if self.prompts.shape[0]:
            if self.prompt_mode == "vector":
                parts.append(self.prompts)
            else:
                parts.append(self.text_proj(self.text_encoder.encode_embeddings(self.prompts)))
        if not parts:
            raise ValueError("empty prompt bank: no questions kept and model.n_prompts is 0")
        return F.normalize(torch.cat(parts), dim=-1)

    # -- image side ------------------------------------------------------------------------
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-dimension mean and standard deviation of the training instances (``[D]`` each)."""
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_std.copy_(std.to(self.feature_std).clamp_min(1e-6))

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features ``[..., D]`` -> model space ``[..., d]`` (standardised first when configured)."""
        if self.feature_norm == "standardize":
            features = (features - self.feature_mean) / self.feature_std
        return self.feature_proj(features)

    def encode_slide(self, features: torch.Tensor, pos: torch.Tensor, bank: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, N, D]``, ``pos [B, N, 2]``, ``mask [B, N]`` -> unit slide vectors ``[B, d]``."""
        return self.aggregator(self.project_features(features), pos, bank, mask)

    def encode_slides(self, features_list: Sequence[torch.Tensor], pos_list: Sequence[torch.Tensor],
                      bank: torch.Tensor) -> torch.Tensor:
        """Batch bags of different lengths: ``[N_i, D]`` features and ``[N_i, 2]`` positions -> ``[B, d]`` unit vectors.

        Each bag is projected to model space, padded to the longest with ``pad_token`` (pad
        positions 0) and aggregated with a boolean mask ``[B, N]`` (True = real instance).
        Bags of equal length (and B = 1) are stacked without padding or mask, exactly as
        :meth:`encode_slide`.
        """
        if len(features_list) != len(pos_list) or not len(features_list):
            raise ValueError(f"encode_slides needs as many position tensors as bags (>= 1), got "
                             f"{len(features_list)} and {len(pos_list)}")
        lengths = [int(f.shape[0]) for f in features_list]
        n = max(lengths)
        if all(k == n for k in lengths):
            return self.encode_slide(torch.stack(list(features_list)), torch.stack(list(pos_list)), bank)
        xs, ps = [], []
        for f, p in zip(features_list, pos_list):
            x = self.project_features(f)
            extra = n - x.shape[0]
            if extra:
                x = torch.cat([x, self.pad_token.to(x.dtype).unsqueeze(0).expand(extra, -1)])
                p = torch.cat([p, p.new_zeros(extra, p.shape[-1])])
            xs.append(x)
            ps.append(p)
        x = torch.stack(xs)
        mask = torch.arange(n, device=x.device).unsqueeze(0) < torch.tensor(lengths, device=x.device).unsqueeze(1)
        return self.aggregator(x, torch.stack(ps), bank, mask)

    @torch.no_grad()
    def instance_attention(self, features: torch.Tensor, pos: torch.Tensor,
                           bank: torch.Tensor | None = None) -> torch.Tensor:
        """One bag ``features [N, D]``, ``pos [N, 2]`` -> per-instance attention ``[N]`` (sums to 1 with TFS),
        over every instance; ``bank`` defaults to the full prompt bank (every question)."""
        bank = self.prompt_bank(None) if bank is None else bank
        x = self.project_features(features.to(self.device)).unsqueeze(0)
        return self.aggregator.instance_attention(x, pos.to(self.device).unsqueeze(0), bank)[0]

    @torch.no_grad()
    def instance_evidence(self, features: torch.Tensor, pos: torch.Tensor, text: torch.Tensor, target: int,
                          bank: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
        """Per-instance class evidence ``[N]`` for heatmaps: each instance alone, as a one-instance slide
        through the same aggregator and prompt bank, scored against the unit class texts ``text [C, d]``:
        its logit for class ``target`` minus the largest logit of the other classes (> 0: the tile on its
        own would be called ``target``). Unlike :meth:`instance_attention` it says which class a tile
        supports, not only where the prompt bank looked. ``chunk`` instances at a time (same result)."""
        if not 0 <= int(target) < text.shape[0] or text.shape[0] < 2:
            raise ValueError(f"instance_evidence: target {target} for {text.shape[0]} class texts (need >= 2)")
        bank = self.prompt_bank(None) if bank is None else bank
        others = [c for c in range(text.shape[0]) if c != int(target)]
        feats, pos = features.to(self.device), pos.to(self.device)
        out = []
        for i in range(0, feats.shape[0], max(int(chunk), 1)):
            slides = self.encode_slide(feats[i:i + chunk, None], pos[i:i + chunk, None], bank)  # [n, d]
            lg = self.logits(slides, text.to(slides.dtype))
            out.append(lg[:, int(target)] - lg[:, others].max(dim=1).values)
        return torch.cat(out) if out else feats.new_zeros(0)

    def logits(self, slide: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``s * cos`` between unit slide vectors ``[B, d]`` and unit text vectors ``[T, d]``."""
        return self.logit_scale() * slide @ text.t()


def build_model(model_cfg: dict, feature_dim: int, questions: Sequence[str], device: str | torch.device) -> FiVEModel:
    """Create a FiVE model from the config's ``model`` section."""
    from .text import get_text_encoder

    # checkpoints written before LoRA existed have no text_lora_* keys: frozen encoder (r = 0)
    r = int(model_cfg.get("text_lora_r", 0) or 0)
    if r > 0:
        enc = LoraTextEncoder(
            model_cfg["text_encoder"], model_cfg["text_max_tokens"], model_cfg["text_mask_padding"], device,
            r=r, alpha=float(model_cfg.get("text_lora_alpha", 32)),
            dropout=float(model_cfg.get("text_lora_dropout", 0.05)),
            targets=list(model_cfg.get("text_lora_targets", ["query", "key", "value", "dense"])))
    else:
        enc = get_text_encoder(model_cfg["text_encoder"], model_cfg["text_max_tokens"],
                               model_cfg["text_mask_padding"], device)
    model = FiVEModel(
        feature_dim=feature_dim, text_encoder=enc, questions=questions, dim=model_cfg["dim"],
        heads=model_cfg["heads"], n_prompts=model_cfg["n_prompts"], prompt_mode=model_cfg["prompt_mode"],
        logit_scale=float(model_cfg["logit_scale"]), learn_logit_scale=bool(model_cfg["learn_logit_scale"]),
        # .get: checkpoints written before these flags existed build with the defaults
        attend_to_padding=bool(model_cfg.get("attend_to_padding", False)),
        cross_residual=bool(model_cfg.get("cross_residual", False)),
        feature_norm=str(model_cfg.get("feature_norm", "none")),
        tfs=bool(model_cfg.get("tfs", True)),
    )
    return model.to(device)
