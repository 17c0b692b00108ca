"""Decoder compensator: LQ features fused into the VAE decoder (paper §3.4 stage II, Eq. 4, Fig. 3d).

Stage II "augments the Decoder with some low-quality information" (§3.4) and trains only that part with
``L_Decoder = L_lpips[z_lq, z0, hr]`` (Eq. 4). Following StableSR's controllable feature wrapping (CFW) and
docs/design.md §4:

- The LQ image goes through the (frozen) VAE **encoder**; its feature maps at two levels are kept.
- Inside the (frozen) VAE **decoder**, after the resnets of the up block at the same resolution and before its
  upsampler, a trainable fusion block mixes them in (``fusion_block``, ``stage2.fusion_block``):

  - ``sft`` (default): ``f = ResBlock(cat(enc, dec))``, ``out = dec + w * (dec * scale(f) + shift(f))``, an
    SFT-style modulation with zero-initialised last convs.
  - ``rrdb`` (the released code's, StableSR's ``Fuse_sft_block_RRDB``): ``f = ResBlock(RRDB(RRDB(
    ResBlock(cat(enc, dec)))))``, ``out = dec + w * f``; 2 RRDBs of growth 32, PyTorch/ESRGAN initialisation
    (so ``w > 0`` changes the decoder from step 0). Parameters are named as released (``encode_enc_1``,
    ``encode_enc_2.<i>.rdb<j>.conv<k>``, ``encode_enc_3``): the released ``decoder.fusion_layer_<i>.`` prefix
    maps to ``fusion.<i>.``.

  ``w`` is a call-time argument (StableSR's fidelity/quality knob; ``SampleConfig.fusion_weight``, released 1.0).
- **Levels** are VAE resolution levels ``i`` (encoder ``down_blocks[i]`` output, decoder
  ``up_blocks[n-1-i]``, resolution ``H / 2**i``, ``block_out_channels[i]`` channels on both sides), derived
  from the VAE config, not typed in: the two levels just above the latent resolution, i.e. (1, 2) for SD's
  4-level VAE = 256 ch at H/2 and 512 ch at H/4, exactly where StableSR/the released code fuse.
- The ``mini`` prior's :class:`~moediffir.models.patch_autoencoder.PatchAutoencoder` declares the same levels
  (its refinement branches run at ``H / 2**i`` with ``block_out_channels[i]`` channels): the fusion reads its
  encoder branch's features and rewrites its decoder branch's through
  :meth:`~moediffir.models.patch_autoencoder.PatchAutoencoder.decode_with` (``vae_class`` in the config).
- ``sft``: the last conv of ``scale`` and of ``shift`` is zero-initialised, so at initialisation the output
  equals the plain decoder for any ``w``. In both forms ``w == 0`` skips fusion (and the LQ encoding), so it
  always equals ``vae.decode`` exactly.
- Only ``fusion`` trains; the VAE copy inside is frozen.

Tiling: :meth:`DecoderCompensator.encode_features` and :meth:`DecoderCompensator.decode` work on any size
divisible by ``2**(n-1)`` (8 for SD) and keep no state between calls; a tiled caller passes the LQ tile (or its
precomputed features) with each latent tile.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from moediffir.models.patch_autoencoder import PatchAutoencoder, autoencoder_class


class FusionResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice with a 1x1 ``conv_out`` skip when widths differ (StableSR's fusion
    ``ResBlock``, named as released; the VAE's resnet style)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_out = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))  # (B, out, H, W)
        h = self.conv2(self.act(self.norm2(h)))  # (B, out, H, W)
        return h + (x if self.conv_out is None else self.conv_out(x))


class SFTFusion(nn.Module):
    """CFW fusion at one level: ``dec + w * (dec * scale(f) + shift(f))``, ``f = ResBlock(cat(enc, dec))``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.encode = FusionResBlock(2 * channels, channels, groups)
        self.scale = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.shift = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        for last in (self.scale[-1], self.shift[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
        f = self.encode(torch.cat([enc, dec], dim=1))  # (B, C, h, w)
        return dec + w * (dec * self.scale(f) + self.shift(f))  # (B, C, h, w)


class ResidualDenseBlock(nn.Module):
    """ESRGAN's dense block: 5 convs, each reading all earlier outputs; ``x + 0.2 * conv5(...)``."""

    def __init__(self, channels: int, growth: int = 32) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(channels + (k - 1) * growth, growth, 3, padding=1))
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)
        for k in range(1, 6):  # basicsr's default_init_weights(scale=0.1)
            conv = getattr(self, f"conv{k}")
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for k in range(1, 5):
            feats.append(torch.nn.functional.leaky_relu(getattr(self, f"conv{k}")(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))  # (B, C, H, W)


class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN): ``x + 0.2 * rdb3(rdb2(rdb1(x)))``."""

    def __init__(self, channels: int, growth: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(channels, growth)
        self.rdb2 = ResidualDenseBlock(channels, growth)
        self.rdb3 = ResidualDenseBlock(channels, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))  # (B, C, H, W)


class RRDBFusion(nn.Module):
    """The released fusion at one level: ``dec + w * f``, ``f = ResBlock(RRDB x2(ResBlock(cat(enc, dec))))``."""

    def __init__(self, channels: int, groups: int, num_rrdb: int = 2, growth: int = 32) -> None:
        super().__init__()
        self.encode_enc_1 = FusionResBlock(2 * channels, channels, groups)
        self.encode_enc_2 = nn.Sequential(*(RRDB(channels, growth) for _ in range(num_rrdb)))
        self.encode_enc_3 = FusionResBlock(channels, channels, groups)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
        f = self.encode_enc_3(self.encode_enc_2(self.encode_enc_1(torch.cat([enc, dec], dim=1))))  # (B, C, h, w)
        return dec + w * f


FUSION_BLOCKS = {"sft": SFTFusion, "rrdb": RRDBFusion}


def default_fusion_levels(num_levels: int) -> tuple[int, ...]:
    """The (up to) two resolution levels just above the latent one: (1, 2) for a 4-level VAE."""
    if num_levels < 2:
        raise ValueError(
            f"DecoderCompensator: the VAE has {num_levels} resolution level(s); at least 2 are needed"
        )
    return tuple(range(num_levels - 1))[-2:]


def _weight_tensor(w: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """``w`` as a float, or a per-sample ``(B,)``/scalar tensor broadcast to ``(B, 1, 1, 1)``."""
    if not torch.is_tensor(w):
        return float(w)
    w = w.to(device=like.device, dtype=like.dtype)
    return w.view(-1, 1, 1, 1) if w.ndim == 1 else w


class DecoderCompensator(ModelMixin, ConfigMixin):
    """A frozen copy of an autoencoder (``vae``: an ``AutoencoderKL``, or the ``mini`` prior's
    ``PatchAutoencoder``, named by ``vae_class``) plus trainable CFW fusion blocks (``fusion``).

    Build it from the pipeline's VAE with :meth:`from_vae`; ``save_pretrained``/``from_pretrained`` keep the
    VAE architecture in the config (``vae_config``) and all weights in the file.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        vae_config: dict[str, Any],
        fusion_levels: tuple[int, ...] | None = None,
        fusion_block: str = "sft",
        vae_class: str = "AutoencoderKL",
    ) -> None:
        super().__init__()
        if fusion_block not in FUSION_BLOCKS:
            raise ValueError(
                f"DecoderCompensator: fusion_block={fusion_block!r}; choose one of {list(FUSION_BLOCKS)} "
                "(stage2.fusion_block)"
            )
        vae_kwargs = {k: v for k, v in dict(vae_config).items() if not k.startswith("_")}
        self.vae = autoencoder_class(vae_class).from_config(vae_kwargs)
        channels = list(self.vae.config.block_out_channels)
        n = len(channels)
        levels = tuple(sorted(set(default_fusion_levels(n) if fusion_levels is None else fusion_levels)))
        bad = [lv for lv in levels if not 0 <= lv < n]
        if bad or not levels:
            raise ValueError(
                f"DecoderCompensator: fusion_levels={fusion_levels} must be non-empty, within 0..{n - 1}"
            )
        groups = self.vae.config.norm_num_groups
        block = FUSION_BLOCKS[fusion_block]
        self.fusion = nn.ModuleDict({str(lv): block(channels[lv], groups) for lv in levels})
        self.fusion_levels = levels
        self.register_to_config(vae_config=vae_kwargs, fusion_levels=list(levels))
        self.downscale = 2 ** (n - 1)  # pixels per latent cell
        self.gradient_checkpointing = False
        self.vae.requires_grad_(False)
        self.vae.eval()

    @classmethod
    def from_vae(
        cls, vae: AutoencoderKL, fusion_levels: tuple[int, ...] | None = None, fusion_block: str = "sft"
    ) -> DecoderCompensator:
        """Compensator around a copy of ``vae`` (channels and levels from ``vae.config``), fresh fusion blocks."""
        model = cls(vae_config=dict(vae.config), fusion_levels=fusion_levels, fusion_block=fusion_block,
                    vae_class=type(vae).__name__)
        model.vae.load_state_dict(vae.state_dict())
        model.to(vae.device)
        if vae.dtype != model.dtype:
            model.to(dtype=vae.dtype)
        return model

    def train(self, mode: bool = True) -> DecoderCompensator:
        """Train/eval the fusion blocks; the VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    def fusion_parameters(self):
        """The trainable parameters (stage II optimiser input)."""
        return self.fusion.parameters()

    # -- checks ------------------------------------------------------------------------------------
    def _check_pixels(self, x: torch.Tensor, who: str) -> None:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.vae.config.in_channels:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"DecoderCompensator.{who}: expected images (B, 3, H, W) in [-1, 1], got {shape}"
            )
        if x.shape[-2] % self.downscale or x.shape[-1] % self.downscale:
            raise ValueError(
                f"DecoderCompensator.{who}: image size {tuple(x.shape[-2:])} is not divisible by {self.downscale}; "
                f"pad the image to the latent grid first"
            )

    def _run(self, module: nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    # -- encoder side ------------------------------------------------------------------------------
    def encode_features(self, lq_image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """VAE-encoder feature maps of the LQ image ``(B, 3, H, W)`` in [-1, 1] at :attr:`fusion_levels`
        (in that order; level ``i`` is ``(B, block_out_channels[i], H / 2**i, W / 2**i)``)."""
        self._check_pixels(lq_image, "encode_features")
        if isinstance(self.vae, PatchAutoencoder):
            feats_all = self.vae.encoder_features(lq_image.to(self.vae.dtype))  # level i: (B, Ci, H/2^i, W/2^i)
            return tuple(feats_all[lv] for lv in self.fusion_levels)
        enc = self.vae.encoder
        h = enc.conv_in(lq_image.to(self.vae.dtype))  # (B, C0, H, W)
        feats: dict[int, torch.Tensor] = {}
        for i, block in enumerate(enc.down_blocks[: max(self.fusion_levels) + 1]):
            for resnet in block.resnets:
                h = resnet(h, temb=None)  # (B, Ci, H/2^i, W/2^i)
            if i in self.fusion_levels:
                feats[i] = h
            if block.downsamplers is not None:
                for down in block.downsamplers:
                    h = down(h)  # (B, Ci, H/2^(i+1), W/2^(i+1))
        return tuple(feats[lv] for lv in self.fusion_levels)

    # -- decoder side ------------------------------------------------------------------------------
    def decode(
        self,
        latents: torch.Tensor,
        lq_image: torch.Tensor | None = None,
        w: float | torch.Tensor = 0.5,
        features: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """Image ``(B, 3, H, W)`` in [-1, 1] from *unscaled* latents ``(B, 4, H/8, W/8)`` (what
        ``AutoencoderKL.decode`` takes: divide the denoiser's latents by ``vae.config.scaling_factor``).

        ``w`` (float or per-sample ``(B,)`` tensor) weighs the LQ compensation; ``w == 0`` is the plain VAE
        decoder. Give the LQ image ``lq_image`` in [-1, 1] (``(B, 3, 8h, 8w)``) or its precomputed
        ``features`` from :meth:`encode_features`.
        """
        if (
            not torch.is_tensor(latents)
            or latents.ndim != 4
            or latents.shape[1] != self.vae.config.latent_channels
        ):
            shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
            raise ValueError(f"DecoderCompensator.decode: expected latents (B, 4, h, w), got {shape}")
        fuse = torch.is_tensor(w) or float(w) != 0.0
        feats_by_level: dict[int, torch.Tensor] = {}
        if fuse:
            if features is None:
                if lq_image is None:
                    raise ValueError("DecoderCompensator.decode: w != 0 needs lq_image or features")
                expected = (latents.shape[-2] * self.downscale, latents.shape[-1] * self.downscale)
                if tuple(lq_image.shape[-2:]) != expected:
                    raise ValueError(
                        f"DecoderCompensator.decode: lq_image is {tuple(lq_image.shape[-2:])} but the latents "
                        f"{tuple(latents.shape[-2:])} decode to {expected}"
                    )
                features = self.encode_features(lq_image)
            if len(features) != len(self.fusion_levels):
                raise ValueError(
                    f"DecoderCompensator.decode: got {len(features)} feature maps for levels {self.fusion_levels}"
                )
            feats_by_level = dict(zip(self.fusion_levels, features))
            w = _weight_tensor(w, latents.to(self.vae.dtype))

        vae = self.vae
        z = latents.to(vae.dtype)
        if isinstance(vae, PatchAutoencoder):
            def fuse(level: int, h: torch.Tensor) -> torch.Tensor:
                if level not in feats_by_level:
                    return h
                return self._run(self.fusion[str(level)], feats_by_level[level].to(h.dtype), h, w)

            return vae.decode_with(z, fuse)  # (B, 3, H, W)
        if vae.post_quant_conv is not None:
            z = vae.post_quant_conv(z)  # (B, 4, h, w)
        dec = vae.decoder
        h = dec.conv_in(z)  # (B, C_last, h, w)
        h = self._run(dec.mid_block, h, None)  # (B, C_last, h, w)
        n = len(dec.up_blocks)
        for j, up in enumerate(dec.up_blocks):
            level = n - 1 - j
            if level not in feats_by_level:
                h = self._run(up, h, None)
                continue
            for resnet in up.resnets:
                h = self._run(resnet, h, None)  # (B, C_level, H/2^level, W/2^level)
            h = self._run(self.fusion[str(level)], feats_by_level[level].to(h.dtype), h, w)
            if up.upsamplers is not None:
                for upsampler in up.upsamplers:
                    h = upsampler(h)
        h = dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))  # (B, 3, H, W)
        return h

    forward = decode  # calling the module decodes (so training wrappers such as DDP can call it)


def build_compensator(cfg, vae: AutoencoderKL) -> DecoderCompensator:
    """The decoder compensator for a resolved config and its VAE (architecture and weights copied from ``vae``).

    Levels come from ``vae.config``; ``stage2.fusion_block`` picks the fusion form.
    """
    return DecoderCompensator.from_vae(vae, fusion_block=cfg.stage2.fusion_block)
