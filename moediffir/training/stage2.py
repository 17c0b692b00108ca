"""Stage II: stage-I latents, then the decoder compensator trained with LPIPS (+ L1, + hinge GAN) (paper §3.4, Eq. 4).

The paper "generate[s] 70,000 latent images using the weights from the first stage and train[s] the decoder
with the corresponding LQ images and ground truth images", loss ``L_Decoder = L_lpips[z_lq, z_0, hr]`` (Eq. 4),
lr 1e-4, 0.1 M steps (§4.1). StableSR, which the paper follows, adds an L1 term and a small hinge-GAN term;
here each has its weight in the config (``stage2.lpips_weight``, ``l1_weight``, ``gan_weight`` from
``gan_start_step``). The released code (``model.recipe="released"``): VGG LPIPS (``stage2.lpips_net``), Adam
``betas`` (0.5, 0.9), the GAN term from step 501, the RRDB fusion block (``stage2.fusion_block``); its GAN
weight is 0.025 times taming's adaptive ratio ``|grad L_rec| / |grad L_GAN|`` at the decoder's last layer,
which is not reproduced here (a fixed ``gan_weight``).

1. :func:`~moediffir.training.stage2_data.generate_stage2_data` (:mod:`moediffir.training.stage2_data`):
   ``stage2.num_latents`` LQ/GT crops of the seen training pairs and their ``z_0`` sampled by the stage-I model.
2. :func:`train_stage2`: the decoder compensator (frozen VAE copy + trainable CFW fusion,
   :mod:`moediffir.models.compensator`) decodes ``z_0`` with the LQ image's encoder features at weight
   ``stage2.train_fusion_weight``; loss ``lpips_weight * LPIPS(x, hr) + l1_weight * |x - hr| +
   gan_weight * (-D(x))``; a PatchGAN discriminator ``D`` learns ``relu(1 - D(hr)) + relu(1 + D(x))``. The
   compensator is added to the model folder, which the pipeline then decodes with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moediffir.models.latent_scaling import unscale_latents
from moediffir.training.loop import StageRun
from moediffir.training.runtime import (
    TrainingConfigError,
    check_fresh_start,
    make_accelerator,
    stage_dir,
    stage_lock,
)
from moediffir.training.stage2_data import (
    STAGE,
    LatentShardDataset,
    Stage2DataError,
    require_stage1_model,
    stage1_fingerprint,
    stage2_data_dir,
)
from moediffir.utils.io import atomic_write_json


# ------------------------------------------------------------------------------------------- networks
class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix's 70x70 layout: 4x4 convs, stride 2, 64-128-256-512 channels) with
    spectral normalisation instead of batch norm (no batch statistics to synchronise across processes)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        mods: list[nn.Module] = [sn(nn.Conv2d(in_channels, channels, 4, 2, 1)), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            c_next = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [sn(nn.Conv2d(c, c_next, 4, stride, 1)), nn.LeakyReLU(0.2)]
            c = c_next
        mods.append(sn(nn.Conv2d(c, 1, 4, 1, 1)))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, h', w') patch logits


@torch.no_grad()
def compare_decoders(compensator, lpips_model, batch: Mapping[str, Any], weights: tuple[float, ...]) -> dict[str, float]:
    """L1 and LPIPS to the GT of the plain VAE decoder (``w = 0``) and the compensated one at each ``w``."""
    device = next(compensator.parameters()).device
    was = compensator.training
    compensator.eval()
    try:
        z = unscale_latents(compensator.vae, batch["z0"].to(device))
        lq = batch["lq"].to(device) * 2 - 1  # (B, 3, H, W) in [-1, 1]
        gt = batch["gt"].to(device) * 2 - 1
        out = {}
        for w in (0.0,) + tuple(weights):
            x = compensator.decode(z, lq_image=lq, w=w).float().clamp(-1, 1)  # (B, 3, H, W)
            tag = "plain" if w == 0 else f"w{w:g}"
            out[f"l1_{tag}"] = float((x - gt).abs().mean() / 2)  # in [0, 1] units
            out[f"lpips_{tag}"] = float(lpips_model(x, gt).mean())
        return out
    finally:
        compensator.train(was)


def _build_lpips(cfg, device):
    """The training loss's LPIPS: ``stage2.lpips_net`` (AlexNet; the released code trains with VGG)."""
    from moediffir.metrics.lpips_weights import lpips_weights_dir
    from moediffir.metrics.perceptual import build_lpips

    net = cfg.stage2.lpips_net
    model = build_lpips(net, weights=cfg.eval.metric_weights,
                        weights_dir=cfg.eval.metric_weights_dir or None, seed=cfg.seed, lpips_dir=lpips_weights_dir(cfg))
    return model.to(device), f"{net}:{model.weights_label}"


