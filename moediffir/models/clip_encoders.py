"""What the two frozen CLIP image encoders share: input checks, resizing and normalisation, weight checks, and
the speed work of the RN50 (paper §3.2 degradation prior, §3.3 Visual2Text; docs/design.md §4).

The degradation prior (:mod:`moediffir.models.degradation_prior`, a DA-CLIP / CLIP ViT-B/32) and the
Visual2Text adapter (:mod:`moediffir.models.visual2text`, a CLIP RN50) both take LQ images ``(B, 3, H, W)`` in
``[0, 1]`` of any size, resize them to the encoder's resolution (:func:`clip_resize`), normalise them with the
OpenAI CLIP mean and std (:func:`clip_normalize`), and take a public checkpoint only after its keys and shapes
are checked (:func:`compare_layout`; the files are read by :mod:`moediffir.weights.builders`).

:class:`FastFrozenRN50Mixin` holds the adapter's speed work, which changes no value (tests compare both ways):
channels-last convolutions on CUDA (the enhancer and the RN50 weights move with the module), and the frozen
RN50 run with its BatchNorms folded into the convolutions (:mod:`moediffir.models.folded_resnet`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from moediffir.errors import MoEDiffIRError
from moediffir.models.folded_resnet import FoldedResNet
from moediffir.utils.layout import layout_diff

# OpenAI CLIP normalisation (open_clip OPENAI_DATASET_MEAN / _STD), used by DA-CLIP and the RN50 encoder.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("squash", "center_crop")
# The Visual2Text encoder (both forms, model.v2t_backend): open_clip "RN50" -- layers (3, 4, 6, 3), width 64,
# heads 32, embed 1024, 224 px -> layer4 grid 2048 x 7 x 7 -- or a small random ModifiedResNet.
V2T_BACKENDS = ("clip_rn50", "tiny")
RN50_KWARGS: dict[str, Any] = {
    "clip_layers": (3, 4, 6, 3),
    "clip_width": 64,
    "clip_heads": 32,
    "clip_output_dim": 1024,
    "image_size": 224,
}
TINY_V2T_KWARGS: dict[str, Any] = {
    "clip_layers": (1, 1, 1, 1),
    "clip_width": 8,
    "clip_heads": 2,
    "clip_output_dim": 32,
    "image_size": 64,
}


def v2t_encoder_kwargs(backend: str, who: str) -> dict[str, Any]:
    """The standard encoder arguments of a Visual2Text ``backend`` (RN50 for ``clip_rn50``, else the tiny one)."""
    if backend not in V2T_BACKENDS:
        raise ValueError(f"{who}: backend={backend!r} (model.v2t_backend); choose one of {V2T_BACKENDS}")
    return dict(TINY_V2T_KWARGS if backend == "tiny" else RN50_KWARGS)


def frozen_v2t_encoder(who: str, backend: str, clip_layers: tuple[int, int, int, int], clip_width: int,
                       clip_heads: int, clip_output_dim: int, image_size: int, num_tokens: int) -> ModifiedResNet:
    """Check the arguments both Visual2Text forms share and build their frozen ``ModifiedResNet`` (eval mode).

    ``who`` names the module in the errors; the encoder's ``layer4`` grid has ``clip_width * 32`` channels.
    """
    v2t_encoder_kwargs(backend, who)
    if image_size % 32 != 0:
        raise ValueError(f"{who}: image_size={image_size} must be a multiple of 32 (ResNet stride)")
    if num_tokens < 0:
        raise ValueError(f"{who}: num_tokens={num_tokens} (model.v2t_num_tokens) must be >= 0")
    encoder = ModifiedResNet(layers=list(clip_layers), output_dim=clip_output_dim, heads=clip_heads,
                             image_size=image_size, width=clip_width)
    encoder.requires_grad_(False)
    return encoder.eval()


class WeightLayoutError(MoEDiffIRError, ValueError):
    """A weight file's keys or shapes do not match the module; the message lists them."""


# ------------------------------------------------------------------------------------------- inputs
def check_image_batch(x: torch.Tensor, who: str) -> None:
    """Raise a short error unless ``x`` is a ``(B, 3, H, W)`` floating tensor."""
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{who}: expected LQ images (B, 3, H, W) in [0, 1], got {shape}")
    if not x.is_floating_point():
        raise ValueError(
            f"{who}: expected a float tensor in [0, 1], got dtype {x.dtype}; divide uint8 by 255"
        )


