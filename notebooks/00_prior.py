# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — Stage 0: a diffusion prior trained here (paper §3.1, Eq. 1-2)
#
# MoE-DiffIR does not learn a diffusion model: it *customises* a pretrained one. Stage I (§3.4) freezes the VAE
# and the UNet of Stable Diffusion 2.1-base and trains only the MoE-Prompt Module and the SPADE layers that steer
# it, so everything the method restores comes from what the prior already knows about natural images. Without a
# GPU and the SD weights, a random prior knows nothing, and every restored image would be noise. The `mini`
# profile therefore starts one stage earlier: it trains a **small prior from scratch on the bundled clean
# training photos** — an autoencoder that gives the latent space (§3.1) and a `UNet2DConditionModel`, SD's
# class — and saves it in the diffusers layout. Stage I then loads it exactly as it loads SD 2.1-base. In `paper` this stage does not
# exist; `moediffir reproduce` runs this notebook only for profiles that train their prior.
#
# Two numbers decide what the later stages can reach:
# - the **VAE ceiling**: PSNR of `D(E(x))` on the clean held-out photos. Every latent restorer decodes through
#   this autoencoder; only the decoder compensator of stage II (Eq. 4) can see past it. A deep `AutoencoderKL`
#   trained from scratch for minutes stays near 20 dB, 5 dB *under* the JPEG-QF-10 input, so `mini` uses a
#   `PatchAutoencoder` (`prior.vae_kind="patch"`): the principal components of 4x4 RGB patches, fitted in closed
#   form (8 latent channels at factor 4), plus small convolutional refinements that start at zero and train
#   briefly. It starts at the answer instead of searching for it (docs/design.md §10).
# - the **prior's own samples**: unconditional draws from pure noise with the prior's `prediction_type`
#   (`v_prediction` here; SD 2.1-base predicts ε). They show what kind of images the prior believes in.
#
# Headless: `papermill notebooks/00_prior.ipynb out.ipynb -p profile mini` from the repository root (or
# `moediffir train prior --profile mini`).

# %% tags=["parameters"]
profile: str = "mini"  # the profile with stage 0
overrides: dict = {}  # dotted config keys, e.g. {"prior.vae_steps": 200}
resume: bool = True  # continue (or reuse) the newest stage-0 checkpoints instead of training from scratch
progress: bool = True  # tqdm progress bar

# %%
from moediffir.notebook import setup_notebook

cfg, random_weights, figures_dir, tables_dir, device = setup_notebook(profile, overrides)

import json

from IPython.display import Image, display

from moediffir.data.sources import list_sources
from moediffir.report import study_figures
from moediffir.report.training_report import prior_figures
from moediffir.studies.prior_quality import load_prior, sample_prior, vae_ceiling
from moediffir.training.prior import read_prior_info, train_prior
from moediffir.utils.io import atomic_write_csv, read_image_rgb

enabled = cfg.prior.enabled
p = cfg.prior
if not enabled:
    print(f"profile {cfg.profile}: no stage 0 (its prior is {cfg.model.sd_source or cfg.model.backbone}); nothing to do")
else:
    print(f"stage 0 on {cfg.data.train_sets} ({cfg.datasets_dir}): VAE {list(p.vae_channels)} -> {p.latent_channels} "
          f"latent channels at factor {2 ** (len(p.vae_channels) - 1)}, {p.vae_steps} steps; UNet {list(p.unet_channels)}, "
          f"{p.prediction_type}, {p.unet_steps} steps; {p.crop_size} px crops -> {cfg.prior_dir}")

# %% [markdown]
# ## Train (or resume) the prior
#
# Phase 1 fits the autoencoder's linear core (PCA of every 4x4 patch of the training photos), then trains its
# refinements with an L1 reconstruction loss, and sets its `scaling_factor` to 1/std of the training latents (SD's
# 0.18215 was chosen the same way). Phase 2 trains the UNet with Eq. 2 on those latents, with the all-zero
# context the MoE-DiffIR denoiser uses when there is no text. Both phases checkpoint atomically and resume.

# %%
if enabled:
    folder = train_prior(cfg, resume=resume, progress=progress)
    info = read_prior_info(folder)
    print(json.dumps({k: info[k] for k in ("photos", "prediction_type", "weights")}, indent=1))
    print(f"VAE: {info['vae']['steps']} steps, {info['vae']['wall_s']:.0f} s; scaling_factor {info['vae']['scaling_factor']:.4f}")
    print(f"UNet: {info['unet']['steps']} steps, {info['unet']['wall_s']:.0f} s")
    display(Image(str(prior_figures(cfg, figures_dir)[0])))  # also what `moediffir report` redraws

# %% [markdown]
# ## The VAE ceiling on the held-out photos
#
# PSNR / SSIM of the VAE's reconstruction of each clean test photo (RGB, 0-255). No restorer that decodes
# through this VAE with the plain decoder can beat these numbers on average. `vae_colour_shift` is the largest
# change of a channel's mean, in levels: a VAE trained for minutes often misses a photo's overall colour, and a
# shift of d levels alone caps PSNR at 20 log10(255 / d) dB (20 dB at 25 levels).

# %%
if enabled:
    unet, vae, scheduler = load_prior(folder, device)
    photos = {s.stem: read_image_rgb(s.path) for name in cfg.data.test_sets for s in list_sources(cfg.datasets_dir, name)}
    ceiling = vae_ceiling(vae, photos)
    atomic_write_csv(tables_dir / "prior_vae_ceiling.csv", ceiling)
    display(ceiling.round(3))
    print(f"mean VAE ceiling: {ceiling['vae_psnr'].mean():.2f} dB PSNR, {ceiling['vae_ssim'].mean():.4f} SSIM, "
          f"colour shift {ceiling['vae_colour_shift'].mean():.1f} levels (prior trained here from scratch on {info['photos']} photos)")

# %% [markdown]
# ## The prior's own unconditional samples
#
# Pure noise -> the reverse process of the prior's scheduler (DDIM, 50 steps) -> the VAE decoder. A prior trained
# for minutes on a few dozen photos gives colour fields and textures, not objects; that is what stage I has to
# work with.

# %%
if enabled:
    samples = sample_prior(unet, vae, scheduler, n=8, size=(p.crop_size, p.crop_size), steps=50, sampler="ddim",
                           seed=cfg.seed)
    display(Image(str(study_figures.prior_samples(samples, info["photos"], figures_dir)[0])))

# %% [markdown]
# ## Does the decoder draw the patch grid?
#
# The linear core decodes each latent cell into its own 4x4 patch, so any error in a latent (and a diffusion model
# makes them) would show as 4x4 block edges, the very artefact a compressed-image restorer has to remove. The
# refinement's 3x3 kernels straddle the patch borders. Below, `blockiness` is the mean step across the 4-pixel
# grid over the mean step inside its cells (1 = no grid) for the prior's own samples: decoded by the full decoder,
# and by the linear core alone.

# %%
if enabled:
    from moediffir.studies.prior_quality import decoded_blockiness, sample_prior_latents

    z = sample_prior_latents(unet, vae, scheduler, n=8, size=(p.crop_size, p.crop_size), steps=50, sampler="ddim",
                             seed=cfg.seed)
    blocking = decoded_blockiness(vae, z)
    atomic_write_csv(tables_dir / "prior_blockiness.csv", blocking)
    display(blocking.round(3))
    print("mean blockiness of the prior's samples (trained here from scratch): "
          + ", ".join(f"{c.removesuffix('_blockiness')} {blocking[c].mean():.3f}" for c in blocking.columns[1:]))
