"""Stage II: stage-I latents, then the decoder compensator trained with LPIPS (+ L1, + hinge GAN) (paper §3.4, Eq. 4).

The paper "generate[s] 70,000 latent images using the weights from the first stage and train[s] the decoder
with the corresponding LQ images and ground truth images", loss ``L_Decoder = L_lpips[z_lq, z_0, hr]`` (Eq. 4),
lr 1e-4, 0.1 M steps (§4.1). StableSR, which the paper follows, adds an L1 term and a small hinge-GAN term;
here each has its weight in the config (``stage2.lpips_weight``, ``l1_weight``, ``gan_weight`` from
``gan_start_step``). The released code (``model.recipe="released"``): VGG LPIPS (``stage2.lpips_net``), Adam
``betas`` (0.5, 0.9), the GAN term from step 501, the RRDB fusion block (``stage2.fusion_block``); its GAN
weight is 0.025 times taming's adaptive ratio ``|grad L_rec| / |grad L_GAN|`` at the decoder's last layer,
which is not reproduced here (a fixed ``gan_weight``).

1. :func:`generate_stage2_data`: ``stage2.num_latents`` LQ/GT crops of the seen training pairs (fixed,
   seeded crops, no flips: the latent belongs to that exact crop) and their ``z_0`` sampled by the stage-I model
   (``load_pipeline(<run_dir>/model).sample_latents``, ``stage2.sample_steps`` or ``sample.num_steps`` steps).
   Written in shards of ``stage2.shard_size`` (``shard_XXXXX.pt``, each atomic, with its own seeded
   generator), so a rerun skips finished shards and reproduces the same data; several processes split the
   shards. ``meta.json`` records what the data was made from; data of an older stage-I model is regenerated.
2. :func:`train_stage2`: the decoder compensator (frozen VAE copy + trainable CFW fusion,
   :mod:`moediffir.models.compensator`) decodes ``z_0`` with the LQ image's encoder features at weight
   ``stage2.train_fusion_weight``; loss ``lpips_weight * LPIPS(x, hr) + l1_weight * |x - hr| +
   gan_weight * (-D(x))``; a PatchGAN discriminator ``D`` learns ``relu(1 - D(hr)) + relu(1 + D(x))``. The
   compensator is added to the model folder, which the pipeline then decodes with.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from moediffir.config import config_to_dict
from moediffir.errors import MoEDiffIRError
from moediffir.pipelines.vae_steps import latents_for_decoder
from moediffir.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from moediffir.training.datasets import (
    PairedCropDataset,
    ResumableBatchSampler,
    SampleKey,
    item_seed,
    training_pairs,
)
from moediffir.training.logs import TrainingLog
from moediffir.training.runtime import (
    TrainingConfigError,
    check_fresh_start,
    check_resume_config,
    json_safe,
    make_accelerator,
    model_dir,
    progress_bar,
    resume_fingerprint,
    stage_dir,
    start_stage_dir,
)
from moediffir.utils.digests import model_fingerprint
from moediffir.utils.io import atomic_write_json

STAGE = "stage2"
META_NAME = "meta.json"
_DATA_SALT = 0x57A6E2  # separates the stage-II crop seeds from stage I's


class Stage2DataError(MoEDiffIRError, FileNotFoundError):
    """The stage-II latents are missing, unfinished or made from another stage-I model."""


def stage2_data_dir(cfg) -> Path:
    """``stage2.data_dir`` or ``<stage2 dir>/data``."""
    return Path(cfg.stage2.data_dir) if cfg.stage2.data_dir else stage_dir(cfg, STAGE) / "data"


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.pt"


def stage1_fingerprint(folder: str | Path) -> str:
    """:func:`~moediffir.utils.digests.model_fingerprint` of the stage-I parts of a model folder (``denoiser/``,
    the null context), so rewriting the folder with a compensator keeps it, and retraining stage I changes it."""
    try:
        return model_fingerprint(folder, ("denoiser", "null_context.safetensors"))
    except FileNotFoundError as exc:
        raise Stage2DataError(f"{folder}: no stage-I model (denoiser/ missing); train stage I first") from exc


def _require_model(cfg) -> Path:
    folder = model_dir(cfg)
    if not (folder / "denoiser").is_dir():
        raise Stage2DataError(
            f"{folder}: no stage-I model; train it first with `moediffir train stage1 --profile {cfg.profile}` "
            "(or run notebook 02)"
        )
    return folder


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def _data_meta(cfg, folder: Path, n_pairs: int, steps: int) -> dict[str, Any]:
    s2 = cfg.stage2
    return {
        "model_fingerprint": stage1_fingerprint(folder),
        "num_latents": s2.num_latents, "shard_size": s2.shard_size, "crop_size": s2.crop_size,
        "steps": steps, "scheduler": cfg.sample.scheduler, "seed": cfg.seed, "n_pairs": n_pairs,
        "benchmark": str(cfg.benchmark_dir), "preset": cfg.data.preset,
    }


def generate_stage2_data(cfg, progress: bool = True) -> Path:
    """Sample the stage-II latents (see the module docstring); return the data folder.

    Runs on one process or under ``accelerate launch`` (shard ``k`` goes to process ``k % N``).

    Raises:
        Stage2DataError: no stage-I model. BenchmarkMissingError: no benchmark.
    """
    from accelerate import PartialState

    s2 = cfg.stage2
    if s2.num_latents < 1 or s2.shard_size < 1:
        raise TrainingConfigError(f"stage2.num_latents={s2.num_latents} and stage2.shard_size={s2.shard_size} must be >= 1")
    folder = _require_model(cfg)
    pairs = training_pairs(cfg)
    out = stage2_data_dir(cfg)
    steps = s2.sample_steps or cfg.sample.num_steps
    meta = _data_meta(cfg, folder, len(pairs), steps)
    state = PartialState(cpu=cfg.device == "cpu")
    rank, world, main = state.process_index, state.num_processes, state.is_main_process
    n_shards = -(-s2.num_latents // s2.shard_size)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        old = json.loads((out / META_NAME).read_text()) if (out / META_NAME).is_file() else None
        if old is None or old.get("source") != meta:
            if old is not None:
                print(f"[stage2-data] {out}: made from other settings or another stage-I model; regenerating")
            for p in out.glob("shard_*.pt"):
                p.unlink()
            atomic_write_json(out / META_NAME, {"source": meta, "complete": False, "num_shards": n_shards})
    state.wait_for_everyone()

    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    device = "cpu" if cfg.device == "cpu" or not torch.cuda.is_available() else str(state.device)
    pipe = load_pipeline(folder, device=device, overrides={"sample.scheduler": cfg.sample.scheduler})
    pipe.set_progress_bar_config(disable=True)
    if s2.crop_size % pipe.pixel_multiple:
        raise TrainingConfigError(
            f"stage2.crop_size={s2.crop_size} must be a multiple of {pipe.pixel_multiple} (the model's pixel grid)"
        )
    dataset = PairedCropDataset(cfg.benchmark_dir, pairs, s2.crop_size, augment=False)
    order = _selection(len(pairs), s2.num_latents, cfg.seed)
    task_routing = pipe.prompt_module.uses_task_labels
    mine = [k for k in range(n_shards) if k % world == rank and not (out / shard_name(k)).is_file()]
    bar = progress_bar(progress and main, len(mine), "stage II latents")
    for k in mine:
        ids = range(k * s2.shard_size, min(s2.num_latents, (k + 1) * s2.shard_size))
        items = [dataset[SampleKey(int(order[i]), item_seed(cfg.seed, _DATA_SALT, i), 0, 0)] for i in ids]
        lq = torch.stack([it["lq"] for it in items])  # (n, 3, c, c)
        gt = torch.stack([it["gt"] for it in items])  # (n, 3, c, c)
        labels = torch.tensor([it["label"] for it in items])  # (n,)
        gen = torch.Generator(device=pipe.device).manual_seed(cfg.seed * 1_000_003 + k)
        z0 = []
        for s in range(0, len(items), cfg.sample.batch_size):
            extra = {"task_labels": labels[s : s + cfg.sample.batch_size]} if task_routing else {}
            with torch.no_grad():
                z, _ = pipe.sample_latents(lq[s : s + cfg.sample.batch_size], num_inference_steps=steps,
                                           generator=gen, **extra)
            z0.append(z.float().cpu())  # (b, 4, c/8, c/8)
        _atomic_torch_save({
            "lq": _to_uint8(lq), "gt": _to_uint8(gt), "z0": torch.cat(z0), "label": labels,
            "row": torch.tensor([int(order[i]) for i in ids]), "item": torch.tensor(list(ids)),
        }, out / shard_name(k))
        bar.update(1)
    bar.close()
    state.wait_for_everyone()
    if main:
        missing = [k for k in range(n_shards) if not (out / shard_name(k)).is_file()]
        if missing:
            raise Stage2DataError(f"{out}: shards {missing[:5]} were not written")
        atomic_write_json(out / META_NAME, {"source": meta, "complete": True, "num_shards": n_shards,
                                            "scaling_factor": float(pipe.vae.config.scaling_factor)})
    state.wait_for_everyone()
    return out


def _selection(n_pairs: int, n: int, seed: int) -> np.ndarray:
    """Which pair each of the ``n`` latents comes from: seeded permutations of the pairs, concatenated."""
    rng = np.random.default_rng([seed, _DATA_SALT])
    reps = -(-n // n_pairs)
    return np.concatenate([rng.permutation(n_pairs) for _ in range(reps)])[:n]


class LatentShardDataset(Dataset):
    """Items of the stage-II shards: ``lq``/``gt`` ``(3, c, c)`` in [0, 1], ``z0`` ``(4, c/8, c/8)``, ``label``.

    Shards are memory-mapped (``torch.load(mmap=True)``), so the 70 000-latent paper set is not held in RAM.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        meta_path = self.dir / META_NAME
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if not meta.get("complete"):
            raise Stage2DataError(f"{self.dir}: no finished stage-II latents; run `moediffir stage2-data` first")
        self.meta = meta
        n, size = meta["source"]["num_latents"], meta["source"]["shard_size"]
        self.n, self.shard_size = n, size
        self._shards: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.n

    def _shard(self, k: int) -> dict[str, torch.Tensor]:
        if k not in self._shards:
            path = self.dir / shard_name(k)
            if not path.is_file():
                raise Stage2DataError(f"{path}: missing; rerun `moediffir stage2-data`")
            self._shards[k] = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return self._shards[k]

    def __getitem__(self, key: SampleKey | int) -> dict[str, Any]:
        k = SampleKey(*key) if isinstance(key, tuple) else SampleKey(int(key), 0, 0, 0)
        shard = self._shard(k.index // self.shard_size)
        j = k.index % self.shard_size
        return {
            "lq": shard["lq"][j].float() / 255.0,  # (3, c, c)
            "gt": shard["gt"][j].float() / 255.0,  # (3, c, c)
            "z0": shard["z0"][j].float(),  # (4, c/8, c/8)
            "label": int(shard["label"][j]),
            "index": k.index, "epoch": k.epoch, "batch": k.batch,
        }


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
        z = latents_for_decoder(compensator.vae, batch["z0"].to(device))
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
# long function: set-up, resume and the training loop of paper §3.4 read in one place (accelerate state)
def train_stage2(cfg, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Train the decoder compensator for ``stage2.max_steps`` steps; add it to ``<run_dir>/model``; return it.

    Args:
        cfg: resolved config; the stage-I model and the stage-II latents (:func:`generate_stage2_data`) must exist.
        resume: continue from the newest checkpoint in ``<stage2 dir>/checkpoints`` (fresh if none).
        overwrite: start afresh over an earlier run's checkpoints (removed once everything is built).
        progress: progress bar on the main process.
    """
    from accelerate.utils import set_seed

    from moediffir.models.compensator import build_compensator
    from moediffir.pipelines.model_folder import read_model_info, save_model_folder
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    s2 = cfg.stage2
    if s2.grad_accum < 1 or s2.batch_size < 1 or s2.max_steps < 0:
        raise ValueError(f"stage2: batch_size={s2.batch_size}, grad_accum={s2.grad_accum}, max_steps={s2.max_steps}")
    folder = _require_model(cfg)
    data_dir = stage2_data_dir(cfg)
    dataset = LatentShardDataset(data_dir)
    if dataset.meta["source"]["model_fingerprint"] != stage1_fingerprint(folder):
        raise Stage2DataError(
            f"{data_dir}: latents were made by another stage-I model than {folder}; rerun "
            f"`moediffir stage2-data --profile {cfg.profile}`"
        )
    out = stage_dir(cfg, STAGE)
    ckpt_root = out / "checkpoints"
    check_fresh_start(out, resume, overwrite)
    accelerator = make_accelerator(cfg, s2.mixed_precision)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    latest = latest_checkpoint(ckpt_root) if resume else None

    set_seed(cfg.seed)
    device = accelerator.device
    pipe = load_pipeline(folder, device="cpu")  # the stage-I parts are only re-saved: keep them off the GPU
    if pipe.model_config is not None and pipe.model_config.model != cfg.model:
        raise TrainingConfigError(f"{folder}: the stage-I model was trained with other model.* settings than cfg")
    vae = pipe.vae.to(device)
    compensator = build_compensator(cfg, vae)
    if s2.gradient_checkpointing:
        compensator.enable_gradient_checkpointing()
    params = list(compensator.fusion_parameters())
    if any(p.requires_grad for p in compensator.vae.parameters()):
        raise RuntimeError("stage II: the compensator's VAE copy must be frozen")
    opt_g = torch.optim.Adam(params, lr=s2.lr, betas=tuple(s2.betas))
    lr_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda _: 1.0)
    use_gan = s2.gan_weight > 0
    disc = PatchDiscriminator(channels=s2.disc_channels, layers=s2.disc_layers).to(device) if use_gan else None
    lpips_model, lpips_label = _build_lpips(cfg, device)
    if use_gan:
        opt_d = torch.optim.Adam(disc.parameters(), lr=s2.lr, betas=tuple(s2.betas))
        model, opt_g, disc_model, opt_d = accelerator.prepare(compensator, opt_g, disc, opt_d)
        disc = accelerator.unwrap_model(disc_model)
    else:
        model, opt_g = accelerator.prepare(compensator, opt_g)
        disc_model = opt_d = None
    compensator = accelerator.unwrap_model(model)
    set_seed(cfg.seed, device_specific=True)
    eval_batch = torch.utils.data.default_collate([dataset[i % len(dataset)] for i in range(s2.batch_size)])
    weights_eval = tuple(sorted({s2.train_fusion_weight, cfg.sample.fusion_weight}))

    modules = {"compensator": compensator} | ({"discriminator": disc} if use_gan else {})
    optimizers = {"adam_g": opt_g} | ({"adam_d": opt_d} if use_gan else {})
    step, epoch, batch_pos = 0, 0, 0
    eval_start = None
    if latest is not None:
        info = read_checkpoint_info(latest)
        check_resume_config(info["meta"].get("fingerprint", {}), cfg, STAGE, str(latest))
        info = load_checkpoint(latest, modules=modules, optimizers=optimizers, schedulers={"lr_g": lr_g},
                               rank=rank, world_size=world)
        step = int(info["step"])
        epoch, batch_pos = info["meta"]["sampler"]["epoch"], info["meta"]["sampler"]["batch"]
        eval_start = info["meta"].get("eval_start")
        if main:
            print(f"[stage2] resumed from {latest} (step {step})")
    if eval_start is None:
        eval_start = compare_decoders(compensator, lpips_model, eval_batch, weights_eval)
    start_stage_dir(accelerator, cfg, out, resuming=latest is not None, config_name="train_config.json",
                    keep={data_dir.name} if data_dir.parent == out else ())
    log = TrainingLog(out, resume_step=step if latest is not None else None, enabled=main)
    sampler = ResumableBatchSampler(len(dataset), s2.batch_size, cfg.seed, rank=rank, world_size=world,
                                    start_epoch=epoch, start_batch=batch_pos)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=s2.num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator())

    def checkpoint(at: int) -> None:
        meta = {"sampler": {"epoch": epoch, "batch": batch_pos}, "eval_start": eval_start,
                "fingerprint": json_safe(resume_fingerprint(cfg, STAGE)), "config": json_safe(config_to_dict(cfg))}
        save_checkpoint(ckpt_root, at, modules=modules, optimizers=optimizers, schedulers={"lr_g": lr_g}, meta=meta,
                        rank=rank, world_size=world, barrier=accelerator.wait_for_everyone,
                        keep_last=s2.keep_checkpoints)

    def reduce_mean(values: list[torch.Tensor]) -> torch.Tensor:
        return accelerator.reduce(torch.stack(values).double().to(device), "sum").cpu() / world

    model.train()
    if disc_model is not None:
        disc_model.train()
    it = iter(loader)
    bar = progress_bar(progress and main, s2.max_steps, "stage II", initial=step)
    window: dict[str, list[torch.Tensor]] = {}
    t_window, steps_window, t_start, start_step = time.perf_counter(), 0, time.perf_counter(), step
    while step < s2.max_steps:
        gan_on = use_gan and step >= s2.gan_start_step
        fakes, reals, parts_acc = [], [], []
        # generator (compensator) pass
        for micro in range(s2.grad_accum):
            batch = next(it)
            sync = micro == s2.grad_accum - 1
            ctx = contextlib.ExitStack()
            if not sync:
                ctx.enter_context(accelerator.no_sync(model))
                if gan_on:
                    ctx.enter_context(accelerator.no_sync(disc_model))
            with ctx:
                with accelerator.autocast():
                    z = latents_for_decoder(vae, batch["z0"].to(device))  # (B, 4, h, w)
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
            epoch, batch_pos = sampler.next_position(int(batch["epoch"][0]), int(batch["batch"][0]))
        opt_g.step()
        lr_g.step()
        opt_g.zero_grad(set_to_none=True)
        d_loss = torch.zeros(())
        if gan_on:  # discriminator pass: hinge loss on the same reals and (detached) fakes
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
            d_loss = torch.stack(d_losses).mean()
        step += 1
        steps_window += 1
        parts = torch.stack(parts_acc).mean(0)
        for name, v in zip(("loss", "l1", "lpips", "g_adv"), parts):
            window.setdefault(name, []).append(v)
        window.setdefault("d_loss", []).append(d_loss.to(parts.device))
        bar.update(1)
        if step % s2.log_every == 0 or step == s2.max_steps:
            means = {k: reduce_mean(v) for k, v in window.items()}
            elapsed = time.perf_counter() - t_window
            record = {"step": step, "lr": float(lr_g.get_last_lr()[0]), "epoch": epoch, "gan_on": gan_on,
                      "samples_per_s": s2.batch_size * s2.grad_accum * world * steps_window / max(elapsed, 1e-9),
                      "lpips_net": lpips_label}
            for k, v in means.items():
                record[k] = float(v.mean())
            record["steps"] = [step - len(means["loss"]) + 1 + i for i in range(len(means["loss"]))]
            record["losses"] = [float(x) for x in means["loss"]]
            log.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window, t_window, steps_window = {}, time.perf_counter(), 0
        if step % s2.checkpoint_every == 0 or step == s2.max_steps:
            checkpoint(step)
    bar.close()
    wall = time.perf_counter() - t_start
    if latest_checkpoint(ckpt_root) is None:
        checkpoint(step)

    eval_end = compare_decoders(compensator, lpips_model, eval_batch, weights_eval)
    if main:
        from diffusers import DDPMScheduler

        info = dict(read_model_info(folder).get("info", {}))
        info["stage2"] = {"steps": step, "lpips": lpips_label, "train_fusion_weight": s2.train_fusion_weight}
        save_model_folder(folder, cfg, pipe.denoiser, vae, DDPMScheduler.from_config(pipe.scheduler.config),
                          compensator=compensator, info=info)
        atomic_write_json(out / "summary.json", {
            "steps": step, "steps_this_run": step - start_step, "wall_s_this_run": round(wall, 3),
            "steps_per_s": (step - start_step) / wall if wall > 0 and step > start_step else None,
            "world_size": world, "device": str(device), "mixed_precision": accelerator.mixed_precision,
            "eval_batch": "first stage2.batch_size latents of the training data",
            "start": eval_start, "end": eval_end, "lpips_net": lpips_label,
            "trainable_parameters": sum(p.numel() for p in params), "model_dir": str(folder),
        })
    accelerator.wait_for_everyone()
    print(f"[stage2] rank {rank}/{world} done: {step} steps", flush=True)
    return folder


