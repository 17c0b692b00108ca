"""Visual2Text in the released code's layout, ``model.v2t_form=released`` (paper §3.3, Fig. 3a; docs/design.md §4,
docs/fidelity.md rows 18-19).

Paper §3.3: "we first enhance the LQ images using several transformer blocks and then employ CLIP's image
encoder to directly extract visual features ... several MLP layers (the Visual2Text Adapter) translate visual
information into the textual domain of SD". The released code does this on the LQ *latent*; this module is that
computation, written for the stock diffusers UNet and VAE in the kit's own module names. The context of one LQ
latent ``z_lq`` ``(B, 4, h, w)`` (VAE-scaled, as the prompt module reads it):

1. **Latent enhancer** (frozen): ``z' = z_lq + conv_out(blocks(conv_in(z_lq)))`` -- conv3x3 4 -> 256 with bias,
   Restormer blocks (:mod:`moediffir.models.restormer`; the released code: 2 + 2 at width 256, one head, GDFN
   x2.66, bias-free), conv1x1 256 -> 4 with bias. A fresh module's ``conv_out`` is zero (the enhancer starts as
   the identity and, frozen, stays so); imported weights replace it (docs/design.md §4).
2. **VAE decoder** (frozen, the pipeline's own, :meth:`ReleasedVisual2Text.attach_decoder`): pixels
   ``D(z' / scaling_factor)`` ``(B, 3, 8h, 8w)`` in about [-1, 1], not clamped.
3. **Resize** (:func:`released_resize`): shorter side to ``image_size`` (224), bilinear without antialiasing,
   centre crop -- torchvision 0.13's ``Resize(224)`` + ``CenterCrop(224)`` on tensors, as the released code runs.
4. **Frozen CLIP RN50** (open_clip ``ModifiedResNet``, key for key the released ``cond_stage_model`` trunk) on those
   pixels *without* CLIP normalisation; the ``layer4`` grid ``(B, 2048, 7, 7)``; ``attnpool`` is kept (its
   weights are in the checkpoint) but never run.
5. **Grid conv** (trained): conv3x3 2048 -> D with bias, flattened in raster order ``(B, 49, D)``; ``num_tokens``
   learnable tokens ``(1, 49, D)`` (zero-initialised) appended: ``x`` ``(B, 98, D)``.
6. **Adapter** (trained): ``x + ReLU(W2 ReLU(W1 x))``, ``W1`` ``(D/4, D)``, ``W2`` ``(D, D/4)``, no biases.

The result ``(B, 98, D)`` is the UNet's cross-attention context (D = 1024 for SD 2.1). Steps 1-4 hold no trained
weight and run without gradients. Backends as the kit's form: ``clip_rn50`` (weights from ``model.v2t_weights``
or an imported checkpoint) and ``tiny`` (small random ModifiedResNet).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from moediffir.models.clip_encoders import (
    FastFrozenRN50Mixin,
    frozen_v2t_encoder,
    v2t_encoder_kwargs,
)
from moediffir.models.latent_scaling import unscale_latents
from moediffir.models.restormer import RestormerBlock


def released_resize(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (bilinear, no antialiasing), then the centred ``size x size`` crop.

    The released ``transforms.Resize(224)`` + ``CenterCrop(224)`` on tensors under its pinned torchvision 0.13: the
    longer side becomes ``int(size * long / short)``, the crop starts at ``int(round((side - size) / 2))``.
    Values are not clamped (the decoded pixels may leave [-1, 1] a little, as there).
    """
    h, w = pixels.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    if (new_h, new_w) != (h, w):
        pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False,
                               antialias=False)  # (B, 3, new_h, new_w)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    return pixels[..., top : top + size, left : left + size]  # (B, 3, size, size)


