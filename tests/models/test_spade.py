"""SPADE injection into the stock UNet (moediffir/models/spade.py; paper §3.4, docs/design.md §4)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from moediffir.models.sd_backbone import build_unet, sd21_unet_config
from moediffir.models.spade import SPADE, SpadeInjector, spade_sites_from_config, spade_sites_from_unet

P = 16  # prompt_dim in these tests


def test_sd21_sites_derived_from_the_shipped_config():
    sites = spade_sites_from_config(sd21_unet_config())
    assert len(sites) == 13
    assert [s.channels for s in sites] == [1280] + [1280] * 3 + [1280] * 3 + [640] * 3 + [320] * 3
    assert [s.scale for s in sites] == [3] * 4 + [2] * 3 + [1] * 3 + [0] * 3
    assert sites[0].name == "mid_block.resnets.0" and sites[-1].name == "up_blocks.3.resnets.2"


def test_sites_follow_the_config_not_constants():
    cfg = dict(
        sd21_unet_config(),
        block_out_channels=[64, 128],
        layers_per_block=[1, 3],
        down_block_types=["DownBlock2D"] * 2,
        up_block_types=["UpBlock2D"] * 2,
        mid_block_type=None,
    )
    sites = spade_sites_from_config(cfg)
    assert [(s.name, s.channels, s.scale) for s in sites] == [
        ("up_blocks.0.resnets.0", 128, 1),
        ("up_blocks.0.resnets.1", 128, 1),
        ("up_blocks.0.resnets.2", 128, 1),
        ("up_blocks.0.resnets.3", 128, 1),
        ("up_blocks.1.resnets.0", 64, 0),
        ("up_blocks.1.resnets.1", 64, 0),
    ]


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return build_unet("tiny")


def _inputs(b=2, hw=(8, 8)):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(b, 4, *hw, generator=g)
    ctx = torch.randn(b, 3, 32, generator=g)
    maps = [torch.randn(b, P, hw[0] >> s, hw[1] >> s, generator=g) for s in range(4)]
    return z, torch.tensor([10, 600][:b]), ctx, maps


def test_tiny_unet_sites_match_module_tree(unet):
    sites = spade_sites_from_unet(unet)
    modules = dict(unet.named_modules())
    assert len(sites) == 9
    for s in sites:
        assert modules[s.name].out_channels == s.channels
    assert {s.scale for s in sites} == {0, 1, 2, 3}


def test_output_form_zero_init_leaves_unet_unchanged_and_keeps_it_stock(unet):
    z, t, ctx, maps = _inputs(hw=(8, 16))
    keys_before = list(unet.state_dict().keys())
    with torch.no_grad():
        ref = unet(z, t, encoder_hidden_states=ctx).sample
        inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8, form="output").attach(unet)
        try:
            inj.set_maps(maps)
            out = unet(z, t, encoder_hidden_states=ctx).sample
            assert torch.equal(out, ref)  # exactly the stock UNet at initialisation
            assert list(unet.state_dict().keys()) == keys_before and type(unet) is UNet2DConditionModel
            for layer in inj.layers:  # a trained SPADE changes the output
                torch.nn.init.normal_(layer.gamma.weight, std=0.1)
            inj.set_maps(maps)
            assert not torch.allclose(unet(z, t, encoder_hidden_states=ctx).sample, ref, atol=1e-4)
        finally:
            inj.detach()
        assert torch.equal(
            unet(z, t, encoder_hidden_states=ctx).sample, ref
        )  # detach restores the stock model


def test_spade_formula():
    torch.manual_seed(0)
    layer = SPADE(feature_channels=6, prompt_dim=P, hidden_dim=8)
    torch.nn.init.normal_(layer.gamma.weight)
    torch.nn.init.normal_(layer.beta.bias)
    h, p = torch.randn(2, 6, 4, 4), torch.randn(2, P, 4, 4)
    a = torch.relu(
        layer.shared[0](
            torch.nn.functional.group_norm(p, layer.norm.num_groups, layer.norm.weight, layer.norm.bias)
        )
    )
    expected = h * (1 + layer.gamma(a)) + layer.beta(a)
    assert torch.allclose(layer(h, p), expected, atol=1e-5)


def test_hook_errors(unet):
    z, t, ctx, maps = _inputs()
    inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8).attach(unet)
    try:
        with pytest.raises(RuntimeError, match="no prompt maps"):
            unet(z, t, encoder_hidden_states=ctx)
        with pytest.raises(RuntimeError, match="already attached"):
            inj.attach(unet)
        inj.set_maps([torch.randn(2, P, 16 >> s, 16 >> s) for s in range(4)])  # maps for another size
        with pytest.raises(RuntimeError, match="same size"):
            unet(z, t, encoder_hidden_states=ctx)
        with pytest.raises(ValueError, match="prompt scales"):
            inj.set_maps(maps[:2])
    finally:
        inj.detach()


def test_site_channel_mismatch_is_caught(unet):
    inj = SpadeInjector(sites=[{"name": "mid_block.resnets.0", "channels": 999, "scale": 3}], prompt_dim=P)
    with pytest.raises(ValueError, match="999"):
        inj.attach(unet)


@pytest.mark.parametrize("form", ["output", "residual"])
def test_gradients_with_gradient_checkpointing(unet, form):
    """Hooks also fire when checkpointed blocks are recomputed in the backward pass."""
    z, t, ctx, maps = _inputs()
    torch.manual_seed(1)
    inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8, form=form)
    if form == "output":  # zero-initialised: give gamma some weight
        for layer in inj.layers:
            torch.nn.init.normal_(layer.gamma.weight, std=0.05)
    grads = []
    inj.attach(unet)
    try:
        for ckpt in (False, True):
            if ckpt:
                unet.enable_gradient_checkpointing()
            inj.zero_grad()
            inj.set_maps(maps)
            unet(z, t, encoder_hidden_states=ctx).sample.square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in inj.parameters()]))
    finally:
        unet.disable_gradient_checkpointing()
        inj.detach()
    assert grads[0].abs().sum() > 0
    if form == "residual":  # the GroupNorm's own affine parameters train with SPADE
        assert inj.layers[0].param_free_norm.weight.grad.abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert all(p.grad is None for p in unet.parameters())


def test_save_load_round_trip(tmp_path, unet):
    torch.manual_seed(0)
    inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8, form="output")
    for layer in inj.layers:
        torch.nn.init.normal_(layer.beta.weight)
    inj.save_pretrained(tmp_path)
    inj2 = SpadeInjector.from_pretrained(tmp_path)
    assert inj2.sites == inj.sites
    _, _, _, maps = _inputs()
    for (g1, b1), (g2, b2) in zip(inj(maps), inj2(maps)):
        assert torch.equal(g1, g2) and torch.equal(b1, b2)


def test_deepest_scale_of_a_64px_image_is_normalised_per_group():
    """A 1x1 prompt map (64 px image, scale 3) in training: groups hold several channels, so the GroupNorm
    keeps information (one channel per group would normalise every value to 0)."""
    torch.manual_seed(0)
    layer = SPADE(feature_channels=8, prompt_dim=32, hidden_dim=8).train()
    assert layer.norm.num_groups == 8  # 4 channels per group
    p = torch.randn(1, 32, 1, 1)
    normed = layer.norm(p)
    assert normed.abs().sum() > 0
    torch.nn.init.normal_(layer.gamma.weight)
    g1, _ = layer.modulation(p)
    g2, _ = layer.modulation(torch.randn(1, 32, 1, 1))
    assert not torch.allclose(g1, g2)


# ------------------------------------------------------------------------------------------ residual form
def test_residual_form_is_the_default_with_released_parameter_names(unet):
    inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8)
    assert inj.config.form == "residual"
    keys = set(inj.state_dict())
    for part in ("param_free_norm.weight", "param_free_norm.bias", "mlp_shared.0.weight", "mlp_gamma.weight",
                 "mlp_beta.bias"):
        assert f"layers.0.{part}" in keys
    assert inj.layers[0].param_free_norm.num_channels == inj.sites[0].channels  # GN of the UNet feature
    with pytest.raises(ValueError, match="form"):
        SpadeInjector.from_unet(unet, prompt_dim=P, form="input")


def _by_hand(resnet, x, temb, layer, p):
    """``skip(x) + GN(h) * (1 + gamma(p)) + beta(p)`` with every op written out (no module forward calls)."""
    F = torch.nn.functional
    h = F.silu(F.group_norm(x, resnet.norm1.num_groups, resnet.norm1.weight, resnet.norm1.bias, resnet.norm1.eps))
    h = F.conv2d(h, resnet.conv1.weight, resnet.conv1.bias, padding=1)
    h = h + F.linear(F.silu(temb), resnet.time_emb_proj.weight, resnet.time_emb_proj.bias)[:, :, None, None]
    h = F.silu(F.group_norm(h, resnet.norm2.num_groups, resnet.norm2.weight, resnet.norm2.bias, resnet.norm2.eps))
    h = F.conv2d(h, resnet.conv2.weight, resnet.conv2.bias, padding=1)  # end of the residual branch
    skip = x if resnet.conv_shortcut is None else F.conv2d(x, resnet.conv_shortcut.weight, resnet.conv_shortcut.bias)
    gn = layer.param_free_norm
    a = F.relu(F.conv2d(p, layer.mlp_shared[0].weight, layer.mlp_shared[0].bias, padding=1))
    gamma = F.conv2d(a, layer.mlp_gamma.weight, layer.mlp_gamma.bias, padding=1)
    beta = F.conv2d(a, layer.mlp_beta.weight, layer.mlp_beta.bias, padding=1)
    return skip + F.group_norm(h, gn.num_groups, gn.weight, gn.bias, gn.eps) * (1 + gamma) + beta


@pytest.mark.parametrize("site_index", [0, 4])  # mid block (no shortcut conv) and an up resnet (with one)
def test_residual_form_one_resnet_equals_the_formula_by_hand(unet, site_index):
    z, t, ctx, maps = _inputs()
    torch.manual_seed(2)
    inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8)
    for layer in inj.layers:  # non-trivial GN affine parameters, as after training
        torch.nn.init.normal_(layer.param_free_norm.weight, 1.0, 0.3)
        torch.nn.init.normal_(layer.param_free_norm.bias, 0.0, 0.3)
    site = inj.sites[site_index]
    resnet = dict(unet.named_modules())[site.name]
    seen = {}
    pre = resnet.register_forward_pre_hook(lambda m, a, kw: seen.update(x=a[0], temb=a[1]), with_kwargs=True)
    post = resnet.register_forward_hook(lambda m, a, out: seen.update(out=out))
    inj.attach(unet)
    try:
        inj.set_maps(maps)
        with torch.no_grad():
            unet(z, t, encoder_hidden_states=ctx)
    finally:
        inj.detach()
        pre.remove()
        post.remove()
    with torch.no_grad():
        expected = _by_hand(resnet, seen["x"], seen["temb"], inj.layers[site_index], maps[site.scale])
        stock = resnet(seen["x"], seen["temb"])  # hooks detached: the plain resnet
    assert (resnet.conv_shortcut is not None) == (site_index == 4)
    assert torch.allclose(seen["out"], expected, atol=1e-4)
    assert not torch.allclose(seen["out"], stock, atol=1e-3)  # SPADE did modulate this resnet


def test_residual_form_changes_the_unet_and_detach_restores_it(unet):
    z, t, ctx, maps = _inputs()
    keys_before = list(unet.state_dict().keys())
    with torch.no_grad():
        ref = unet(z, t, encoder_hidden_states=ctx).sample
        inj = SpadeInjector.from_unet(unet, prompt_dim=P, hidden_dim=8).attach(unet)
        try:
            inj.set_maps(maps)
            out = unet(z, t, encoder_hidden_states=ctx).sample
            maps2 = [m.flip(0) for m in maps]  # the other image's prompt maps
            inj.set_maps(maps2)
            out2 = unet(z, t, encoder_hidden_states=ctx).sample
        finally:
            inj.detach()
        assert not torch.allclose(out, ref, atol=1e-4)  # released init: not the stock UNet at step 0
        assert not torch.allclose(out, out2, atol=1e-4)  # the prompt maps steer the output
        assert list(unet.state_dict().keys()) == keys_before and type(unet) is UNet2DConditionModel
        assert torch.equal(unet(z, t, encoder_hidden_states=ctx).sample, ref)
