"""The values each config key may take: one table of words and one of ranges (checked by ``validate_config``).

Types are checked by :mod:`moediffir.config.resolve`; here are the keys that take one of a few words, or a
number in a range, next to what is allowed. :func:`moediffir.config.resolve_config` refuses anything else with
one line naming the key, the value and what is allowed, before any work. The words are those of the modules
that read the keys (codecs, prompt designs, schedulers, ...; tests/config/test_config.py checks that both agree).
Every float setting must be finite (NaN passes every range check, since each comparison with it is false), a
range applies to each item of a list setting, and batch sizes are at most :data:`MAX_BATCH`.
"""

from __future__ import annotations

import math
import re
from typing import Any

_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                 "placebo")
_PRECISIONS = ("no", "fp16", "bf16")
#: the pipeline's decoders (a call argument, ``decoder=``, not a config key): the decoder compensator (paper §3.4,
#: Eq. 4) or the plain VAE decoder
DECODERS = ("compensator", "vae")
CHOICES: dict[str, tuple[str, ...]] = {
    "data.preset": ("paper", "official"),
    "data.codecs": ("jpeg", "webp", "hevc", "avc", "vvc", "c_psnr", "c_ssim", "hific"),  # each item
    "data.learned_weights": ("pretrained", "random"),
    "data.hevc_backend": ("x265", "hm"),
    "data.x265_preset": _X26X_PRESETS,
    "data.avc_backend": ("x264",),
    "data.x264_preset": _X26X_PRESETS,
    "data.vvc_backend": ("ffmpeg", "vvencapp", "vtm"),
    "data.vvenc_preset": ("faster", "fast", "medium", "slow", "slower"),
    "data.yuv_matrix": ("bt601", "bt709"),
    "data.yuv_range": ("limited", "full"),
    "model.backbone": ("sd21", "tiny"),
    "prior.vae_kind": ("patch", "kl"),
    "model.prompt_design": ("none", "single", "multi", "moe"),
    "model.routing": ("blind", "task"),
    "model.dp_backend": ("daclip", "clip", "tiny"),
    "model.v2t_backend": ("clip_rn50", "tiny"),
    "model.v2t_form": ("kit", "released"),
    "model.recipe": ("paper", "released"),
    "model.spade_form": ("residual", "output"),
    "model.router_input": ("residual", "attention"),
    "model.gate_init": ("normal", "zeros"),
    "model.prompt_init": ("normal", "uniform"),
    "stage1.optimizer": ("adam", "adamw"),
    "stage2.fusion_block": ("sft", "rrdb"),
    "stage2.lpips_net": ("alex", "vgg"),
    "stage1.mixed_precision": _PRECISIONS,
    "stage2.mixed_precision": _PRECISIONS,
    "sample.scheduler": ("ddpm", "ddim", "dpmpp_2m", "euler", "euler_a", "unipc"),
    "sample.tile_blend": ("gaussian", "linear"),
    "sample.color_fix": ("none", "wavelet", "adain"),
    "sample.dtype": ("fp32", "fp16", "bf16"),
    "eval.metrics": ("psnr", "ssim", "lpips", "fid", "clipiqa", "maniqa"),  # each item
    "eval.color_space": ("rgb", "y"),
    "eval.lpips_net": ("alex", "vgg"),
    "eval.metric_weights": ("pretrained", "random"),
    "ablation.metrics": ("psnr", "ssim", "lpips", "fid"),  # each item
    "prior.prediction_type": ("epsilon", "v_prediction", "sample"),
}
_COUNT, _POSITIVE, _SIZE = (0, None), (1, None), (8, None)
#: Largest batch size allowed: no machine holds 4096 images of the kit's crops at once, so more is a typo.
MAX_BATCH = 4096
_BATCH = (1, MAX_BATCH)
#: ``key: (lowest, highest)`` allowed (inclusive; None: no bound). Floats marked ``> 0`` below must be positive.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, 2**32 - 1),  # what NumPy's seeding takes
    "data.png_compress_level": (0, 9), "data.workers": _COUNT, "data.train_tile": _COUNT,
    "data.max_train_images": _COUNT, "data.max_test_images": _COUNT,
    **{f"model.{k}": _POSITIVE for k in ("prompt_dim", "vit_depth", "vit_heads", "num_scales", "num_prompts",
                                         "top_k", "num_tasks", "spade_hidden", "v2t_num_tokens", "enhancer_dim")},
    "model.enhancer_blocks": _COUNT, "model.balance_loss_weight": (0.0, None), "model.mlp_ratio": (0.0, None),
    **{f"{s}.{k}": _POSITIVE for s in ("stage1", "stage2") for k in ("grad_accum", "checkpoint_every", "log_every")},
    "stage1.batch_size": _BATCH, "stage2.batch_size": _BATCH,
    **{f"{s}.{k}": _COUNT for s in ("stage1", "stage2") for k in ("max_steps", "num_workers", "keep_checkpoints")},
    "stage1.crop_size": _SIZE, "stage2.crop_size": _SIZE, "stage1.lr": (0.0, None), "stage2.lr": (0.0, None),
    "stage1.max_grad_norm": (0.0, None), "model.noise_epsilon": (0.0, None), "stage1.weight_decay": (0.0, None),
    "stage1.prompt_lr_scale": (0.0, None), "stage1.injection_lr_scale": (0.0, None),
    "stage2.num_latents": _POSITIVE, "stage2.shard_size": _POSITIVE, "stage2.gan_start_step": _COUNT,
    "stage2.lpips_weight": (0.0, None), "stage2.l1_weight": (0.0, None), "stage2.gan_weight": (0.0, None),
    "stage2.train_fusion_weight": (0.0, 1.0), "stage2.sample_steps": _COUNT, "stage2.disc_channels": _POSITIVE,
    "stage2.disc_layers": _POSITIVE,
    "sample.num_steps": _POSITIVE, "sample.fusion_weight": (0.0, 1.0), "sample.tile_size": (64, None),
    "sample.tile_overlap": _COUNT, "sample.batch_size": _BATCH,
    "eval.crop_border": _COUNT, "eval.max_images": _COUNT, "eval.maniqa_crops": _POSITIVE,
    "ablation.train_steps": _COUNT, "ablation.nk_top_k": _POSITIVE, "ablation.max_images": _COUNT,
    "prior.crop_size": _SIZE, "prior.vae_batch_size": _BATCH, "prior.unet_batch_size": _BATCH,
    **{f"prior.{k}": _POSITIVE for k in ("latent_channels", "vae_channels", "vae_layers_per_block", "vae_steps",
                                         "unet_channels", "unet_layers_per_block", "cross_attention_dim",
                                         "attention_head_dim", "unet_steps", "checkpoint_every", "log_every",
                                         "keep_checkpoints")},
    "prior.vae_lr": (0.0, None), "prior.unet_lr": (0.0, None), "prior.vae_kl_weight": (0.0, None),
    "prior.vae_latent_noise": (0.0, None), "prior.vae_whiten": (0.0, 1.0), "prior.unet_norm_groups": (0, 32),
}
_STRICTLY_POSITIVE = ("stage1.lr", "stage2.lr", "model.mlp_ratio", "prior.vae_lr", "prior.unet_lr")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def allowed_values(key: str) -> tuple[str, ...]:
    """The words ``key`` may take (:data:`CHOICES`), e.g. for a command-line ``choices=``."""
    return CHOICES[key]


