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

``model.pad_to_max_instances`` (the authors, FIVE_METHOD.md section 3 "Padding"): EVERY bag is
padded to the stage's ``max_instances`` (``train.pretrain`` for pre-training and zero-shot,
``train.finetune`` for fine-tuning and few-shot prediction; callers pass it to
:meth:`FiVEModel.encode_slide` / :meth:`FiVEModel.encode_slides`) with the one ``pad_token``; each
pad's position is ``(M / N, 0)`` (M = real, sampled instances of the bag, N = the bag's size; the
first column is the one the index positions ``(row / N, 0)`` use). Pads are masked in the
cross-attention keys and in ``g``; in the self-attention they are keys exactly when
``attend_to_padding`` is on. Per-tile heatmap scores (:meth:`FiVEModel.instance_attention`,
:meth:`FiVEModel.instance_evidence`) are computed unpadded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import with_defaults
from .aggregator import TFSAggregator
from .layers import cross_residual_mode
from .text import FrozenTextEncoder, LoraTextEncoder

PROMPT_INIT_STD = 0.01
#: model.feature_norm: none (the authors: raw features) | standardize (z-score each feature
#: dimension with the pre-training instances' mean and std)
FEATURE_NORMS = ("none", "standardize")


class FiVEModel(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        text_encoder: FrozenTextEncoder | LoraTextEncoder,
        questions: Sequence[str],
        dim: int = 512,
        heads: int = 8,
        n_prompts: int = 16,
        prompt_mode: str = "vector",
        logit_scale: float = 300.0,
        learn_logit_scale: bool = False,
        attend_to_padding: bool = False,
        cross_residual: str | bool = "mlp",
        feature_norm: str = "none",
        tfs: bool = True,
        position_encoding: str = "fourier",
        position_in_cross_keys: bool = False,
        pad_to_max_instances: bool = False,
    ) -> None:
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
        self.aggregator = TFSAggregator(
            dim,
            heads,
            attend_to_padding=attend_to_padding,
            cross_residual=cross_residual,
            tfs=tfs,
            position_encoding=position_encoding,
            position_in_cross_keys=position_in_cross_keys,
        )
        # model.pad_to_max_instances: pad every bag to the stage's max_instances (see the module docstring)
        self.pad_to_max_instances = bool(pad_to_max_instances)
        # learned pad vector (model space, after feature_proj); used when bags of different lengths
        # are batched (encode_slides) and, with pad_to_max_instances, in every bag. Zero init consumes no RNG, so initialisation of
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
                torch.randn(n_prompts, text_encoder.max_tokens, text_encoder.hidden_size) * PROMPT_INIT_STD
            )
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
    def encode_texts(self, texts: Sequence[str], grad_subset: int | None = None, rng=None) -> torch.Tensor:
        """Unit vectors ``[len(texts), d]`` for strings (encoder, frozen and cached or LoRA, + trainable projection).

        ``grad_subset`` (train ``text_grad_candidates``) and ``rng`` (a numpy Generator): see
        :meth:`text_vectors`; only LoRA training with gradients enabled is affected.
        """
        vec = self.text_vectors(list(texts), grad_subset, rng).to(self.device)
        return F.normalize(self.text_proj(vec), dim=-1)

    def text_vectors(self, texts: Sequence[str], grad_subset: int | None = None, rng=None) -> torch.Tensor:
        """Text-encoder sentence vectors ``[len(texts), hidden_size]`` (before the projection).

        With LoRA, gradients enabled and ``0 < grad_subset < len(texts)``: ``grad_subset``
        candidates drawn uniformly at random without replacement from ``rng`` (the target is not
        forced in: FIVE_METHOD.md "only 96 randomly chosen candidate texts") run through the
        encoder with gradients; the others run under ``torch.no_grad`` (in the encoder's batches),
        so their activations are not kept; the rows come back in the order of ``texts``. Only the
        encoder is cut off: the trainable projection still gets gradients from every candidate.
        Otherwise (frozen encoder: everything cached; ``grad_subset`` 0 / None = all; no grad
        mode) this is ``text_encoder.encode(texts)`` and ``rng`` is not used.
        """
        texts = list(texts)
        enc, n, k = self.text_encoder, len(texts), int(grad_subset or 0)
        if self.text_lora is None or k <= 0 or k >= n or not torch.is_grad_enabled():
            return enc.encode(texts)
        if rng is None:
            raise ValueError("text_vectors: a gradient subset needs an rng")
        sub = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
        chosen = set(sub)
        rest = [i for i in range(n) if i not in chosen]
        with torch.no_grad():  # first, so its batches' buffers are freed before the subset's graph is held
            without = enc.encode([texts[i] for i in rest])
        with_grad = enc.encode([texts[i] for i in sub])
        order = torch.empty(n, dtype=torch.long)
        order[torch.tensor(sub + rest)] = torch.arange(n)
        return torch.cat([with_grad, without])[order.to(with_grad.device)]

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

    def encode_slide(
        self,
        features: torch.Tensor,
        pos: torch.Tensor,
        bank: torch.Tensor,
        mask: torch.Tensor | None = None,
        max_instances: int | None = None,
        bag_size: int | Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``features [B, M, D]``, ``pos [B, M, 2]``, ``mask [B, M]`` -> unit slide vectors ``[B, d]``.

        With ``model.pad_to_max_instances`` and ``max_instances`` given, each row is padded to
        ``max(max_instances, M)`` with ``pad_token`` at position ``(M_b / N_b, 0)``: ``M_b`` its real
        instances (``mask.sum``, else M), ``N_b`` = ``bag_size`` (the size of the bag the rows were
        sampled from; one int for every row or one per row; default ``M_b``, pads at 1.0).
        Otherwise (flag off, or ``max_instances`` None) nothing is padded.
        """
        x = self.project_features(features)
        if self.pad_to_max_instances and max_instances is not None and int(max_instances) > x.shape[1]:
            b, m = x.shape[:2]
            real = mask if mask is not None else torch.ones(b, m, dtype=torch.bool, device=x.device)
            n_real = real.sum(1)
            sizes = n_real if bag_size is None else torch.as_tensor(bag_size, device=x.device).expand(b)
            pad_pos = (n_real.double() / sizes.double().clamp_min(1)).to(pos.dtype)  # [B]
            x, pos, mask = self._append_pads(x, pos, real, int(max_instances) - m, pad_pos)
        return self.aggregator(x, pos, bank, mask)

    def _append_pads(
        self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, extra: int, pad_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append ``extra`` pad rows to ``x [B, M, d]`` (``pad_token``), ``pos [B, M, 2]`` (``(pad_pos_b, 0)``)
        and ``mask [B, M]`` (False)."""
        b = x.shape[0]
        pads = self.pad_token.to(x.dtype).expand(b, extra, -1)
        p = pos.new_zeros(b, extra, pos.shape[-1])
        p[..., 0] = pad_pos.to(pos.dtype).unsqueeze(1)
        return (torch.cat([x, pads], 1), torch.cat([pos, p], 1), torch.cat([mask, mask.new_zeros(b, extra)], 1))

    def encode_slides(
        self,
        features_list: Sequence[torch.Tensor],
        pos_list: Sequence[torch.Tensor],
        bank: torch.Tensor,
        max_instances: int | None = None,
        bag_sizes: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Batch bags of different lengths: ``[M_i, D]`` features and ``[M_i, 2]`` positions -> ``[B, d]`` unit vectors.

        Each bag is projected to model space, padded to the longest with ``pad_token`` (pad
        positions 0) and aggregated with a boolean mask ``[B, N]`` (True = real instance).
        Bags of equal length (and B = 1) are stacked without padding or mask, exactly as
        :meth:`encode_slide`. With ``model.pad_to_max_instances`` and ``max_instances`` given, every
        bag is padded to ``max(max_instances, longest)`` instead, its pads at ``(M_i / N_i, 0)`` with
        ``N_i = bag_sizes[i]`` (default ``M_i``): the same vectors as :meth:`encode_slide` per bag.
        """
        if len(features_list) != len(pos_list) or not len(features_list):
            raise ValueError(
                f"encode_slides needs as many position tensors as bags (>= 1), got "
                f"{len(features_list)} and {len(pos_list)}"
            )
        if bag_sizes is not None and len(bag_sizes) != len(features_list):
            raise ValueError(f"encode_slides: {len(bag_sizes)} bag sizes for {len(features_list)} bags")
        lengths = [int(f.shape[0]) for f in features_list]
        fixed = self.pad_to_max_instances and max_instances is not None
        n = max(lengths + [int(max_instances)] if fixed else lengths)
        if all(k == n for k in lengths):
            return self.encode_slide(torch.stack(list(features_list)), torch.stack(list(pos_list)), bank)
        sizes = lengths if bag_sizes is None else [int(k) for k in bag_sizes]
        xs, ps, ms = [], [], []
        for f, p, m, size in zip(features_list, pos_list, lengths, sizes):
            x = self.project_features(f).unsqueeze(0)
            p, real = p.unsqueeze(0), torch.ones(1, m, dtype=torch.bool, device=x.device)
            if n > m:
                pad_pos = torch.tensor([m / max(size, 1) if fixed else 0.0], device=x.device)
                x, p, real = self._append_pads(x, p, real, n - m, pad_pos)
            xs.append(x)
            ps.append(p)
            ms.append(real)
        return self.aggregator(torch.cat(xs), torch.cat(ps), bank, torch.cat(ms))

    @torch.no_grad()
    def instance_attention(
        self, features: torch.Tensor, pos: torch.Tensor, bank: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One bag ``features [N, D]``, ``pos [N, 2]`` -> per-instance attention ``[N]`` (sums to 1 with TFS),
        over every instance; ``bank`` defaults to the full prompt bank (every question). Never padded,
        even with ``model.pad_to_max_instances`` (pads get no cross-attention weight anyway, but as
        self-attention keys they would shift the tokens: these heatmap weights are the unpadded bag's)."""
        bank = self.prompt_bank(None) if bank is None else bank
        x = self.project_features(features.to(self.device)).unsqueeze(0)
        return self.aggregator.instance_attention(x, pos.to(self.device).unsqueeze(0), bank)[0]

    @torch.no_grad()
    def instance_evidence(
        self,
        features: torch.Tensor,
        pos: torch.Tensor,
        text: torch.Tensor,
        target: int,
        bank: torch.Tensor | None = None,
        chunk: int = 1024,
    ) -> torch.Tensor:
        """Per-instance class evidence ``[N]`` for heatmaps: each instance alone, as a one-instance slide
        through the same aggregator and prompt bank, scored against the unit class texts ``text [C, d]``:
        its logit for class ``target`` minus the largest logit of the other classes (> 0: the tile on its
        own would be called ``target``). Unlike :meth:`instance_attention` it says which class a tile
        supports, not only where the prompt bank looked. ``chunk`` instances at a time (same result).
        The one-instance slides are never padded, even with ``model.pad_to_max_instances``."""
        if not 0 <= int(target) < text.shape[0] or text.shape[0] < 2:
            raise ValueError(f"instance_evidence: target {target} for {text.shape[0]} class texts (need >= 2)")
        bank = self.prompt_bank(None) if bank is None else bank
        others = [c for c in range(text.shape[0]) if c != int(target)]
        feats, pos = features.to(self.device), pos.to(self.device)
        out = []
        for i in range(0, feats.shape[0], max(int(chunk), 1)):
            slides = self.encode_slide(feats[i : i + chunk, None], pos[i : i + chunk, None], bank)  # [n, d]
            lg = self.logits(slides, text.to(slides.dtype))
            out.append(lg[:, int(target)] - lg[:, others].max(dim=1).values)
        return torch.cat(out) if out else feats.new_zeros(0)

    def logits(self, slide: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``s * cos`` between unit slide vectors ``[B, d]`` and unit text vectors ``[T, d]``."""
        return self.logit_scale() * slide @ text.t()


# What a ``model`` section stored in a checkpoint means when it lacks a key that is required in today's config:
# the checkpoint was written before that flag existed, with the behaviour of that time (e.g. raw features,
# a frozen text encoder). Optional keys take their schema defaults (fiveflow.settings), which are the same.
PRE_FLAG_CHECKPOINT_MODEL = {
    "position": "coords",
    "text_lora_r": 0,
    "text_lora_alpha": 32,
    "text_lora_dropout": 0.05,
    "text_lora_targets": ["query", "key", "value", "dense"],
    "attend_to_padding": False,
    "cross_residual": "mlp",
    "feature_norm": "none",
}


def build_model(model_cfg: dict, feature_dim: int, questions: Sequence[str], device: str | torch.device) -> FiVEModel:
    """Create a FiVE model from the config's ``model`` section."""
    from .text import get_text_encoder

    model_cfg = {**PRE_FLAG_CHECKPOINT_MODEL, **with_defaults(model_cfg, "model")}
    position_encoding = str(model_cfg["position_encoding"])
    if position_encoding == "sinusoid" and model_cfg["position"] != "index":
        raise ValueError(
            f"model.position_encoding: sinusoid is the authors' 1-D encoding of the row-index fraction and needs "
            f"model.position: index (got position: {model_cfg['position']!r}). Fix: set model.position: "
            "index, or keep position: coords with model.position_encoding: fourier."
        )
    r = int(model_cfg["text_lora_r"] or 0)
    if r > 0:
        enc = LoraTextEncoder(
            model_cfg["text_encoder"],
            model_cfg["text_max_tokens"],
            model_cfg["text_mask_padding"],
            device,
            r=r,
            alpha=float(model_cfg["text_lora_alpha"]),
            dropout=float(model_cfg["text_lora_dropout"]),
            targets=list(model_cfg["text_lora_targets"]),
        )
    else:
        enc = get_text_encoder(
            model_cfg["text_encoder"], model_cfg["text_max_tokens"], model_cfg["text_mask_padding"], device
        )
    model = FiVEModel(
        feature_dim=feature_dim,
        text_encoder=enc,
        questions=questions,
        dim=model_cfg["dim"],
        heads=model_cfg["heads"],
        n_prompts=model_cfg["n_prompts"],
        prompt_mode=model_cfg["prompt_mode"],
        logit_scale=float(model_cfg["logit_scale"]),
        learn_logit_scale=bool(model_cfg["learn_logit_scale"]),
        attend_to_padding=bool(model_cfg["attend_to_padding"]),
        # legacy booleans (older configs and checkpoints): False -> mlp, True -> full
        cross_residual=cross_residual_mode(model_cfg["cross_residual"]),
        position_encoding=position_encoding,
        position_in_cross_keys=bool(model_cfg["position_in_cross_keys"]),
        pad_to_max_instances=bool(model_cfg["pad_to_max_instances"]),
        feature_norm=str(model_cfg["feature_norm"]),
        tfs=bool(model_cfg["tfs"]),
    )
    return model.to(device)
