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

    def _heads(
        self, q: torch.Tensor, kv: torch.Tensor, k: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries, keys and values; ``k`` (same shape as ``kv``) is a separate input for the
        keys only (values still come from ``kv``), as when a position encoding is added to the keys."""
        b, nq, d = q.shape
        nk = kv.shape[1]
        h = self.heads
        qh = self.q(q).view(b, nq, h, d // h).transpose(1, 2)
        if k is None:
            kh, v = self.kv(kv).view(b, nk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        else:  # the first d output rows of self.kv are the key projection, the last d the value projection
            kh = F.linear(k, self.kv.weight[:d], self.kv.bias[:d]).view(b, nk, h, d // h).transpose(1, 2)
            v = F.linear(kv, self.kv.weight[d:], self.kv.bias[d:]).view(b, nk, h, d // h).transpose(1, 2)
        return qh, kh, v

    def weights(
        self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The attention probabilities ``[B, heads, Q, K]`` that :meth:`forward` applies (masked keys get 0)."""
        qh, kh, _ = self._heads(q, kv, k)
        scores = qh @ kh.transpose(-2, -1) / (qh.shape[-1] ** 0.5)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return torch.softmax(scores.float(), dim=-1)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``k``: optional key input (default ``kv``); values always come from ``kv``."""
        b, nq, d = q.shape
        qh, kh, v = self._heads(q, kv, k)
        attn_mask = None
        if key_mask is not None and not bool(key_mask.all()):
            attn_mask = key_mask[:, None, None, :]  # [B, 1, 1, K], True = attend
        o = F.scaled_dot_product_attention(qh, kh, v, attn_mask=attn_mask)
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


#: model.cross_residual: residuals of the cross-attention block (see :class:`CrossAttentionBlock`)
CROSS_RESIDUALS = ("none", "mlp", "full")


def cross_residual_mode(value: str | bool) -> str:
    """``model.cross_residual`` as one of :data:`CROSS_RESIDUALS`; the legacy booleans of older
    configs and checkpoints map to what they built: ``False`` -> ``mlp``, ``True`` -> ``full``."""
    if isinstance(value, bool):
        return "full" if value else "mlp"
    if value not in CROSS_RESIDUALS:
        raise ValueError(f"model.cross_residual must be one of {CROSS_RESIDUALS} (or a legacy boolean), got {value!r}")
    return value


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block; which residuals it has is ``residual`` (``model.cross_residual``):

    - ``none`` (the authors, FIVE_METHOD.md section 3): no residual anywhere in the block,
      ``out = mlp(ln_2(attn(ln_q(q), ln_kv(kv))))``;
    - ``mlp`` (default): no query residual, the MLP sub-block keeps its own:
      ``y = attn(ln_q(q), ln_kv(kv))``, ``out = y + mlp(ln_2(y))``;
    - ``full``: a standard pre-LN residual block, ``y = q + attn(...)``, ``out = y + mlp(ln_2(y))``.

    Legacy booleans are accepted (``False`` -> ``mlp``, ``True`` -> ``full``). ``key_pos`` (optional,
    ``[B, K, d]``) is added to the normalised keys only, ``keys = ln_kv(kv) + key_pos``, values stay
    ``ln_kv(kv)`` (``model.position_in_cross_keys``).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, residual: str | bool = "mlp") -> None:
        super().__init__()
        self.residual = cross_residual_mode(residual)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def keys_values(
        self, kv: torch.Tensor, key_pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(key input or None, value input)`` of the attention: ``ln_kv(kv) (+ key_pos)``, ``ln_kv(kv)``."""
        v = self.ln_kv(kv)
        return (None if key_pos is None else v + key_pos.to(v.dtype)), v

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        k, v = self.keys_values(kv, key_pos)
        y = self.attn(self.ln_q(q), v, key_mask, k)
        if self.residual == "none":
            return self.mlp(self.ln_2(y))
        if self.residual == "full":
            y = q + y
        return y + self.mlp(self.ln_2(y))