def _check_value(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for ``key`` (None when allowed)."""
    if key in CHOICES:
        items = value if isinstance(value, (list, tuple)) else (value,)
        bad = [v for v in items if v not in CHOICES[key]]
        if bad:
            return f"{bad[0]!r} is not allowed; choose one of {', '.join(CHOICES[key])}"
    if key in RANGES:
        for item in value if isinstance(value, (list, tuple)) else (value,):
            problem = _range_problem(key, item)
            if problem:
                return problem
    if key == "device" and not _DEVICE_RE.match(str(value)):
        return f"{value!r} is not a device; use auto, cpu, cuda or cuda:N"
    return None


def _range_problem(key: str, value: float) -> str | None:
    """What is wrong with one number ``value`` for ``key`` of :data:`RANGES` (None when inside)."""
    lo, hi = RANGES[key]
    if key in _STRICTLY_POSITIVE and value <= 0:
        return f"{value!r} is not allowed; it must be > 0"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else f">= {lo}"
        return f"{value!r} is out of range; it must be {bounds}"
    return None


def _non_finite(values: dict[str, Any]) -> str | None:
    """The first float setting (or list item) that is NaN or infinite, as a one-line message."""
    for section, holder in values.items():
        entries = holder.items() if isinstance(holder, dict) else [("", holder)]
        for name, value in entries:
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(item, float) and not math.isfinite(item):
                    key = f"{section}.{name}" if name else section
                    return f"config key {key!r}: {item!r} is not allowed; it must be a finite number"
    return None


def _prior_crop_problem(values: dict[str, Any]) -> str | None:
    """``prior.crop_size`` must be a multiple of the prior autoencoder's factor ``2**(len(vae_channels) - 1)``."""
    prior = values.get("prior", {})
    if "crop_size" not in prior or "vae_channels" not in prior:
        return None
    factor = 2 ** max(len(prior["vae_channels"]) - 1, 0)
    if prior["crop_size"] % factor:
        return (f"config key 'prior.crop_size': {prior['crop_size']!r} is not allowed; it must be a multiple of "
                f"{factor}, the autoencoder's factor 2**(len(prior.vae_channels) - 1)")
    return None


def _prior_groups_problem(values: dict[str, Any]) -> str | None:
    """``prior.unet_norm_groups`` (when not 0) must divide every width of ``prior.unet_channels``."""
    prior = values.get("prior", {})
    groups, widths = prior.get("unet_norm_groups", 0), prior.get("unet_channels", ())
    bad = [c for c in widths if groups and c % groups]
    if bad:
        return (f"config key 'prior.unet_norm_groups': {groups!r} is not allowed; it must divide every width of "
                f"prior.unet_channels={list(widths)} (not {bad}), or be 0 (chosen from the widths)")
    return None


def first_problem(values: dict[str, Any]) -> str | None:
    """The first key of a config dict (as :func:`moediffir.config.config_to_dict` gives) whose value is not
    allowed, as a one-line message; None when every value is allowed."""
    problem = _non_finite(values)
    if problem:
        return problem
    for key in ("device", *CHOICES, *RANGES):
        section, _, name = key.rpartition(".")
        holder = values.get(section, {}) if section else values
        if name not in holder:  # a key of an older or newer config (tests/config/test_config.py: every key exists)
            continue
        problem = _check_value(key, holder[name])
        if problem:
            return f"config key {key!r}: {problem}"
    return _prior_crop_problem(values) or _prior_groups_problem(values)
