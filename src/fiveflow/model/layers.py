"""Transformer building blocks of the TFS aggregator (pre-LayerNorm, QuickGELU MLP).

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention`, so long bags
(thousands of instances) run on memory-efficient / flash kernels on CUDA and on the CPU.
Masks are boolean ``[B, N]`` with ``True`` = real token; padded keys are never attended to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc = nn.Linear(dim, hidden)
        self.act = QuickGELU()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class MultiHeadAttention(nn.Module):
    """Multi-head attention; queries ``[B, Q, d]``, keys/values ``[B, K, d]``, key mask ``[B, K]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, q: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, nq, d = q.shape
        nk = kv.shape[1]
        h = self.heads
        qh = self.q(q).view(b, nq, h, d // h).transpose(1, 2)
        k, v = self.kv(kv).view(b, nk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        return qh, k, v

    def weights(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention probabilities ``[B, heads, Q, K]`` that :meth:`forward` applies (masked keys get 0)."""
        qh, k, _ = self._heads(q, kv)
        scores = qh @ k.transpose(-2, -1) / (qh.shape[-1] ** 0.5)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return torch.softmax(scores.float(), dim=-1)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nq, d = q.shape
        qh, k, v = self._heads(q, kv)
        attn_mask = None
        if key_mask is not None and not bool(key_mask.all()):
            attn_mask = key_mask[:, None, None, :]  # [B, 1, 1, K], True = attend
        o = F.scaled_dot_product_attention(qh, k, v, attn_mask=attn_mask)
        return self.out(o.transpose(1, 2).reshape(b, nq, d))


class SelfAttentionBlock(nn.Module):
    """Pre-LN residual block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, mask)
        return x + self.mlp(self.ln_2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block, by default WITHOUT the residual from the queries (as the authors).

    ``y = attn(ln_q(q), ln_kv(kv))`` replaces the queries; the MLP sub-block keeps its own
    residual: ``y + mlp(ln_2(y))``. With ``residual=True`` (``model.cross_residual``) the block is a
    standard pre-LN residual block: ``y = q + attn(...)`` before the MLP sub-block.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, residual: bool = False) -> None:
        super().__init__()
        self.residual = bool(residual)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.attn(self.ln_q(q), self.ln_kv(kv), key_mask)
        if self.residual:
            y = q + y
        return y + self.mlp(self.ln_2(y))
