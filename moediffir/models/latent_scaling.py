"""The latent scaling of the diffusion prior: the one rule between the VAE's latents and the UNet's (paper §3.1).

Latent diffusion (and so SD 2.1 and MoE-DiffIR) runs the UNet on VAE latents shifted and scaled to about unit
variance: ``z = (E(x) - shift) * scaling_factor`` going in, ``E(x) = z / scaling_factor + shift`` coming back
out to the decoder. Both numbers are read from the VAE's config (``scaling_factor``: 0.18215 for SD 2.1's VAE,
``1 / std`` of the latents for a prior trained by stage 0; ``shift_factor``: absent, so 0, for both). Every
encoder and decoder call of the kit -- the pipeline, stage 0, I and II, the prior's samples, the V2T adapter's
decoded LQ image and the probes -- goes through this pair.
"""

from __future__ import annotations

from typing import Any

import torch


def _shift(vae: Any) -> float:
    return getattr(vae.config, "shift_factor", None) or 0.0


def scale_latents(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """``(z - shift) * scaling_factor`` ``(B, C, h, w)``: VAE latents (a posterior mean or sample) as the UNet
    takes them."""
    return (z - _shift(vae)) * vae.config.scaling_factor


def unscale_latents(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """``z / scaling_factor + shift`` ``(B, C, h, w)``: the UNet's latents as the VAE decoder takes them (the
    inverse of :func:`scale_latents`)."""
    return z / vae.config.scaling_factor + _shift(vae)
