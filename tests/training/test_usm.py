"""Unsharp masking of the stage-I GT (moediffir/training/usm.py; the released training's use_usm)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from moediffir.training.usm import gaussian_kernel_1d, usm_sharpen


def test_kernel_is_opencvs_for_radius_50():
    g = gaussian_kernel_1d(50)
    assert g.shape == (51,)
    assert np.allclose(g.numpy(), cv2.getGaussianKernel(51, 0)[:, 0], atol=1e-7)


def test_matches_real_esrgan_usm_written_with_opencv():
    rng = np.random.default_rng(0)
    img = rng.random((40, 48, 3)).astype(np.float32)
    img[:, 24:] = np.clip(img[:, 24:] * 0.2 + 0.7, 0, 1)  # an edge among the noise
    k = cv2.getGaussianKernel(51, 0)
    k2 = (k @ k.T).astype(np.float32)
    blur = cv2.filter2D(img, -1, k2, borderType=cv2.BORDER_REFLECT_101)
    residual = img - blur
    mask = cv2.filter2D((np.abs(residual) * 255 > 10).astype(np.float32), -1, k2, borderType=cv2.BORDER_REFLECT_101)
    expected = mask * np.clip(img + 0.5 * residual, 0, 1) + (1 - mask) * img
    out = usm_sharpen(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.allclose(out, expected, atol=1e-5)


def test_sharpens_an_edge_and_leaves_flat_areas():
    img = torch.full((1, 3, 64, 64), 0.3)
    assert torch.equal(usm_sharpen(img), img)  # nothing above the threshold: unchanged
    img[..., 32:] = 0.7
    out = usm_sharpen(img)
    row = out[0, 0, 10]
    assert row[31] < 0.3 - 0.01 and row[32] > 0.7 + 0.01  # overshoot on both sides of the edge
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="B, C, H, W"):
        usm_sharpen(img[0])
