"""Stage I: train the MoE-Prompt Module, SPADE layers (and V2T) on the frozen SD backbone (paper §3.4, §4.1, Eq. 2).

One optimiser step, written out (docs/design.md §5):

1. a batch of aligned ``(LQ, GT, label)`` crops of the 21 seen tasks (:mod:`moediffir.training.pairs`);
2. the frozen VAE encoder gives ``z_lq`` (posterior mean x scaling factor, exactly the pipeline's
   :func:`~moediffir.pipelines.vae_steps.encode_lq`) and ``z_0`` (a posterior sample of the GT);
3. ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` (the scheduler's
   ``add_noise``);
4. the MoE-DiffIR denoiser predicts ``eps(z_t, t)`` conditioned on the LQ image;
5. ``L_SD = ||eps - eps(z_t, t)||^2`` (Eq. 2; the velocity target if the scheduler predicts ``v``) plus the
   routers' weighted balance loss, averaged over ``stage1.grad_accum`` micro-batches;
6. Adam (``stage1.betas``) at the constant ``stage1.lr`` on the trained parts only (prompt module, SPADE,
   V2T adapter + enhancer; the UNet, VAE, degradation prior and the V2T's CLIP tower stay frozen).

Released-code switches (``model.recipe="released"`` sets them): ``stage1.usm_gt`` unsharp-masks the GT before
it is encoded (:mod:`moediffir.training.usm`); ``stage1.optimizer="adamw"`` with ``weight_decay`` 0.01 and two
parameter groups, the prompt module at ``lr * prompt_lr_scale`` (released 2.0) and SPADE + V2T at
``lr * injection_lr_scale`` -- released 0.0, because its ``lr // 2`` floor-divides a float below 2 to 0, so
the released SPADE and V2T layers keep their initial weights.

Every ``log_every`` steps the loss, learning rate, throughput and routing statistics go to
``<stage dir>/log.jsonl``/``log.csv``; every ``checkpoint_every`` steps an atomic checkpoint is written to
``<stage dir>/checkpoints/step_XXXXXX``; at the end the model folder ``<run_dir>/model`` is written with
:func:`~moediffir.weights.model_folder.save_model_folder`. ``train_stage1(cfg, resume=True)`` continues
from the newest checkpoint and reproduces the uninterrupted run's losses exactly. The same function runs
under ``accelerate launch --num_processes N`` (DDP; each process takes its slice of every global batch).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from moediffir.models.latent_scaling import scale_latents
from moediffir.pipelines.vae_steps import encode_lq
from moediffir.provenance import backbone_provenance
from moediffir.training.loop import StageRun
from moediffir.training.pairs import PairedCropDataset, SampleKey, training_pairs
from moediffir.training.runtime import (
    check_fresh_start,
    make_accelerator,
    model_dir,
    stage_dir,
    stage_lock,
)
from moediffir.training.training_log import RoutingStats
from moediffir.training.usm import usm_sharpen
from moediffir.utils.io import atomic_write_json

STAGE = "stage1"


# ------------------------------------------------------------------------------------------- latents
def encode_pair(vae, lq01: torch.Tensor, gt01: torch.Tensor, generator: torch.Generator | None = None):
    """``(z_lq, z_0)`` ``(B, 4, h, w)`` each: LQ posterior mean and a GT posterior sample, both scaled.

    ``z_lq`` is exactly the pipeline's conditioning (``encode_lq``); ``generator=None`` draws the GT sample
    from the global RNG (restored on resume). :func:`~moediffir.pipelines.vae_steps.encode_lq` gives
    deterministic latents (the posterior mean) of one image batch.
    """
    b = lq01.shape[0]
    x = torch.cat([lq01, gt01]).to(device=vae.device, dtype=vae.dtype) * 2.0 - 1.0  # (2B, 3, H, W) in [-1, 1]
    dist = vae.encode(x).latent_dist
    z_lq = scale_latents(vae, dist.mode()[:b])  # (B, 4, h, w)
    z0 = scale_latents(vae, dist.sample(generator=generator)[b:])  # (B, 4, h, w)
    return z_lq.float(), z0.float()


def diffusion_target(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses, read from the prior's ``scheduler.config.prediction_type``: ``eps`` (Eq. 2;
    SD 2.1-base), the velocity ``sqrt(abar_t) eps - sqrt(1 - abar_t) z_0`` (``v_prediction``) or ``z_0`` itself
    (``sample``)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, t)
    if kind == "sample":
        return z0
    raise ValueError(f"scheduler prediction_type={kind!r} is not supported by stage-I training")


def stage1_loss(
    model, vae, scheduler, batch: Mapping[str, Any], device, sharpen_gt: bool = False
) -> tuple[torch.Tensor, dict]:
    """Eq. 2 (+ balance loss) on one micro-batch; ``model`` may be the DDP wrapper of the denoiser.

    ``sharpen_gt``: unsharp-mask the GT before encoding it (``stage1.usm_gt``). The parts (detached): ``eps_loss``,
    ``balance_loss`` and the ``routing`` record of the micro-batch (one dict per scale, as the denoiser returns it).
    """
    lq = batch["lq"].to(device, non_blocking=True)  # (B, 3, H, W) in [0, 1]
    gt = batch["gt"].to(device, non_blocking=True)  # (B, 3, H, W)
    if sharpen_gt:
        gt = usm_sharpen(gt)  # (B, 3, H, W)
    labels = batch["label"].to(device)  # (B,)
    with torch.no_grad():
        z_lq, z0 = encode_pair(vae, lq, gt)  # (B, 4, h, w) each
    noise = torch.randn_like(z0)  # (B, 4, h, w)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],), device=z0.device)  # (B,)
    z_t = scheduler.add_noise(z0, noise, t)  # (B, 4, h, w)
    out = model(z_t, t, z_lq, lq_image=lq, task_labels=labels, return_aux=True)
    eps_loss = F.mse_loss(out.sample.float(), diffusion_target(scheduler, z0, noise, t).float())
    balance = out.balance_loss.float()  # ()
    routing = [{k: (v.detach() if torch.is_tensor(v) else v) for k, v in r.items()} for r in out.routing]
    return eps_loss + balance, {"eps_loss": eps_loss.detach(), "balance_loss": balance.detach(), "routing": routing}


@torch.no_grad()
def fixed_batch_loss(denoiser, vae, scheduler, batch: Mapping[str, Any], seed: int = 0) -> float:
    """Eq. 2 on a fixed batch with fixed noise and timesteps, eval mode (deterministic routing); RNG untouched.

    Used to show learning: the value before training and after it use the same ``z_0``, ``eps`` and ``t``.
    """
    was_training = denoiser.training
    denoiser.eval()
    device = vae.device
    try:
        lq, gt = batch["lq"].to(device), batch["gt"].to(device)
        z_lq, z0 = encode_lq(vae, lq), encode_lq(vae, gt)  # (B, 4, h, w)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(z0.shape, generator=g).to(device)  # (B, 4, h, w)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],), generator=g).to(device)  # (B,)
        z_t = scheduler.add_noise(z0, noise, t)
        pred = denoiser(z_t, t, z_lq, lq_image=lq, task_labels=batch["label"].to(device))
        return float(F.mse_loss(pred.float(), diffusion_target(scheduler, z0, noise, t).float()))
    finally:
        denoiser.train(was_training)


def fixed_batch(dataset: PairedCropDataset, size: int) -> dict[str, Any]:
    """The first ``size`` rows, each with augmentation seed 0: the same batch in every run."""
    items = [dataset[SampleKey(i % len(dataset), 0, 0, 0)] for i in range(size)]
    return torch.utils.data.default_collate(items)


# ------------------------------------------------------------------------------------------ training
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_stage1_optimizer(denoiser, s1) -> torch.optim.Optimizer:
    """Adam/AdamW on the trained parts: the prompt module at ``lr * prompt_lr_scale``, SPADE (+ V2T) at
    ``lr * injection_lr_scale`` (one group each; both scales 1 by default, i.e. one constant lr, §4.1)."""
    if s1.optimizer not in OPTIMIZERS:
        raise ValueError(f"stage1.optimizer={s1.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    prompt = {id(p) for p in denoiser.prompt_module.parameters()}
    params = list(denoiser.trainable_parameters())
    groups = [
        {"params": [p for p in params if id(p) in prompt], "lr": s1.lr * s1.prompt_lr_scale},
        {"params": [p for p in params if id(p) not in prompt], "lr": s1.lr * s1.injection_lr_scale},
    ]
    return OPTIMIZERS[s1.optimizer](
        [g for g in groups if g["params"]], lr=s1.lr, betas=tuple(s1.betas), weight_decay=s1.weight_decay
    )


def _build_model(cfg):
    from moediffir.weights.builders import build_backbone, build_denoiser

    unet, vae, scheduler = build_backbone(cfg)
    denoiser = build_denoiser(cfg, unet=unet)
    denoiser.attach_vae(vae)  # the released V2T form decodes z_lq itself
    return denoiser, vae, scheduler


def _check_frozen(denoiser, vae) -> None:
    trainable = {id(p) for p in denoiser.trainable_parameters()}
    for name, p in list(denoiser.named_parameters()) + [(f"vae.{n}", p) for n, p in vae.named_parameters()]:
        if p.requires_grad and id(p) not in trainable:
            raise RuntimeError(f"stage I: {name} requires grad but is not a trained part (the backbone must be frozen)")
    if not trainable:
        raise RuntimeError("stage I: the model has no trainable parameters")


def train_stage1(cfg, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Train stage I for ``cfg.stage1.max_steps`` optimiser steps; return the model folder ``<run_dir>/model``.

    Args:
        cfg: resolved config (``moediffir.config.resolve_config``); the benchmark must exist.
        resume: continue from the newest checkpoint in ``<stage dir>/checkpoints`` (a fresh start if none).
            Without it, a stage folder holding checkpoints is refused unless ``overwrite``.
        overwrite: start afresh over an earlier run: its checkpoints and logs are removed once the data and
            the networks are ready (never before).
        progress: show a progress bar on the main process.

    Raises:
        BenchmarkMissingError: no benchmark (the message names ``moediffir data build --profile ...``).
        TrainingConfigError: resuming with settings that differ from the checkpoint's.
        FolderLockedError: another run is writing the stage folder (the message names it); nothing was changed.
    """
    with stage_lock(stage_dir(cfg, STAGE)):  # one run per stage folder; the ranks of one launch share it
        return _train_stage1(cfg, resume, progress, overwrite)


