"""The frozen CLIP RN50 of the Visual2Text adapter with its BatchNorms folded into the convolutions (paper §3.3).

Speed only: the values are those of the module (tests compare both, forward and gradient). The V2T adapter's
CLIP image encoder (open_clip's ``ModifiedResNet``) is frozen and always in eval mode, so each BatchNorm is a
fixed per-channel affine map and folds into the convolution before it::

    s  = gamma / sqrt(running_var + eps)                   # (C_out,)
    W' = W * s[:, None, None, None]                        # (C_out, C_in, k, k)
    b' = beta - running_mean * s                           # (C_out,)

A training step still needs the encoder's backward (the trainable quality enhancer sits in front of it); with
the 55 BatchNorms gone, forward and backward each make 55 fewer memory-bound passes over the activations. The
folded weights are a cache, not parameters (one copy of the encoder's conv weights in the compute dtype: 47 MB
for RN50 in bf16): nothing in the state dict changes, and the cache is rebuilt whenever a weight or statistic
of the module changes (new storage after ``.to()``, or an in-place ``load_state_dict``), or the compute dtype
or memory layout does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import Bottleneck, ModifiedResNet
from torch import nn


@dataclass(frozen=True)
class FoldedConv:
    """One convolution with its BatchNorm folded in: ``F.conv2d(x, weight, bias, stride, padding)``."""

    weight: torch.Tensor  # (C_out, C_in, k, k)
    bias: torch.Tensor  # (C_out,)
    stride: tuple[int, int]
    padding: tuple[int, int]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)  # (B, C_out, H', W')


@torch.no_grad()
def fold_conv_bn(
    conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype, memory_format: torch.memory_format
) -> FoldedConv:
    """``bn(conv(x))`` of an eval-mode BatchNorm as one convolution; folded in fp32 (fp64 for fp64), then cast."""
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(f"fold_conv_bn: only plain convolutions fold, got {conv}")
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    scale = bn.weight.to(acc) * torch.rsqrt(bn.running_var.to(acc) + bn.eps)  # (C_out,)
    weight = conv.weight.to(acc) * scale[:, None, None, None]  # (C_out, C_in, k, k)
    bias = bn.bias.to(acc) - bn.running_mean.to(acc) * scale  # (C_out,)
    if conv.bias is not None:
        bias = bias + conv.bias.to(acc) * scale
    return FoldedConv(
        weight.to(dtype).contiguous(memory_format=memory_format),
        bias.to(dtype),
        tuple(conv.stride),
        tuple(conv.padding),
    )


def _conv_bn_pairs(net: ModifiedResNet) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every (conv, BatchNorm) pair up to ``layer4`` in forward order (the attention pool is not used)."""
    pairs = [(net.conv1, net.bn1), (net.conv2, net.bn2), (net.conv3, net.bn3)]
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
            if block.downsample is not None:
                _, conv, bn = block.downsample  # AvgPool2d, Conv2d 1x1, BatchNorm2d
                pairs.append((conv, bn))
    return pairs


class FoldedResNet:
    """``layer4`` feature map of a frozen ``ModifiedResNet`` through BatchNorm-folded convolutions.

    Holds a reference to the module (not a copy of it) and a cache of folded weights keyed by the storage and
    version of every tensor involved, the compute dtype and the memory layout.
    """

    def __init__(self, net: ModifiedResNet) -> None:
        self.net = net
        self._pairs = _conv_bn_pairs(net)
        self._key: tuple | None = None
        self._convs: list[FoldedConv] = []

    def clear(self) -> None:
        """Drop the cached weights (they are rebuilt at the next call)."""
        self._key, self._convs = None, []

    def _cache_key(self, dtype: torch.dtype, memory_format: torch.memory_format) -> tuple:
        tensors = []
        for conv, bn in self._pairs:
            tensors += [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        state = tuple((t.data_ptr(), t._version) for t in tensors if t is not None)
        return (dtype, memory_format, self.net.conv1.weight.device, state)

    def folded(self, dtype: torch.dtype, memory_format: torch.memory_format) -> list[FoldedConv]:
        """The folded convolutions in forward order, rebuilt only when something they depend on changed."""
        key = self._cache_key(dtype, memory_format)
        if key != self._key:
            self._convs = [fold_conv_bn(c, b, dtype, memory_format) for c, b in self._pairs]
            self._key = key
        return self._convs

    def grid(self, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        """``(B, 3, S, S)`` CLIP-normalised pixels -> ``(B, 32*width, S/32, S/32)``, as ``net``'s stem and layers.

        Requires ``net`` in eval mode (the folded BatchNorms use the running statistics).
        """
        if self.net.training:
            raise RuntimeError("FoldedResNet: the encoder is in training mode; BatchNorm cannot be folded")
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else self.net.conv1.weight.dtype
        convs = iter(self.folded(dtype, memory_format))
        net = self.net
        x = x.to(dtype).contiguous(memory_format=memory_format)  # (B, 3, S, S)
        for _ in range(3):  # the 3-conv stem
            x = F.relu(next(convs)(x), inplace=True)
        x = net.avgpool(x)  # (B, width, S/4, S/4)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                x = self._bottleneck(block, x, convs)
        return x  # (B, 32*width, S/32, S/32)

    @staticmethod
    def _bottleneck(block: Bottleneck, x: torch.Tensor, convs) -> torch.Tensor:
        conv1, conv2, conv3 = next(convs), next(convs), next(convs)
        out = F.relu(conv1(x), inplace=True)  # (B, planes, H, W)
        out = block.avgpool(F.relu(conv2(out), inplace=True))  # (B, planes, H/stride, W/stride)
        out = conv3(out)  # (B, 4*planes, H/stride, W/stride)
        identity = x
        if block.downsample is not None:
            pool = block.downsample[0]
            identity = next(convs)(pool(x))  # (B, 4*planes, H/stride, W/stride)
        return F.relu(out + identity, inplace=True)
