"""TFS aggregator (task-specific fine-grained semantics): instances + prompt bank -> slide.

FIVE_METHOD.md section 3:
1. positional encoding of each instance's relative position (``coords``: spatial
   coordinates normalised to the slide; ``index``: row index / N, the authors');
2. one self-attention block over instances (residual) plus an outer residual with the input;
   ``g`` = mean of the real instance tokens;
3. one cross-attention block, queries = prompt bank, keys/values = instance tokens (masked),
   no query residual (authors; ``cross_residual=True`` adds one); mean over prompts -> ``c``;
4. slide = Linear(2d -> d)([c, g]), L2-normalised.

Padding (``mask [B, N]``, True = real instance): by default padded positions are masked
everywhere (self-attention keys, ``g``, cross-attention keys), so padding never changes a
slide's embedding. ``attend_to_padding=True`` reproduces the authors' quirk: pads are NOT
masked in the self-attention block (real tokens attend to them as keys); they stay masked in
``g`` and in cross-attention.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CrossAttentionBlock, SelfAttentionBlock


class FourierPositionEncoding(nn.Module):
    """Map 2-D relative positions in [0, 1] to d-dim vectors (sin/cos features + linear)."""

    def __init__(self, dim: int, n_freqs: int = 8) -> None:
        super().__init__()
        self.register_buffer("freqs", (2.0 ** torch.arange(n_freqs)) * math.pi, persistent=False)
        self.proj = nn.Linear(2 + 4 * n_freqs, dim)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        ang = pos.unsqueeze(-1) * self.freqs  # [B, N, 2, F]
        feats = torch.cat([pos, ang.sin().flatten(-2), ang.cos().flatten(-2)], dim=-1)
        return self.proj(feats)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of ``x [B, N, d]`` counting only ``mask`` (True = real) positions."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TFSAggregator(nn.Module):
    def __init__(self, dim: int = 512, heads: int = 8, mlp_ratio: float = 4.0,
                 attend_to_padding: bool = False, cross_residual: bool = False) -> None:
        super().__init__()
        self.attend_to_padding = bool(attend_to_padding)
        self.pos = FourierPositionEncoding(dim)
        self.self_block = SelfAttentionBlock(dim, heads, mlp_ratio)
        self.cross_block = CrossAttentionBlock(dim, heads, mlp_ratio, residual=cross_residual)
        self.head = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, bank: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, d]``, ``pos [B, N, 2]`` in [0, 1], ``bank [P, d]``, ``mask [B, N]`` -> ``[B, d]`` unit vectors."""
        if mask is not None and bool(mask.all()):
            mask = None
        h = x + self.pos(pos)
        # authors' quirk (attend_to_padding): pads are unmasked keys in self-attention only
        self_mask = None if self.attend_to_padding else mask
        tokens = x + self.self_block(h, self_mask)  # block residuals + outer residual with the input
        g = masked_mean(tokens, mask)
        queries = bank.unsqueeze(0).expand(x.shape[0], -1, -1)
        c = self.cross_block(queries, tokens, mask).mean(1)
        return F.normalize(self.head(torch.cat([c, g], dim=-1)), dim=-1)
