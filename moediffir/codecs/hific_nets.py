"""HiFiC networks: encoder E, generator G, scale hyperprior and patch discriminator (paper §3.5, footnote 1).

The benchmark's third learned codec is HiFiC (Mentzer et al., NeurIPS 2020, "High-Fidelity Generative Image
Compression") at the three operating points released as public PyTorch checkpoints by the repository
Justin-Tan/high-fidelity-generative-compression. This module re-implements that architecture so that
``HiFiCModel(arch, with_discriminator=True).state_dict()`` has exactly the keys and tensor shapes of the
checkpoints' ``model_state_dict`` (fixture: ``moediffir/fixtures/hific_state_dict_keys.json``):

- ``Encoder``: 7x7 conv to 60 channels, four stride-2 3x3 convs (120, 240, 480, 960), 3x3 conv to C=220
  latent channels; ChannelNorm + ReLU after every conv but the last; reflection padding (HiFiC Table 3a).
- ``Generator``: ChannelNorm, 3x3 conv C->960, ChannelNorm, 9 residual blocks at 960 channels with a global
  skip, four stride-2 transposed convs (480, 240, 120, 60), 7x7 conv to RGB.
- ``Hyperprior``: Balle et al. 2018 mean-scale hyperprior; analysis 3x3 conv + two 5x5 stride-2 convs to
  N=320 hyper-latent channels, two synthesis nets (means, scales), and a non-parametric factorized density
  over the hyper-latents (Balle et al. 2018, appendix 6.1).
- ``Discriminator``: the conditional patch discriminator of the GAN loss. It is not needed for coding; it is
  built only to reproduce the checkpoint layout (its spectral-normed convs store ``weight_orig/_u/_v``).

Facts (names, shapes, paddings, constants) were read from the public model definition; the code is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Constants of the public implementation (src/hyperprior.py, src/compression/entropy_models.py).
MIN_SCALE = 0.11  # lower bound of the latent scales sigma
MIN_LIKELIHOOD = 1e-9  # lower bound of every likelihood
LIKELIHOOD_EPS = 1e-9  # added inside log() when counting bits
ENCODER_FILTERS = (60, 120, 240, 480, 960)
GENERATOR_FILTERS = (960, 480, 240, 120, 60)
DENSITY_FILTERS = (3, 3, 3)  # hidden widths of the factorized hyper-latent density
DENSITY_INIT_SCALE = 10.0
DISCRIMINATOR_FILTERS = (64, 128, 256, 512)
DISCRIMINATOR_CONTEXT_CHANNELS = 12


@dataclass(frozen=True)
class HiFiCArch:
    """Hyper-parameters of one HiFiC checkpoint (the ``args`` that change shapes or the forward pass)."""

    latent_channels: int = 220  # C, bottleneck depth
    hyper_channels: int = 320  # N, "large" hyperprior
    n_residual_blocks: int = 9
    likelihood_type: str = "gaussian"  # latent conditional: "gaussian" or "logistic"
    normalize_input_image: bool = False  # True: input in [-1, 1] and tanh on the generator output

    def __post_init__(self) -> None:
        if self.likelihood_type not in ("gaussian", "logistic"):
            raise ValueError(f"HiFiCArch.likelihood_type={self.likelihood_type!r}: use 'gaussian' or 'logistic'")
        if self.latent_channels < 1 or self.hyper_channels < 1 or self.n_residual_blocks < 1:
            raise ValueError(f"HiFiCArch: channel and block counts must be >= 1, got {self}")


# --------------------------------------------------------------------------------------------- layers
class ChannelNorm2D(nn.Module):
    """Normalise each pixel over the channel axis (HiFiC's ChannelNorm), with affine gamma/beta."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))  # (1, C, 1, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))  # (1, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        var = x.var(dim=1, keepdim=True, unbiased=True)  # (B, 1, H, W)
        return self.gamma * (x - mu) * torch.rsqrt(var + self.eps) + self.beta  # (B, C, H, W)


def _down_block(c_in: int, c_out: int) -> nn.Sequential:
    # indices 0 pad, 1 conv, 2 norm, 3 act -- the checkpoint keys are ".1.weight", ".2.gamma", ...
    return nn.Sequential(
        nn.ReflectionPad2d((0, 1, 1, 0)), nn.Conv2d(c_in, c_out, 3, stride=2), ChannelNorm2D(c_out), nn.ReLU()
    )


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1), ChannelNorm2D(c_out), nn.ReLU()
    )


