"""MoE-Prompt Module: LQ latent -> multi-scale prompted feature maps (paper §3.2, §3.4; Fig. 3c, Fig. 7).

``z_lq (B, 4, h, w)`` -> conv3x3 to ``C`` channels -> ``num_scales`` scales ``h, h/2, h/4, h/8``
(stride-2 conv between scales; three downsample layers in the paper) -> at each scale ``vit_depth``
pre-LN ViT blocks on the tokens, then that scale's prompt generator (``none`` / ``single`` / ``multi`` /
``moe``, see :mod:`moediffir.models.prompts`). The output is one ``(B, C, h_s, w_s)`` map per scale; the
SPADE layers (:mod:`moediffir.models.spade`) inject them into the frozen UNet.

Choices the paper leaves open:

- The next scale is computed from the ViT features, not from the prompted ones: each scale's prompt is a side
  output, so the routing of one scale does not change the features another scale routes on.
- Any ``h, w`` divisible by ``2**(num_scales-1)`` works (the released code was fixed to 256 px).
- ``timestep_input=True`` adds a sinusoidal timestep embedding (MLP to ``C``) to the tokens of every scale.
  Off by default, which lets a sampler compute the maps once per image instead of once per step.
- ``vit_final_norm=True`` [released: on, its ``norm1..norm4``] applies a LayerNorm (``final_norms.s``) to
  each scale's tokens after its ViT blocks; the prompt generator and the next scale both read the normed
  tokens. (The released code discards ``norm4``'s output at the deepest scale, whose prompt reads the
  un-normed tokens; here every scale is normed alike.)

Each forward returns, beside the maps, the routing record of every scale (:attr:`PromptModuleOutput.routing`, a
list with one dict per scale: ``gates (B, L, N)``, ``indices``/``values (B, L, K)`` for ``moe``,
``height``/``width``; ``L = 1`` for the ``multi`` soft weights), not detached: detach it to keep it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from moediffir.models.prompts import PROMPT_DESIGNS, build_prompt_generator
from moediffir.models.vit import PreLNViTBlock, map_from_tokens, tokens_from_map


@dataclass
class PromptModuleOutput:
    """Maps for the SPADE layers plus the (undetached) balance loss of the routers."""

    maps: tuple[torch.Tensor, ...]  # num_scales x (B, C, h / 2**s, w / 2**s)
    balance_loss: torch.Tensor  # () sum over scales; 0 unless balance_loss_weight > 0
    routing: list[dict[str, torch.Tensor]]  # per scale, not detached


class MoEPromptModule(ModelMixin, ConfigMixin):
    """Multi-scale MoE prompt extractor on the LQ latent (Fig. 3c)."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        prompt_dim: int = 256,
        num_scales: int = 4,
        vit_depth: int = 2,
        vit_heads: int = 4,
        mlp_ratio: float = 4.0,
        prompt_design: str = "moe",
        num_prompts: int = 7,
        top_k: int = 3,
        routing: str = "blind",
        num_tasks: int = 21,
        dp_dim: int = 0,
        noisy_gating_in_eval: bool = False,
        renormalize_gates: bool = True,
        balance_loss_weight: float = 0.0,
        timestep_input: bool = False,
        gate_init: str = "normal",
        noise_epsilon: float = 0.0,
        prompt_init: str = "normal",
        router_input: str = "residual",
        vit_final_norm: bool = False,
    ) -> None:
        super().__init__()
        if prompt_design not in PROMPT_DESIGNS:
            raise ValueError(
                f"MoEPromptModule: prompt_design={prompt_design!r}; choose one of {list(PROMPT_DESIGNS)}"
            )
        if num_scales < 1:
            raise ValueError(f"MoEPromptModule: num_scales={num_scales} must be >= 1 (model.num_scales)")
        c = prompt_dim
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.downsamplers = nn.ModuleList(
            nn.Conv2d(c, c, 3, stride=2, padding=1) for _ in range(num_scales - 1)
        )
        self.blocks = nn.ModuleList(
            nn.ModuleList(PreLNViTBlock(c, vit_heads, mlp_ratio) for _ in range(vit_depth))
            for _ in range(num_scales)
        )
        self.final_norms = nn.ModuleList(nn.LayerNorm(c) for _ in range(num_scales)) if vit_final_norm else None
        self.generators = nn.ModuleList(
            build_prompt_generator(
                prompt_design,
                c,
                num_prompts=num_prompts,
                top_k=top_k,
                routing=routing,
                num_tasks=num_tasks,
                dp_dim=dp_dim,
                heads=vit_heads,
                noisy_gating_in_eval=noisy_gating_in_eval,
                renormalize_gates=renormalize_gates,
                balance_loss_weight=balance_loss_weight,
                gate_init=gate_init,
                noise_epsilon=noise_epsilon,
                prompt_init=prompt_init,
                router_input=router_input,
            )
            for _ in range(num_scales)
        )
        if timestep_input:
            self.time_proj = Timesteps(c, flip_sin_to_cos=True, downscale_freq_shift=0)
            self.time_embedding = TimestepEmbedding(c, c)

    @property
    def uses_dp(self) -> bool:
        """Whether the routers read degradation-prior tokens."""
        return self.config.dp_dim > 0 and self.config.prompt_design == "moe"

    @property
    def uses_task_labels(self) -> bool:
        return self.config.prompt_design == "moe" and self.config.routing == "task"

    @property
    def scale_factor(self) -> int:
        """Latent sizes must be divisible by this (``2**(num_scales-1)``)."""
        return 2 ** (self.config.num_scales - 1)

    def forward(
        self,
        z_lq: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        dp_tokens: torch.Tensor | None = None,
        task_labels: torch.Tensor | None = None,
    ) -> PromptModuleOutput:
        """Prompted maps of every scale for the LQ latent ``z_lq`` ``(B, in_channels, h, w)``."""
        if z_lq.ndim != 4 or z_lq.shape[1] != self.config.in_channels:
            raise ValueError(
                f"MoEPromptModule: z_lq must be (B, {self.config.in_channels}, h, w), got {tuple(z_lq.shape)}"
            )
        f = self.scale_factor
        if z_lq.shape[-2] % f or z_lq.shape[-1] % f:
            raise ValueError(
                f"MoEPromptModule: latent size {tuple(z_lq.shape[-2:])} is not divisible by {f} "
                f"(num_scales={self.config.num_scales}); pad the image to a multiple of {8 * f} pixels"
            )
        if dp_tokens is not None and not self.uses_dp:
            raise ValueError(
                "MoEPromptModule: dp_tokens given but the module was built without a degradation prior"
            )
        temb = None
        if self.config.timestep_input:
            if timesteps is None:
                raise ValueError(
                    "MoEPromptModule: built with timestep_input=True; pass timesteps (B,) or a scalar"
                )
            t = torch.as_tensor(timesteps, device=z_lq.device).reshape(-1).expand(z_lq.shape[0])
            temb = self.time_embedding(self.time_proj(t).to(z_lq.dtype))  # (B, C)

        x = self.conv_in(z_lq)  # (B, C, h, w)
        maps: list[torch.Tensor] = []
        routing: list[dict[str, torch.Tensor]] = []
        balance = z_lq.new_zeros((), dtype=torch.float32)
        for s in range(self.config.num_scales):
            if s > 0:
                x = self.downsamplers[s - 1](x)  # (B, C, h/2**s, w/2**s)
            height, width = x.shape[-2:]
            tokens = tokens_from_map(x)  # (B, L, C)
            if temb is not None:
                tokens = tokens + temb[:, None]  # (B, L, C)
            for block in self.blocks[s]:
                tokens = block(tokens)  # (B, L, C)
            if self.final_norms is not None:
                tokens = self.final_norms[s](tokens)  # (B, L, C)
            out = self.generators[s](tokens, dp_tokens=dp_tokens, task_labels=task_labels)
            maps.append(map_from_tokens(out.tokens, height, width))  # (B, C, h_s, w_s)
            routing.append({**out.routing, "height": height, "width": width})
            if out.balance_loss is not None:
                balance = balance + out.balance_loss.float()
            x = map_from_tokens(tokens, height, width)  # (B, C, h_s, w_s)
        return PromptModuleOutput(tuple(maps), balance, routing)
