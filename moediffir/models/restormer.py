"""Restormer transformer blocks [Zamir et al. 2022] of the Visual2Text quality enhancers (paper §3.3;
docs/design.md §4).

Both Visual2Text forms enhance the encoder's input with these blocks: the kit's form on pixel-unshuffled pixels
(:mod:`moediffir.models.visual2text`), the released form on the LQ latent
(:mod:`moediffir.models.visual2text_released`). A block is ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))`` on a
``(B, C, H, W)`` map; every convolution is bias-free, the LayerNorms have a bias (Restormer's 'WithBias').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (Restormer's 'WithBias' LayerNorm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)


class ChannelAttention(nn.Module):
    """Restormer MDTA: attention across channels (C/h x C/h per head), linear in the number of pixels."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"quality enhancer: dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x))  # (B, 3C, H, W)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)  # 3 x (B, heads, C/h, HW)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, heads, C/h, C/h)
        out = attn.softmax(dim=-1) @ v  # (B, heads, C/h, HW)
        return self.project_out(out.reshape(b, c, h, w))  # (B, C, H, W)


class GatedFeedForward(nn.Module):
    """Restormer GDFN: ``project_out(gelu(x1) * x2)`` with ``x1, x2`` from a depth-wise 3x3 conv."""

    def __init__(self, dim: int, expansion: float = 2.66) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)  # 2 x (B, hidden, H, W)
        return self.project_out(F.gelu(x1) * x2)  # (B, C, H, W)


class RestormerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))`` on ``(B, C, H, W)``."""

    def __init__(self, dim: int, heads: int, expansion: float = 2.66) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = ChannelAttention(dim, heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GatedFeedForward(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, C, H, W)
        return x + self.ffn(self.norm2(x))  # (B, C, H, W)
