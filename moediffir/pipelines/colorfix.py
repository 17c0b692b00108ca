"""Colour correction of restored images against their LQ input (docs/design.md §6; StableSR's post-processing).

Diffusion restorers can shift colours; StableSR (and the released MoE-DiffIR code that builds on it) offers
two fixes, both optional here (``SampleConfig.color_fix``):

- ``adain``: per image and channel, give the output the mean and standard deviation of the LQ image
  (adaptive instance normalisation, Huang & Belongie 2017).
- ``wavelet``: split both images into high and low frequencies with an a-trous (dilated) wavelet pyramid of
  ``levels`` 3x3 binomial blurs (dilation 1, 2, 4, ...); keep the output's high frequencies and take the LQ's
  lowest band: ``out = (content - low(content)) + low(style)``.

Both act on ``(B, 3, H, W)`` float tensors in ``[0, 1]`` and return the same, clamped to ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_FIXES = ("none", "wavelet", "adain")


def _check_pair(content: torch.Tensor, style: torch.Tensor, who: str) -> None:
    if not (torch.is_tensor(content) and torch.is_tensor(style)) or content.ndim != 4 or style.ndim != 4:
        raise ValueError(f"{who}: expected two (B, C, H, W) tensors")
    if content.shape != style.shape:
        raise ValueError(f"{who}: content {tuple(content.shape)} and style {tuple(style.shape)} differ in shape")


def adain_color_fix(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``content`` with the per-channel mean and std of ``style`` (both ``(B, C, H, W)`` in [0, 1])."""
    _check_pair(content, style, "adain_color_fix")
    x, s = content.float(), style.float()
    c_mean, c_std = x.mean(dim=(-2, -1), keepdim=True), x.std(dim=(-2, -1), keepdim=True, unbiased=False)  # (B, C, 1, 1)
    s_mean, s_std = s.mean(dim=(-2, -1), keepdim=True), s.std(dim=(-2, -1), keepdim=True, unbiased=False)  # (B, C, 1, 1)
    out = (x - c_mean) / (c_std + eps) * s_std + s_mean  # (B, C, H, W)
    return out.clamp(0.0, 1.0).to(content.dtype)


def wavelet_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """One a-trous level: 3x3 binomial blur ``[1 2 1]^T [1 2 1] / 16`` with ``dilation``, edge-replicated."""
    c = x.shape[1]
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4.0
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)  # (C, 1, 3, 3)
    d = int(dilation)
    padded = F.pad(x, (d, d, d, d), mode="replicate")  # (B, C, H+2d, W+2d)
    return F.conv2d(padded, kernel, groups=c, dilation=d)  # (B, C, H, W)


def wavelet_decomposition(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high, low)`` with ``x == high + low``; ``low`` is the blur after ``levels`` a-trous levels."""
    if levels < 1:
        raise ValueError(f"wavelet levels must be >= 1, got {levels}")
    low = x
    for i in range(levels):
        low = wavelet_blur(low, 2**i)  # (B, C, H, W)
    return x - low, low


def wavelet_color_fix(content: torch.Tensor, style: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """High frequencies of ``content`` plus the low-frequency band of ``style`` (both ``(B, C, H, W)`` in [0, 1])."""
    _check_pair(content, style, "wavelet_color_fix")
    high, _ = wavelet_decomposition(content.float(), levels)
    _, low = wavelet_decomposition(style.float(), levels)
    return (high + low).clamp(0.0, 1.0).to(content.dtype)  # (B, C, H, W)


def apply_color_fix(content: torch.Tensor, style: torch.Tensor, method: str) -> torch.Tensor:
    """Dispatch on ``method`` (``"none"``, ``"wavelet"``, ``"adain"``)."""
    if method == "none":
        return content
    if method == "wavelet":
        return wavelet_color_fix(content, style)
    if method == "adain":
        return adain_color_fix(content, style)
    raise ValueError(f"color_fix={method!r}: choose one of {COLOR_FIXES}")
