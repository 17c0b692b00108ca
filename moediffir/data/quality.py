"""Quality of a compressed (LQ) image against its ground truth, as recorded in the benchmark manifest (§3.5).

Convention (stated wherever these numbers are shown): RGB, data range 255, the whole image (no border crop;
the SSIM map's 5-px margin is left out of its mean, as skimage does).
PSNR is ``10 log10(255^2 / MSE)`` over all pixels and channels. SSIM is Wang et al. (2004) with an 11x11
Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population covariance, computed per channel and averaged —
the same numbers as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=2)``, computed in float32 with the GT's moments cached
(:class:`SSIMReference`) for speed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

LQ_METRIC_CONVENTION = "RGB, data range 255, full image, SSIM Gaussian 11x11 sigma 1.5 (channel mean)"


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB arrays, got {a.shape}")


def psnr_rgb(gt: np.ndarray, lq: np.ndarray) -> float:
    """PSNR in dB over RGB uint8 arrays (data range 255); ``inf`` for identical images."""
    _check_pair(gt, lq)
    diff = (gt.astype(np.float64) - lq).ravel()  # (H * W * 3,)
    mse = float(diff @ diff) / diff.size
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


_R = 5  # window radius: int(truncate 3.5 * sigma 1.5 + 0.5), an 11x11 window as in skimage
_T = np.arange(-_R, _R + 1, dtype=np.float64)
_K = np.exp(-0.5 * (_T / 1.5) ** 2)
_KERNEL = (_K / _K.sum()).astype(np.float32)  # (11,) normalised 1-D Gaussian, sigma 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _gauss(a: np.ndarray) -> np.ndarray:
    """Separable Gaussian over the last two axes of ``(C, H, W)`` (reflect borders, as skimage)."""
    a = correlate1d(a, _KERNEL, axis=-1, mode="reflect")
    return correlate1d(a, _KERNEL, axis=-2, mode="reflect")


class SSIMReference:
    """SSIM against one GT image, with the GT's local moments computed once (many LQ versions per GT).

    Values are shifted by -128 before the float32 moments are filtered (which keeps the variance terms exact
    to ~1e-6); results match skimage's float64 SSIM to better than 1e-6. Images smaller than 11 px in a side
    are averaged without the border crop (skimage refuses them).
    """

    def __init__(self, gt: np.ndarray) -> None:
        if gt.ndim != 3 or gt.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got {gt.shape}")
        self.shape = gt.shape
        self.xs = np.ascontiguousarray(gt.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
        self.xs -= 128.0
        f = _gauss(np.concatenate([self.xs, self.xs * self.xs]))  # (6, H, W)
        self.mu_xs = f[:3]  # (3, H, W) local mean of the shifted GT
        self.vx = f[3:] - self.mu_xs * self.mu_xs  # (3, H, W) local variance
        self.mu_x = self.mu_xs + 128.0
        self.mu_x2_c1 = self.mu_x * self.mu_x + _C1
        h, w = gt.shape[:2]
        inner = h > 2 * _R and w > 2 * _R
        self.crop = (slice(None), slice(_R, h - _R), slice(_R, w - _R)) if inner else (slice(None),) * 3

    def __call__(self, lq: np.ndarray) -> float:
        if lq.shape != self.shape:
            raise ValueError(f"image shapes differ: {self.shape} vs {lq.shape}")
        ys = np.ascontiguousarray(lq.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
        ys -= 128.0
        f = _gauss(np.concatenate([ys, ys * ys, self.xs * ys]))  # (9, H, W)
        mu_ys, m_yy, m_xy = f[:3], f[3:6], f[6:]
        cxy = m_xy
        cxy -= mu_ys * self.mu_xs  # covariance
        vy = m_yy
        vy -= mu_ys * mu_ys  # variance
        mu_y = mu_ys
        mu_y += 128.0
        num = self.mu_x * mu_y
        num *= 2.0
        num += _C1
        cxy *= 2.0
        cxy += _C2
        num *= cxy  # (2 mu_x mu_y + C1)(2 cov + C2)
        den = mu_y * mu_y
        den += self.mu_x2_c1
        vy += self.vx
        vy += _C2
        den *= vy  # (mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)
        num /= den  # (3, H, W) SSIM map
        return float(num[self.crop].mean(dtype=np.float64))


def ssim_rgb(gt: np.ndarray, lq: np.ndarray) -> float:
    """Mean SSIM over RGB uint8 arrays (data range 255), averaged over the three channels."""
    _check_pair(gt, lq)
    return SSIMReference(gt)(lq)
