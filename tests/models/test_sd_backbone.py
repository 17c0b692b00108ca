"""Backbone builders and the shipped SD 2.1-base architecture configs (moediffir/models/sd_backbone.py)."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from moediffir.config import resolve_config
from moediffir.models.sd_backbone import (
    SD21_SCHEDULER_JSON,
    SD21_UNET_JSON,
    SD21_VAE_JSON,
    build_unet,
    packaged_config,
)
from moediffir.weights.builders import build_backbone


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        (SD21_UNET_JSON, UNet2DConditionModel),
        (SD21_VAE_JSON, AutoencoderKL),
        (SD21_SCHEDULER_JSON, DDPMScheduler),
    ],
)
def test_shipped_configs_are_valid_for_their_class(name, cls):
    cfg = packaged_config(name)
    assert cfg["_class_name"] == cls.__name__
    accepted = set(inspect.signature(cls.__init__).parameters)
    unknown = {k for k in cfg if not k.startswith("_")} - accepted
    assert not unknown, f"{name}: keys {unknown} are not {cls.__name__} arguments"


def test_sd21_architecture_values():
    unet = packaged_config(SD21_UNET_JSON)
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["attention_head_dim"] == [5, 10, 20, 20] and unet["use_linear_projection"] is True
    assert unet["cross_attention_dim"] == 1024 and unet["layers_per_block"] == 2
    vae = packaged_config(SD21_VAE_JSON)
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["latent_channels"] == 4
    sched = DDPMScheduler.from_config(packaged_config(SD21_SCHEDULER_JSON))
    assert sched.config.num_train_timesteps == 1000 and sched.config.prediction_type == "epsilon"
    # SD's schedule: linear in sqrt(beta) from 0.00085 to 0.012
    expected = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    assert torch.allclose(sched.betas, expected, rtol=1e-5)


def test_smoke_backbone_is_tiny_frozen_and_consistent():
    unet, vae, sched = build_backbone(resolve_config("smoke"))
    assert isinstance(unet, UNet2DConditionModel) and isinstance(vae, AutoencoderKL)
    assert isinstance(sched, DDPMScheduler)
    for model in (unet, vae):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in unet.parameters()) < 5_000_000
    assert unet.config.mid_block_type is not None and len(unet.up_blocks) == 4
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = vae.encode(img).latent_dist.mean * vae.config.scaling_factor
        assert z.shape == (2, 4, 8, 8) and unet.config.in_channels == z.shape[1]
        ctx = torch.zeros(2, 1, unet.config.cross_attention_dim)
        eps = unet(z, torch.tensor([1, 999]), encoder_hidden_states=ctx).sample
        assert eps.shape == z.shape
        assert vae.decode(z / vae.config.scaling_factor).sample.shape == img.shape
    assert vae.config.scaling_factor == pytest.approx(0.18215)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="model.backbone"):
        build_unet("sd15")
    with pytest.raises(ValueError, match="model.backbone"):
        build_backbone(resolve_config("smoke", {"model.backbone": "sdxl"}))


@pytest.mark.slow
def test_sd21_random_backbone_builds_offline():
    unet, vae, _ = build_backbone(resolve_config("paper", {"model.random_backbone": True}))
    assert 860e6 < sum(p.numel() for p in unet.parameters()) < 870e6  # SD 2.x UNet: 865.9 M parameters
    assert 83e6 < sum(p.numel() for p in vae.parameters()) < 84e6  # SD VAE: 83.7 M
    assert unet.config.cross_attention_dim == 1024
