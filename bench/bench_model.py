"""Cost of MoE-DiffIR over the bare frozen SD UNet (paper §3.4 stage I, docs/design.md §4, §6).

For each architecture (``tiny``: smoke networks at 64 px; ``paper``: SD 2.1-base + DA-CLIP-architecture DP +
RN50 V2T, all with RANDOM weights -- timings do not depend on weight values) it measures:

- training step: forward + backward of MoE-DiffIR (gradients into the trained parts only) against the bare
  frozen UNet's forward + backward (gradient to its input latent: the same frozen-weight backward, nothing
  to update). Baseline context: 77 zero tokens (the length of SD's empty-prompt embedding).
- sampling step: one UNet evaluation with the LQ conditions prepared once per image (``prepare`` then
  ``denoise``; the prompt maps do not depend on t unless model.timestep_input) against the bare UNet forward.
  The one-off ``prepare`` cost and the uncached ``forward`` are printed too.

CPU: fp32. CUDA: the frozen parts in bf16, the trained parts in fp32 under bf16 autocast; seconds/step and
peak memory. On a fast GPU small batches are bound by kernel-launch overhead (on an H200 the bare SD UNet
step took the same time at batch 4 and 32 at 256 px), so ratios there count kernels, not FLOPs; use a
batch large enough to be compute-bound (e.g. 128 at 256 px, 32 at 512 px) for the cost of the method.
``--set model.use_v2t=false`` isolates MoE-Prompt + SPADE + DP from the V2T adapter. Usage::

    python bench/bench_model.py                      # tiny at 64 px + paper at 256 px, CPU (batch 1)
    python bench/bench_model.py --device cuda --arch paper --sizes 256 512 --batch 4 --out results/bench.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moediffir.config import parse_override, resolve_config
from moediffir.models.denoiser import MoEDiffIRDenoiser
from moediffir.utils.io import atomic_write_json
from moediffir.weights.builders import build_denoiser

PART_KEYS = (
    "dp_s",
    "v2t_s",
    "prompt_module_s",
    "spade_modulation_s",
    "v2t_train_s",
    "clip_train_s",
    "clip_train_unfolded_s",
    "clip_fold_speedup",
)
ARCHS = {
    "tiny": ("smoke", {}),
    "paper": ("paper", {"model.random_backbone": True}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds per call and peak CUDA memory in GiB (0 on CPU) over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return statistics.median(times), peak


def build(
    arch: str, device: torch.device, half: torch.dtype | None, grad_ckpt: bool, extra: dict | None = None
) -> MoEDiffIRDenoiser:
    profile, overrides = ARCHS[arch]
    torch.manual_seed(0)
    d = build_denoiser(resolve_config(profile, {**overrides, **(extra or {})}))
    d.to(device)
    if half is not None:  # frozen parts in half precision; trained parts stay fp32 (autocast)
        d.unet.to(half)
        if d.degradation_prior is not None:
            d.degradation_prior.to(half)
    if grad_ckpt:
        d.unet.enable_gradient_checkpointing()
    return d


def bench_arch(
    arch: str,
    size: int,
    batch: int,
    device: torch.device,
    half: torch.dtype | None,
    warmup: int,
    repeats: int,
    grad_ckpt: bool,
    extra: dict | None = None,
) -> dict:
    d = build(arch, device, half, grad_ckpt, extra)
    h = size // 8
    g = torch.Generator().manual_seed(0)
    img = torch.rand(batch, 3, size, size, generator=g).to(device)
    z_t = torch.randn(batch, 4, h, h, generator=g).to(device)
    z_lq = torch.randn(batch, 4, h, h, generator=g).to(device)
    target = torch.randn(batch, 4, h, h, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    empty_ctx = torch.zeros(batch, 77, d.unet.config.cross_attention_dim, device=device)
    autocast = (
        torch.autocast(device.type, dtype=half)
        if half is not None
        else torch.autocast(device.type, enabled=False)
    )
    params = list(d.trainable_parameters())

    def moe_train() -> None:
        for p in params:
            p.grad = None
        with autocast:
            eps = d(z_t, t, z_lq, lq_image=img)
        (eps.float() - target).square().mean().backward()

    def moe_forward() -> None:
        with torch.no_grad(), autocast:
            d(z_t, t, z_lq, lq_image=img)

    cond_holder = {}

    def moe_prepare() -> None:
        with torch.no_grad(), autocast:
            cond_holder["c"] = d.prepare(z_lq, t, lq_image=img)

    def moe_step() -> None:
        with torch.no_grad(), autocast:
            d.denoise(z_t, t, cond_holder["c"])

    def components() -> dict:
        """Forward cost of each conditioning part (no grad), to see where the overhead sits."""
        out = {}
        with torch.no_grad(), autocast:
            dp = None
            if d.degradation_prior is not None:
                out["dp_s"], _ = timed(lambda: d.degradation_prior(img), device, warmup, repeats)
                dp = d.degradation_prior(img)
            if d.v2t is not None:
                out["v2t_s"], _ = timed(lambda: d.v2t(img), device, warmup, repeats)
            out["prompt_module_s"], _ = timed(
                lambda: d.prompt_module(z_lq, t, dp_tokens=dp), device, warmup, repeats
            )
            maps = d.prompt_module(z_lq, t, dp_tokens=dp).maps
            out["spade_modulation_s"], _ = timed(lambda: d.spade.modulations(maps), device, warmup, repeats)
        if d.v2t is not None:  # the V2T adapter's own training cost, and its frozen CLIP encoder's share
            v2t = d.v2t.train()
            v2t_params = [p for p in v2t.parameters() if p.requires_grad]
            pixels = torch.rand(batch, 3, v2t.config.image_size, v2t.config.image_size, device=device)
            pixels.requires_grad_(True)

            def v2t_train() -> None:
                for p in v2t_params:
                    p.grad = None
                with autocast:
                    ctx = v2t(img)
                ctx.float().square().mean().backward()

            def clip_train() -> None:  # the backward an enhancer needs: through the frozen encoder to its input
                pixels.grad = None
                with autocast:
                    grid = v2t.clip_grid(pixels)
                grid.float().square().mean().backward()

            out["v2t_train_s"], _ = timed(v2t_train, device, warmup, repeats)
            out["clip_train_s"], _ = timed(clip_train, device, warmup, repeats)
            v2t.fold_batchnorm = False  # the same encoder through its BatchNorm modules, for the gain of folding
            out["clip_train_unfolded_s"], _ = timed(clip_train, device, warmup, repeats)
            v2t.fold_batchnorm = True
            out["clip_fold_speedup"] = out["clip_train_unfolded_s"] / out["clip_train_s"]
        return out

    res: dict = {
        "arch": arch,
        "size": size,
        "batch": batch,
        "device": str(device),
        "overrides": extra or {},
        "dtype": "bf16 autocast" if half is not None else "fp32",
        "weights": "random",
        "grad_checkpointing": grad_ckpt,
        "trainable_params": sum(p.numel() for p in params),
        "unet_params": sum(p.numel() for p in d.unet.parameters()),
    }
    d.train()
    res["moe_train_s"], res["moe_train_peak_gib"] = timed(moe_train, device, warmup, repeats)
    d.eval()
    res["moe_forward_s"], _ = timed(moe_forward, device, warmup, repeats)
    res["moe_prepare_s"], _ = timed(moe_prepare, device, warmup, repeats)
    res["moe_step_s"], res["moe_step_peak_gib"] = timed(moe_step, device, warmup, repeats)
    res.update(components())
    with d.stock_unet() as unet:
        z_in = z_t.clone().requires_grad_(True)

        def bare_train() -> None:
            z_in.grad = None
            with autocast:
                eps = unet(z_in, t, encoder_hidden_states=empty_ctx).sample
            (eps.float() - target).square().mean().backward()

        def bare_step() -> None:
            with torch.no_grad(), autocast:
                unet(z_t, t, encoder_hidden_states=empty_ctx)

        res["bare_train_s"], res["bare_train_peak_gib"] = timed(bare_train, device, warmup, repeats)
        res["bare_step_s"], res["bare_step_peak_gib"] = timed(bare_step, device, warmup, repeats)
    res["train_ratio"] = res["moe_train_s"] / res["bare_train_s"]
    res["sample_ratio"] = res["moe_step_s"] / res["bare_step_s"]
    res["sample_ratio_uncached"] = res["moe_forward_s"] / res["bare_step_s"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["tiny", "paper", "all"], default="all")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=None,
        help="image sizes in px (default: tiny 64; paper 256 on CPU, 256 and 512 on CUDA)",
    )
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--grad-ckpt", action="store_true", help="gradient checkpointing in the UNet (stage1 default)"
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the built model, e.g. --set model.use_v2t=false (repeatable)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    half = torch.bfloat16 if device.type == "cuda" else None
    archs = ["tiny", "paper"] if args.arch == "all" else [args.arch]
    extra = dict(parse_override(o) for o in args.overrides)
    rows = []
    for arch in archs:
        default = [64] if arch == "tiny" else ([256, 512] if device.type == "cuda" else [256])
        for size in args.sizes or default:
            r = bench_arch(
                arch, size, args.batch, device, half, args.warmup, args.repeats, args.grad_ckpt, extra
            )
            rows.append(r)
            print(
                f"[{r['arch']} {r['size']}px b{r['batch']} {r['device']} {r['dtype']}, random weights"
                f"{', ' + str(extra) if extra else ''}] "
                f"train {r['moe_train_s']:.4f}s vs bare {r['bare_train_s']:.4f}s -> {r['train_ratio']:.2f}x "
                f"| "
                f"sample step {r['moe_step_s']:.4f}s vs bare {r['bare_step_s']:.4f}s -> "
                f"{r['sample_ratio']:.2f}x "
                f"(uncached {r['sample_ratio_uncached']:.2f}x, prepare {r['moe_prepare_s']:.4f}s once per "
                f"image)"
                + (
                    f" | peak GiB train {r['moe_train_peak_gib']:.2f} vs {r['bare_train_peak_gib']:.2f}, "
                    f"step {r['moe_step_peak_gib']:.2f} vs {r['bare_step_peak_gib']:.2f}"
                    if device.type == "cuda"
                    else ""
                ),
                flush=True,
            )
            parts = {
                k: round(v, 4)
                for k, v in r.items()
                if k in PART_KEYS
            }
            print(
                f"    conditioning costs (s; forward only unless *_train_s: forward + backward; clip_fold_speedup: "
                f"frozen RN50 forward + backward with BatchNorms as modules / folded): {parts}; "
                f"trainable params "
                f"{r['trainable_params'] / 1e6:.1f} M "
                f"vs UNet {r['unet_params'] / 1e6:.1f} M",
                flush=True,
            )
    if args.out is not None:
        atomic_write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
