"""The ``mini`` prior's latent space: a patch-PCA autoencoder with learned overlapping refinements (paper §3.1).

The latent diffusion prior of the paper lives in SD 2.1's VAE space (§3.1, Eq. 1): ``z = E(x)``, ``x ≈ D(z)``.
The ``mini`` profile trains its own prior on a CPU in minutes, and a deep ``AutoencoderKL`` trained from scratch
in that budget stays far under the compressed input it is meant to restore (about 20 dB against JPEG QF 10's 25
dB, with colour shifts of 20+ levels; docs/design.md §10). This autoencoder starts at the answer instead:

- **Linear core, fitted in closed form.** Each ``f x f`` RGB patch (``f = 2**(len(block_out_channels) - 1)``)
  is a vector of ``3 f²`` values; its principal components over the training photos (:meth:`fit_pca`) give the
  ``latent_channels`` latents, each divided by ``s = σ ** whiten`` (``σ``: the component's standard deviation;
  ``whiten=1`` gives every channel unit variance, ``whiten=0`` keeps the orthonormal coefficients, so that a
  latent's squared error is its patch's):
  ``z = W (p - μ) / s`` and back ``p = Wᵀ (s z) + μ``. Eight components of 4x4 patches keep about 32.5 dB
  on the held-out native-resolution crops before any training.
- **Zero-initialised refinements.** A small convolutional branch on each side adds to the linear path,
  ``z = PCA(x) + R_E(x)`` and ``x̂ = PCA⁻¹(z) + R_D(z, PCA⁻¹(z))``, with their last convolutions at zero, so the
  untrained model is exactly the PCA codec. Their 3x3 kernels overlap patch borders, so the decoder learns to
  remove the ``f x f`` block edges that errors in ``z`` (from the UNet) would otherwise draw.
- **Resolution levels.** Both branches run at the levels ``0 .. n-1`` (``H / 2**i``, ``block_out_channels[i]``
  channels), like ``AutoencoderKL``'s blocks; the decoder compensator (§3.4, Eq. 4) fuses LQ encoder features
  into the decoder at two of them (:meth:`encoder_features`, :meth:`decode_with`).

The interface is what stage I, the pipeline and the ceiling table use from ``AutoencoderKL``:
``encode(x).latent_dist`` (a ``DiagonalGaussianDistribution`` whose variance is negligible: the code is
deterministic), ``decode(z).sample``, ``config.latent_channels``, ``config.scaling_factor`` and
``config.block_out_channels``. Images are in [-1, 1], sizes divisible by ``f``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

LOGVAR = -30.0  # log-variance of the posterior: std exp(-15) ≈ 3e-7, a deterministic code in a KL interface

#: ``fuse(level, h)`` -> ``h``: called on the decoder's features at each level (the compensator's hook)
FuseFn = Callable[[int, torch.Tensor], torch.Tensor]


def _conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    """conv3x3 - SiLU - conv3x3 (overlapping kernels at one resolution level)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Patch-PCA autoencoder with zero-initialised overlapping refinements (see the module docstring).

    Args:
        latent_channels: principal components kept (8 for ``mini``).
        block_out_channels: widths of the refinement branches per level; ``len - 1`` halvings give the patch
            size ``f`` (``(16, 32, 64)``: 4x4 patches, levels at ``H``, ``H/2``, ``H/4``).
        scaling_factor: multiplies the latents for the diffusion model (stage 0 sets it to 1 / their std).
        norm_num_groups: group count for normalisation layers built around this model (compensator fusion).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 8,
        block_out_channels: Sequence[int] = (16, 32, 64),
        scaling_factor: float = 1.0,
        norm_num_groups: int = 8,
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"PatchAutoencoder: in_channels={in_channels} must equal out_channels={out_channels}")
        chans = [int(c) for c in block_out_channels]
        if len(chans) < 2:
            raise ValueError(f"PatchAutoencoder: block_out_channels={chans} needs at least 2 levels")
        self.factor = 2 ** (len(chans) - 1)
        patch_dim = in_channels * self.factor**2
        if not 1 <= latent_channels <= patch_dim:
            raise ValueError(f"PatchAutoencoder: latent_channels={latent_channels} must be in 1..{patch_dim}")
        # the linear core (filled by fit_pca): mean patch, orthonormal components (rows), their std
        self.register_buffer("patch_mean", torch.zeros(patch_dim))  # (P,)
        self.register_buffer("components", torch.eye(patch_dim)[:latent_channels].clone())  # (C, P)
        self.register_buffer("component_scale", torch.ones(latent_channels))  # (C,)
        # encoder refinement: levels 0..n-1, downsampling by strided convs, zero-initialised output
        self.enc_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.enc_levels = nn.ModuleList(_conv_pair(c, c) for c in chans)
        self.enc_down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in pairwise(chans))
        self.enc_out = nn.Conv2d(chans[-1], latent_channels, 3, padding=1)
        # decoder refinement: from z at level n-1 up to level 0, where the linear image joins; zero-initialised out
        self.dec_in = nn.Conv2d(latent_channels, chans[-1], 3, padding=1)
        self.dec_levels = nn.ModuleList(_conv_pair(c, c) for c in chans)
        self.dec_up = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in pairwise(chans))
        self.dec_image = nn.Conv2d(out_channels, chans[0], 3, padding=1)
        self.dec_out = nn.Conv2d(chans[0], out_channels, 3, padding=1)
        for last in (self.enc_out, self.dec_out):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    # -- the linear core ---------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_pca(self, patches: torch.Tensor, whiten: float = 1.0) -> None:
        """Fit the linear core to ``(N, 3 f²)`` patch vectors (``pixel_unshuffle`` order, values in [-1, 1]).

        Components are the top eigenvectors of the patch covariance, each signed so its largest entry is
        positive (a deterministic result). Each latent is its component's coefficient divided by
        ``component_scale = std ** whiten`` (``std``: the square root of its eigenvalue): ``whiten=1`` gives
        every channel unit variance, ``whiten=0`` keeps the coefficients as they are (the latent space is then an
        orthonormal transform of the patches: latent MSE is pixel MSE).
        """
        p = patches.double()
        if p.ndim != 2 or p.shape[1] != self.patch_mean.numel() or p.shape[0] < p.shape[1]:
            raise ValueError(f"PatchAutoencoder.fit_pca: expected (N >= {self.patch_mean.numel()}, "
                             f"{self.patch_mean.numel()}) patches, got {tuple(p.shape)}")
        mean = p.mean(0)  # (P,)
        cov = (p - mean).T @ (p - mean) / (p.shape[0] - 1)  # (P, P)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        c = self.config.latent_channels
        top = evecs[:, -c:].flip(1).T  # (C, P), largest variance first
        idx = top.abs().argmax(dim=1)
        top = top * torch.sign(top[torch.arange(c), idx])[:, None]
        self.patch_mean.copy_(mean.to(self.patch_mean))
        self.components.copy_(top.to(self.components))
        std = evals.flip(0)[:c].clamp_min(1e-12).sqrt()  # (C,)
        self.component_scale.copy_((std ** float(whiten)).to(self.component_scale))

    def image_patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(B * h * w, 3 f²)`` patch vectors of images ``(B, 3, f h, f w)`` (what :meth:`fit_pca` takes)."""
        u = F.pixel_unshuffle(x, self.factor)  # (B, P, h, w)
        return u.permute(0, 2, 3, 1).reshape(-1, u.shape[1])

    def pca_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled principal components ``(B, C, h, w)`` of ``(B, 3, f h, f w)`` images."""
        self._check(x, self.config.in_channels, self.factor, "encode")
        u = F.pixel_unshuffle(x, self.factor) - self.patch_mean.view(1, -1, 1, 1)  # (B, P, h, w)
        weight = (self.components / self.component_scale[:, None])[:, :, None, None]  # (C, P, 1, 1)
        return F.conv2d(u, weight.to(u.dtype))  # (B, C, h, w)

    def pca_decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, f h, f w)`` from scaled components ``(B, C, h, w)`` (the linear inverse)."""
        weight = (self.components * self.component_scale[:, None]).T[:, :, None, None]  # (P, C, 1, 1)
        u = F.conv2d(z, weight.to(z.dtype)) + self.patch_mean.view(1, -1, 1, 1).to(z.dtype)  # (B, P, h, w)
        return F.pixel_shuffle(u, self.factor)  # (B, 3, f h, f w)

    # -- encoder -----------------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, channels: int, grid: int, who: str) -> None:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"PatchAutoencoder.{who}: expected (B, {channels}, H, W), got {shape}")
        if x.shape[-2] % grid or x.shape[-1] % grid:
            raise ValueError(f"PatchAutoencoder.{who}: size {tuple(x.shape[-2:])} is not divisible by {grid}")

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder branch's features at every level: level ``i`` is ``(B, block_out_channels[i], H/2**i,
        W/2**i)``, for images ``(B, 3, H, W)`` in [-1, 1]."""
        self._check(x, self.config.in_channels, self.factor, "encoder_features")
        feats = []
        h = self.enc_in(x)  # (B, C0, H, W)
        for i, block in enumerate(self.enc_levels):
            h = h + block(F.silu(h))  # (B, Ci, H/2^i, W/2^i)
            feats.append(h)
            if i < len(self.enc_down):
                h = self.enc_down[i](F.silu(h))  # (B, Ci+1, H/2^(i+1), W/2^(i+1))
        return feats

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Posterior of images ``(B, 3, H, W)`` in [-1, 1]: mean ``PCA(x) + R_E(x)`` ``(B, C, H/f, W/f)``,
        log-variance :data:`LOGVAR` everywhere."""
        mean = self.pca_encode(x) + self.enc_out(F.silu(self.encoder_features(x)[-1]))  # (B, C, h, w)
        dist = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, LOGVAR)], dim=1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    # -- decoder -----------------------------------------------------------------------------------------
    def decode_with(self, z: torch.Tensor, fuse: FuseFn | None = None) -> torch.Tensor:
        """Images ``(B, 3, f h, f w)`` in [-1, 1] from latents ``(B, C, h, w)``; ``fuse(level, h)`` (if given)
        rewrites the decoder's features at each level after that level's convolutions."""
        self._check(z, self.config.latent_channels, 1, "decode")
        base = self.pca_decode(z)  # (B, 3, H, W)
        n = len(self.dec_levels)
        h = self.dec_in(z)  # (B, C_{n-1}, h, w)
        for level in range(n - 1, -1, -1):
            if level == 0:
                h = h + self.dec_image(base)  # (B, C0, H, W): the linear image joins at full resolution
            h = h + self.dec_levels[level](F.silu(h))  # (B, C_level, H/2^level, W/2^level)
            if fuse is not None:
                h = fuse(level, h)
            if level > 0:
                h = self.dec_up[level - 1](F.interpolate(F.silu(h), scale_factor=2.0, mode="nearest"))
        return base + self.dec_out(F.silu(h))  # (B, 3, H, W)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """``DecoderOutput(sample)`` ``(B, 3, f h, f w)`` in [-1, 1] from latents ``(B, C, h, w)``."""
        out = self.decode_with(z)
        return DecoderOutput(sample=out) if return_dict else (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``D(E(x))`` from the posterior mean."""
        return self.decode(self.encode(x).latent_dist.mode()).sample



def autoencoder_class(name: str) -> type[ModelMixin]:
    """The autoencoder class a saved ``config.json`` names (``_class_name``): ``"AutoencoderKL"`` (SD's, and the
    ``prior.vae_kind="kl"`` prior's) or ``"PatchAutoencoder"``."""
    from diffusers import AutoencoderKL

    classes: dict[str, type[ModelMixin]] = {"AutoencoderKL": AutoencoderKL, "PatchAutoencoder": PatchAutoencoder}
    if name not in classes:
        raise ValueError(f"unknown autoencoder class {name!r}; choose one of {list(classes)}")
    return classes[name]
