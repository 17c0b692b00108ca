"""The one latent-scaling rule (moediffir.models.latent_scaling) and the callers that must follow it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from moediffir.config import resolve_config
from moediffir.models.latent_scaling import scale_latents, unscale_latents
from moediffir.weights.builders import build_backbone


def _vae_like(scaling_factor: float, shift_factor: float | None = None):
    cfg = {"scaling_factor": scaling_factor} | ({} if shift_factor is None else {"shift_factor": shift_factor})
    return SimpleNamespace(config=SimpleNamespace(**cfg))


@pytest.mark.parametrize("shift", [None, 0.0609])
def test_scale_and_unscale_are_the_ldm_rule_and_inverse(shift):
    z = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(0))
    vae = _vae_like(0.18215, shift)
    s = 0.0 if shift is None else shift
    torch.testing.assert_close(scale_latents(vae, z), (z - s) * 0.18215)
    torch.testing.assert_close(unscale_latents(vae, scale_latents(vae, z)), z)
    assert not torch.allclose(scale_latents(vae, z), scale_latents(_vae_like(1.0, shift), z))  # the factor is read


def test_the_pipeline_encoder_and_the_prior_samples_use_the_rule():
    from moediffir.pipelines.vae_steps import encode_lq
    from moediffir.training.prior import scaled_latents

    _, vae, _ = build_backbone(resolve_config("smoke"))
    vae.register_to_config(scaling_factor=0.37)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean = vae.encode(x * 2 - 1).latent_dist.mode()
        torch.testing.assert_close(encode_lq(vae, x), scale_latents(vae, mean))
        torch.testing.assert_close(scaled_latents(vae, x, sample=False), scale_latents(vae, mean))