def _setup(cfg, accelerator, pairs):
    """The stage-I model, data and optimiser on ``accelerator``, seeded alike on every process:
    ``(model, denoiser, vae, scheduler, dataset, eval_batch, optimizer, lr_scheduler)``."""
    from accelerate.utils import set_seed

    s1 = cfg.stage1
    set_seed(cfg.seed)  # identical initialisation on every process
    denoiser, vae, scheduler = _build_model(cfg)
    _check_frozen(denoiser, vae)
    if s1.gradient_checkpointing:
        denoiser.unet.enable_gradient_checkpointing()
    vae.to(accelerator.device)
    dataset = PairedCropDataset(cfg.benchmark_dir, pairs, s1.crop_size, augment=s1.augment)
    eval_batch = fixed_batch(dataset, s1.batch_size)
    optimizer = build_stage1_optimizer(denoiser, s1)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant (§4.1)
    model, optimizer = accelerator.prepare(denoiser, optimizer)
    return model, accelerator.unwrap_model(model), vae, scheduler, dataset, eval_batch, optimizer, lr_scheduler


def _train_stage1(cfg, resume: bool, progress: bool, overwrite: bool) -> Path:
    """The run of :func:`train_stage1`, inside the lock of its stage folder (the shared loop: :class:`StageRun`)."""
    from accelerate.utils import set_seed

    s1 = cfg.stage1
    if s1.grad_accum < 1 or s1.batch_size < 1 or s1.max_steps < 0:
        raise ValueError(f"stage1: batch_size={s1.batch_size}, grad_accum={s1.grad_accum}, max_steps={s1.max_steps}")
    pairs = training_pairs(cfg)  # fails early, before any network is built, when the benchmark is missing
    check_fresh_start(stage_dir(cfg, STAGE), resume, overwrite)
    accelerator = make_accelerator(cfg, s1.mixed_precision)
    run = StageRun(cfg, STAGE, accelerator, s1, resume)
    model, denoiser, vae, scheduler, dataset, eval_batch, optimizer, lr_scheduler = _setup(cfg, accelerator, pairs)
    params = list(denoiser.trainable_parameters())
    set_seed(cfg.seed, device_specific=True)  # per-process noise streams (rank 0 keeps cfg.seed)
    objects = {"modules": {"denoiser": denoiser}, "optimizers": {"adam": optimizer}, "schedulers": {"lr": lr_scheduler}}
    meta = run.resume(**objects)
    samples_seen, eval_start = int(meta.get("samples_seen", 0)), meta.get("eval_loss_start")
    if eval_start is None:
        eval_start = fixed_batch_loss(denoiser, vae, scheduler, eval_batch, seed=cfg.seed)
    it = run.start(dataset, progress, "stage I", unit="step")
    stats = RoutingStats(cfg.model.num_tasks)

    def state() -> dict[str, Any]:  # what a checkpoint records beside the sampler position, read when it is saved
        return {"samples_seen": samples_seen, "eval_loss_start": eval_start}

    model.train()
    while run.running:
        micro_losses, micro_bal = [], []
        for micro in range(s1.grad_accum):
            batch = next(it)
            with contextlib.nullcontext() if micro == s1.grad_accum - 1 else accelerator.no_sync(model):
                with accelerator.autocast():
                    loss, parts = stage1_loss(model, vae, scheduler, batch, accelerator.device, s1.usm_gt)
                accelerator.backward(loss / s1.grad_accum)
            micro_losses.append(parts["eps_loss"])
            micro_bal.append(parts["balance_loss"])
            stats.update(parts["routing"], batch["label"])
            run.consumed(batch)
        if s1.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, s1.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        samples_seen += s1.batch_size * s1.grad_accum * run.world
        run.end_step({"loss": torch.stack(micro_losses).mean(), "balance": torch.stack(micro_bal).mean()})
        if run.log_due:
            means, per_s = run.flush()
            stats.reduce(run.reduce_sum)
            losses = means["loss"]
            run.write({"step": run.step, "loss": float(losses.mean()), "loss_last": float(losses[-1]),
                       "balance_loss": float(means["balance"].mean()), "lr": float(lr_scheduler.get_last_lr()[0]),
                       "epoch": run.epoch, "samples_seen": samples_seen, "samples_per_s": per_s,
                       **stats.summary()}, losses)
            stats.reset()
        run.checkpoint(**objects, state=state)
    run.finish(lambda: run.checkpoint(**objects, state=state, force=True))
    eval_end = fixed_batch_loss(denoiser, vae, scheduler, eval_batch, seed=cfg.seed)
    folder = model_dir(cfg)
    if run.main:
        _write_stage1(cfg, run, folder, denoiser, vae, scheduler, params, accelerator, samples_seen, eval_start,
                      eval_end)
    run.done()
    return folder


