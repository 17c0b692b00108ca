"""Photos as tensors: the one conversion of a uint8 RGB array into the [0, 1] tensors the networks read
(paper §3.1: the VAE encodes images scaled from [0, 1] to [-1, 1], :mod:`moediffir.pipelines.vae_steps`).

Nothing here implements an equation; training crops, stage 0's photos, the notebook studies and the pipeline's PIL
inputs all convert through :func:`to_tensor01`, so a photo becomes the same tensor wherever it enters. (The
pipeline converts a NumPy batch of inputs in one go, :func:`moediffir.pipelines.inputs.to_tensors`: the same
values, in the channels-last batch layout its restorations were always computed in.)
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor01(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1]."""
    if not img.flags.writeable:  # read_image_rgb's arrays view a decoded PIL image: torch warns on sharing one
        img = img.copy()
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
