"""A config's networks, with the published weights it asks for (paper §3.1-3.3, §4.1; docs/design.md §2, §4).

The networks are :mod:`moediffir.models`'; this module decides, from a resolved config and its provenance
(:mod:`moediffir.provenance`), whether each frozen part keeps random weights or reads its public file, and
reads it:

* :func:`build_backbone` -- the UNet, VAE and DDPM schedule: random ``tiny`` / SD 2.1 architectures, or SD
  2.1-base from ``model.sd_source`` (:mod:`moediffir.weights.loading`);
* :func:`build_degradation_prior` -- the DA-CLIP (or CLIP) ViT-B/32 image controller (§3.2, appendix A);
* :func:`build_visual2text` -- the Visual2Text adapter and its frozen CLIP RN50 (§3.3), either form;
* :func:`build_denoiser` -- the stage-I model: all of the above with fresh trainable parts, and the empty
  prompt's text encoding as null context where there is no V2T adapter.

A missing weight file raises :class:`~moediffir.errors.MissingWeightsError` naming where it must go, before any
network is built; a file of the wrong layout raises :class:`~moediffir.models.clip_encoders.WeightLayoutError`
listing every missing, unexpected and misshapen key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

from moediffir.models.denoiser import MoEDiffIRDenoiser, build_prompt_module
from moediffir.models.sd_backbone import BACKBONES, build_scheduler, build_unet, build_vae, freeze
from moediffir.models.spade import SpadeInjector
from moediffir.provenance import PRETRAINED, frozen_encoder_provenance, uses_degradation_prior
from moediffir.weights import weight_checks
from moediffir.weights.checkpoint_files import is_torchscript_archive, read_state_dict

if TYPE_CHECKING:
    from moediffir.models.degradation_prior import DegradationPrior

# The CLIP-family encoders (open_clip) are imported by the builders that need them, not with this module.


def build_backbone(cfg) -> tuple[UNet2DConditionModel, AutoencoderKL, DDPMScheduler]:
    """``(unet, vae, scheduler)`` for a resolved :class:`~moediffir.config.Config`; UNet and VAE frozen."""
    model = cfg.model
    if model.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {model.backbone!r} (model.backbone); choose one of {BACKBONES}")
    if model.random_weights:
        return build_unet(model.backbone), build_vae(model.backbone), build_scheduler()
    from moediffir.weights import loading  # real weights: imported only when needed

    unet, vae, scheduler = loading.load_sd_components(cfg)
    return freeze(unet), freeze(vae), scheduler


# ------------------------------------------------------------------------------ degradation prior
def load_degradation_prior_weights(model: DegradationPrior, path: str | Path,
                                   require_full_layout: bool = True) -> DegradationPrior:
    """Load the public weights file of ``model``'s backend into it (the whole file, as published).

    ``daclip``: ``daclip_ViT-B-32.pt`` as released (a ``{"state_dict": ...}`` wrapper and a ``module.``
    prefix are accepted). With ``require_full_layout`` the file must hold exactly the 631 keys/shapes of
    the fixture; either way the ``visual_control.*`` sub-tree must match the module exactly.
    ``clip``: an open_clip / OpenAI CLIP ViT-B/32 checkpoint; its ``visual.*`` sub-tree is loaded.
    """
    from moediffir.models.clip_encoders import compare_layout
    from moediffir.models.degradation_prior import load_daclip_layout

    backend = model.config.backend
    if backend == "tiny":
        raise ValueError("DegradationPrior(backend='tiny') has no public weights; it is random by design")
    path = Path(path)
    state = read_state_dict(path)
    found = {k: tuple(v.shape) for k, v in state.items()}
    if backend == "daclip" and require_full_layout:
        expected_full = {k: tuple(v) for k, v in load_daclip_layout().items()}
        compare_layout(found, expected_full, f"{path} (DA-CLIP ViT-B/32 checkpoint)")
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sub = {k: v for k, v in state.items() if k.startswith(model.prefix + ".")}
    compare_layout({k: tuple(v.shape) for k, v in sub.items()}, own, f"{path}: sub-tree '{model.prefix}.*'")
    model.load_state_dict({k: v.float() for k, v in sub.items()}, strict=True)
    return model


def build_degradation_prior(cfg, load_weights: bool | None = None) -> DegradationPrior:
    """The DP of a resolved :class:`~moediffir.config.Config` (``model.dp_backend``, ``model.dp_weights``).

    ``load_weights=None`` loads the public weights unless ``model.random_backbone`` is set (then the paper
    architecture keeps random weights; label any result as such). ``tiny`` is always random.
    """
    from moediffir.models.degradation_prior import DP_BACKENDS, DegradationPrior

    backend = cfg.model.dp_backend
    if backend not in DP_BACKENDS:
        raise ValueError(f"model.dp_backend={backend!r}: choose one of {DP_BACKENDS}")
    if load_weights is None:
        load_weights = frozen_encoder_provenance(cfg, backend) == PRETRAINED
    load_weights = load_weights and backend != "tiny"
    quick_gelu = False
    if load_weights:
        weight_checks.raise_if_missing(weight_checks.dp_weight_check(cfg))
        path = weight_checks.dp_weights_path(cfg)
        quick_gelu = backend == "clip" and is_torchscript_archive(path)  # OpenAI weights use QuickGELU
    model = DegradationPrior.for_backend(backend, quick_gelu=quick_gelu)
    if load_weights:
        load_degradation_prior_weights(model, path)
    return model


# ------------------------------------------------------------------------------------ Visual2Text
def load_clip_visual(clip_visual: nn.Module, path: str | Path, backend: str) -> None:
    """Load a frozen RN50 ``clip_visual`` (a V2T adapter's) from a CLIP checkpoint (OpenAI TorchScript
    ``RN50.pt`` or an open_clip state dict); its ``visual.*`` sub-tree must match exactly (BatchNorm
    ``num_batches_tracked`` may be absent)."""
    from moediffir.models.clip_encoders import compare_layout

    if backend == "tiny":
        raise ValueError("Visual2Text backend 'tiny' has no public weights; it is random by design")
    path = Path(path)
    state = read_state_dict(path)
    sub = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    own = clip_visual.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in sub:
            sub[key] = own[key]
    compare_layout(
        {k: tuple(v.shape) for k, v in sub.items()},
        {k: tuple(v.shape) for k, v in own.items()},
        f"{path}: CLIP RN50 sub-tree 'visual.*'",
    )
    clip_visual.load_state_dict({k: v.to(own[k].dtype) for k, v in sub.items()}, strict=True)


def build_visual2text(
    cfg, cross_attention_dim: int, load_weights: bool | None = None, latent_channels: int = 4
) -> nn.Module:
    """The V2T adapter of a resolved config; ``cross_attention_dim`` (and ``latent_channels``) from ``unet.config``.

    ``model.v2t_form``: ``kit`` (:class:`~moediffir.models.visual2text.Visual2TextAdapter`) or ``released``
    (:class:`~moediffir.models.visual2text_released.ReleasedVisual2Text`); both read ``model.v2t_backend``,
    ``model.v2t_num_tokens``, ``model.enhancer_blocks``, ``model.enhancer_dim``. ``load_weights=None`` loads the
    RN50 weights unless ``model.random_backbone`` (or backend ``tiny``).
    """
    from moediffir.models.clip_encoders import V2T_BACKENDS
    from moediffir.models.visual2text import V2T_FORMS, Visual2TextAdapter

    m = cfg.model
    if m.v2t_backend not in V2T_BACKENDS:
        raise ValueError(f"model.v2t_backend={m.v2t_backend!r}: choose one of {V2T_BACKENDS}")
    if m.v2t_form not in V2T_FORMS:
        raise ValueError(f"model.v2t_form={m.v2t_form!r}: choose one of {V2T_FORMS}")
    if load_weights is None:
        load_weights = frozen_encoder_provenance(cfg, m.v2t_backend) == PRETRAINED
    load_weights = load_weights and m.v2t_backend != "tiny"
    if load_weights:
        weight_checks.raise_if_missing(weight_checks.v2t_weight_check(cfg))
    sizes = {"num_tokens": m.v2t_num_tokens, "enhancer_blocks": m.enhancer_blocks, "enhancer_dim": m.enhancer_dim}
    if m.v2t_form == "released":
        from moediffir.models.visual2text_released import ReleasedVisual2Text

        model = ReleasedVisual2Text.for_backend(
            m.v2t_backend, cross_attention_dim, latent_channels=latent_channels, **sizes
        )
    else:
        model = Visual2TextAdapter.for_backend(m.v2t_backend, cross_attention_dim, **sizes)
    if load_weights:
        load_clip_visual(model.clip_visual, weight_checks.v2t_weights_path(cfg), model.config.backend)
    return model


# ---------------------------------------------------------------------------------------- stage I
def build_denoiser(
    cfg,
    unet: nn.Module | None = None,
    degradation_prior: nn.Module | None = None,
    v2t: nn.Module | None = None,
) -> MoEDiffIRDenoiser:
    """Build the stage-I model of a resolved config with fresh trainable parts.

    ``unet`` defaults to :func:`build_backbone`'s. With ``model.use_dp`` (and MoE routing) and
    ``model.use_v2t``, the degradation prior and the V2T adapter are taken from the arguments or built by
    :func:`build_degradation_prior` / :func:`build_visual2text`. Without V2T the null context is set to the empty
    prompt's text encoding (:func:`~moediffir.weights.empty_prompt.empty_prompt_context`).
    """
    if unet is None:
        unet = build_backbone(cfg)[0]
    if uses_degradation_prior(cfg):
        if degradation_prior is None:
            degradation_prior = build_degradation_prior(cfg)
        dp_dim = int(degradation_prior.token_dim)
    else:
        degradation_prior, dp_dim = None, 0
    if cfg.model.use_v2t and v2t is None:
        v2t = build_visual2text(cfg, cross_attention_dim=unet.config.cross_attention_dim,
                                latent_channels=unet.config.in_channels)
    if not cfg.model.use_v2t:
        v2t = None
    prompt_module = build_prompt_module(cfg, in_channels=unet.config.in_channels, dp_dim=dp_dim)
    spade = SpadeInjector.from_unet(
        unet, prompt_dim=cfg.model.prompt_dim, hidden_dim=cfg.model.spade_hidden, form=cfg.model.spade_form
    )
    denoiser = MoEDiffIRDenoiser(unet, prompt_module, spade, degradation_prior=degradation_prior, v2t=v2t)
    if v2t is None and not cfg.prior.enabled:  # a stage-0 prior was trained with the zero context: it stays
        from moediffir.weights.empty_prompt import empty_prompt_context

        denoiser.set_null_context(empty_prompt_context(cfg, unet.config.cross_attention_dim))
    return denoiser
