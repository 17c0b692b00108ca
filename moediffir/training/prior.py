"""Stage 0: the latent diffusion prior itself, trained here from scratch (paper §3.1, Eq. 1-2).

MoE-DiffIR customises a *pretrained* prior: SD 2.1-base in the paper (§4.1). Without a GPU and those weights
every restored image of the kit would come from random networks, so the ``mini`` profile first trains its own
small prior on the clean training photos, in the classes SD uses, and saves it in the diffusers layout::

    <run_dir>/prior/
        vae/, unet/                      one folder per phase, as stages I and II have: checkpoints/step_*
                                         (atomic, resumable), log.jsonl and log.csv (one record per log_every
                                         steps), config.json
        vae_trained/                     the finished VAE (written before the UNet phase)
        summary.json                     steps, wall time, reconstruction PSNR, scaling factor
        diffusers/{vae,unet,scheduler}   the prior; ``model.sd_source`` "" points here

Phase 1 makes the autoencoder (``prior.latent_channels`` channels at factor ``2**(len(vae_channels)-1)``). With
``prior.vae_kind="patch"`` (the default) it is a :class:`~moediffir.models.patch_autoencoder.PatchAutoencoder`:
the PCA of every ``f x f`` patch of the training photos, fitted in closed form, then its zero-initialised
refinements trained with an L1 reconstruction loss; with ``"kl"`` an ``AutoencoderKL`` trained from scratch with
L1 plus a small KL term (docs/design.md §10 compares them). Its ``scaling_factor`` is then set to ``1 / std`` of
the training latents, as SD's 0.18215 was. Phase 2 trains an unconditional ``UNet2DConditionModel`` on the scaled
latents of the same photos with Eq. 2 under SD's noise schedule and the ``prior.prediction_type`` target, with
the all-zero context that :class:`~moediffir.models.denoiser.MoEDiffIRDenoiser` uses without V2T. Stage I then
loads the folder exactly as it loads SD 2.1-base: frozen VAE and UNet, only the MoE-DiffIR parts train.

Each phase runs through the loop every stage shares (:class:`~moediffir.training.loop.StageRun`), in one
process (the phases are small); ``resume=True`` continues from the newest checkpoint of the current phase and
reproduces the uninterrupted run (data order, noise and RNG states are checkpointed).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch.utils.data import Dataset

from moediffir.models.latent_scaling import scale_latents
from moediffir.models.patch_autoencoder import PatchAutoencoder
from moediffir.training.loop import StageRun
from moediffir.training.pairs import (
    SampleKey,
    apply_augment,
    draw_augment,
    pad_to,
)
from moediffir.training.runtime import (
    TrainingConfigError,
    check_fresh_start,
    is_distributed_launch,
    make_accelerator,
    stage_lock,
)
from moediffir.training.stage1 import diffusion_target
from moediffir.utils.image_tensors import to_tensor01
from moediffir.utils.io import atomic_directory, atomic_write_json, read_image_rgb
from moediffir.utils.locks import is_lock_file
from moediffir.weights.loading import autoencoder_class_in

STAGE = "prior"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
PRIOR_INFO = "prior_info.json"  # written into the diffusers folder: how the prior was made
PRIOR_PHASES = ("vae", "unet")  # in order; each has its folder under the stage folder


# --------------------------------------------------------------------------------------------- configs
def prior_vae_config(cfg) -> dict[str, Any]:
    """Config of the stage-0 autoencoder (diffusers keys of ``PatchAutoencoder`` or ``AutoencoderKL``)."""
    p = cfg.prior
    n = len(p.vae_channels)
    if p.vae_kind == "patch":
        return {"latent_channels": p.latent_channels, "block_out_channels": list(p.vae_channels),
                "norm_num_groups": 8, "scaling_factor": 1.0}
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": p.latent_channels,
        "block_out_channels": list(p.vae_channels), "layers_per_block": p.vae_layers_per_block,
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
        "norm_num_groups": 32 if min(p.vae_channels) % 32 == 0 else 8, "sample_size": p.crop_size,
        "scaling_factor": 1.0,  # replaced by 1 / std of the training latents after phase 1
    }


def prior_unet_config(cfg) -> dict[str, Any]:
    """``UNet2DConditionModel`` config of stage 0: SD's block kinds (attention below the top resolution)."""
    p = cfg.prior
    n = len(p.unet_channels)
    return {
        "sample_size": p.crop_size // 2 ** (len(p.vae_channels) - 1),
        "in_channels": p.latent_channels, "out_channels": p.latent_channels,
        "block_out_channels": list(p.unet_channels), "layers_per_block": p.unet_layers_per_block,
        "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1),
        "up_block_types": ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn", "attention_head_dim": p.attention_head_dim,
        "cross_attention_dim": p.cross_attention_dim, "norm_num_groups": unet_norm_groups(p),
        "use_linear_projection": True,
    }


