"""Visual2Text in the released layout (moediffir/models/visual2text_released.py, paper §3.3): the context against
the released computation written out by hand, the resize against torchvision's, what trains, save and load.

Tiny networks on the CPU: the ``tiny`` ModifiedResNet (64 px, 2x2 grid), an 8-channel latent enhancer and the
smoke profile's tiny VAE.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

from moediffir.config import resolve_config
from moediffir.models.sd_backbone import build_vae
from moediffir.models.visual2text import Visual2TextAdapter
from moediffir.models.visual2text_released import ReleasedVisual2Text, released_resize
from moediffir.weights.builders import build_visual2text

DIM = 32  # cross-attention width of the tiny UNet


def _tiny(**kw) -> ReleasedVisual2Text:
    args = {"num_tokens": 4, "enhancer_blocks": 2, "enhancer_dim": 8}
    args.update(kw)
    return ReleasedVisual2Text.for_backend("tiny", DIM, **args)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every floating parameter and BatchNorm statistic off its initial value (running_var kept positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            step = torch.randn(t.shape, generator=g) * 0.2
            t.copy_(t.abs() + 0.5 + step.abs() if name.endswith("running_var") else t + step)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(3)
    return build_vae("tiny")


def test_resize_is_the_released_torchvision_resize_and_centre_crop():
    """Shorter side to S (bilinear, no antialiasing: torchvision 0.13 on tensors), centre crop, no clamping."""
    reference = transforms.Compose([
        transforms.Resize(64, interpolation=transforms.InterpolationMode.BILINEAR, antialias=False),
        transforms.CenterCrop(64),
    ])
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 80, 122), (1, 3, 130, 90), (1, 3, 48, 48)):
        x = torch.randn(shape, generator=g) * 1.5  # outside [-1, 1] on purpose
        out = released_resize(x, 64)
        assert out.shape == (shape[0], 3, 64, 64)
        torch.testing.assert_close(out, reference(x), rtol=0, atol=1e-6)
    square = torch.randn(1, 3, 64, 64, generator=g) * 3
    assert torch.equal(released_resize(square, 64), square)  # already S x S: unchanged, values not clamped


def test_context_is_the_released_computation_written_out(vae):
    v2t = _tiny()
    _randomise(v2t)
    v2t.attach_decoder(vae)
    v2t.eval()
    z = torch.randn(2, 4, 10, 14, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        enh = v2t.latent_enhancer
        h = F.conv2d(z, enh.conv_in.weight, enh.conv_in.bias, padding=1)  # conv3x3 4 -> 8
        h = enh.blocks(h)  # the Restormer blocks (their own tests: test_visual2text)
        z_enh = z + F.conv2d(h, enh.conv_out.weight, enh.conv_out.bias)  # conv1x1 8 -> 4, residual
        pixels = vae.decode(z_enh / vae.config.scaling_factor).sample  # (2, 3, 80, 112): no clamp
        pixels = transforms.CenterCrop(64)(transforms.Resize(64, antialias=False)(pixels))  # (2, 3, 64, 64)
        net = v2t.clip_visual  # the module itself (not the folded copy), no CLIP normalisation
        grid = net.layer4(net.layer3(net.layer2(net.layer1(net.stem(pixels)))))  # (2, 256, 2, 2)
        tokens = F.conv2d(grid, v2t.grid_conv.weight, v2t.grid_conv.bias, padding=1)  # (2, 32, 2, 2)
        tokens = tokens.flatten(2).transpose(1, 2)  # (2, 4, 32), raster order
        x = torch.cat([tokens, v2t.learned_tokens.expand(2, -1, -1)], dim=1)  # (2, 8, 32)
        w1, w2 = v2t.adapter[0].weight, v2t.adapter[2].weight  # (8, 32), (32, 8): no biases
        expected = x + torch.relu(torch.relu(x @ w1.T) @ w2.T)  # x + ReLU(W2 ReLU(W1 x))
        ctx = v2t(z)
    assert ctx.shape == (2, 2 * 2 + 4, DIM) == (2, v2t.context_length, DIM)
    torch.testing.assert_close(ctx, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(z_enh, z)  # the enhancer took part
    assert (x @ w1.T < 0).any() and (expected != x).any()  # both ReLUs cut something; the MLP changed x
    with torch.no_grad():
        v2t.fold_batchnorm = False  # the unfolded RN50 gives the same context
        torch.testing.assert_close(v2t(z), ctx, rtol=1e-4, atol=1e-5)


def test_fresh_form_enhancer_is_identity_and_only_conv_tokens_adapter_train(vae):
    v2t = _tiny().train()
    v2t.attach_decoder(vae)
    z = torch.randn(2, 4, 16, 16)
    assert torch.equal(v2t.latent_enhancer(z), z)  # zero conv_out: the identity, and frozen it stays so
    assert torch.equal(v2t.learned_tokens, torch.zeros(1, 4, DIM))  # released init: zeros
    assert not v2t.latent_enhancer.training and not v2t.clip_visual.training
    ctx = v2t(z)
    # a linear loss (a square one has no gradient at the zero tokens)
    (ctx * torch.randn(ctx.shape, generator=torch.Generator().manual_seed(4))).sum().backward()
    trained = {n for n, p in v2t.named_parameters() if p.requires_grad}
    assert trained == {"grid_conv.weight", "grid_conv.bias", "learned_tokens", "adapter.0.weight", "adapter.2.weight"}
    assert all(p.grad is None for n, p in v2t.named_parameters() if n not in trained)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in v2t.named_parameters() if n in trained)


def test_needs_the_vae_and_a_latent():
    v2t = _tiny()
    with pytest.raises(RuntimeError, match="attach_decoder"):
        v2t(torch.randn(1, 4, 8, 8))
    v2t.attach_decoder(build_vae("tiny"))
    with pytest.raises(ValueError, match=r"expected LQ latents \(B, 4, h, w\), got \(1, 3, 8, 8\)"):
        v2t(torch.rand(1, 3, 8, 8))


def test_save_load_round_trip(tmp_path, vae):
    v2t = _tiny()
    _randomise(v2t, seed=2)
    v2t.save_pretrained(tmp_path / "v2t")
    back = ReleasedVisual2Text.from_pretrained(tmp_path / "v2t")
    assert back.config.enhancer_dim == 8 and back.config.backend == "tiny" and back.context_length == 8
    a, b = v2t.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "v2t").joinpath("vae").exists()  # the decoder is a reference, never saved
    z = torch.randn(1, 4, 12, 12)
    for m in (v2t, back):
        m.attach_decoder(vae)
        m.eval()
    with torch.no_grad():
        assert torch.equal(v2t(z), back(z))


def test_v2t_form_switch_and_the_released_recipe():
    paper = resolve_config("paper")
    assert paper.model.v2t_form == "kit"
    released = resolve_config("paper", {"model.recipe": "released"})
    assert released.model.v2t_form == "released" and released.model.enhancer_dim == 256
    smoke = resolve_config("smoke", {"model.recipe": "released"})
    assert smoke.model.v2t_form == "released" and smoke.model.enhancer_dim == resolve_config("smoke").model.enhancer_dim
    model = build_visual2text(smoke, DIM, latent_channels=4)
    assert isinstance(model, ReleasedVisual2Text) and model.context_length == 4 + smoke.model.v2t_num_tokens
    assert isinstance(build_visual2text(resolve_config("smoke"), DIM), Visual2TextAdapter)
