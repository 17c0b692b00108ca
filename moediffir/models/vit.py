"""Pre-LN ViT blocks and multi-head (cross-)attention of the MoE-Prompt Module (paper §3.4, Fig. 3c; [14]).

The MoE-Prompt Module runs two pre-LN transformer blocks per scale on the LQ latent's tokens
(docs/design.md §4: dim 256, 4 heads, MLP x4). The same attention layer, with keys/values from another sequence,
is the cross-attention between a scale's tokens and the degradation prior (appendix A, Fig. 7).

No positional embedding is added: the tokens come from convolutions (which already encode position) and the
module must work for any latent size, which a learned absolute embedding would not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention: self-attention when ``context`` is None, else keys/values from ``context``."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(
                f"attention: dim={dim} is not divisible by heads={heads}; choose heads dividing dim"
            )
        self.heads = heads
        context_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim, dim)
        self.to_v = nn.Linear(context_dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, c = x.shape
        m = context.shape[1]
        h = self.heads
        q = self.to_q(x).view(b, n, h, c // h).transpose(1, 2)  # (B, h, L, C/h)
        k = self.to_k(context).view(b, m, h, c // h).transpose(1, 2)  # (B, h, M, C/h)
        v = self.to_v(context).view(b, m, h, c // h).transpose(1, 2)  # (B, h, M, C/h)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, C/h)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, L, C)
        return self.to_out(out)


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear with hidden size ``mlp_ratio * dim``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # (B, L, C)


class PreLNViTBlock(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` on tokens ``(B, L, C)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, L, C)
        x = x + self.mlp(self.norm2(x))  # (B, L, C)
        return x


def tokens_from_map(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` feature map -> ``(B, h*w, C)`` tokens (row-major)."""
    return x.flatten(2).transpose(1, 2)  # (B, h*w, C)


def map_from_tokens(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, h*w, C)`` tokens -> ``(B, C, h, w)`` feature map; inverse of :func:`tokens_from_map`."""
    b, n, c = x.shape
    if n != height * width:
        raise ValueError(f"map_from_tokens: {n} tokens cannot form a {height}x{width} map")
    return x.transpose(1, 2).reshape(b, c, height, width)  # (B, C, h, w)
