"""Degradation prior (DP) for the degradation-aware router (paper §3.2, Fig. 2b; appendix A, Fig. 7).

The paper feeds the router "the degradation prior obtained from LQ images through the pre-trained CLIP encoder
of DA-CLIP" [44], frozen (appendix A: "we did not fine-tune this model on our CIR dataset"). Here
(docs/design.md §4, §8):

- **Which tokens.** DA-CLIP = an open_clip ViT-B/32 CLIP (``clip``) plus an *image controller*
  (``visual_control``): a copy of the image tower whose transformer is wrapped in a ``ControlTransformer`` with
  one zero-initialised ``Linear(768, 768)`` per block (``zero_modules``). DA-CLIP trains the controller to
  predict the degradation embedding. Our DP is the controller's **49 patch tokens x 768**: the hidden states
  after its last residual block, CLS token dropped, passed through its ``ln_post`` (``final_norm=True``, the
  open_clip convention for output tokens; switchable). They are taken before the 768->512 projection, so
  ``token_dim == 768``. The ``zero_modules`` (controls injected into the frozen CLIP tower) are loaded but not
  used: they do not change the controller's own hidden states.
- **Token order.** ``conv1`` gives ``(B, 768, 7, 7)``; tokens are ``flatten(2).transpose(1, 2)`` ->
  ``(B, 49, 768)`` in raster order (row-major over the 7x7 grid). The released code reshaped a
  ``(B, 49, 768)`` tensor to ``(B, 768, 7, 7)``, scrambling channels and positions (docs/design.md §8); it also
  dropped the class and position embeddings. Neither is repeated here.
- **Preprocessing inside the module.** Input is an LQ image ``(B, 3, H, W)`` in ``[0, 1]`` of any size. It is
  resized to ``image_size`` (224) with antialiased bicubic interpolation and clamped to ``[0, 1]``, then
  normalised with the CLIP mean/std. ``resize_mode="squash"`` (default) resizes the whole image to 224x224
  (for the square training crops this equals CLIP's own resize + centre crop); ``"center_crop"`` is CLIP's
  exact resize-shorter-side + centre crop, which ignores the borders of non-square images.

Backends (``ModelConfig.dp_backend``):

``daclip``  the DA-CLIP ViT-B/32 controller. The module's state-dict keys and shapes are exactly the
            ``visual_control.*`` sub-tree (176 of 631 entries) of the public checkpoint ``daclip_ViT-B-32.pt``;
            the full layout is committed as ``moediffir/fixtures/daclip_vit_b32_keys.json``.
            :func:`~moediffir.weights.builders.load_degradation_prior_weights` takes the whole public file,
            checks it against that fixture and loads the sub-tree.
``clip``    a plain open_clip ViT-B/32 image tower (keys = the ``visual.*`` sub-tree of an open_clip CLIP
            checkpoint); same tokens from its last block. ``quick_gelu`` must match the weights (OpenAI
            weights: QuickGELU; LAION weights, which DA-CLIP started from: GELU).
``tiny``    a small random ViT with the ``clip`` layout, for the smoke profile and tests (labelled random).

All backends are frozen: no parameter requires a gradient and ``forward`` runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from moediffir.models.clip_encoders import (
    CLIP_MEAN,
    CLIP_STD,
    RESIZE_MODES,
    check_image_batch,
    clip_normalize,
    clip_resize,
)

DP_BACKENDS = ("daclip", "clip", "tiny")
DACLIP_FIXTURE = "daclip_vit_b32_keys.json"

# The architecture of each backend. ViT-B/32 = open_clip "ViT-B-32" (width 768, 12 layers, 12 heads, embed 512).
VIT_B32_KWARGS: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 32,
    "width": 768,
    "layers": 12,
    "heads": 12,
    "output_dim": 512,
}
TINY_DP_KWARGS: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 16,
    "width": 32,
    "layers": 2,
    "heads": 2,
    "output_dim": 16,
}


class QuickGELU(nn.Module):
    """OpenAI CLIP's ``x * sigmoid(1.702 x)`` (for OpenAI-trained weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# ------------------------------------------------------------------------- open_clip-layout ViT pieces
class ClipAttention(nn.Module):
    """Self-attention with open_clip's parameter names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"ViT: width={width} is not divisible by heads={heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3C)
        qkv = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, h, L, C/h)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, h, L, C/h)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))  # (B, L, C)


class ClipResidualBlock(nn.Module):
    """open_clip ``ResidualAttentionBlock``: ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = ClipAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        act = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, hidden)), ("gelu", act), ("c_proj", nn.Linear(hidden, width))]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, L, C)
        return x + self.mlp(self.ln_2(x))  # (B, L, C)


class ClipTransformer(nn.Module):
    """A stack of residual blocks under ``resblocks`` (open_clip ``Transformer``), batch-first."""

    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False
    ) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ClipResidualBlock(width, heads, mlp_ratio, quick_gelu) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)  # (B, L, C)
        return x


class ControlTransformer(nn.Module):
    """DA-CLIP's controller transformer: the wrapped stack under ``transformer`` plus one zero-initialised
    ``Linear(width, width)`` per block under ``zero_modules``.

    In DA-CLIP the ``zero_modules`` turn each block's output into a control added to the frozen CLIP tower.
    They do not alter the controller's own hidden states, which are all the degradation prior needs, so
    ``forward`` runs the wrapped stack only; the ``zero_modules`` exist so the public weights load unchanged.
    """

    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False
    ) -> None:
        super().__init__()
        self.transformer = ClipTransformer(width, layers, heads, mlp_ratio, quick_gelu)
        self.zero_modules = nn.ModuleList([nn.Linear(width, width) for _ in range(layers)])
        for linear in self.zero_modules:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(x)  # (B, L, C)