def unet_norm_groups(p) -> int:
    """The UNet's GroupNorm groups: ``prior.unet_norm_groups``, or (0) the most groups up to 32 that keep at
    least 8 channels in every group of every width (4 for mini's (32, 64, 64)). The config refuses a count that
    does not divide every width (:mod:`moediffir.config.values`)."""
    if p.unet_norm_groups:
        return p.unet_norm_groups
    fits = [g for g in range(1, 33) if all(c % g == 0 and c // g >= 8 for c in p.unet_channels)]
    return max(fits, default=1)


def prior_scheduler(cfg) -> DDPMScheduler:
    """SD's DDPM noise schedule with the prior's ``prediction_type``."""
    from moediffir.models.sd_backbone import SD21_SCHEDULER_JSON, packaged_config

    if cfg.prior.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prior.prediction_type={cfg.prior.prediction_type!r}: choose one of {PREDICTION_TYPES}")
    base = {k: v for k, v in packaged_config(SD21_SCHEDULER_JSON).items() if not k.startswith("_")}
    return DDPMScheduler.from_config({**base, "prediction_type": cfg.prior.prediction_type})


def prior_stage_dir(cfg) -> Path:
    """Checkpoints and logs of stage 0: the folder holding ``diffusers/``."""
    return cfg.prior_dir.parent


# ------------------------------------------------------------------------------------------------ data
class CleanCropDataset(Dataset):
    """Random ``crop`` x ``crop`` crops (and dihedral transforms) of the clean training photos, held in memory."""

    def __init__(self, images: list[np.ndarray], crop: int, augment: bool = True) -> None:
        if not images:
            raise ValueError("CleanCropDataset: no training photos")
        self.images = [pad_to(im, crop) for im in images]
        self.crop, self.augment = int(crop), bool(augment)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        k = SampleKey(*key)
        img = self.images[k.index]
        aug = draw_augment(np.random.default_rng(k.seed), img.shape[0], img.shape[1], self.crop, self.augment)
        return {"gt": to_tensor01(apply_augment(img, aug, self.crop)), "epoch": k.epoch, "batch": k.batch}  # (3, c, c)


def training_photos(cfg) -> list[np.ndarray]:
    """The clean photos of ``data.train_sets`` (``data.max_train_images`` per set) as ``(H, W, 3)`` uint8."""
    from moediffir.data.sources import list_sources

    out = []
    for name in cfg.data.train_sets:
        out += [read_image_rgb(s.path) for s in list_sources(cfg.datasets_dir, name, cfg.data.max_train_images)]
    return out


# ----------------------------------------------------------------------------------------------- losses
def vae_loss(vae, x01: torch.Tensor, kl_weight: float, latent_noise: float = 0.0,
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 reconstruction of a posterior sample plus ``kl_weight`` x KL to N(0, I) (the LDM autoencoder loss
    without its perceptual and GAN terms).

    For the deterministic ``PatchAutoencoder``: L1 of ``D(E(x))``, plus, when ``latent_noise`` > 0, L1 of
    ``D(E(x) + latent_noise * n)`` with ``n ~ N(0, I)`` in the whitened latent space: the decoder also learns to
    turn slightly wrong latents (what a diffusion model outputs) into the photo rather than into 4x4 blocks.
    """
    x = x01 * 2.0 - 1.0  # (B, 3, H, W) in [-1, 1]
    if isinstance(vae, PatchAutoencoder):
        z = vae.encode(x).latent_dist.mode()  # (B, C, h, w)
        l1 = (vae.decode(z).sample - x).abs().mean()
        if latent_noise <= 0:
            return l1, {"l1": float(l1.detach())}
        noisy = (vae.decode(z + latent_noise * torch.randn_like(z)).sample - x).abs().mean()
        return l1 + noisy, {"l1": float(l1.detach()), "l1_noisy": float(noisy.detach())}
    dist = vae.encode(x).latent_dist
    rec = vae.decode(dist.sample()).sample  # (B, 3, H, W)
    l1 = (rec - x).abs().mean()
    kl = dist.kl().mean() / x[0].numel()  # per pixel value, so the weight does not depend on the crop size
    return l1 + kl_weight * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}


def scaled_latents(vae: AutoencoderKL, x01: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """``(z - shift) * scaling_factor`` ``(B, C_lat, h, w)`` of images in [0, 1] (read from the VAE's config)."""
    dist = vae.encode(x01.to(vae.device) * 2.0 - 1.0).latent_dist
    z = dist.sample() if sample else dist.mode()  # (B, C_lat, h, w)
    return scale_latents(vae, z)


def unet_loss(unet, scheduler, z0: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 2 with the scheduler's prediction target (``eps``, ``v`` or ``z_0``), unconditional (zero context)."""
    noise = torch.randn_like(z0)  # (B, C_lat, h, w)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],), device=z0.device)  # (B,)
    z_t = scheduler.add_noise(z0, noise, t)
    pred = unet(z_t, t, encoder_hidden_states=context.expand(z0.shape[0], -1, -1)).sample  # (B, C_lat, h, w)
    loss = F.mse_loss(pred.float(), diffusion_target(scheduler, z0, noise, t).float())
    return loss, {"mse": float(loss.detach())}


def whole_photo(im: np.ndarray, f: int) -> torch.Tensor:
    """``(1, 3, h, w)`` in [-1, 1] of an ``(H, W, 3)`` uint8 photo cut to multiples of ``f`` (the VAE's factor)."""
    h, w = im.shape[0] // f * f, im.shape[1] // f * f
    return to_tensor01(np.ascontiguousarray(im[:h, :w]))[None] * 2.0 - 1.0


@torch.no_grad()
def latent_std(vae: AutoencoderKL, images: list[np.ndarray], device: torch.device) -> float:
    """Standard deviation of the unscaled posterior means of whole training photos (for ``scaling_factor``)."""
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    vals = [vae.encode(whole_photo(im, f).to(device)).latent_dist.mode().flatten().cpu() for im in images]
    return float(torch.cat(vals).std())


# --------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class PhaseSettings:
    """The share of ``cfg.prior`` one phase runs under, with the fields :class:`StageRun` reads."""

    max_steps: int
    batch_size: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    grad_accum: int = 1
    num_workers: int = 0  # the crops are cut in memory


def _run_phase(cfg, accelerator, phase: str, model: torch.nn.Module, loss_fn, steps: int, batch_size: int,
               lr: float, photos: list[np.ndarray], out: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """Train ``model`` for ``steps`` Adam steps on clean crops with ``loss_fn(model, batch01)`` in the folder
    ``out / phase`` (checkpoints and log), through the loop every stage shares."""
    p = cfg.prior
    settings = PhaseSettings(steps, batch_size, p.log_every, p.checkpoint_every, p.keep_checkpoints)
    run = StageRun(cfg, STAGE, accelerator, settings, resume, folder=out / phase,
                   seed=cfg.seed + (0 if phase == "vae" else 1))
    dataset = CleanCropDataset(photos, p.crop_size, p.augment)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=lr)
    objects = {"modules": {phase: model}, "optimizers": {"adam": opt}, "schedulers": {}}
    wall0 = float(run.resume(**objects).get("wall_s", 0.0))  # the wall time of the runs before a resumption
    batches = run.start(dataset, progress, f"prior {phase}", unit="step")
    t0, last = time.perf_counter(), {}

    def wall() -> float:
        return wall0 + time.perf_counter() - t0

    def state() -> dict[str, float]:  # what a checkpoint keeps beside the run state: the wall time so far
        return {"wall_s": wall()}

    model.train()
    while run.running:
        batch = next(batches)
        loss, parts = loss_fn(model, batch["gt"].to(accelerator.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.consumed(batch)
        run.end_step({"loss": loss.detach()})
        if run.log_due:
            means, _ = run.flush()
            last = {"phase": phase, "step": run.step, "loss": float(means["loss"].mean()), **parts,
                    "wall_s": round(wall(), 2)}
            run.write(dict(last), means["loss"])
        run.checkpoint(**objects, state=state)
    run.finish(lambda: run.checkpoint(**objects, state=state, force=True))
    model.eval()
    return {"steps": run.step, "wall_s": round(wall(), 2), "last_log": last}


@torch.no_grad()
def fit_patch_pca(vae: PatchAutoencoder, images: list[np.ndarray], whiten: float = 1.0) -> int:
    """Fit ``vae``'s linear core to every non-overlapping patch of the whole photos (``whiten``: see
    :meth:`~moediffir.models.patch_autoencoder.PatchAutoencoder.fit_pca`); returns the patch count."""
    patches = torch.cat([vae.image_patches(whole_photo(im, vae.factor)) for im in images])  # (N, 3 f²)
    vae.fit_pca(patches, whiten)
    return int(patches.shape[0])


def _train_vae(cfg, accelerator, photos, out: Path, resume: bool, progress: bool) -> tuple[Any, dict]:
    p, device = cfg.prior, accelerator.device
    torch.manual_seed(cfg.seed)
    pca = {}
    if p.vae_kind == "patch":
        vae = PatchAutoencoder.from_config(prior_vae_config(cfg))
        pca = {"pca_patches": fit_patch_pca(vae, photos, p.vae_whiten)}
        vae = vae.to(device)
    else:
        vae = AutoencoderKL.from_config(prior_vae_config(cfg)).to(device)
    info = _run_phase(cfg, accelerator, "vae", vae,
                      lambda m, x: vae_loss(m, x, p.vae_kl_weight, p.vae_latent_noise),
                      p.vae_steps, p.vae_batch_size, p.vae_lr, photos, out, resume, progress)
    std = latent_std(vae, photos, device)
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    vae.requires_grad_(False)
    with atomic_directory(out / "vae_trained") as tmp:
        vae.save_pretrained(tmp)
        atomic_write_json(tmp / "phase.json", {**info, **pca, "latent_std": std})
    return vae, {**info, **pca, "latent_std": std, "scaling_factor": float(vae.config.scaling_factor)}


def _clear_previous_run(out: Path, keep: str) -> None:
    """Remove an earlier run's checkpoints and logs from ``out``; the prior ``keep`` stays until replaced."""
    for path in out.iterdir() if out.is_dir() else []:
        if path.name == keep or is_lock_file(path.name):
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train_prior(cfg, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Run stage 0 (both phases) and return the diffusers folder of the prior (``cfg.prior_dir``).

    Without ``resume``, a stage folder holding checkpoints of an earlier run is refused unless ``overwrite``
    (nothing is changed then); ``resume`` continues the newest checkpoint of the unfinished phase.

    Raises:
        ValueError: the profile has no stage 0 (``prior.enabled`` is false: the paper's prior is SD 2.1-base).
        TrainingConfigError: resuming with ``prior.*`` settings that differ from the checkpoint's.
    """
    if not cfg.prior.enabled:
        raise ValueError(f"profile {cfg.profile!r} has no stage 0 (prior.enabled=false): its prior is "
                         f"{cfg.model.sd_source or cfg.model.backbone}")
    p = cfg.prior
    if p.vae_steps < 1 or p.unet_steps < 1:
        raise ValueError(f"prior.vae_steps={p.vae_steps} and prior.unet_steps={p.unet_steps} must be >= 1")
    prior_scheduler(cfg)  # checks prior.prediction_type before any work
    out = prior_stage_dir(cfg)
    for phase in PRIOR_PHASES:
        check_fresh_start(out / phase, resume, overwrite)  # refused: nothing is changed
    photos = training_photos(cfg)  # fails early when the photos are missing
    if is_distributed_launch():
        raise TrainingConfigError("stage 0 runs in one process (its networks are small): run "
                                  "`moediffir train prior` without `accelerate launch`")
    accelerator = make_accelerator(cfg, "no")  # full precision: the prior is trained once and then frozen
    with stage_lock(out):  # a second run into this folder stops here, naming this one
        return _train_prior(cfg, accelerator, photos, resume, progress)


def _train_prior(cfg, accelerator, photos: list[np.ndarray], resume: bool, progress: bool) -> Path:
    """Both phases of :func:`train_prior`, its checks done and its stage folder locked."""
    p, out, device = cfg.prior, prior_stage_dir(cfg), accelerator.device
    if not resume:
        _clear_previous_run(out, keep=cfg.prior_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    vae_dir = out / "vae_trained"
    if resume and vae_dir.is_dir() and (vae_dir / "phase.json").is_file():
        vae_class = autoencoder_class_in(out, vae_dir.name)
        vae = vae_class.from_pretrained(vae_dir, use_safetensors=True).to(device).requires_grad_(False)
        vae_info = json.loads((vae_dir / "phase.json").read_text())
        vae_info["scaling_factor"] = float(vae.config.scaling_factor)
    else:
        shutil.rmtree(out / "unet", ignore_errors=True)  # its checkpoints belong to the previous VAE
        vae, vae_info = _train_vae(cfg, accelerator, photos, out, resume, progress)
    vae.eval()

    torch.manual_seed(cfg.seed + 1)
    unet = UNet2DConditionModel.from_config(prior_unet_config(cfg)).to(device)
    scheduler = prior_scheduler(cfg)
    context = torch.zeros(1, 1, p.cross_attention_dim, device=device)  # the denoiser's null context

    def loss_fn(model, x01):
        with torch.no_grad():
            z0 = scaled_latents(vae, x01)  # (B, C_lat, h, w)
        return unet_loss(model, scheduler, z0, context)

    unet_info = _run_phase(cfg, accelerator, "unet", unet, loss_fn, p.unet_steps, p.unet_batch_size, p.unet_lr,
                           photos, out, resume, progress)
    unet.requires_grad_(False)
    info = {"photos": len(photos), "train_sets": list(cfg.data.train_sets), "vae": vae_info, "unet": unet_info,
            "prediction_type": p.prediction_type, "context": "zeros", "device": str(device),
            "trained_here": True, "weights": f"trained here from scratch on {len(photos)} photos"}
    with atomic_directory(cfg.prior_dir) as tmp:
        vae.save_pretrained(tmp / "vae")
        unet.save_pretrained(tmp / "unet")
        scheduler.save_pretrained(tmp / "scheduler")
        atomic_write_json(tmp / PRIOR_INFO, info)
    atomic_write_json(out / "summary.json", info)
    print(f"[prior] done: {cfg.prior_dir} (VAE {vae_info['steps']} steps, UNet {unet_info['steps']} steps)", flush=True)
    return cfg.prior_dir


def read_prior_info(folder: str | Path) -> dict[str, Any]:
    """``prior_info.json`` of a stage-0 prior folder ({} for a prior made elsewhere, e.g. SD 2.1-base)."""
    path = Path(folder) / PRIOR_INFO
    return json.loads(path.read_text()) if path.is_file() else {}