def clip_resize(x: torch.Tensor, size: int, mode: str = "squash") -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` images in ``[0, 1]`` to ``size x size`` (antialiased bicubic), clamped to [0, 1]."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode={mode!r}: choose one of {RESIZE_MODES}")
    h, w = x.shape[-2:]
    if mode == "center_crop" and h != w:
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(
            x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True
        )  # (B, 3, nh, nw)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]  # (B, 3, S, S)
    elif (h, w) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bicubic", align_corners=False, antialias=True
        )  # (B, 3, S, S)
    return x.clamp(0.0, 1.0)


def clip_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel; ``mean``/``std`` are ``(3,)`` tensors."""
    return (x - mean.view(1, 3, 1, 1).to(x)) / std.view(1, 3, 1, 1).to(x)


# ------------------------------------------------------------------------------------------ weights
def compare_layout(
    found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], what: str
) -> None:
    """Raise :class:`WeightLayoutError` listing missing, unexpected and mis-shaped keys (if any)."""
    diff = layout_diff(found, expected)
    if diff:
        raise WeightLayoutError("; ".join([f"{what} does not match the expected layout", *diff.problems()]))


# -------------------------------------------------------------------------------------- speed only
class FastFrozenRN50Mixin:
    """Mixin for a module with a frozen open_clip ``ModifiedResNet`` ``clip_visual`` in eval mode and
    convolutional parts :meth:`conv_modules` (the RN50 and whatever runs in front of it).

    - **Memory layout.** cuDNN runs half-precision convolutions (and depth-wise ones) in NHWC without the
      layout transposes an NCHW tensor costs (measured on an H100, bf16, batch 64: V2T forward + backward
      0.054 s, the whole training step 1.97x -> 1.62x the bare UNet). The weights of :meth:`conv_modules`
      follow when the module moves to or from a GPU (``_apply``, which every ``.to()``/``.cuda()``/``.half()``
      reaches), so optimisers and DDP see them in their final layout.
    - **BatchNorm folding.** With ``fold_batchnorm`` (the default) the frozen RN50 runs as
      :class:`~moediffir.models.folded_resnet.FoldedResNet`, a cache rebuilt after every move.

    Call :meth:`init_speed` at the end of ``__init__``.
    """

    clip_visual: nn.Module

    def conv_modules(self) -> list[nn.Module]:
        """The modules whose convolution weights take the CUDA layout (default: the RN50 alone)."""
        return [self.clip_visual]

    def init_speed(self) -> None:
        self.fold_batchnorm = True  # run clip_visual through FoldedResNet (False: the module itself, for tests)
        self._folded = FoldedResNet(self.clip_visual)  # a cache, not a submodule: the state dict is unchanged
        self._layout = torch.contiguous_format  # of the conv weights; see conv_layout
        self._force_channels_last = False  # tests: the CUDA layout on the CPU

    def conv_layout(self, x: torch.Tensor) -> torch.memory_format:
        """Memory layout of the convolutional path for input ``x``: channels-last on CUDA, else contiguous."""
        return self._sync_layout(x.is_cuda)

    def _sync_layout(self, cuda: bool) -> torch.memory_format:
        fmt = torch.channels_last if cuda or self._force_channels_last else torch.contiguous_format
        if fmt != self._layout:
            for m in self.conv_modules():
                m.to(memory_format=fmt)
            self._layout = fmt
        return fmt

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # .to(), .cuda(), .cpu(), .half() ... end here
        out = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        if hasattr(self, "_layout"):  # not during __init__
            self._sync_layout(next(self.conv_modules()[0].parameters()).is_cuda)
            self._folded.clear()  # weights of the old device/dtype
        return out

    def clip_grid(self, pixels: torch.Tensor) -> torch.Tensor:
        """layer4 feature map ``(B, 32*width, S/32, S/32)`` of CLIP-normalised pixels (attention pool unused).

        With ``fold_batchnorm`` and the encoder in eval mode (always, unless someone switched it to training by
        hand), the BatchNorm-folded convolutions run instead of the module; the values are the same.
        """
        v = self.clip_visual
        fmt = self.conv_layout(pixels)
        if self.fold_batchnorm and not v.training:
            return self._folded.grid(pixels, fmt)  # (B, 32*width, S/32, S/32)
        x = pixels.to(v.conv1.weight.dtype).contiguous(memory_format=fmt)
        x = v.stem(x)  # (B, width, S/4, S/4)
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))  # (B, 32*width, S/32, S/32)