class ClipVisionTower(nn.Module):
    """open_clip ``VisionTransformer`` (CLS token, learned positions, pre-LN) with its parameter names.

    ``control=True`` gives the DA-CLIP controller layout (``transformer`` is a :class:`ControlTransformer`).
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        mlp_ratio: float = 4.0,
        quick_gelu: bool = False,
        control: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"ViT: image_size={image_size} is not a multiple of patch_size={patch_size}")
        self.grid = image_size // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid * self.grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        stack = ControlTransformer if control else ClipTransformer
        self.transformer = stack(width, layers, heads, mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def hidden_states(self, pixels: torch.Tensor) -> torch.Tensor:
        """Last-block hidden states ``(B, 1 + grid*grid, width)`` (CLS first) of normalised 224-px pixels."""
        x = self.conv1(pixels)  # (B, C, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, C): permuted, raster order over the grid
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1+g*g, C)
        x = self.ln_pre(x)
        return self.transformer(x)  # (B, 1+g*g, C)


def load_daclip_layout() -> dict[str, list[int]]:
    """The public DA-CLIP ViT-B/32 checkpoint's ``{key: shape}`` (the committed fixture)."""
    text = resources.files("moediffir").joinpath("fixtures", DACLIP_FIXTURE).read_text()
    return {k: list(v) for k, v in json.loads(text)["keys"].items()}


# ----------------------------------------------------------------------------------------- the module
class DegradationPrior(ModelMixin, ConfigMixin):
    """Frozen CLIP-family image tower mapping LQ images to degradation tokens ``(B, L, token_dim)``.

    ``daclip``/``clip``: ``L = 49``, ``token_dim = 768``. The tower lives under the attribute
    ``visual_control`` (``daclip``) or ``visual`` (``clip``, ``tiny``), so the module's state-dict keys are
    the public checkpoint's own keys for that sub-tree.
    """

    @register_to_config
    def __init__(
        self,
        backend: str = "daclip",
        image_size: int = 224,
        patch_size: int = 32,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        output_dim: int = 512,
        mlp_ratio: float = 4.0,
        quick_gelu: bool = False,
        final_norm: bool = True,
        resize_mode: str = "squash",
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        super().__init__()
        if backend not in DP_BACKENDS:
            raise ValueError(
                f"DegradationPrior: backend={backend!r} (model.dp_backend); choose one of {DP_BACKENDS}"
            )
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"DegradationPrior: resize_mode={resize_mode!r}; choose one of {RESIZE_MODES}")
        tower = ClipVisionTower(
            image_size,
            patch_size,
            width,
            layers,
            heads,
            output_dim,
            mlp_ratio,
            quick_gelu,
            control=backend == "daclip",
        )
        self.prefix = "visual_control" if backend == "daclip" else "visual"
        self.add_module(self.prefix, tower)
        self.register_buffer("clip_mean", torch.tensor(image_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("clip_std", torch.tensor(image_std, dtype=torch.float32), persistent=False)
        self.token_dim = width  # D of the tokens; the router's cross-attention sizes itself from it
        self.num_tokens = (image_size // patch_size) ** 2  # L
        self.requires_grad_(False)
        self.eval()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def for_backend(cls, backend: str, **overrides: Any) -> DegradationPrior:
        """The standard architecture of ``backend`` (ViT-B/32 for ``daclip``/``clip``), random weights."""
        if backend not in DP_BACKENDS:
            raise ValueError(
                f"DegradationPrior: backend={backend!r} (model.dp_backend); choose one of {DP_BACKENDS}"
            )
        kwargs = dict(TINY_DP_KWARGS if backend == "tiny" else VIT_B32_KWARGS)
        kwargs.update(overrides)
        return cls(backend=backend, **kwargs)

    @property
    def tower(self) -> ClipVisionTower:
        return getattr(self, self.prefix)

    def train(self, mode: bool = True) -> DegradationPrior:
        """The prior is frozen: it stays in eval mode whatever ``mode`` is asked for."""
        return super().train(False)

    # -- forward -----------------------------------------------------------------------------------
    def preprocess(self, lq: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> CLIP-normalised ``(B, 3, S, S)`` in the tower's dtype."""
        check_image_batch(lq, "DegradationPrior")
        x = clip_resize(lq.float(), self.config.image_size, self.config.resize_mode)  # (B, 3, S, S)
        return clip_normalize(x, self.clip_mean, self.clip_std).to(self.tower.conv1.weight.dtype)

    @torch.no_grad()
    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """Degradation tokens ``(B, L, token_dim)`` of LQ images ``(B, 3, H, W)`` in ``[0, 1]``."""
        tower = self.tower
        h = tower.hidden_states(self.preprocess(lq))  # (B, 1+L, D)
        if self.config.final_norm:
            h = tower.ln_post(h)
        return h[:, 1:]  # (B, L, D): patch tokens, CLS dropped

    @torch.no_grad()
    def embed(self, lq: torch.Tensor) -> torch.Tensor:
        """The tower's pooled embedding ``ln_post(CLS) @ proj`` ``(B, output_dim)`` (DA-CLIP's degradation
        embedding for ``daclip``), for analysis; the router uses :meth:`forward`."""
        tower = self.tower
        h = tower.hidden_states(self.preprocess(lq))  # (B, 1+L, D)
        return tower.ln_post(h[:, 0]) @ tower.proj  # (B, output_dim)