class HiFiCEncoder(nn.Module):
    """E: image (B, 3, H, W) -> latents y (B, C, H/16, W/16); H and W must be multiples of 16."""

    n_downsampling_layers = 4

    def __init__(self, latent_channels: int = 220) -> None:
        super().__init__()
        f = ENCODER_FILTERS
        self.conv_block1 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, f[0], 7), ChannelNorm2D(f[0]), nn.ReLU()
        )
        self.conv_block2 = _down_block(f[0], f[1])
        self.conv_block3 = _down_block(f[1], f[2])
        self.conv_block4 = _down_block(f[2], f[3])
        self.conv_block5 = _down_block(f[3], f[4])
        self.conv_block_out = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(f[4], latent_channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_block1(x)  # (B, 60, H, W)
        x = self.conv_block2(x)  # (B, 120, H/2, W/2)
        x = self.conv_block3(x)  # (B, 240, H/4, W/4)
        x = self.conv_block4(x)  # (B, 480, H/8, W/8)
        x = self.conv_block5(x)  # (B, 960, H/16, W/16)
        return self.conv_block_out(x)  # (B, C, H/16, W/16)


class ResidualBlock(nn.Module):
    """pad-conv-norm-ReLU-pad-conv-norm plus identity (the generator's 960-channel blocks)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3)
        self.conv2 = nn.Conv2d(channels, channels, 3)
        self.norm1 = ChannelNorm2D(channels)
        self.norm2 = ChannelNorm2D(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(self.norm1(self.conv1(self.pad(x))))  # (B, 960, h, w)
        r = self.norm2(self.conv2(self.pad(r)))  # (B, 960, h, w)
        return x + r


class HiFiCGenerator(nn.Module):
    """G: quantised latents (B, C, h, w) -> image (B, 3, 16h, 16w), unbounded (see HiFiCModel.postprocess)."""

    def __init__(self, latent_channels: int = 220, n_residual_blocks: int = 9) -> None:
        super().__init__()
        f = GENERATOR_FILTERS
        self.n_residual_blocks = n_residual_blocks
        self.conv_block_init = nn.Sequential(
            ChannelNorm2D(latent_channels), nn.ReflectionPad2d(1), nn.Conv2d(latent_channels, f[0], 3),
            ChannelNorm2D(f[0]),
        )
        for m in range(n_residual_blocks):
            self.add_module(f"resblock_{m}", ResidualBlock(f[0]))
        self.upconv_block1 = _up_block(f[0], f[1])
        self.upconv_block2 = _up_block(f[1], f[2])
        self.upconv_block3 = _up_block(f[2], f[3])
        self.upconv_block4 = _up_block(f[3], f[4])
        self.conv_block_out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(f[4], 3, 7))

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        head = self.conv_block_init(y_hat)  # (B, 960, h, w)
        x = head
        for m in range(self.n_residual_blocks):
            x = getattr(self, f"resblock_{m}")(x)  # (B, 960, h, w)
        x = x + head
        x = self.upconv_block1(x)  # (B, 480, 2h, 2w)
        x = self.upconv_block2(x)  # (B, 240, 4h, 4w)
        x = self.upconv_block3(x)  # (B, 120, 8h, 8w)
        x = self.upconv_block4(x)  # (B, 60, 16h, 16w)
        return self.conv_block_out(x)  # (B, 3, 16h, 16w)


class HyperAnalysis(nn.Module):
    """h_a: latents (B, C, h, w) -> hyper-latents z (B, N, h/4, w/4); needs h, w >= 8 (reflect padding)."""

    n_downsampling_layers = 2

    def __init__(self, latent_channels: int = 220, hyper_channels: int = 320) -> None:
        super().__init__()
        n = hyper_channels
        self.conv1 = nn.Conv2d(latent_channels, n, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(n, n, 5, stride=2, padding=2, padding_mode="reflect")
        self.conv3 = nn.Conv2d(n, n, 5, stride=2, padding=2, padding_mode="reflect")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(y))  # (B, N, h, w)
        x = F.relu(self.conv2(x))  # (B, N, h/2, w/2)
        return self.conv3(x)  # (B, N, h/4, w/4)


class HyperSynthesis(nn.Module):
    """h_s: hyper-latents (B, N, h/4, w/4) -> one latent statistic (B, C, h, w) (means or scales)."""

    def __init__(self, latent_channels: int = 220, hyper_channels: int = 320) -> None:
        super().__init__()
        n = hyper_channels
        self.conv1 = nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1)
        self.conv2 = nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1)
        self.conv3 = nn.ConvTranspose2d(n, latent_channels, 3, stride=1, padding=1)

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(z_hat))  # (B, N, h/2, w/2)
        x = F.relu(self.conv2(x))  # (B, N, h, w)
        return self.conv3(x)  # (B, C, h, w)


class FactorizedDensity(nn.Module):
    """Non-parametric per-channel density of the hyper-latents (Balle et al. 2018, appendix 6.1).

    The CDF of channel c is ``sigmoid(f_c(x))`` with ``f_c`` a monotone chain of 1->3->3->3->1 affine maps
    (``softplus(H_k)`` weights, bias ``b_k``) each followed by ``x + tanh(a_k) * tanh(x)``.
    """

    def __init__(self, channels: int = 320, filters: tuple[int, ...] = DENSITY_FILTERS,
                 init_scale: float = DENSITY_INIT_SCALE) -> None:
        super().__init__()
        self.channels = channels
        widths = (1,) + tuple(filters) + (1,)
        self.n_layers = len(widths) - 1
        scale = init_scale ** (1.0 / self.n_layers)
        for k in range(self.n_layers):
            h_init = math.log(math.expm1(1.0 / scale / widths[k + 1]))
            self.register_parameter(f"H_{k}", nn.Parameter(torch.full((channels, widths[k + 1], widths[k]), h_init)))
            self.register_parameter(f"a_{k}", nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))
            self.register_parameter(f"b_{k}", nn.Parameter(torch.rand(channels, widths[k + 1], 1) - 0.5))

    def cdf_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the CDF at ``x`` of shape (N_channels, 1, L) -> (N_channels, 1, L)."""
        logits = x
        for k in range(self.n_layers):
            logits = torch.bmm(F.softplus(getattr(self, f"H_{k}")), logits)  # (N, w_k+1, L)
            logits = logits + getattr(self, f"b_{k}")
            logits = logits + torch.tanh(getattr(self, f"a_{k}")) * torch.tanh(logits)
        return logits

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(round(z) bin) for hyper-latents (B, N, h, w), lower-bounded by MIN_LIKELIHOOD."""
        b, n, h, w = z.shape
        flat = z.permute(1, 0, 2, 3).reshape(n, 1, -1)  # (N, 1, B*h*w)
        upper = self.cdf_logits(flat + 0.5)
        lower = self.cdf_logits(flat - 0.5)
        sign = -torch.sign(upper + lower)  # evaluate in the tail where sigmoid is accurate
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        lik = lik.clamp_min(MIN_LIKELIHOOD)
        return lik.reshape(n, b, h, w).permute(1, 0, 2, 3)  # (B, N, h, w)


def standardized_cdf(x: torch.Tensor, likelihood_type: str) -> torch.Tensor:
    """CDF of the zero-mean unit-scale Gaussian or logistic distribution."""
    if likelihood_type == "gaussian":
        return 0.5 * torch.erfc(x * (-1.0 / math.sqrt(2.0)))
    if likelihood_type == "logistic":
        return torch.sigmoid(x)
    raise ValueError(f"likelihood_type={likelihood_type!r}: use 'gaussian' or 'logistic'")


def standardized_quantile(p: float, likelihood_type: str) -> float:
    """Inverse of :func:`standardized_cdf` for a probability ``p`` in (0, 1)."""
    if likelihood_type == "gaussian":
        return math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)).item()
    if likelihood_type == "logistic":
        return math.log(p / (1.0 - p))
    raise ValueError(f"likelihood_type={likelihood_type!r}: use 'gaussian' or 'logistic'")


def latent_likelihood(y_hat: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor,
                      likelihood_type: str) -> torch.Tensor:
    """P(y_hat) under the mean-scale conditional convolved with U(-1/2, 1/2) (symmetric, stable form)."""
    v = torch.abs(y_hat - mean)
    upper = standardized_cdf((0.5 - v) / scale, likelihood_type)
    lower = standardized_cdf(-(0.5 + v) / scale, likelihood_type)
    return (upper - lower).clamp_min(MIN_LIKELIHOOD)


class Hyperprior(nn.Module):
    """Mean-scale hyperprior: h_a, h_s(mu), h_s(sigma) and the factorized hyper-latent density."""

    n_downsampling_layers = HyperAnalysis.n_downsampling_layers

    def __init__(self, latent_channels: int = 220, hyper_channels: int = 320,
                 likelihood_type: str = "gaussian") -> None:
        super().__init__()
        self.likelihood_type = likelihood_type
        self.analysis_net = HyperAnalysis(latent_channels, hyper_channels)
        self.synthesis_mu = HyperSynthesis(latent_channels, hyper_channels)
        self.synthesis_std = HyperSynthesis(latent_channels, hyper_channels)
        self.hyperlatent_likelihood = FactorizedDensity(hyper_channels)

    def latent_parameters(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, scales) of the latents from quantised hyper-latents; scales >= MIN_SCALE."""
        mean = self.synthesis_mu(z_hat)  # (B, C, h, w)
        scale = self.synthesis_std(z_hat).clamp_min(MIN_SCALE)  # (B, C, h, w)
        return mean, scale


class HiFiCDiscriminator(nn.Module):
    """Conditional patch discriminator D(x, y_hat) with spectral norm (GAN loss only; not used for coding)."""

    def __init__(self, latent_channels: int = 220) -> None:
        super().__init__()
        f = DISCRIMINATOR_FILTERS
        ctx = DISCRIMINATOR_CONTEXT_CHANNELS
        sn = nn.utils.spectral_norm
        kw = {"kernel_size": 4, "stride": 2, "padding": 1, "padding_mode": "reflect"}
        self.context_conv = nn.Conv2d(latent_channels, ctx, 3, padding=1, padding_mode="reflect")
        self.conv1 = sn(nn.Conv2d(3 + ctx, f[0], **kw))
        self.conv2 = sn(nn.Conv2d(f[0], f[1], **kw))
        self.conv3 = sn(nn.Conv2d(f[1], f[2], **kw))
        self.conv4 = sn(nn.Conv2d(f[2], f[3], **kw))
        self.conv_out = nn.Conv2d(f[3], 1, 1)

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        ctx = F.leaky_relu(self.context_conv(y_hat), 0.2)  # (B, 12, h, w)
        ctx = F.interpolate(ctx, scale_factor=16, mode="nearest")  # (B, 12, 16h, 16w)
        h = torch.cat([x, ctx], dim=1)  # (B, 15, H, W)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            h = F.leaky_relu(conv(h), 0.2)
        return self.conv_out(h)  # (B, 1, H/16, W/16) logits


class HiFiCModel(nn.Module):
    """The checkpoint's ``Model``: Encoder, Generator, Hyperprior (and optionally the Discriminator).

    Attribute names equal the public ``src/model.py`` so that ``state_dict()`` keys match its checkpoints.
    """

    #: Total spatial downsampling from image to hyper-latents (16 x 4).
    image_multiple = 2 ** (HiFiCEncoder.n_downsampling_layers + HyperAnalysis.n_downsampling_layers)
    #: Smallest padded image side: the hyper-encoder's reflect padding needs a latent side >= 8.
    min_image_side = 8 * 2 ** HiFiCEncoder.n_downsampling_layers

    def __init__(self, arch: HiFiCArch | None = None, with_discriminator: bool = False) -> None:
        super().__init__()
        self.arch = arch or HiFiCArch()
        a = self.arch
        self.Encoder = HiFiCEncoder(a.latent_channels)
        self.Generator = HiFiCGenerator(a.latent_channels, a.n_residual_blocks)
        self.Hyperprior = Hyperprior(a.latent_channels, a.hyper_channels, a.likelihood_type)
        if with_discriminator:
            self.Discriminator = HiFiCDiscriminator(a.latent_channels)

    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] -> the range the checkpoint was trained on ([-1, 1] when normalize_input_image)."""
        return x01 * 2.0 - 1.0 if self.arch.normalize_input_image else x01

    def postprocess(self, g: torch.Tensor) -> torch.Tensor:
        """Generator output -> image in [0, 1] (tanh first when normalize_input_image)."""
        if self.arch.normalize_input_image:
            g = (torch.tanh(g) + 1.0) / 2.0
        return g.clamp(0.0, 1.0)


def count_parameters(module: nn.Module) -> int:
    """Number of scalars in a module's parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
