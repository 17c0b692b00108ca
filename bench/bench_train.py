"""Stage-I training throughput and peak memory (paper §3.4 stage I, §4.1; docs/design.md §5).

Times the real stage-I optimiser step of :mod:`moediffir.training.stage1` (VAE encoding of LQ and GT, noising,
the MoE-DiffIR denoiser's forward and backward, Adam on the trained parts), on random images of the given size
so data loading is not measured:

- ``tiny``: the smoke networks at 64 px (CPU or CUDA, fp32 unless ``--mixed-precision``);
- ``paper``: SD 2.1-base UNet + VAE, DA-CLIP-architecture degradation prior and RN50 Visual2Text adapter, all
  with RANDOM weights (speed and memory do not depend on weight values), at 256 px; on CUDA in bf16, with and
  without gradient checkpointing of the frozen UNet, at batch 4 and 8 (the paper trains at batch 32 on four
  RTX 3090s, i.e. 8 per GPU).

Reports samples/s, seconds per step and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set size so far, which only grows). Usage::

    python bench/bench_train.py                           # CPU: tiny at 64 px, batch 4
    python bench/bench_train.py --device cuda             # + paper at 256 px, bf16, ckpt on/off, batch 4 and 8
    python bench/bench_train.py --device cuda --arch paper --batch 8 16 --out results/bench_train.json
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moediffir.config import resolve_config
from moediffir.utils.io import atomic_write_json

ARCHS = {"tiny": ("smoke", {}, 64), "paper": ("paper", {"model.random_backbone": True}, 256)}


def _cuda_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_arch(arch: str, mixed_precision: str, cases: list[tuple[int, int, bool]], steps: int, warmup: int,
               device: str) -> list[dict]:
    """Build ``arch`` once, then time each ``(size, batch, checkpointing)``: ``warmup`` untimed + ``steps`` timed steps."""
    from moediffir.training.runtime import make_accelerator
    from moediffir.training.stage1 import _build_model, stage1_loss

    profile, base, _ = ARCHS[arch]
    cfg = resolve_config(profile, {**base, "device": device, "stage1.mixed_precision": mixed_precision})
    accelerator = make_accelerator(cfg, mixed_precision)
    dev = accelerator.device
    torch.manual_seed(0)
    t_build = time.perf_counter()
    denoiser, vae, scheduler = _build_model(cfg)
    vae.to(dev)
    params = list(denoiser.trainable_parameters())
    opt = torch.optim.Adam(params, lr=cfg.stage1.lr, betas=tuple(cfg.stage1.betas))
    model, opt = accelerator.prepare(denoiser, opt)
    build_s = time.perf_counter() - t_build
    model.train()
    common = {"arch": arch, "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "",
              "mixed_precision": accelerator.mixed_precision, "trainable_parameters": sum(p.numel() for p in params),
              "frozen_parameters": sum(p.numel() for p in denoiser.parameters() if not p.requires_grad)
              + sum(p.numel() for p in vae.parameters()), "build_s": round(build_s, 2), "weights": "random"}
    rows = []
    for size, batch, checkpointing in cases:
        if checkpointing:
            denoiser.unet.enable_gradient_checkpointing()
        else:
            denoiser.unet.disable_gradient_checkpointing()
        g = torch.Generator().manual_seed(1)
        data = {"lq": torch.rand(batch, 3, size, size, generator=g), "gt": torch.rand(batch, 3, size, size, generator=g),
                "label": torch.randint(0, 21, (batch,), generator=g)}
        row = {**common, "size": size, "batch": batch, "gradient_checkpointing": checkpointing}

        def step(data: dict = data) -> float:
            with accelerator.autocast():
                loss, _ = stage1_loss(model, vae, scheduler, data, dev)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        try:
            for _ in range(warmup):
                step()
            _cuda_sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            losses = [step() for _ in range(steps)]
            _cuda_sync(dev)
            elapsed = time.perf_counter() - t0
            row.update(status="ok", s_per_step=elapsed / steps, samples_per_s=batch * steps / elapsed,
                       last_loss=losses[-1])
            if dev.type == "cuda":
                row["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
            else:
                row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        except torch.cuda.OutOfMemoryError:
            row.update(status="out of memory")
            opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        _print(row)
        rows.append(row)
    return rows


def _print(row: dict) -> None:
    mem = row.get("peak_mem_gib", row.get("peak_rss_gib"))
    mem_txt = f"{mem:6.2f} GiB {'GPU' if 'peak_mem_gib' in row else 'RSS'}" if mem is not None else row["status"]
    speed = f"{row['samples_per_s']:8.2f} samples/s  {row['s_per_step']:7.3f} s/step" if row["status"] == "ok" else ""
    print(f"{row['arch']:5s} {row['size']:4d}px b{row['batch']:<3d} {row['mixed_precision']:4s} "
          f"ckpt={'on ' if row['gradient_checkpointing'] else 'off'} {row['device']:7s} {speed}  {mem_txt}", flush=True)


def default_cases(device: str, archs, batches, sizes, ckpt, mp) -> list[tuple]:
    """(arch, size, batch, mixed_precision, checkpointing) of the default cases, or as asked."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    archs = archs or (["tiny", "paper"] if cuda else ["tiny"])
    cases = []
    for arch in archs:
        size_list = sizes or [ARCHS[arch][2]]
        if arch == "paper":
            batch_list = batches or [4, 8]
            ckpt_list = [True, False] if ckpt == "both" else [ckpt == "on"]
            precision = mp or ("bf16" if cuda else "no")
        else:
            batch_list = batches or [4]
            ckpt_list = [False, True] if ckpt == "both" and cuda else [ckpt == "on"]
            precision = mp or "no"
        cases += [(arch, s, b, precision, c) for s in size_list for b in batch_list for c in ckpt_list]
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--arch", nargs="*", choices=sorted(ARCHS), help="default: tiny (+ paper with CUDA)")
    p.add_argument("--batch", nargs="*", type=int, help="default: tiny 4; paper 4 and 8")
    p.add_argument("--size", nargs="*", type=int, help="image size in pixels (default: tiny 64, paper 256)")
    p.add_argument("--checkpointing", choices=("on", "off", "both"), default="both",
                   help="gradient checkpointing of the frozen UNet (default: both for paper, off for tiny on CPU)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                   help="default: bf16 for paper on CUDA, no otherwise (CPU always runs fp32)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    groups: dict[tuple[str, str], list[tuple[int, int, bool]]] = {}
    for arch, size, batch, mp, ckpt in default_cases(args.device, args.arch, args.batch, args.size,
                                                     args.checkpointing, args.mixed_precision):
        groups.setdefault((arch, mp), []).append((size, batch, ckpt))
    for (arch, mp), cases in groups.items():
        rows += bench_arch(arch, mp, cases, args.steps, args.warmup, args.device)
        gc.collect()  # the previous architecture's networks are gone now
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.out:
        atomic_write_json(args.out, {"rows": rows, "torch": torch.__version__,
                                     "note": "random weights; synthetic images; stage-I step of moediffir.training.stage1"})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
