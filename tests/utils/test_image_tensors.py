"""The one conversion of a photo into a [0, 1] tensor."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from moediffir.utils.image_tensors import to_tensor01


def test_to_tensor01_scales_to_0_1_channels_first():
    img = np.array([[[0, 128, 255], [1, 2, 3]]], dtype=np.uint8)  # (1, 2, 3)
    x = to_tensor01(img)
    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    assert torch.equal(x[:, 0, 0], torch.tensor([0.0, 128.0, 255.0]) / 255.0)
    assert torch.equal(x[:, 0, 1], torch.tensor([1.0, 2.0, 3.0]) / 255.0)
    assert x.min() == 0.0 and x.max() == 1.0


def test_to_tensor01_takes_a_read_only_photo_without_a_warning():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    img.flags.writeable = False  # as read_image_rgb's arrays are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = to_tensor01(img)
    assert torch.equal(x * 255.0, torch.from_numpy(img.copy()).permute(2, 0, 1).float())
    assert not img.flags.writeable  # the caller's array is left as it was
