"""TFS aggregator (task-specific fine-grained semantics): instances + prompt bank -> slide.

The method description (docs: FIVE_METHOD.md section 3):
1. positional encoding of each instance's relative position (``model.position``: ``coords``,
   spatial coordinates normalised to the slide; ``index``, row index / N, the authors'), added
   to the instance tokens. ``model.position_encoding``: ``fourier`` (default, a learned linear map
   of Fourier features of both columns) or ``sinusoid`` (the authors': fixed, parameter-free,
   :class:`SinusoidPositionEncoding`);
2. one self-attention block over instances (residual) plus an outer residual with the input;
   ``g`` = mean of the real instance tokens;
3. one cross-attention block, queries = prompt bank, keys/values = instance tokens (masked);
   ``model.cross_residual`` picks its residuals (``none``: the authors', no residual at all;
   ``mlp``: default; ``full``; see :class:`~fiveflow.model.layers.CrossAttentionBlock`); with
   ``position_in_cross_keys`` (authors) the same position encoding is added a second time, to
   the cross-attention keys only: ``keys = ln_kv(tokens) + PE(pos)``, values ``ln_kv(tokens)``;
   mean over prompts -> ``c``;
4. slide = Linear(2d -> d)([c, g]), L2-normalised.

``tfs=False`` (``model.tfs``, the ablation "TFS cross-attention off") drops step 3: no prompt
bank enters the slide, ``slide = Linear(d -> d)(g)``, L2-normalised.

:meth:`TFSAggregator.instance_attention` gives one weight per instance for heatmaps: the
cross-attention of the prompt bank over the instances, averaged over heads and prompts (sums to
1 over the real instances); with ``tfs=False``, the self-attention each instance receives,
averaged over heads and queries.

Padding (``mask [B, N]``, True = real instance): by default padded positions are masked
everywhere (self-attention keys, ``g``, cross-attention keys), so padding never changes a
slide's embedding. ``attend_to_padding=True`` reproduces the authors' quirk: pads are NOT
masked in the self-attention block (real tokens attend to them as keys); they stay masked in
``g`` and in cross-attention. Which bags are padded, to what length and at which position is
decided by :class:`~fiveflow.model.five.FiVEModel` (``model.pad_to_max_instances``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CrossAttentionBlock, SelfAttentionBlock, cross_residual_mode

#: model.position_encoding
POSITION_ENCODINGS = ("fourier", "sinusoid")


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


class SinusoidPositionEncoding(nn.Module):
    """The authors' fixed, parameter-free sinusoid of a scalar relative position ``p`` (FIVE_METHOD.md section 3).

    ``p`` is the FIRST column of the ``[..., 2]`` position tensors the code passes around, i.e. the
    row-index fraction ``row / N`` with ``model.position: index`` (whose second column is always 0;
    it is ignored). For ``i = 0 .. d/2 - 1``, with ``w_i = 1 / 10000^(2i / d)``::

        PE(p)[2i]     = sin(p * w_i)
        PE(p)[2i + 1] = cos(p * w_i)

    the standard transformer table evaluated at the continuous ``p`` instead of an integer index
    (for odd ``d`` the last, unpaired dimension gets the sine only). No parameters and no
    persistent buffers, so nothing of it is in ``state_dict``. It is 1-D by design: the model
    refuses it with ``model.position: coords`` (see :func:`~fiveflow.model.five.build_model`).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        i = torch.arange((self.dim + 1) // 2, dtype=torch.float64)
        self.register_buffer("freqs", (1.0 / 10000.0 ** (2.0 * i / self.dim)).float(), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        ang = pos[..., :1].float() * self.freqs  # [..., ceil(d/2)]
        out = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # sin, cos interleaved
        return out[..., : self.dim]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of ``x [B, N, d]`` counting only ``mask`` (True = real) positions."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TFSAggregator(nn.Module):
    def __init__(
        self,
        dim: int = 512,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        attend_to_padding: bool = False,
        cross_residual: str | bool = "mlp",
        tfs: bool = True,
        position_encoding: str = "fourier",
        position_in_cross_keys: bool = False,
    ) -> None:
        super().__init__()
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"model.position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}")
        self.attend_to_padding = bool(attend_to_padding)
        self.tfs = bool(tfs)
        self.position_encoding = position_encoding
        self.position_in_cross_keys = bool(position_in_cross_keys)
        self.pos = FourierPositionEncoding(dim) if position_encoding == "fourier" else SinusoidPositionEncoding(dim)
        self.self_block = SelfAttentionBlock(dim, heads, mlp_ratio)
        if self.tfs:
            self.cross_block = CrossAttentionBlock(dim, heads, mlp_ratio, residual=cross_residual_mode(cross_residual))
        self.head = nn.Linear(2 * dim if self.tfs else dim, dim)

    def _tokens(
        self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(h, tokens, self_mask, key_pos)``: position-encoded input, self-attended tokens, the
        self-attention key mask, and the position encoding for the cross-attention keys (None unless
        ``position_in_cross_keys``)."""
        pe = self.pos(pos).to(x.dtype)
        h = x + pe
        # authors' quirk (attend_to_padding): pads are unmasked keys in self-attention only
        self_mask = None if self.attend_to_padding else mask
        key_pos = pe if self.position_in_cross_keys else None
        return (
            h,
            x + self.self_block(h, self_mask),
            self_mask,
            key_pos,
        )  # block residuals + outer residual with the input

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, bank: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x [B, N, d]``, ``pos [B, N, 2]`` in [0, 1], ``bank [P, d]``, ``mask [B, N]`` -> ``[B, d]`` unit vectors."""
        if mask is not None and bool(mask.all()):
            mask = None
        _, tokens, _, key_pos = self._tokens(x, pos, mask)
        g = masked_mean(tokens, mask)
        if not self.tfs:
            return F.normalize(self.head(g), dim=-1)
        queries = bank.unsqueeze(0).expand(x.shape[0], -1, -1)
        c = self.cross_block(queries, tokens, mask, key_pos).mean(1)
        return F.normalize(self.head(torch.cat([c, g], dim=-1)), dim=-1)

    def instance_attention(
        self, x: torch.Tensor, pos: torch.Tensor, bank: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-instance attention ``[B, N]`` for heatmaps (see the module docstring); 0 on padding."""
        if mask is not None and bool(mask.all()):
            mask = None
        h, tokens, self_mask, key_pos = self._tokens(x, pos, mask)
        if self.tfs:
            queries = bank.unsqueeze(0).expand(x.shape[0], -1, -1)
            blk = self.cross_block
            k, v = blk.keys_values(tokens, key_pos)
            w = blk.attn.weights(blk.ln_q(queries), v, mask, k)  # [B, heads, P, N]
        else:
            y = self.self_block.ln_1(h)
            w = self.self_block.attn.weights(y, y, self_mask)  # [B, heads, N, N]
            if mask is not None:  # only real instances count as queries
                w = w * mask[:, None, :, None].to(w.dtype)
                return w.sum(2).mean(1) / mask.sum(1, keepdim=True).clamp_min(1).to(w.dtype)
        return w.mean(dim=(1, 2))
