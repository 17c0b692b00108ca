"""Steps 4 and 8 of the pipeline: the frozen VAE encoder for the LQ condition, and the decoder (plain, or the
decoder compensator at fusion weight ``w``) for the sampled latents (paper §3.1, §3.4, Eq. 3; docs/design.md §6).

``z_lq = (mean(E(2x - 1)) - shift) * scaling_factor`` (the posterior mean, so conditioning is deterministic;
stage-I training conditions the same way) and, back, ``D(z / scaling_factor + shift)``
(:mod:`moediffir.models.latent_scaling`). Images larger than
one tile are encoded and decoded tile by tile with blended overlaps (:func:`~moediffir.pipelines.tiling.tiled_map`).
"""

from __future__ import annotations

from typing import Any

import torch

from moediffir.models.latent_scaling import scale_latents, unscale_latents
from moediffir.pipelines.tiling import tiled_map


def encode_lq(vae: Any, image01: torch.Tensor) -> torch.Tensor:
    """``z_lq`` ``(B, 4, H/8, W/8)`` of images ``(B, 3, H, W)`` in [0, 1]: posterior mean times the VAE's
    scaling factor (minus its shift factor, when it has one). Stage-I training must condition the same way."""
    x = (image01 * 2.0 - 1.0).to(device=vae.device, dtype=vae.dtype)  # (B, 3, H, W) in [-1, 1]
    mean = vae.encode(x).latent_dist.mode()  # (B, 4, h, w)
    return scale_latents(vae, mean).float()  # (B, 4, h, w)


def encode(
    vae: Any, lq: torch.Tensor, f: int, tiled: bool, tile: int, overlap: int, blend: str, tile_batch: int,
    progress: bool = False,
) -> torch.Tensor:
    """``z_lq`` ``(B, 4, h, w)`` of padded LQ images ``(B, 3, f*h, f*w)`` in [0, 1] (``f``: pixels per latent
    cell; tile/overlap in latent cells; ``progress``: a bar over the tiles)."""
    if not tiled:
        return encode_lq(vae, lq)
    grid = (lq.shape[-2] // f, lq.shape[-1] // f)
    return tiled_map(lambda crops, k, items: encode_lq(vae, crops[0]), [(lq, f)], grid, 1, tile, overlap, blend,
                     tile_batch, progress=progress, desc="encode")


def decode(
    vae: Any, compensator: Any, z0: torch.Tensor, lq: torch.Tensor, fusion_weight: float | None, f: int,
    tiled: bool, tile: int, overlap: int, blend: str, tile_batch: int, progress: bool = False,
) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1] from latents ``z0`` ``(B, 4, h, w)``: the compensator at
    ``fusion_weight`` (``lq`` in [0, 1] feeds it), or the plain VAE decoder when there is none or ``w`` is None
    (``progress``: a bar over the tiles)."""
    use_comp = compensator is not None and fusion_weight is not None

    def run(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if use_comp:
            zc = unscale_latents(vae, z).to(compensator.dtype)
            out = compensator.decode(zc, lq_image=(x * 2 - 1).to(compensator.dtype), w=float(fusion_weight))
        else:
            out = vae.decode(unscale_latents(vae, z).to(vae.dtype)).sample
        return ((out.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # (N, 3, H, W)

    if not tiled:
        return run(z0, lq)
    return tiled_map(
        lambda crops, k, items: run(crops[0], crops[1]), [(z0, 1), (lq, f)], tuple(z0.shape[-2:]), f,
        tile, overlap, blend, tile_batch, progress=progress, desc="decode",
    ).clamp_(0.0, 1.0)  # in place: the blend is a new tensor