# ------------------------------------------------------------------------------------------- training
def train_stage2(cfg, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Train the decoder compensator for ``stage2.max_steps`` steps; add it to ``<run_dir>/model``; return it.

    Args:
        cfg: resolved config; the stage-I model and the stage-II latents (:func:`generate_stage2_data`) must exist.
        resume: continue from the newest checkpoint in ``<stage2 dir>/checkpoints`` (fresh if none).
        overwrite: start afresh over an earlier run's checkpoints (removed once everything is built).
        progress: progress bar on the main process.

    Raises:
        FolderLockedError: another run is writing the stage folder (the message names it); nothing was changed.
    """
    with stage_lock(stage_dir(cfg, STAGE)):  # one run per stage folder; the ranks of one launch share it
        return _train_stage2(cfg, resume, progress, overwrite)


def _setup(cfg, accelerator, folder: Path):
    """The compensator (and discriminator) to train around the stage-I model of ``folder``, on ``accelerator``:
    ``(pipe, vae, compensator, disc, opt_g, lr_g)`` (``disc`` None without the adversarial term)."""
    from accelerate.utils import set_seed

    from moediffir.models.compensator import build_compensator
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    s2 = cfg.stage2
    set_seed(cfg.seed)
    pipe = load_pipeline(folder, device="cpu")  # the stage-I parts are only re-saved: keep them off the GPU
    if pipe.model_config is not None and pipe.model_config.model != cfg.model:
        raise TrainingConfigError(f"{folder}: the stage-I model was trained with other model.* settings than cfg")
    vae = pipe.vae.to(accelerator.device)
    compensator = build_compensator(cfg, vae)
    if s2.gradient_checkpointing:
        compensator.enable_gradient_checkpointing()
    if any(p.requires_grad for p in compensator.vae.parameters()):
        raise RuntimeError("stage II: the compensator's VAE copy must be frozen")
    opt_g = torch.optim.Adam(list(compensator.fusion_parameters()), lr=s2.lr, betas=tuple(s2.betas))
    lr_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda _: 1.0)
    use_gan = s2.gan_weight > 0
    disc = (PatchDiscriminator(channels=s2.disc_channels, layers=s2.disc_layers).to(accelerator.device)
            if use_gan else None)
    return pipe, vae, compensator, disc, opt_g, lr_g


def _prepare(cfg, accelerator, compensator, disc, opt_g, lr_g):
    """``accelerator.prepare`` the generator (and the discriminator with its optimiser):
    ``(model, compensator, disc_model, opt_g, opt_d, objects)``; ``objects`` holds what a checkpoint saves."""
    s2 = cfg.stage2
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=s2.lr, betas=tuple(s2.betas))
        model, opt_g, disc_model, opt_d = accelerator.prepare(compensator, opt_g, disc, opt_d)
        disc = accelerator.unwrap_model(disc_model)
    else:
        model, opt_g = accelerator.prepare(compensator, opt_g)
        disc_model = opt_d = None
    compensator = accelerator.unwrap_model(model)
    objects = {"modules": {"compensator": compensator} | ({"discriminator": disc} if disc is not None else {}),
               "optimizers": {"adam_g": opt_g} | ({"adam_d": opt_d} if disc is not None else {}),
               "schedulers": {"lr_g": lr_g}}
    return model, compensator, disc_model, opt_g, opt_d, objects


def _generator_pass(cfg, accelerator, run: StageRun, it, model, disc_model, vae, lpips_model, gan_on: bool):
    """The compensator's loss over ``stage2.grad_accum`` micro-batches, backpropagated (Eq. 4 with LPIPS, L1 and
    the hinge generator term): ``(fakes, reals, parts)``; ``parts`` ``(4,)``: loss, L1, LPIPS, adversarial."""
    s2, device = cfg.stage2, accelerator.device
    fakes, reals, parts_acc = [], [], []
    for micro in range(s2.grad_accum):
        batch = next(it)
        ctx = contextlib.ExitStack()
        if micro != s2.grad_accum - 1:
            ctx.enter_context(accelerator.no_sync(model))
            if gan_on:
                ctx.enter_context(accelerator.no_sync(disc_model))
        with ctx:
            with accelerator.autocast():
                z = unscale_latents(vae, batch["z0"].to(device))  # (B, 4, h, w)
                lq = batch["lq"].to(device) * 2 - 1  # (B, 3, H, W) in [-1, 1]
                gt = batch["gt"].to(device) * 2 - 1
                x = model(z, lq_image=lq, w=s2.train_fusion_weight).float()  # (B, 3, H, W)
                l1 = (x - gt).abs().mean()
                lp = lpips_model(x, gt).mean() if s2.lpips_weight > 0 else x.new_zeros(())
                g_adv = -disc_model(x).float().mean() if gan_on else x.new_zeros(())
                loss = s2.lpips_weight * lp + s2.l1_weight * l1 + s2.gan_weight * g_adv
            accelerator.backward(loss / s2.grad_accum)
        fakes.append(x.detach())
        reals.append(gt)
        parts_acc.append(torch.stack([loss.detach(), l1.detach(), lp.detach(), g_adv.detach()]))
        run.consumed(batch)
    return fakes, reals, torch.stack(parts_acc).mean(0)


def _discriminator_pass(accelerator, disc_model, opt_d, fakes, reals) -> torch.Tensor:
    """One step of the patch discriminator: hinge loss on the same reals and the (detached) fakes; its mean."""
    opt_d.zero_grad(set_to_none=True)
    d_losses = []
    for micro, (fake, real) in enumerate(zip(fakes, reals)):
        with contextlib.nullcontext() if micro == len(fakes) - 1 else accelerator.no_sync(disc_model):
            with accelerator.autocast():
                logits = disc_model(torch.cat([real, fake])).float()  # (2B, 1, h', w')
                d_real, d_fake = logits.chunk(2)
                dl = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            accelerator.backward(dl / len(fakes))
        d_losses.append(dl.detach())
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)
    return torch.stack(d_losses).mean()


def _train_stage2(cfg, resume: bool, progress: bool, overwrite: bool) -> Path:
    """The run of :func:`train_stage2`, inside the lock of its stage folder (the shared loop: :class:`StageRun`)."""
    from accelerate.utils import set_seed

    s2 = cfg.stage2
    if s2.grad_accum < 1 or s2.batch_size < 1 or s2.max_steps < 0:
        raise ValueError(f"stage2: batch_size={s2.batch_size}, grad_accum={s2.grad_accum}, max_steps={s2.max_steps}")
    folder = require_stage1_model(cfg)
    data_dir = stage2_data_dir(cfg)
    dataset = LatentShardDataset(data_dir)
    if dataset.meta["source"]["model_fingerprint"] != stage1_fingerprint(folder):
        raise Stage2DataError(
            f"{data_dir}: latents were made by another stage-I model than {folder}; rerun "
            f"`moediffir stage2-data --profile {cfg.profile}`"
        )
    check_fresh_start(stage_dir(cfg, STAGE), resume, overwrite)
    accelerator = make_accelerator(cfg, s2.mixed_precision)
    run = StageRun(cfg, STAGE, accelerator, s2, resume)
    pipe, vae, compensator, disc, opt_g, lr_g = _setup(cfg, accelerator, folder)
    lpips_model, lpips_label = _build_lpips(cfg, accelerator.device)
    model, compensator, disc_model, opt_g, opt_d, objects = _prepare(cfg, accelerator, compensator, disc, opt_g, lr_g)
    set_seed(cfg.seed, device_specific=True)
    eval_batch = torch.utils.data.default_collate([dataset[i % len(dataset)] for i in range(s2.batch_size)])
    weights_eval = tuple(sorted({s2.train_fusion_weight, cfg.sample.fusion_weight}))
    eval_start = run.resume(**objects).get("eval_start")
    if eval_start is None:
        eval_start = compare_decoders(compensator, lpips_model, eval_batch, weights_eval)
    it = run.start(dataset, progress, "stage II", config_name="train_config.json",
                   keep={data_dir.name} if data_dir.parent == run.out else ())

    def state() -> dict[str, Any]:  # what a checkpoint records beside the sampler position
        return {"eval_start": eval_start}

    model.train()
    if disc_model is not None:
        disc_model.train()
    while run.running:
        gan_on = disc_model is not None and run.step >= s2.gan_start_step
        fakes, reals, parts = _generator_pass(cfg, accelerator, run, it, model, disc_model, vae, lpips_model, gan_on)
        opt_g.step()
        lr_g.step()
        opt_g.zero_grad(set_to_none=True)
        d_loss = _discriminator_pass(accelerator, disc_model, opt_d, fakes, reals) if gan_on else torch.zeros(())
        run.end_step({**dict(zip(("loss", "l1", "lpips", "g_adv"), parts)), "d_loss": d_loss.to(parts.device)})
        if run.log_due:
            means, per_s = run.flush()
            record = {"step": run.step, "lr": float(lr_g.get_last_lr()[0]), "epoch": run.epoch, "gan_on": gan_on,
                      "samples_per_s": per_s, "lpips_net": lpips_label}
            run.write(record | {k: float(v.mean()) for k, v in means.items()}, means["loss"])
        run.checkpoint(**objects, state=state)
    run.finish(lambda: run.checkpoint(**objects, state=state, force=True))
    eval_end = compare_decoders(compensator, lpips_model, eval_batch, weights_eval)
    if run.main:
        _write_stage2(cfg, run, folder, pipe, vae, compensator, accelerator, lpips_label, eval_start, eval_end)
    run.done()
    return folder


def _write_stage2(cfg, run: StageRun, folder: Path, pipe, vae, compensator, accelerator, lpips_label: str,
                  eval_start: dict, eval_end: dict) -> None:
    """The model folder (the stage-I parts and the compensator) and ``summary.json`` of a finished run."""
    from diffusers import DDPMScheduler

    from moediffir.weights.model_folder import read_model_info, save_model_folder

    s2 = cfg.stage2
    info = dict(read_model_info(folder).get("info", {}))
    info["stage2"] = {"steps": run.step, "lpips": lpips_label, "train_fusion_weight": s2.train_fusion_weight}
    save_model_folder(folder, cfg, pipe.denoiser, vae, DDPMScheduler.from_config(pipe.scheduler.config),
                      compensator=compensator, info=info)
    atomic_write_json(run.out / "summary.json", {
        **run.summary(), "world_size": run.world, "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "eval_batch": "first stage2.batch_size latents of the training data",
        "start": eval_start, "end": eval_end, "lpips_net": lpips_label,
        "trainable_parameters": sum(p.numel() for p in compensator.fusion_parameters()), "model_dir": str(folder),
    })
