"""MoE-DiffIR networks (paper §3.2-3.4, docs/design.md §4).

Explicit re-exports of the prompt side of the model, resolved lazily (importing this package, or one of its
modules, does not import diffusers until a name that needs it is used). The degradation prior, Visual2Text
adapter and decoder compensator live in ``moediffir.models.degradation_prior``, ``.visual2text`` and
``.compensator``; they are imported where used. What reads or writes weight files is in :mod:`moediffir.weights`.
"""

from __future__ import annotations

from moediffir.utils.lazy import lazy_getattr

_EXPORTS = {
    "build_scheduler": "sd_backbone",
    "build_unet": "sd_backbone",
    "build_vae": "sd_backbone",
    "DenoiserConditions": "denoiser",
    "MoEDiffIRDenoiser": "denoiser",
    "build_prompt_module": "denoiser",
    "MoEPromptModule": "prompt_module",
    "PromptModuleOutput": "prompt_module",
    "PROMPT_DESIGNS": "prompts",
    "build_prompt_generator": "prompts",
    "NoisyTopKRouter": "router",
    "RouterOutput": "router",
    "ResidualSPADE": "spade",
    "SPADE": "spade",
    "SpadeInjector": "spade",
    "SpadeSite": "spade",
    "spade_sites_from_config": "spade",
    "spade_sites_from_unet": "spade",
    "PreLNViTBlock": "vit",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (names resolved lazily by __getattr__)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
