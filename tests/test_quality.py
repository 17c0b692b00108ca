"""LQ PSNR / SSIM of the benchmark manifest (RGB, data range 255) against scikit-image."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from moediffir.data.quality import SSIMReference, psnr_rgb, ssim_rgb
from moediffir.utils.io import read_image_rgb


def _jpeg(rgb, q):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def _sk_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=2)


@pytest.mark.parametrize("name", ["smoke_test/kodim24.png", "smoke_train/kodim05.png"])
@pytest.mark.parametrize("q", [5, 30])
def test_matches_skimage(repo_root, name, q):
    gt = read_image_rgb(repo_root / "data" / "smoke" / name)
    lq = _jpeg(gt, q)
    assert psnr_rgb(gt, lq) == pytest.approx(peak_signal_noise_ratio(gt, lq, data_range=255), abs=1e-9)
    assert ssim_rgb(gt, lq) == pytest.approx(_sk_ssim(gt, lq), abs=1e-6)


def test_reference_reused_for_many_lq(repo_root):
    gt = read_image_rgb(repo_root / "data" / "smoke" / "smoke_test" / "kodim19.png")
    ref = SSIMReference(gt)
    values = [ref(_jpeg(gt, q)) for q in (5, 15, 50)]
    assert values == sorted(values)  # better JPEG quality -> higher SSIM
    for q, v in zip((5, 15, 50), values):
        assert v == pytest.approx(_sk_ssim(gt, _jpeg(gt, q)), abs=1e-6)


def test_identical_and_bad_shapes():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert math.isinf(psnr_rgb(a, a))
    assert ssim_rgb(a, a) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_rgb(a, a[:10])
    with pytest.raises(ValueError, match="shapes differ"):
        SSIMReference(a)(a[:, :10])
    with pytest.raises(ValueError, match="RGB"):
        ssim_rgb(a[..., 0], a[..., 0])
    tiny = a[:6, :7]  # smaller than the 11x11 window: still defined (no border crop)
    assert 0.0 < ssim_rgb(tiny, np.clip(tiny.astype(int) + 9, 0, 255).astype(np.uint8)) < 1.0
