"""The frozen Stable Diffusion backbone: UNet, VAE and DDPM noise schedule (paper §3.1, Eq. 2; §4.1).

The networks of a config, with random weights (:func:`build_unet`, :func:`build_vae`):

- ``tiny`` (smoke): tiny networks from the configs below, built in code (64 px images, 8x8 latents; the UNet
  still has a mid block and up blocks with resnets, so every SPADE site kind exists);
- ``sd21``: the SD 2.1-base architecture from the JSON configs shipped in ``moediffir/configs/`` (no download).

SD 2.1-base's real weights, read from ``model.sd_source``, and the choice between the two by the config, are
:func:`moediffir.weights.builders.build_backbone`'s.

The noise schedule is SD's in both profiles (epsilon prediction, 1000 steps, ``scaled_linear`` betas
0.00085 -> 0.012); latent scaling is read from ``vae.config.scaling_factor`` (0.18215), never hard-coded.
Everything is returned frozen (``requires_grad=False``) and in eval mode.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

CONFIG_PACKAGE = "moediffir.configs"
SD21_UNET_JSON = "sd21_base_unet.json"
SD21_VAE_JSON = "sd21_base_vae.json"
SD21_SCHEDULER_JSON = "sd21_base_scheduler.json"

# Tiny smoke UNet: SD's block layout (four resolutions, mid block at latent/8, so all four prompt scales are
# used) with narrow channels and one resnet per down block (two per up block): 9 SPADE sites.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "attention_head_dim": 8,
    "cross_attention_dim": 32,  # the smoke V2T adapter must produce this width (read it from unet.config)
    "norm_num_groups": 8,
    "use_linear_projection": True,
}

# Tiny smoke VAE: 64 px -> 8x8x4 latents (three downsamples, like SD's factor 8).
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [16, 16, 32, 32],
    "layers_per_block": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

BACKBONES = ("tiny", "sd21")


def packaged_config(name: str) -> dict[str, Any]:
    """A JSON config shipped in ``moediffir/configs/``."""
    try:
        text = resources.files(CONFIG_PACKAGE).joinpath(name).read_text()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"moediffir/configs/{name} is missing from the installed package; reinstall moediffir"
        ) from exc
    return json.loads(text)


def sd21_unet_config() -> dict[str, Any]:
    return packaged_config(SD21_UNET_JSON)


def freeze(model):
    """``model`` with gradients off and in eval mode (the frozen prior, paper §3.1)."""
    model.requires_grad_(False)
    model.eval()
    return model


def build_unet(backbone: str = "tiny") -> UNet2DConditionModel:
    """Random-weight UNet of ``backbone`` (``tiny`` or ``sd21``), frozen."""
    if backbone == "tiny":
        return freeze(UNet2DConditionModel.from_config(TINY_UNET_CONFIG))
    if backbone == "sd21":
        return freeze(UNet2DConditionModel.from_config(sd21_unet_config()))
    raise ValueError(f"unknown backbone {backbone!r} (model.backbone); choose one of {BACKBONES}")


def build_vae(backbone: str = "tiny") -> AutoencoderKL:
    """Random-weight VAE of ``backbone``, frozen."""
    if backbone == "tiny":
        return freeze(AutoencoderKL.from_config(TINY_VAE_CONFIG))
    if backbone == "sd21":
        return freeze(AutoencoderKL.from_config(packaged_config(SD21_VAE_JSON)))
    raise ValueError(f"unknown backbone {backbone!r} (model.backbone); choose one of {BACKBONES}")


def build_scheduler() -> DDPMScheduler:
    """SD's DDPM noise schedule (the same in every profile)."""
    return DDPMScheduler.from_config(packaged_config(SD21_SCHEDULER_JSON))