def _write_stage1(cfg, run: StageRun, folder: Path, denoiser, vae, scheduler, params, accelerator,
                  samples_seen: int, eval_start: float, eval_end: float) -> None:
    """The model folder and ``summary.json`` of a finished stage-I run (main process)."""
    from moediffir.data.tasks import label_names
    from moediffir.weights.model_folder import save_model_folder

    save_model_folder(folder, cfg, denoiser, vae, scheduler, info={"stage1": {
        "steps": run.step, "samples_seen": samples_seen, "eval_loss_start": eval_start, "eval_loss_end": eval_end}})
    atomic_write_json(run.out / "summary.json", {
        **run.summary(), "samples_seen": samples_seen, "world_size": run.world, "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision, "eval_loss_start": eval_start, "eval_loss_end": eval_end,
        "trainable_parameters": sum(p.numel() for p in params),
        "task_names": {str(k): v for k, v in label_names(cfg.data.preset).items()}, "model_dir": str(folder),
        "weights": backbone_provenance(cfg),
    })


def stage1_epochs(cfg, n_pairs: int) -> float:
    """How many passes over ``n_pairs`` training pairs ``cfg.stage1`` makes (for the notebooks)."""
    s1 = cfg.stage1
    return s1.max_steps * s1.batch_size * s1.grad_accum / max(1, n_pairs) if n_pairs else math.nan
