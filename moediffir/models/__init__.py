"""MoE-DiffIR networks (paper §3.2-3.4, DESIGN.md §4).

Explicit re-exports of the prompt side of the model. The degradation prior, Visual2Text adapter, decoder
compensator and weight loading live in ``moediffir.models.degradation_prior``, ``.visual2text``,
``.compensator`` and ``.loading``; they are imported where used (they pull in CLIP code), never here.
"""

from moediffir.models.backbone import build_backbone, build_scheduler, build_unet, build_vae
from moediffir.models.denoiser import (
    DenoiserConditions,
    MoEDiffIRDenoiser,
    build_denoiser,
    build_prompt_module,
)
from moediffir.models.prompt_module import MoEPromptModule, PromptModuleOutput
from moediffir.models.prompts import PROMPT_DESIGNS, build_prompt_generator
from moediffir.models.router import NoisyTopKRouter, RouterOutput
from moediffir.models.spade import (
    SPADE,
    SpadeInjector,
    SpadeSite,
    spade_sites_from_config,
    spade_sites_from_unet,
)
from moediffir.models.vit import PreLNViTBlock

__all__ = [
    "PROMPT_DESIGNS",
    "SPADE",
    "DenoiserConditions",
    "MoEDiffIRDenoiser",
    "MoEPromptModule",
    "NoisyTopKRouter",
    "PreLNViTBlock",
    "PromptModuleOutput",
    "RouterOutput",
    "SpadeInjector",
    "SpadeSite",
    "build_backbone",
    "build_denoiser",
    "build_prompt_generator",
    "build_prompt_module",
    "build_scheduler",
    "build_unet",
    "build_vae",
    "spade_sites_from_config",
    "spade_sites_from_unet",
]
