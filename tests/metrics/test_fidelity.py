"""PSNR / SSIM against scikit-image on real JPEG-compressed fixtures; Y-channel conventions vs skimage and pyiqa;
the SSIM fast path of the benchmark build against the float64 SSIM."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from moediffir.metrics.fidelity import (
    MetricInputError,
    SSIMReference,
    mse,
    psnr,
    psnr_from_mse,
    rgb_to_y,
    ssim,
)
from moediffir.utils.io import read_image_rgb

SK_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def pairs(request) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, JPEG QF 10 image, ground truth) for the three bundled smoke images (one is 151x101)."""
    root = request.config.rootpath / "data" / "smoke" / "smoke_test"
    out = []
    for path in sorted(root.glob("*.png")):
        gt = read_image_rgb(path)
        out.append((path.name, _jpeg(gt, 10), gt))
    assert len(out) == 3
    return out


def test_identical_images_give_inf_psnr_and_ssim_one(pairs):
    _, _, gt = pairs[0]
    for color in ("rgb", "y"):
        assert psnr(gt, gt.copy(), color=color) == math.inf
        assert ssim(gt, gt.copy(), color=color) == pytest.approx(1.0, abs=1e-12)
    assert psnr(gt, gt, crop_border=4) == math.inf


def test_psnr_rgb_matches_skimage(pairs):
    for name, lq, gt in pairs:
        ours = psnr(lq, gt)
        ref = peak_signal_noise_ratio(gt, lq, data_range=255)
        assert ours == pytest.approx(ref, abs=1e-9), name
        assert 20 < ours < 40, name  # a JPEG QF 10 image, not a degenerate one


def test_mse_is_the_error_psnr_takes_the_log_of(pairs):
    _, lq, gt = pairs[1]
    assert mse(lq, gt) == pytest.approx(np.mean((lq.astype(float) - gt) ** 2), abs=1e-12)
    for color in ("rgb", "y"):
        for c in (0, 4):
            err = mse(lq, gt, color=color, crop_border=c)
            assert psnr(lq, gt, color=color, crop_border=c) == pytest.approx(10 * np.log10(255**2 / err), abs=1e-9)
            assert psnr(lq, gt, color=color, crop_border=c) == psnr_from_mse(err)
    assert psnr_from_mse(0.0) == math.inf and psnr_from_mse(1e-4, 1.0) == pytest.approx(40.0)
    assert mse(lq, gt, color="y") != pytest.approx(mse(lq, gt), rel=1e-3)  # luma only: a different error
    assert mse(gt / 255.0, gt / 255.0, data_range=1.0) == 0.0
    with pytest.raises(MetricInputError):
        mse(lq[:8], gt)


def test_ssim_rgb_matches_skimage_gaussian_window(pairs):
    for name, lq, gt in pairs:
        ref = structural_similarity(gt, lq, data_range=255, channel_axis=2, **SK_SSIM)
        assert ssim(lq, gt) == pytest.approx(ref, abs=1e-9), name
        assert 0.3 < ref < 0.99


def test_border_crop_matches_skimage_on_cropped_images(pairs):
    _, lq, gt = pairs[2]
    c = 4
    ref_p = peak_signal_noise_ratio(gt[c:-c, c:-c], lq[c:-c, c:-c], data_range=255)
    ref_s = structural_similarity(gt[c:-c, c:-c], lq[c:-c, c:-c], data_range=255, channel_axis=2, **SK_SSIM)
    assert psnr(lq, gt, crop_border=c) == pytest.approx(ref_p, abs=1e-9)
    assert ssim(lq, gt, crop_border=c) == pytest.approx(ref_s, abs=1e-9)
    assert psnr(lq, gt, crop_border=c) != pytest.approx(psnr(lq, gt), abs=1e-6)