class LatentEnhancer(nn.Module):
    """``z + conv_out(blocks(conv_in(z)))`` on a ``(B, C, h, w)`` latent; ``conv_out`` zero-initialised."""

    def __init__(self, channels: int, dim: int, num_blocks: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, dim, 3, padding=1)
        self.blocks = nn.Sequential(*[RestormerBlock(dim, heads, expansion) for _ in range(num_blocks)])
        self.conv_out = nn.Conv2d(dim, channels, 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.conv_out(self.blocks(self.conv_in(z)))  # (B, C, h, w)


class ReleasedVisual2Text(FastFrozenRN50Mixin, ModelMixin, ConfigMixin):
    """LQ latent -> context ``(B, (S/32)^2 + num_tokens, cross_attention_dim)`` in the released layout (§3.3).

    Trained: ``grid_conv``, ``learned_tokens``, ``adapter``. Frozen: ``latent_enhancer`` (in no optimiser group
    in the released code) and ``clip_visual``. It reads the latent, not the image (:attr:`reads_latent`), and
    decodes it with the VAE given to :meth:`attach_decoder` (held by reference, not saved with this module).
    """

    reads_latent = True  # MoEDiffIRDenoiser.prepare passes z_lq, not lq_image

    @register_to_config
    def __init__(
        self,
        backend: str = "clip_rn50",
        cross_attention_dim: int = 1024,
        latent_channels: int = 4,
        num_tokens: int = 49,
        enhancer_blocks: int = 4,
        enhancer_dim: int = 256,
        enhancer_heads: int = 1,
        enhancer_expansion: float = 2.66,
        clip_layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        clip_width: int = 64,
        clip_heads: int = 32,
        clip_output_dim: int = 1024,
        image_size: int = 224,
        adapter_reduction: int = 4,
    ) -> None:
        super().__init__()
        self.latent_enhancer = LatentEnhancer(latent_channels, enhancer_dim, enhancer_blocks, enhancer_heads,
                                              enhancer_expansion)
        self.clip_visual = frozen_v2t_encoder("ReleasedVisual2Text", backend, clip_layers, clip_width, clip_heads,
                                              clip_output_dim, image_size, num_tokens)
        grid_dim = clip_width * 32  # channels of layer4 (2048 for RN50)
        self.grid_conv = nn.Conv2d(grid_dim, cross_attention_dim, 3, padding=1)
        self.learned_tokens = nn.Parameter(torch.zeros(1, num_tokens, cross_attention_dim))
        hidden = max(1, cross_attention_dim // adapter_reduction)
        self.adapter = nn.Sequential(nn.Linear(cross_attention_dim, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, cross_attention_dim, bias=False), nn.ReLU())
        self.latent_enhancer.requires_grad_(False)
        self.latent_enhancer.eval()
        self.cross_attention_dim = cross_attention_dim
        self.num_grid_tokens = (image_size // 32) ** 2
        self.context_length = self.num_grid_tokens + num_tokens  # L_ctx
        self._decoder: list[Any] = []  # the VAE, in a list so that it is no submodule (neither saved nor moved)
        self.init_speed()

    @classmethod
    def for_backend(cls, backend: str, cross_attention_dim: int, **overrides: Any) -> ReleasedVisual2Text:
        """The standard architecture of ``backend`` (RN50 for ``clip_rn50``), random weights."""
        kwargs = v2t_encoder_kwargs(backend, "ReleasedVisual2Text")
        kwargs.update(overrides)
        return cls(backend=backend, cross_attention_dim=cross_attention_dim, **kwargs)

    def train(self, mode: bool = True) -> ReleasedVisual2Text:
        """Train/eval the trained parts; the enhancer and the CLIP encoder always stay in eval mode."""
        super().train(mode)
        self.latent_enhancer.eval()
        self.clip_visual.eval()
        return self

    def conv_modules(self) -> list[nn.Module]:
        """The CLIP encoder and the enhancer take channels-last weights on CUDA (FastFrozenRN50Mixin)."""
        return [self.clip_visual, self.latent_enhancer]

    # -- the frozen VAE decoder ------------------------------------------------------------------------------
    def attach_decoder(self, vae: nn.Module) -> None:
        """Decode latents with ``vae`` (a diffusers ``AutoencoderKL``: ``decode(z).sample``, ``config.scaling_factor``)."""
        self._decoder[:] = [vae]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels ``(B, 3, f*h, f*w)`` in about [-1, 1] of VAE-scaled latents ``(B, C, h, w)`` (not clamped)."""
        if not self._decoder:
            raise RuntimeError("ReleasedVisual2Text (model.v2t_form=released) decodes the LQ latent with the VAE: "
                               "call attach_decoder(vae) first (MoEDiffIRPipeline and stage-I training do)")
        vae = self._decoder[0]
        return vae.decode(unscale_latents(vae, latents).to(vae.dtype)).sample  # (B, 3, f*h, f*w)

    # -- forward -------------------------------------------------------------------------------------------
    def clip_pixels(self, z_lq: torch.Tensor) -> torch.Tensor:
        """Steps 1-3: the enhanced, decoded, resized LQ image ``(B, 3, S, S)`` the CLIP encoder reads."""
        if z_lq.ndim != 4 or z_lq.shape[1] != self.config.latent_channels:
            raise ValueError(f"ReleasedVisual2Text: expected LQ latents (B, {self.config.latent_channels}, h, w), "
                             f"got {tuple(z_lq.shape)}")
        conv = self.latent_enhancer.conv_in.weight
        z = z_lq.to(conv.dtype).contiguous(memory_format=self.conv_layout(z_lq))  # (B, C, h, w)
        return released_resize(self.decode(self.latent_enhancer(z)), self.config.image_size)  # (B, 3, S, S)

    def grid_context(self, grid: torch.Tensor) -> torch.Tensor:
        """Steps 5-6: context ``(B, g*g + T, D)`` of a ``layer4`` grid ``(B, Cg, g, g)``."""
        tokens = self.grid_conv(grid.to(self.grid_conv.weight.dtype)).flatten(2).transpose(1, 2)  # (B, g*g, D)
        learned = self.learned_tokens.to(tokens.dtype).expand(tokens.shape[0], -1, -1)  # (B, T, D)
        x = torch.cat([tokens, learned], dim=1)  # (B, g*g + T, D)
        return x + self.adapter(x)  # (B, g*g + T, D)

    def forward(self, z_lq: torch.Tensor) -> torch.Tensor:
        """Context ``(B, L_ctx, cross_attention_dim)`` of LQ latents ``z_lq`` ``(B, C, h, w)``."""
        with torch.no_grad():  # nothing trained before the grid (the released decode is no_grad too)
            grid = self.clip_grid(self.clip_pixels(z_lq))  # (B, Cg, g, g), CLIP pixels without normalisation
        return self.grid_context(grid)  # (B, L_ctx, D)
