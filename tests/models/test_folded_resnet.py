"""The frozen CLIP RN50 with BatchNorms folded into its convolutions (paper §3.3, speed only): same values."""

from __future__ import annotations

import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from moediffir.models.folded_resnet import FoldedResNet, fold_conv_bn


def _randomise_batchnorms(net: nn.Module, seed: int) -> None:
    """Non-trivial statistics and affine terms (at init a BatchNorm is the identity, which folds trivially)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)


def _tiny_resnet(seed: int = 0) -> ModifiedResNet:
    torch.manual_seed(seed)
    net = ModifiedResNet(layers=[1, 2, 1, 1], output_dim=32, heads=2, image_size=64, width=8)
    _randomise_batchnorms(net, seed)
    return net.eval().requires_grad_(False)


def _module_grid(net: ModifiedResNet, x: torch.Tensor) -> torch.Tensor:
    return net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x)))))


def test_fold_conv_bn_equals_conv_then_batchnorm():
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=True)
    bn = nn.BatchNorm2d(7)
    _randomise_batchnorms(bn, 1)
    bn.eval()
    x = torch.randn(2, 5, 9, 11)
    folded = fold_conv_bn(conv, bn, torch.float32, torch.contiguous_format)
    torch.testing.assert_close(folded(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
    assert folded.weight.shape == conv.weight.shape and folded.bias.shape == (7,)


def test_fold_refuses_grouped_convolutions():
    with pytest.raises(ValueError, match="only plain convolutions"):
        fold_conv_bn(nn.Conv2d(4, 4, 3, groups=2), nn.BatchNorm2d(4), torch.float32, torch.contiguous_format)


def test_folded_grid_equals_the_module_forward_and_input_gradient():
    """fp64: the folded network is the same function as the module (forward and backward to the input, which is
    the path the quality enhancer learns through); fp32 agrees to rounding."""
    net = _tiny_resnet().double()
    folded = FoldedResNet(net)
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    grads = []
    outs = []
    for fn in (lambda v: _module_grid(net, v), lambda v: folded.grid(v, torch.contiguous_format)):
        xi = x.clone().requires_grad_(True)
        y = fn(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert outs[0].shape == (3, 256, 2, 2)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    assert grads[0].abs().sum() > 0
    net.float()
    x32 = x.float()
    torch.testing.assert_close(folded.grid(x32, torch.contiguous_format), _module_grid(net, x32), rtol=1e-4, atol=1e-5)


def test_cache_is_reused_and_rebuilt_when_the_weights_change():
    net = _tiny_resnet()
    folded = FoldedResNet(net)
    x = torch.randn(2, 3, 64, 64)
    first = folded.folded(torch.float32, torch.contiguous_format)
    assert folded.folded(torch.float32, torch.contiguous_format) is first  # nothing changed: no refold
    # an in-place load of other statistics (what load_state_dict does) must refold
    other = _tiny_resnet(seed=5)
    net.load_state_dict(other.state_dict())
    assert folded.folded(torch.float32, torch.contiguous_format) is not first
    torch.testing.assert_close(folded.grid(x, torch.contiguous_format), _module_grid(other, x), rtol=1e-4, atol=1e-5)
    # a new layout or dtype refolds too
    cl = folded.folded(torch.float32, torch.channels_last)
    assert cl[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert folded.folded(torch.bfloat16, torch.contiguous_format)[0].weight.dtype == torch.bfloat16


def test_autocast_runs_the_folded_convolutions_in_the_autocast_dtype():
    net = _tiny_resnet()
    folded = FoldedResNet(net)
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = folded.grid(x, torch.contiguous_format)
        ref = _module_grid(net, x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref.float()).abs().mean() < 0.02 * ref.float().abs().mean()


def test_refuses_an_encoder_in_training_mode():
    net = _tiny_resnet().train()
    with pytest.raises(RuntimeError, match="training mode"):
        FoldedResNet(net).grid(torch.randn(1, 3, 64, 64), torch.contiguous_format)
