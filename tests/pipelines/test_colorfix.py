"""Colour fixes (moediffir.pipelines.colorfix): AdaIN statistics and the wavelet low/high split."""

from __future__ import annotations

import pytest
import torch

from moediffir.pipelines.colorfix import (
    adain_color_fix,
    apply_color_fix,
    wavelet_color_fix,
    wavelet_decomposition,
)


def _images(seed: int, shape=(2, 3, 40, 33)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(*shape, generator=g)  # inside [0.3, 0.7]: shifts below stay in range


def test_adain_matches_channel_mean_and_std():
    content, style = _images(0), 0.5 + 0.1 * (_images(1) - 0.5)
    out = adain_color_fix(content, style)
    assert out.shape == content.shape
    assert torch.allclose(out.mean(dim=(-2, -1)), style.mean(dim=(-2, -1)), atol=1e-5)
    assert torch.allclose(out.std(dim=(-2, -1), unbiased=False), style.std(dim=(-2, -1), unbiased=False), atol=1e-4)
    # the structure is the content's: AdaIN is an affine map per channel
    corr = torch.corrcoef(torch.stack([out[0, 0].flatten(), content[0, 0].flatten()]))[0, 1]
    assert corr > 0.999


def test_wavelet_decomposition_sums_back_and_low_is_smooth():
    x = _images(2)
    high, low = wavelet_decomposition(x, levels=5)
    assert torch.allclose(high + low, x, atol=1e-6)
    assert low.diff(dim=-1).abs().mean() < 0.2 * x.diff(dim=-1).abs().mean()


def test_wavelet_fix_of_an_image_with_itself_is_identity():
    x = _images(3)
    assert torch.allclose(wavelet_color_fix(x, x), x, atol=1e-6)


def test_wavelet_fix_removes_a_colour_cast_and_keeps_detail():
    style = _images(4)
    cast = torch.tensor([0.1, -0.05, 0.08]).view(1, 3, 1, 1)
    content = style + cast  # same detail, shifted colours
    out = wavelet_color_fix(content, style)
    assert torch.allclose(out, style, atol=1e-5)
    detail = _images(5) - 0.5  # the output is the content's high band on the style's low band
    content2 = style + 0.1 * detail
    out2 = wavelet_color_fix(content2, style)
    h_content, _ = wavelet_decomposition(content2)
    _, l_style = wavelet_decomposition(style)
    assert torch.allclose(out2 - l_style, h_content, atol=1e-5)
    assert (out2 - style).abs().mean() < (content2 - style).abs().mean()


def test_outputs_stay_in_range_and_dispatch():
    content, style = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    for method in ("wavelet", "adain"):
        out = apply_color_fix(content, style, method)
        assert out.min() >= 0 and out.max() <= 1
    assert apply_color_fix(content, style, "none") is content
    with pytest.raises(ValueError, match="color_fix"):
        apply_color_fix(content, style, "histogram")
    with pytest.raises(ValueError, match="differ in shape"):
        wavelet_color_fix(content, style[..., :8])
    with pytest.raises(ValueError, match="levels"):
        wavelet_decomposition(content, levels=0)
