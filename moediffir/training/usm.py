"""Unsharp masking of the stage-I ground truth (``stage1.usm_gt``; the released training, paper §3.4 stage I).

Every released stage-I config sets ``use_usm: True``: before the GT crop is VAE-encoded into ``z_0`` it is
sharpened with Real-ESRGAN's ``USMSharp`` (radius 50 -> a 51-tap Gaussian, sigma 8 as OpenCV derives it for
``sigma=0``; weight 0.5; threshold 10/255), so the model learns to produce crisper images than the GT. The
paper does not mention it (``stage1.usm_gt`` is off by default, on in ``model.recipe="released"``).

``usm_sharpen(img) = m * clip(img + w * (img - blur(img)), 0, 1) + (1 - m) * img`` with the soft mask
``m = blur(|img - blur(img)| * 255 > threshold)``; ``blur`` is the separable Gaussian with reflect padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

USM_RADIUS = 50
USM_WEIGHT = 0.5
USM_THRESHOLD = 10.0


def gaussian_kernel_1d(radius: int = USM_RADIUS) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(k, 0)`` with ``k = radius`` rounded up to odd: ``(k,)``, sums to 1."""
    k = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for sigma <= 0
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def _blur(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian ``(B, C, H, W)`` -> same shape, reflect padding (replicate on tiny images)."""
    b, c, h, w = img.shape
    p = g.numel() // 2
    mode = "reflect" if min(h, w) > p else "replicate"
    x = F.pad(img.reshape(b * c, 1, h, w), (p, p, p, p), mode=mode)  # (B*C, 1, H+2p, W+2p)
    x = F.conv2d(x, g.view(1, 1, 1, -1).to(x))  # (B*C, 1, H+2p, W)
    x = F.conv2d(x, g.view(1, 1, -1, 1).to(x))  # (B*C, 1, H, W)
    return x.reshape(b, c, h, w)


def usm_sharpen(
    img: torch.Tensor, weight: float = USM_WEIGHT, threshold: float = USM_THRESHOLD, radius: int = USM_RADIUS
) -> torch.Tensor:
    """Sharpened copy of images ``(B, 3, H, W)`` in [0, 1] (see the module docstring)."""
    if img.ndim != 4:
        raise ValueError(f"usm_sharpen: expected images (B, C, H, W) in [0, 1], got {tuple(img.shape)}")
    g = gaussian_kernel_1d(radius).to(img.device)
    x = img.float()
    residual = x - _blur(x, g)  # (B, C, H, W)
    soft_mask = _blur((residual.abs() * 255 > threshold).float(), g)  # (B, C, H, W)
    sharp = (x + weight * residual).clamp(0, 1)
    return (soft_mask * sharp + (1 - soft_mask) * x).to(img.dtype)
