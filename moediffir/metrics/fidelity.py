"""Fidelity metrics PSNR and SSIM, as reported in the paper's tables (paper §4.2, Tables 1-6; docs/design.md §7).

Conventions are explicit keyword arguments, never hidden defaults of a library:

* ``data_range``: the peak value. uint8 inputs default to 255; float inputs must say it (1.0 or 255).
* ``crop_border``: pixels removed from every side before measuring (BasicSR's ``crop_border``).
* ``color``: ``"rgb"`` (all channels, the kit's default) or ``"y"``: the BT.601 YCbCr luma
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (R, G, B in [0, 1]; Y in [16, 235] on the 0-255 scale), which is
  what restoration papers call "Y channel" (MATLAB ``rgb2ycbcr``, BasicSR, ``skimage.color.rgb2ycbcr``). Y is
  kept as a float, not rounded. Note that pyiqa's ``test_y_channel`` uses the Y of YIQ by default
  (``0.299 R + 0.587 G + 0.114 B``, full range), which gives PSNR about 1.3 dB lower on the same images.

SSIM follows Wang et al. 2004 as BasicSR and scikit-image implement it: 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, population (not sample) covariance, mean of the SSIM map over the region where the window
fits entirely ("valid"); for colour images the mean over channels. It equals
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

The benchmark build scores many compressed versions of one GT image; :class:`SSIMReference` is the fast path of
the same SSIM for that case (RGB uint8, no crop): the GT's local moments are computed once, in float32, and
its values match :func:`ssim` to better than 1e-6.

Inputs: numpy arrays ``(H, W, 3)`` or ``(H, W)``; torch tensors ``(3, H, W)`` or ``(H, W)`` (channel first, the
torch convention). Shapes must match exactly; a mismatch raises naming both shapes.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d

from moediffir.errors import MoEDiffIRError

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): an 11x11 window, as in Wang et al. 2004
SSIM_K1 = 0.01
SSIM_K2 = 0.03
RGB_CONVENTION = "RGB, data range 255, full image, SSIM Gaussian 11x11 sigma 1.5 (channel mean)"

# BT.601 YCbCr luma for R, G, B in [0, 1], output on the 0-255 scale (16..235).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_Y_OFFSET = 16.0


class MetricInputError(MoEDiffIRError, ValueError):
    """Images that cannot be compared (shape mismatch, unknown convention, missing value range)."""


# ------------------------------------------------------------------------------------------- inputs
def _to_numpy(img: Any, name: str) -> tuple[np.ndarray, bool]:
    """Return ``(array (H, W[, C]), is_integer_uint8)``; torch tensors are moved to HWC numpy."""
    torch = sys.modules.get("torch")  # a tensor implies torch is loaded; never import it here (benchmark workers)
    if torch is not None and isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3:
            t = t.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        arr = t.numpy()
    else:
        arr = np.asarray(img)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
        raise MetricInputError(
            f"{name}: expected an (H, W, 3) or (H, W) image (torch: (3, H, W)), got shape {arr.shape}"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return arr, arr.dtype == np.uint8


def _prepare(
    img: Any, ref: Any, data_range: float | None, crop_border: int, color: str
) -> tuple[np.ndarray, np.ndarray, float]:
    """Check shapes and conventions; return float64 arrays (cropped, converted) and the peak value."""
    if color not in ("rgb", "y"):
        raise MetricInputError(f"color={color!r}: choose 'rgb' (all channels) or 'y' (BT.601 YCbCr luma)")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise MetricInputError(f"crop_border={crop_border!r}: must be an int >= 0")
    a, a_u8 = _to_numpy(img, "image")
    b, b_u8 = _to_numpy(ref, "reference")
    if a.shape != b.shape:
        raise MetricInputError(
            f"image shape {a.shape} != reference shape {b.shape}; restore/crop to the reference size first"
        )
    if data_range is None:
        if a_u8 and b_u8:
            data_range = 255.0
        else:
            raise MetricInputError(
                f"data_range is required for {a.dtype}/{b.dtype} images: pass data_range=1.0 for [0, 1] "
                "floats or 255 for the 0-255 scale"
            )
    data_range = float(data_range)
    if not data_range > 0:
        raise MetricInputError(f"data_range={data_range!r}: must be > 0")
    c = int(crop_border)
    if c:
        if 2 * c >= a.shape[0] or 2 * c >= a.shape[1]:
            raise MetricInputError(f"crop_border={c} leaves nothing of an image of shape {a.shape}")
        a = a[c:-c, c:-c]
        b = b[c:-c, c:-c]
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if color == "y":
        a = rgb_to_y(a, data_range)
        b = rgb_to_y(b, data_range)
    return a, b, data_range


def rgb_to_y(rgb: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """BT.601 YCbCr luma of an ``(H, W, 3)`` RGB image on the scale ``[0, data_range]`` (float, not rounded).

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 * data_range`` with R, G, B = rgb / data_range; for
    uint8-scale input this is skimage's ``rgb2ycbcr(rgb)[..., 0]`` (values 16..235). A 2-D (grey) input is
    returned unchanged (grey images are their own luma in the papers' tools).
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim == 2:
        return rgb
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MetricInputError(f"rgb_to_y: expected an (H, W, 3) image, got shape {rgb.shape}")
    unit = rgb / data_range  # (H, W, 3) in [0, 1]
    y255 = _Y_OFFSET + unit @ _Y_WEIGHTS  # (H, W) in [16, 235]
    return y255 / 255.0 * data_range


# --------------------------------------------------------------------------------------------- PSNR
def psnr(
    img: Any,
    ref: Any,
    *,
    data_range: float | None = None,
    crop_border: int = 0,
    color: str = "rgb",
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; MSE over all pixels and channels.

    Identical images give ``inf``. See the module docstring for the conventions.
    """
    err, peak = _mse_and_peak(img, ref, data_range, crop_border, color)
    return psnr_from_mse(err, peak)


def psnr_from_mse(err: float, data_range: float = 255.0) -> float:
    """PSNR in dB of a mean squared error ``err`` on the scale ``[0, data_range]``; 0 gives ``inf``."""
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / err))


def mse(img: Any, ref: Any, *, data_range: float | None = None, crop_border: int = 0, color: str = "rgb") -> float:
    """Mean squared error over all pixels and channels, on the scale ``[0, data_range]``: the MSE of
    :func:`psnr`, under the same conventions. For studies that combine errors before taking the logarithm."""
    return _mse_and_peak(img, ref, data_range, crop_border, color)[0]


def _mse_and_peak(img: Any, ref: Any, data_range: float | None, crop_border: int, color: str) -> tuple[float, float]:
    """The MSE of :func:`psnr` and :func:`mse`, and the peak value it is measured against."""
    a, b, peak = _prepare(img, ref, data_range, crop_border, color)
    return float(np.mean((a - b) ** 2)), peak


# --------------------------------------------------------------------------------------------- SSIM
def _gaussian_1d() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2.0 * SSIM_SIGMA**2))
    return w / w.sum()  # (11,)


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of a 2-D map, keeping only positions where the window fits."""
    y = correlate1d(x, w, axis=0, mode="reflect")
    y = correlate1d(y, w, axis=1, mode="reflect")
    r = SSIM_RADIUS
    return y[r:-r, r:-r]  # (H - 10, W - 10)


def _ssim_channel(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    w = _gaussian_1d()
    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    mu_a = _filter_valid(a, w)
    mu_b = _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(
    img: Any,
    ref: Any,
    *,
    data_range: float | None = None,
    crop_border: int = 0,
    color: str = "rgb",
) -> float:
    """Structural similarity (Wang et al. 2004; Gaussian 11x11, sigma 1.5); identical images give 1.0.

    RGB images: mean of the three per-channel SSIMs. The image (after the crop) must be at least 11x11.
    """
    a, b, peak = _prepare(img, ref, data_range, crop_border, color)
    side = 2 * SSIM_RADIUS + 1
    if a.shape[0] < side or a.shape[1] < side:
        raise MetricInputError(f"SSIM needs images of at least {side}x{side} pixels after the crop, got {a.shape}")
    if a.ndim == 2:
        return _ssim_channel(a, b, peak)
    return float(np.mean([_ssim_channel(a[..., k], b[..., k], peak) for k in range(a.shape[2])]))


# ---------------------------------------------------------------------------- SSIM: the fast path
def _gauss_same(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable Gaussian over the last two axes of ``(C, H, W)`` (reflect borders, as skimage)."""
    a = correlate1d(a, w, axis=-1, mode="reflect")
    return correlate1d(a, w, axis=-2, mode="reflect")


class SSIMReference:
    """:func:`ssim` of RGB uint8 images (data range 255, no crop) against one GT, with the GT's local moments
    computed once (the benchmark build scores every level of every codec against the same GT).

    Values are shifted by -128 before the float32 moments are filtered (which keeps the variance terms exact
    to ~1e-6); results match :func:`ssim` (float64) to better than 1e-6. Images smaller than 11 px in a side
    are averaged without the border crop (where :func:`ssim` refuses them).
    """

    def __init__(self, gt: np.ndarray) -> None:
        if gt.ndim != 3 or gt.shape[2] != 3:
            raise MetricInputError(f"expected an (H, W, 3) RGB array, got {gt.shape}")
        self.shape = gt.shape
        self.kernel = _gaussian_1d().astype(np.float32)  # (11,)
        self.c1, self.c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
        self.xs = np.ascontiguousarray(gt.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
        self.xs -= 128.0
        f = _gauss_same(np.concatenate([self.xs, self.xs * self.xs]), self.kernel)  # (6, H, W)
        self.mu_xs = f[:3]  # (3, H, W) local mean of the shifted GT
        self.vx = f[3:] - self.mu_xs * self.mu_xs  # (3, H, W) local variance
        self.mu_x = self.mu_xs + 128.0
        self.mu_x2_c1 = self.mu_x * self.mu_x + self.c1
        h, w, r = gt.shape[0], gt.shape[1], SSIM_RADIUS
        inner = h > 2 * r and w > 2 * r
        self.crop = (slice(None), slice(r, h - r), slice(r, w - r)) if inner else (slice(None),) * 3

    def __call__(self, lq: np.ndarray) -> float:
        if lq.shape != self.shape:
            raise MetricInputError(f"image shape {lq.shape} != reference shape {self.shape}")
        ys = np.ascontiguousarray(lq.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
        ys -= 128.0
        f = _gauss_same(np.concatenate([ys, ys * ys, self.xs * ys]), self.kernel)  # (9, H, W)
        # in place, to keep the build fast: names say what each buffer holds when it is used
        mu_ys, m_yy, m_xy = f[:3], f[3:6], f[6:]
        cxy = m_xy
        cxy -= mu_ys * self.mu_xs  # covariance
        vy = m_yy
        vy -= mu_ys * mu_ys  # variance
        mu_y = mu_ys
        mu_y += 128.0
        num = self.mu_x * mu_y
        num *= 2.0
        num += self.c1
        cxy *= 2.0
        cxy += self.c2
        num *= cxy  # (2 mu_x mu_y + C1)(2 cov + C2)
        den = mu_y * mu_y
        den += self.mu_x2_c1
        vy += self.vx
        vy += self.c2
        den *= vy  # (mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)
        num /= den  # (3, H, W) SSIM map
        return float(num[self.crop].mean(dtype=np.float64))
