"""The profiles ``smoke``, ``mini`` and ``paper`` (docs/design.md §2) and the ``released`` recipe (the released
code's choices wherever they differ from the paper's text; docs/fidelity.md).

Profiles differ only in numbers and weight sources, never in code path: ``paper`` is the sections' defaults (paper
§3.5, §4.1), ``smoke`` tiny random networks on a CPU, ``mini`` a small prior trained here in stage 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moediffir.config.sections import (
    AblationConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PriorConfig,
    SampleConfig,
    Stage1Config,
    Stage2Config,
)

PROFILES = ("smoke", "mini", "paper")


def _paper() -> Config:
    return Config(profile="paper")


def _smoke() -> Config:
    return Config(
        profile="smoke",
        data=DataConfig(
            preset="paper",
            datasets_dir="data/smoke",
            train_sets=("smoke_train",),
            test_sets=("smoke_test",),
            learned_weights="random",
            x265_preset="medium",
            x264_preset="medium",
            vvenc_preset="faster",
        ),
        model=ModelConfig(
            backbone="tiny",
            sd_source="tiny",
            prompt_dim=32,
            vit_depth=1,
            vit_heads=2,
            mlp_ratio=2.0,
            spade_hidden=16,
            dp_backend="tiny",
            v2t_backend="tiny",
            v2t_num_tokens=4,
            enhancer_blocks=1,
            enhancer_dim=8,
        ),
        stage1=Stage1Config(
            batch_size=4, max_steps=30, crop_size=64, mixed_precision="no", gradient_checkpointing=False,
            checkpoint_every=10, log_every=5, num_workers=0, lr=1e-3,
        ),
        stage2=Stage2Config(
            num_latents=16, batch_size=4, max_steps=20, crop_size=64, mixed_precision="no",
            checkpoint_every=10, log_every=5, shard_size=8, gan_start_step=10, lr=1e-3,
            gradient_checkpointing=False, num_workers=0, disc_channels=16, disc_layers=2,
        ),
        sample=SampleConfig(num_steps=4, tile_size=64, tile_overlap=16, batch_size=4),
        eval=EvalConfig(
            metrics=("psnr", "ssim", "lpips", "fid", "clipiqa", "maniqa"),
            metric_weights="random",
            test_sets=("smoke_test",),
            max_images=2,  # two images per task (FID needs two): every codec, level and unseen task is evaluated
            maniqa_crops=1,  # metrics: one ViT-B/8 crop keeps MANIQA ~2 s per image on CPU
            tasks=(),  # all seen and unseen tasks
        ),
        ablation=AblationConfig(
            n_values=(1, 4, 7), k_values=(1, 3, 7), test_set="smoke_test", train_steps=10,
            design_sets=("smoke_test",), cross_degree_set="smoke_test", cross_degree_codecs=("jpeg", "vvc"),
            cross_type_set="smoke_test", v2t_dp_sets=("smoke_test",),
            tasks=("jpeg_q10", "webp_q10", "jpeg_q25", "avc_qp37"), max_images=1,
        ),
    )


def _mini() -> Config:
    """CPU, no downloads: stage 0 trains a small prior (8 latent channels at factor 4, v-prediction) on the
    bundled photos of ``data/mini``; the traditional codecs only (learned codecs would need weights trained
    here too); every network is small enough to train in minutes on two cores."""
    return Config(
        profile="mini",
        data=DataConfig(
            preset="paper", datasets_dir="data/mini", train_sets=("mini_train",), test_sets=("mini_test",),
            codecs=("jpeg", "webp", "hevc", "vvc"), learned_weights="random",
            x265_preset="medium", x264_preset="medium", vvenc_preset="faster",
        ),
        model=ModelConfig(
            backbone="sd21", sd_source="", prompt_dim=64, vit_depth=1, vit_heads=4, mlp_ratio=2.0, num_scales=3,
            spade_hidden=32, use_dp=False, dp_backend="tiny", use_v2t=False, v2t_backend="tiny", v2t_num_tokens=4,
            enhancer_blocks=1, enhancer_dim=8,
        ),
        stage1=Stage1Config(  # 1600 steps: stage I restores JPEG QF 10 at 22.0 dB, LPIPS 0.47 (800: 21.8, 0.51)
            batch_size=8, max_steps=1600, crop_size=64, mixed_precision="no", gradient_checkpointing=False,
            checkpoint_every=200, log_every=10, num_workers=0, lr=5e-4,
        ),
        # 512 latents, 3000 steps at lr 2e-3, loss 0.05 LPIPS + L1, no GAN term (gan_start_step = max_steps). On one
        # stage-I model the full method restored the seen tasks at 24.9 dB / LPIPS 0.235 at lr 5e-4 with LPIPS
        # weight 1; 26.0 / 0.225 at 2e-3 with weight 0.25 and 26.4 / 0.227 with 0.05 (1500 steps); 26.7 / 0.219,
        # LPIPS under the input on 12 of 12 tasks, with 0.05 and 3000 steps; L1 alone 26.5 / 0.263 (docs/design.md §10)
        stage2=Stage2Config(
            num_latents=512, batch_size=8, max_steps=3000, crop_size=64, mixed_precision="no", checkpoint_every=250,
            log_every=10, shard_size=128, gan_start_step=3000, lr=2e-3, lpips_weight=0.05, gradient_checkpointing=False,
            num_workers=0, disc_channels=16, disc_layers=2,
        ),
        # DDIM, 10 steps: deterministic (the stochastic samplers add noise this small prior does not remove);
        # notebook 06's sampler study, full method on JPEG QF 10: 26.7 dB / LPIPS 0.209 against 26.2 / 0.211 with
        # 50 steps and 24.8 / 0.215 with DDPM's 200. Wavelet colour fix (StableSR's; the paper's settings have none):
        # the input's lowest band replaces the output's, where this small prior drifts; on the 12 seen tasks the
        # full method 26.72 -> 27.19 dB, LPIPS 0.218 -> 0.216; stage I alone 22.39 -> 23.88 (docs/design.md §10)
        sample=SampleConfig(scheduler="ddim", num_steps=10, fusion_weight=1.0, tile_size=256, tile_overlap=32,
                            color_fix="wavelet", batch_size=6),
        eval=EvalConfig(metrics=("psnr", "ssim", "lpips"), test_sets=("mini_test",), max_images=0, tasks=(),
                        yardsticks=True, sampler_study_steps=(10, 20, 50), sample_spread_samples=8),
        ablation=AblationConfig(
            n_values=(1, 4, 7), k_values=(1, 3, 7), test_set="mini_test", train_steps=100,
            design_sets=("mini_test",), cross_degree_set="mini_test", cross_degree_codecs=("vvc",),
            cross_type_set="mini_test", v2t_dp_sets=("mini_test",),
            tasks=("jpeg_q10", "webp_q10", "hevc_qp42", "vvc_qp42", "jpeg_q25", "vvc_qp32", "vvc_qp52", "avc_qp42"),
            max_images=6, metrics=("psnr", "ssim", "lpips"),
        ),
        prior=PriorConfig(enabled=True),
    )


#: The defaults of each profile, made afresh on each call.
PROFILE_FACTORIES: dict[str, Callable[[], Config]] = {"paper": _paper, "smoke": _smoke, "mini": _mini}

# ------------------------------------------------------------------------------------------- recipes
RECIPES = ("paper", "released")
# What ``model.recipe="released"`` sets: the released code's choice wherever it differs from the paper's text
# (the defaults of :mod:`moediffir.config.sections`). Method switches apply in every profile; RECIPE_PAPER_SCALE (the released
# configs' training numbers and network widths) only in the ``paper`` profile, where the numbers are the real
# run's (the small profiles keep their small networks). Explicit overrides given with the recipe win over both.
RECIPE_VALUES: dict[str, dict[str, Any]] = {
    "released": {
        "model.routing": "task",  # per-token Linear(256, 2N) gate chosen by the task label
        "model.router_input": "attention",  # the gate reads CrossAttention(tokens, DA-CLIP tokens) only
        "model.gate_init": "zeros",
        "model.noise_epsilon": 0.01,
        "model.noisy_gating_in_eval": True,  # the released router adds noise at inference too
        "model.renormalize_gates": False,  # kept top-K softmax values (+1e-5), not renormalised
        "model.prompt_init": "uniform",
        "model.vit_final_norm": True,
        "model.v2t_form": "released",  # latent enhancer -> VAE decode -> RN50 -> conv + 49 tokens + bias-free MLP
        "data.preset": "official",
        "stage1.augment": False,  # use_hflip / use_rot: False
        "stage1.usm_gt": True,
        "stage1.optimizer": "adamw",
        "stage1.weight_decay": 0.01,
        "stage1.prompt_lr_scale": 2.0,
        "stage1.injection_lr_scale": 0.0,
        "stage2.fusion_block": "rrdb",
        "stage2.lpips_net": "vgg",
        "stage2.betas": (0.5, 0.9),
        "sample.fusion_weight": 1.0,
    },
}
RECIPE_PAPER_SCALE: dict[str, dict[str, Any]] = {
    "released": {
        "model.enhancer_dim": 256,  # the released enhancer's width (its Restormer blocks at 256 channels)
        "stage1.lr": 1e-4,  # base_learning_rate, not scaled (main.py --scale_lr defaults to False)
        "stage1.max_steps": 800_000,
        "stage1.batch_size": 2,  # per GPU
        "stage2.lr": 5e-5,
        "stage2.batch_size": 1,
        "stage2.grad_accum": 8,
        "stage2.gan_start_step": 501,
    },
}


def recipe_overrides(recipe: str, profile: str) -> dict[str, Any]:
    """The dotted keys ``model.recipe=recipe`` sets in ``profile`` (empty for ``paper``)."""
    if recipe not in RECIPES:
        raise ConfigError(f"override 'model.recipe': {recipe!r}; choose one of {list(RECIPES)}")
    values = dict(RECIPE_VALUES.get(recipe, {}))
    if profile == "paper":
        values.update(RECIPE_PAPER_SCALE.get(recipe, {}))
    return values
