"""Visual2Text adapter with the quality enhancer (paper §3.3, Fig. 3a; docs/design.md §4).

Paper §3.3: "we first enhance the LQ images using several transformer blocks and then employ CLIP's image
encoder to directly extract visual features ... several MLP layers (the Visual2Text Adapter) translate visual
information into the textual domain of SD". The result replaces the empty text prompt as the UNet's
cross-attention context.

Pipeline of :class:`Visual2TextAdapter` (choices the paper leaves open are marked *):

1. LQ ``(B, 3, H, W)`` in [0, 1] -> antialiased bicubic resize to the encoder's 224x224 (*squash by default,
   see :func:`~moediffir.models.clip_encoders.clip_resize`).
2. **Quality enhancer** (trainable): ``enhancer_blocks`` Restormer transformer blocks (MDTA channel attention
   + gated-dconv FFN [Zamir et al. 2022]) on the resized pixels, pixel-unshuffled by ``enhancer_downscale`` (4:
   56x56x48), wrapped as a residual ``x + shuffle(conv_out(...))`` with a zero-initialised ``conv_out``: at
   initialisation the enhancer is the identity, so the frozen CLIP encoder first sees the image it was trained
   on. (*pixels after the resize: size-independent; unshuffled to keep the cost well under the UNet's; the
   released code ran such blocks on the latent.)
3. CLIP normalisation (mean/std) — the released code fed ``[-1, 1]`` pixels without it (docs/design.md §8).
4. **Frozen CLIP image encoder**: open_clip's ``ModifiedResNet`` RN50 (as the released code). *Features are
   the spatial grid of ``layer4`` before the attention pool, ``(B, 2048, 7, 7)`` -> 49 tokens in raster order:
   the attention pool would leave one global vector, too little for the UNet's cross-attention. The encoder
   stays in eval mode (BatchNorm statistics frozen) even when the adapter trains; gradients still flow through
   it to the enhancer. (Speed work that changes no value -- channels-last convolutions on CUDA, BatchNorms
   folded into the convolutions -- lives in :class:`~moediffir.models.clip_encoders.FastFrozenRN50Mixin`.)
5. **Adapter** (trainable): ``LayerNorm -> Linear(2048, cross_attention_dim)`` per token, ``num_tokens``
   learnable context tokens appended (released code: 49), a residual MLP ``x + MLP(x)`` (reduction 4), and a
   final ``LayerNorm`` (*matching the ``ln_final`` that ends SD 2.1's text encoder).

Output: context ``(B, 49 + num_tokens, cross_attention_dim)``; ``cross_attention_dim`` is read from the UNet's
config by :func:`~moediffir.weights.builders.build_visual2text` (1024 for SD 2.1). Backends: ``clip_rn50`` (weights from
``model.v2t_weights``) and ``tiny`` (a small random ModifiedResNet for the smoke profile; labelled random).

This is ``model.v2t_form=kit`` (the default). ``model.v2t_form=released`` (set by ``model.recipe=released``)
builds the released code's layout instead, enhancer on the latent and all:
:mod:`moediffir.models.visual2text_released`.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from moediffir.models.clip_encoders import (
    CLIP_MEAN,
    CLIP_STD,
    RESIZE_MODES,
    FastFrozenRN50Mixin,
    check_image_batch,
    clip_normalize,
    clip_resize,
    frozen_v2t_encoder,
    v2t_encoder_kwargs,
)
from moediffir.models.restormer import RestormerBlock

V2T_FORMS = ("kit", "released")  # model.v2t_form: this module's adapter, or the released layout (visual2text_released)

# ------------------------------------------------------------------------------ pixel enhancer
class QualityEnhancer(nn.Module):
    """Residual enhancer ``x + shuffle(conv_out(blocks(conv_in(unshuffle(x)))))``; ``conv_out`` is zero-initialised.

    The blocks run on a ``downscale``-times pixel-unshuffled image (224 px -> 56x56x48 for ``downscale=4``), as
    Restormer's lower levels do. Measured V2T training step (4 blocks, batch 32, bf16 autocast, H200, random
    weights): 155 ms / 20 GB peak at full 224 px resolution vs 23 ms / 3 GB unshuffled by 4 (a bare SD 2.1 UNet
    step at 256 px: 57 ms).
    """

    def __init__(
        self, num_blocks: int, dim: int, heads: int, expansion: float = 2.66, downscale: int = 4
    ) -> None:
        super().__init__()
        channels = 3 * downscale * downscale
        self.unshuffle = nn.PixelUnshuffle(downscale)
        self.conv_in = nn.Conv2d(channels, dim, 3, padding=1)
        self.blocks = nn.Sequential(*[RestormerBlock(dim, heads, expansion) for _ in range(num_blocks)])
        self.conv_out = nn.Conv2d(dim, channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(downscale)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.unshuffle(x))  # (B, dim, S/r, S/r)
        return x + self.shuffle(self.conv_out(self.blocks(h)))  # (B, 3, S, S)


# ----------------------------------------------------------------------------------------- the adapter
class Visual2TextAdapter(FastFrozenRN50Mixin, ModelMixin, ConfigMixin):
    """LQ image -> text-like context ``(B, L_ctx, cross_attention_dim)`` for the UNet (paper §3.3).

    Trainable: ``enhancer``, ``proj_norm``, ``proj``, ``learned_tokens``, ``adapter``, ``out_norm``. Frozen:
    ``clip_visual`` (keys = the ``visual.*`` sub-tree of an open_clip RN50 checkpoint).
    """

    @register_to_config
    def __init__(
        self,
        backend: str = "clip_rn50",
        cross_attention_dim: int = 1024,
        num_tokens: int = 49,
        enhancer_blocks: int = 4,
        enhancer_dim: int = 48,
        enhancer_heads: int = 1,
        enhancer_expansion: float = 2.66,
        enhancer_downscale: int = 4,
        clip_layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        clip_width: int = 64,
        clip_heads: int = 32,
        clip_output_dim: int = 1024,
        image_size: int = 224,
        adapter_reduction: int = 4,
        resize_mode: str = "squash",
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"Visual2TextAdapter: resize_mode={resize_mode!r}; choose one of {RESIZE_MODES}")
        self.enhancer = QualityEnhancer(
            enhancer_blocks, enhancer_dim, enhancer_heads, enhancer_expansion, enhancer_downscale
        )
        self.clip_visual = frozen_v2t_encoder("Visual2TextAdapter", backend, clip_layers, clip_width, clip_heads,
                                              clip_output_dim, image_size, num_tokens)
        grid_dim = clip_width * 32  # channels of layer4 (2048 for RN50)
        self.proj_norm = nn.LayerNorm(grid_dim)
        self.proj = nn.Linear(grid_dim, cross_attention_dim)
        self.learned_tokens = nn.Parameter(0.02 * torch.randn(num_tokens, cross_attention_dim))
        hidden = max(1, cross_attention_dim // adapter_reduction)
        self.adapter = nn.Sequential(
            nn.Linear(cross_attention_dim, hidden), nn.GELU(), nn.Linear(hidden, cross_attention_dim)
        )
        self.out_norm = nn.LayerNorm(cross_attention_dim)
        self.register_buffer("clip_mean", torch.tensor(image_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("clip_std", torch.tensor(image_std, dtype=torch.float32), persistent=False)
        self.cross_attention_dim = cross_attention_dim
        self.num_grid_tokens = (image_size // 32) ** 2
        self.context_length = self.num_grid_tokens + num_tokens  # L_ctx
        self.init_speed()

    @classmethod
    def for_backend(cls, backend: str, cross_attention_dim: int, **overrides: Any) -> Visual2TextAdapter:
        """The standard architecture of ``backend`` (RN50 for ``clip_rn50``), random weights."""
        kwargs = v2t_encoder_kwargs(backend, "Visual2TextAdapter")
        kwargs.update(overrides)
        return cls(backend=backend, cross_attention_dim=cross_attention_dim, **kwargs)

    def train(self, mode: bool = True) -> Visual2TextAdapter:
        """Train/eval the trainable parts; the CLIP encoder always stays in eval mode (frozen BatchNorm)."""
        super().train(mode)
        self.clip_visual.eval()
        return self

    # -- forward -----------------------------------------------------------------------------------
    def conv_modules(self) -> list[nn.Module]:
        """The enhancer and the CLIP encoder take channels-last weights on CUDA (FastFrozenRN50Mixin)."""
        return [self.enhancer, self.clip_visual]

    def enhance(self, lq: torch.Tensor) -> torch.Tensor:
        """The enhanced, resized image ``(B, 3, S, S)`` (before CLIP normalisation), for inspection."""
        check_image_batch(lq, "Visual2TextAdapter")
        dtype = self.enhancer.conv_in.weight.dtype
        x = clip_resize(lq.float(), self.config.image_size, self.config.resize_mode).to(dtype)  # (B, 3, S, S)
        return self.enhancer(x.contiguous(memory_format=self.conv_layout(x)))  # (B, 3, S, S)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """Context ``(B, L_ctx, cross_attention_dim)`` from LQ images ``(B, 3, H, W)`` in ``[0, 1]``."""
        x = clip_normalize(self.enhance(lq), self.clip_mean, self.clip_std)  # (B, 3, S, S)
        grid = self.clip_grid(x)  # (B, Cg, g, g)
        tokens = grid.flatten(2).transpose(1, 2).to(self.proj.weight.dtype)  # (B, g*g, Cg), raster order
        tokens = self.proj(self.proj_norm(tokens))  # (B, g*g, D)
        learned = self.learned_tokens.to(tokens.dtype).expand(tokens.shape[0], -1, -1)  # (B, T, D)
        ctx = torch.cat([tokens, learned], dim=1)  # (B, L_ctx, D)
        ctx = ctx + self.adapter(ctx)  # (B, L_ctx, D)
        return self.out_norm(ctx)  # (B, L_ctx, D)