def test_y_channel_is_skimage_ycbcr_luma(pairs):
    for _, lq, gt in pairs:
        assert np.abs(rgb_to_y(gt) - rgb2ycbcr(gt)[..., 0]).max() < 1e-9
        y_gt, y_lq = rgb2ycbcr(gt)[..., 0], rgb2ycbcr(lq)[..., 0]  # 16..235, float
        assert psnr(lq, gt, color="y") == pytest.approx(peak_signal_noise_ratio(y_gt, y_lq, data_range=255), abs=1e-9)
        ref = structural_similarity(y_gt, y_lq, data_range=255, **SK_SSIM)
        assert ssim(lq, gt, color="y") == pytest.approx(ref, abs=1e-9)
    y = rgb_to_y(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    assert y[0, 0] == pytest.approx(16.0) and y[0, 1] == pytest.approx(235.0)


def test_pyiqa_default_y_is_yiq_and_differs_from_ycbcr(pairs):
    """pyiqa's test_y_channel defaults to YIQ luma (full range): 20*log10(255/219) dB below the papers' Y-PSNR."""
    from pyiqa.archs.psnr_arch import psnr as pyiqa_psnr
    from pyiqa.utils.color_util import to_y_channel

    offset = 20 * math.log10(255 / 219)  # YCbCr luma is the YIQ luma scaled by 219/255, plus 16
    for name, lq, gt in pairs:
        x = torch.from_numpy(lq.copy()).permute(2, 0, 1)[None].double() / 255  # (1, 3, H, W)
        y = torch.from_numpy(gt.copy()).permute(2, 0, 1)[None].double() / 255
        yiq = float(pyiqa_psnr(x, y, test_y_channel=True))  # pyiqa default color_space="yiq"
        ycbcr = float(pyiqa_psnr(x, y, test_y_channel=True, color_space="ycbcr"))
        ours = psnr(lq, gt, color="y")
        assert ours - yiq == pytest.approx(offset, abs=1e-3), name
        assert ours == pytest.approx(ycbcr, abs=1e-3), name
        y_yiq = to_y_channel(y, 255.0, "yiq")[0, 0].numpy()  # (H, W), 0..255, pyiqa rounds at 255
        y_ours = rgb_to_y(gt)  # (H, W), 16..235
        assert np.abs(y_yiq - (y_ours - 16) * 255 / 219).max() <= 0.5 + 1e-6  # same luma, other scale
        assert np.abs(y_yiq - y_ours).max() > 10  # so not interchangeable


def test_float_inputs_need_an_explicit_range(pairs):
    _, lq, gt = pairs[0]
    with pytest.raises(MetricInputError, match="data_range"):
        psnr(lq / 255.0, gt / 255.0)
    assert psnr(lq / 255.0, gt / 255.0, data_range=1.0) == pytest.approx(psnr(lq, gt), abs=1e-9)
    assert ssim(lq / 255.0, gt / 255.0, data_range=1.0, color="y") == pytest.approx(ssim(lq, gt, color="y"), abs=1e-9)
    assert psnr(lq.astype(np.float64), gt.astype(np.float64), data_range=255) == pytest.approx(psnr(lq, gt))


def test_torch_channel_first_equals_numpy(pairs):
    _, lq, gt = pairs[1]
    tl = torch.from_numpy(lq.copy()).permute(2, 0, 1).float() / 255  # (3, H, W)
    tg = torch.from_numpy(gt.copy()).permute(2, 0, 1).float() / 255
    assert psnr(tl, tg, data_range=1.0) == pytest.approx(psnr(lq, gt), abs=1e-4)
    assert ssim(tl, tg, data_range=1.0) == pytest.approx(ssim(lq, gt), abs=1e-5)


def test_grayscale_images(pairs):
    _, lq, gt = pairs[0]
    g1, g2 = lq[..., 1], gt[..., 1]
    assert psnr(g1, g2) == pytest.approx(peak_signal_noise_ratio(g2, g1, data_range=255))
    assert ssim(g1, g2) == pytest.approx(structural_similarity(g2, g1, data_range=255, **SK_SSIM))


def test_shape_mismatch_names_both_shapes(pairs):
    _, _, gt = pairs[0]
    with pytest.raises(MetricInputError, match=r"\(192, 128, 3\).*\(191, 128, 3\)"):
        psnr(gt, gt[:-1])
    with pytest.raises(MetricInputError, match="shape"):
        ssim(gt[:, :-2], gt)


def test_bad_conventions_raise(pairs):
    _, lq, gt = pairs[0]
    with pytest.raises(MetricInputError, match="color"):
        psnr(lq, gt, color="yiq")
    with pytest.raises(MetricInputError, match="crop_border"):
        psnr(lq, gt, crop_border=-1)
    with pytest.raises(MetricInputError, match="crop_border"):
        ssim(lq, gt, crop_border=100)
    with pytest.raises(MetricInputError, match="11x11"):
        ssim(lq[:8, :8], gt[:8, :8])


# ------------------------------------------------------------------------- the build's fast path
def test_ssim_reference_is_the_same_ssim_for_many_lq(pairs):
    for name, _, gt in pairs:
        ref = SSIMReference(gt)
        values = [ref(_jpeg(gt, q)) for q in (5, 15, 50)]
        assert values == sorted(values), name  # better JPEG quality -> higher SSIM
        for q, v in zip((5, 15, 50), values):
            assert v == pytest.approx(ssim(_jpeg(gt, q), gt), abs=1e-6), (name, q)


def test_ssim_reference_shapes_and_tiny_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert SSIMReference(a)(a) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(MetricInputError, match="reference shape"):
        SSIMReference(a)(a[:, :10])
    with pytest.raises(MetricInputError, match="RGB"):
        SSIMReference(a[..., 0])
    tiny = a[:6, :7]  # smaller than the 11x11 window: still defined (no border crop)
    assert 0.0 < SSIMReference(tiny)(np.clip(tiny.astype(int) + 9, 0, 255).astype(np.uint8)) < 1.0
