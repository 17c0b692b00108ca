"""What a prior is worth before MoE-DiffIR touches it (paper §3.1): its unconditional samples and the VAE ceiling.

Everything after the prior is decoded by its VAE, so ``PSNR(D(E(x)), x)`` on the clean held-out photos is an
upper bound for any latent restorer built on it (the decoder compensator of stage II, Eq. 4, is the paper's way
around that bound). :func:`vae_ceiling` measures it per image, with :func:`colour_shift` beside it: a VAE
trained for minutes on small crops often misses an image's overall colour (its mean per channel), and a shift
of ``d`` levels alone caps PSNR at ``20 log10(255 / d)``. :func:`sample_prior` draws the prior's own
unconditional samples (zero context, the scheduler's ``prediction_type``) with any sampler of
:mod:`moediffir.pipelines.sampling`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from moediffir.metrics.fidelity import psnr, ssim
from moediffir.models.latent_scaling import unscale_latents
from moediffir.pipelines.sampling import initial_noise, make_scheduler, sample_loop
from moediffir.utils.image_tensors import to_tensor01


def load_prior(folder: str | Path, device: torch.device | str = "cpu"):
    """``(unet, vae, scheduler)`` of a diffusers-layout prior folder, frozen, in eval mode."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from moediffir.errors import MissingInputsError
    from moediffir.utils.memory import own_aligned_storage
    from moediffir.weights.loading import autoencoder_class_in

    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise MissingInputsError(
            f"{folder}: no prior here (unet/config.json missing); run moediffir train prior", [folder / "unet"]
        )
    unet = own_aligned_storage(UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True))
    vae = own_aligned_storage(autoencoder_class_in(folder).from_pretrained(folder / "vae", use_safetensors=True))
    unet = unet.to(device).requires_grad_(False).eval()
    vae = vae.to(device).requires_grad_(False).eval()
    return unet, vae, DDPMScheduler.from_pretrained(folder / "scheduler")


def _factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def reconstruct(vae, img01: torch.Tensor) -> torch.Tensor:
    """``D(E(x))`` ``(B, 3, H, W)`` in [0, 1] from the posterior mean (sizes cropped to the VAE's factor)."""
    f = _factor(vae)
    h, w = img01.shape[-2] // f * f, img01.shape[-1] // f * f
    x = img01[..., :h, :w].to(vae.device) * 2.0 - 1.0  # (B, 3, h, w)
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample  # (B, 3, h, w)
    return ((rec + 1.0) / 2.0).clamp(0, 1).cpu()


def colour_shift(out: np.ndarray, ref: np.ndarray) -> float:
    """Largest shift of a channel's mean between two ``(H, W, 3)`` images, in levels of 0-255."""
    diff = out.astype(np.float64).mean(axis=(0, 1)) - ref.astype(np.float64).mean(axis=(0, 1))  # (3,)
    return float(np.abs(diff).max())


def blockiness(img: np.ndarray, period: int) -> float:
    """Mean absolute step between neighbouring pixels across the borders of a ``period``-pixel grid, over the
    mean step inside its cells (rows and columns, ``(H, W, 3)`` or ``(H, W)`` image): 1 for an image without
    grid structure, above 1 when ``period x period`` blocks show (a patch decoder's 4x4 edges, JPEG's 8x8)."""
    x = img.astype(np.float64)
    steps = []
    for axis in (0, 1):
        d = np.abs(np.diff(x, axis=axis))  # step between index i and i + 1 along axis
        idx = np.arange(d.shape[axis])
        border = (idx + 1) % period == 0
        steps.append((np.take(d, idx[border], axis=axis).mean(), np.take(d, idx[~border], axis=axis).mean()))
    across = np.mean([a for a, _ in steps])
    inside = np.mean([b for _, b in steps])
    return float(across / max(inside, 1e-12))


def vae_ceiling(vae, images: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per image: PSNR/SSIM (RGB, 0-255) of the VAE's reconstruction against the image itself, and its
    :func:`colour_shift`."""
    rows = []
    for name, img in images.items():
        x = to_tensor01(np.ascontiguousarray(img))[None]  # (1, 3, H, W)
        rec = reconstruct(vae, x)[0].permute(1, 2, 0).numpy()  # (h, w, 3)
        ref = img[: rec.shape[0], : rec.shape[1]]
        out = np.round(rec * 255.0).astype(np.uint8)
        rows.append({"image": name, "vae_psnr": psnr(out, ref), "vae_ssim": ssim(out, ref),
                     "vae_colour_shift": colour_shift(out, ref)})
    return pd.DataFrame(rows)


@torch.no_grad()
def sample_prior_latents(unet, vae, scheduler, n: int = 4, size: tuple[int, int] = (64, 64), steps: int = 50,
                         sampler: str = "ddim", seed: int = 0) -> torch.Tensor:
    """``n`` unconditional samples of the prior (zero context, as it was trained) as the latents the VAE decoder
    takes, ``(n, C_lat, H/f, W/f)`` (unscaled)."""
    f = _factor(vae)
    sch = make_scheduler(sampler, scheduler.config)
    sch.set_timesteps(steps, device=unet.device)
    shape = (n, unet.config.in_channels, size[0] // f, size[1] // f)
    latents = initial_noise(shape, sch, torch.Generator().manual_seed(seed), unet.device)  # (n, C_lat, h, w)
    context = torch.zeros(n, 1, unet.config.cross_attention_dim, device=unet.device)

    def eps_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(z_t, t.reshape(1).expand(n).to(unet.device), encoder_hidden_states=context).sample

    z0 = sample_loop(eps_fn, sch, latents, generator=torch.Generator().manual_seed(seed + 1))
    return unscale_latents(vae, z0)


@torch.no_grad()
def sample_prior(unet, vae, scheduler, n: int = 4, size: tuple[int, int] = (64, 64), steps: int = 50,
                 sampler: str = "ddim", seed: int = 0) -> torch.Tensor:
    """``n`` unconditional samples ``(n, 3, H, W)`` in [0, 1] of the prior (zero context, as it was trained)."""
    z = sample_prior_latents(unet, vae, scheduler, n, size, steps, sampler, seed)
    img = vae.decode(z).sample  # (n, 3, H, W)
    return ((img + 1.0) / 2.0).clamp(0, 1).cpu()


@torch.no_grad()
def decoded_blockiness(vae, latents: torch.Tensor) -> pd.DataFrame:
    """Per latent ``(C_lat, h, w)`` of ``latents``: :func:`blockiness` at the VAE's factor of its decoding, and,
    for a ``PatchAutoencoder``, of its linear decoding alone (what the trained refinement removes)."""
    from moediffir.models.patch_autoencoder import PatchAutoencoder

    f = _factor(vae)
    decoders = {"decoder": lambda z: vae.decode(z).sample}
    if isinstance(vae, PatchAutoencoder):
        decoders["linear_decoder"] = vae.pca_decode
    rows = [{"sample": i} for i in range(latents.shape[0])]
    for name, decode in decoders.items():
        img = ((decode(latents) + 1.0) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1).cpu().numpy()
        for row, im in zip(rows, img):
            row[f"{name}_blockiness"] = blockiness(im, f)
    return pd.DataFrame(rows)
