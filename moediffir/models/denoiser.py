"""MoE-DiffIR noise predictor: frozen UNet + MoE-Prompt Module + SPADE (+ DP, V2T) (paper §3.2-3.4, Fig. 3a).

``eps = MoEDiffIRDenoiser(z_t, t, z_lq, lq_image, task_labels, dp_tokens, context)`` is the ``eps(z_t, t)`` of
Eq. 2 with the stage-I conditioning:

1. degradation prior (frozen, optional): ``dp_tokens = DP(lq_image)`` ``(B, L_dp, D_dp)``, read by routers;
2. MoE-Prompt Module on the LQ latent -> prompted maps of every scale (Fig. 3c);
3. SPADE modulations of the 13 (SD 2.1) UNet sites from those maps;
4. text context: ``V2T(lq_image)`` ``(B, L_ctx, cross_attention_dim)`` when the adapter is on (``V2T(z_lq)`` in
   the released form, ``model.v2t_form=released``, which decodes the latent itself), else the given
   ``context``, else the null context: the text encoder's encoding of the empty prompt ``""``
   (``(1, 77, cross_attention_dim)``; :func:`~moediffir.weights.builders.build_denoiser` encodes it once, see
   :mod:`moediffir.weights.empty_prompt`; a bare constructor holds a single zero token until
   :meth:`set_null_context` is called);
5. the frozen, stock ``UNet2DConditionModel`` with the SPADE hooks.

Steps 1-4 depend on the LQ image only (and on ``t`` when the prompt module takes the timestep), so a sampler
calls :meth:`MoEDiffIRDenoiser.prepare` once per image and :meth:`MoEDiffIRDenoiser.denoise` per step.

The UNet (and DP) stay frozen and in eval mode; :meth:`trainable_parameters` lists what stage I trains.
``forward(..., return_aux=True)`` returns a :class:`DenoiserOutput`: the noise prediction with the routing
decisions of the call and the routers' balance loss (already weighted; add it to the ``L_SD`` loss). The SPADE hooks stay on the UNet while the
denoiser lives; use :meth:`stock_unet` (a context manager) to call the bare UNet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moediffir.models.prompt_module import MoEPromptModule
from moediffir.models.spade import SpadeInjector


@dataclass
class DenoiserConditions:
    """Everything of one LQ batch the UNet steps reuse."""

    modulations: list[tuple[torch.Tensor, torch.Tensor]]  # per SPADE site: (B, C_site, h_s, w_s) x 2
    context: torch.Tensor  # (B or 1, L_ctx, cross_attention_dim)
    balance_loss: torch.Tensor  # ()
    routing: list[dict[str, Any]]  # per scale, not detached
    batch_size: int
    timestep_dependent: bool  # True when the prompt module reads t: call prepare() every step


@dataclass
class DenoiserOutput:
    """``MoEDiffIRDenoiser.forward(..., return_aux=True)``: the noise prediction and what stage I trains and logs."""

    sample: torch.Tensor  # (B, 4, h, w) the noise prediction eps(z_t, t)
    balance_loss: torch.Tensor  # () the routers' weighted balance loss
    routing: list[dict[str, Any]]  # per scale, not detached (see MoEPromptModule)


class MoEDiffIRDenoiser(nn.Module):
    """The stage-I model in one object; see the module docstring."""

    def __init__(
        self,
        unet: nn.Module,
        prompt_module: MoEPromptModule,
        spade: SpadeInjector,
        degradation_prior: nn.Module | None = None,
        v2t: nn.Module | None = None,
    ) -> None:
        super().__init__()
        pm_cfg = prompt_module.config
        if pm_cfg.prompt_dim != spade.config.prompt_dim:
            raise ValueError(
                f"MoEDiffIRDenoiser: prompt module has prompt_dim={pm_cfg.prompt_dim}, SPADE layers "
                f"{spade.config.prompt_dim}; build both from the same model.prompt_dim"
            )
        if (
            pm_cfg.num_scales != spade.num_scales_needed
        ):  # fewer cannot feed every site; more would never train
            raise ValueError(
                f"MoEDiffIRDenoiser: the UNet's SPADE sites use {spade.num_scales_needed} prompt scales, "
                f"the prompt "
                f"module has {pm_cfg.num_scales}; set model.num_scales = {spade.num_scales_needed}"
            )
        if pm_cfg.in_channels != unet.config.in_channels:
            raise ValueError(
                f"MoEDiffIRDenoiser: prompt module reads {pm_cfg.in_channels}-channel latents, the UNet "
                f"{unet.config.in_channels}"
            )
        if prompt_module.uses_dp:
            if (
                degradation_prior is not None
                and getattr(degradation_prior, "token_dim", pm_cfg.dp_dim) != pm_cfg.dp_dim
            ):
                raise ValueError(
                    f"MoEDiffIRDenoiser: degradation prior gives {degradation_prior.token_dim}-d tokens, "
                    f"the prompt "
                    f"module expects dp_dim={pm_cfg.dp_dim}"
                )
        elif degradation_prior is not None:
            raise ValueError(
                "MoEDiffIRDenoiser: a degradation prior was given but the prompt module does not read one "
                "(needs prompt_design='moe', dp_dim > 0)"
            )
        cross_dim = unet.config.cross_attention_dim
        if v2t is not None and getattr(v2t, "cross_attention_dim", cross_dim) != cross_dim:
            raise ValueError(
                f"MoEDiffIRDenoiser: V2T adapter gives {v2t.cross_attention_dim}-d context, the UNet's "
                f"cross_attention_dim is {cross_dim}; build the adapter from unet.config.cross_attention_dim"
            )
        self.unet = unet
        self.prompt_module = prompt_module
        self.spade = spade
        self.degradation_prior = degradation_prior
        self.v2t = v2t
        self.unet.requires_grad_(False)
        if self.degradation_prior is not None:
            self.degradation_prior.requires_grad_(False)
        self.register_buffer("null_context", torch.zeros(1, 1, cross_dim), persistent=False)
        self.spade.attach(self.unet)
        self.train(False)

    # ----------------------------------------------------------------------------------------- state
    def train(self, mode: bool = True) -> MoEDiffIRDenoiser:
        """Train mode for the trained parts only; UNet and DP always stay in eval mode."""
        super().train(mode)
        self.unet.eval()
        if self.degradation_prior is not None:
            self.degradation_prior.eval()
        return self

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The parts stage I trains (and :func:`~moediffir.weights.denoiser_folder.save_denoiser` writes)."""
        parts: dict[str, nn.Module] = {"prompt_module": self.prompt_module, "spade": self.spade}
        if self.v2t is not None:
            parts["v2t"] = self.v2t
        return parts

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the stage-I optimiser updates (the V2T adapter's frozen CLIP tower excluded)."""
        for name, module in self.trainable_modules().items():
            if name == "v2t" and hasattr(module, "trainable_parameters"):
                yield from module.trainable_parameters()
            else:
                yield from (p for p in module.parameters() if p.requires_grad)

    def set_null_context(self, context: torch.Tensor) -> None:
        """Context used when neither V2T nor ``context`` is given, e.g. the empty-prompt text embedding."""
        if context.ndim != 3 or context.shape[-1] != self.unet.config.cross_attention_dim:
            raise ValueError(
                f"set_null_context: expected (1, L, {self.unet.config.cross_attention_dim}), got "
                f"{tuple(context.shape)}"
            )
        self.null_context = context.detach().to(self.null_context.device)

    def attach_vae(self, vae: nn.Module) -> None:
        """Hand the frozen VAE to a V2T adapter that decodes the LQ latent itself (the released form); the kit's
        form reads the LQ image and needs none. Pipelines and stage-I training call this."""
        if self.v2t is not None and hasattr(self.v2t, "attach_decoder"):
            self.v2t.attach_decoder(vae)

    @contextlib.contextmanager
    def stock_unet(self) -> Iterator[nn.Module]:
        """``with denoiser.stock_unet() as unet:`` -- the UNet without SPADE hooks (re-attached on exit)."""
        self.spade.detach()
        try:
            yield self.unet
        finally:
            self.spade.attach(self.unet)

    # --------------------------------------------------------------------------------------- forward
    def prepare(
        self,
        z_lq: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        lq_image: torch.Tensor | None = None,
        task_labels: torch.Tensor | None = None,
        dp_tokens: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> DenoiserConditions:
        """Steps 1-4: DP tokens, prompted maps, SPADE modulations and text context for an LQ batch."""
        b = z_lq.shape[0]
        pm = self.prompt_module
        if pm.uses_dp and dp_tokens is None:
            if self.degradation_prior is None or lq_image is None:
                raise ValueError(
                    "MoEDiffIRDenoiser: the router reads the degradation prior; pass lq_image (B, 3, H, W) "
                    "in [0, 1] "
                    "with a degradation_prior built in, or precomputed dp_tokens"
                )
            with torch.no_grad():
                dp_tokens = self.degradation_prior(lq_image)  # (B, L_dp, D_dp)
        if not pm.uses_dp:
            dp_tokens = None
        if pm.uses_task_labels and task_labels is None:
            raise ValueError(
                "MoEDiffIRDenoiser: model.routing='task' needs task_labels (B,); blind routing does not"
            )
        out = pm(z_lq, timesteps=timesteps, dp_tokens=dp_tokens, task_labels=task_labels)
        modulations = self.spade.modulations(out.maps)
        if context is None:
            if self.v2t is not None and getattr(self.v2t, "reads_latent", False):
                context = self.v2t(z_lq)  # released form: (B, L_ctx, cross_attention_dim) from the latent
            elif self.v2t is not None:
                if lq_image is None:
                    raise ValueError(
                        "MoEDiffIRDenoiser: the V2T adapter needs lq_image (B, 3, H, W) in [0, 1], or pass "
                        "context"
                    )
                context = self.v2t(lq_image)  # (B, L_ctx, cross_attention_dim)
            else:
                context = self.null_context.to(z_lq.dtype)  # (1, L, cross_attention_dim)
        if context.shape[0] not in (1, b):
            raise ValueError(
                f"MoEDiffIRDenoiser: context batch {context.shape[0]} does not match z_lq batch {b}"
            )
        return DenoiserConditions(
            modulations, context, out.balance_loss, out.routing, b, bool(pm.config.timestep_input)
        )

    def denoise(self, z_t: torch.Tensor, timesteps: torch.Tensor, cond: DenoiserConditions) -> torch.Tensor:
        """Step 5: the SPADE-modulated UNet's noise prediction for ``z_t`` ``(B, 4, h, w)``."""
        b = z_t.shape[0]
        if b != cond.batch_size:
            raise ValueError(
                f"MoEDiffIRDenoiser: z_t batch {b} does not match the prepared LQ batch {cond.batch_size}"
            )
        context = cond.context.expand(b, -1, -1) if cond.context.shape[0] == 1 else cond.context
        self.spade.set_modulations(cond.modulations)
        return self.unet(z_t, timesteps, encoder_hidden_states=context.to(z_t.dtype)).sample  # (B, 4, h, w)

    def forward(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        z_lq: torch.Tensor,
        lq_image: torch.Tensor | None = None,
        task_labels: torch.Tensor | None = None,
        dp_tokens: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        return_aux: bool = False,
    ) -> torch.Tensor | DenoiserOutput:
        """Noise prediction ``eps`` ``(B, 4, h, w)`` for noisy latents ``z_t`` at timesteps ``t``; with
        ``return_aux`` a :class:`DenoiserOutput` holding it, the balance loss and the routing of this call."""
        if z_t.shape[-2:] != z_lq.shape[-2:]:
            raise ValueError(
                f"MoEDiffIRDenoiser: z_t {tuple(z_t.shape)} and z_lq {tuple(z_lq.shape)} differ in size"
            )
        cond = self.prepare(
            z_lq, t, lq_image=lq_image, task_labels=task_labels, dp_tokens=dp_tokens, context=context
        )
        eps = self.denoise(z_t, t, cond)  # (B, 4, h, w)
        return DenoiserOutput(eps, cond.balance_loss, cond.routing) if return_aux else eps


def build_prompt_module(cfg, in_channels: int = 4, dp_dim: int = 0) -> MoEPromptModule:
    """The MoE-Prompt Module of a resolved config (``dp_dim``: degradation-prior token width, 0 = off)."""
    m = cfg.model
    return MoEPromptModule(
        in_channels=in_channels,
        prompt_dim=m.prompt_dim,
        num_scales=m.num_scales,
        vit_depth=m.vit_depth,
        vit_heads=m.vit_heads,
        mlp_ratio=m.mlp_ratio,
        prompt_design=m.prompt_design,
        num_prompts=m.num_prompts,
        top_k=m.top_k,
        routing=m.routing,
        num_tasks=m.num_tasks,
        dp_dim=dp_dim,
        noisy_gating_in_eval=m.noisy_gating_in_eval,
        renormalize_gates=m.renormalize_gates,
        balance_loss_weight=m.balance_loss_weight,
        timestep_input=m.timestep_input,
        gate_init=m.gate_init,
        noise_epsilon=m.noise_epsilon,
        prompt_init=m.prompt_init,
        router_input=m.router_input,
        vit_final_norm=m.vit_final_norm,
    )
