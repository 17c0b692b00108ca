"""HiFiC codec of the CIR benchmark: three seen tasks, operating points low / med / high (paper §3.5, footnote 1).

The paper codes its images with the three public PyTorch checkpoints of the HiFiC port
Justin-Tan/high-fidelity-generative-compression (files ``hific_low.pt``, ``hific_med.pt``, ``hific_hi.pt``,
target 0.14 / 0.30 / 0.45 bpp). The networks are rebuilt in :mod:`moediffir.codecs.hific_nets` with the
checkpoints' exact state-dict layout; this module loads them and runs one image through

1. edge padding to a multiple of 64 (encoder /16 x hyper-encoder /4) and at least 128 px per side,
2. E(x) = y, h_a(y) = z, z_hat = round(z); (mu, sigma) = h_s(z_hat); y_hat = round(y - mu) + mu,
3. real entropy coding with compressai's rANS coder: z_hat with per-channel tables of the factorized density,
   y_hat with the mean-scale Gaussian (low/high) or logistic (med) conditional quantised to 64 scales
   (0.11 ... 256, log-spaced, tail mass 2^-8: the released code's tables); the two strings are decoded again
   and the decoded y_hat goes through the generator, so ``num_bits`` is the real bitstream length
   (``info["bits_source"] == "bitstream"``; ``info["likelihood_bits"]`` gives -sum log2 p for comparison),
4. G(y_hat), cropped back to H x W and rounded to uint8.

The public ``.pt`` files are full pickles, which normal runs never unpickle: each is converted once with
``moediffir convert-hific SRC`` into ``hific_<level>.safetensors`` beside it, and the codec reads only those; a
folder holding only the pickle is refused with one line naming the file and the command
(:mod:`moediffir.codecs.hific_checkpoint`: the checkpoints' layout, conversion and reading).

Differences from the released ``compress.py``: it reflect-pads the image to a multiple of 16 and then the
latents to a multiple of 4, we edge-pad the image once (same latent size); its rANS coder writes 32-bit words,
ours is compressai's byte-oriented coder. Profiles: ``paper`` loads the checkpoints from ``weights_dir``;
``smoke`` (``weights="random"``) builds the same full-size networks with seeded random weights, labelled
``weights="random"`` in every result.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moediffir.codecs.base import (
    CodecError,
    CodecResult,
    CodecUnavailableError,
    check_rgb,
    pad_to_multiple,
    torch_threads,
)
from moediffir.codecs.hific_checkpoint import (  # re-exported: the checkpoints' layout, conversion and reading
    CHECKPOINT_FILES,
    CONVERT_COMMAND,
    CONVERTED_FILES,
    LEVEL_ARCH,
    LEVELS,
    PUBLISHED_AT,
    HiFiCCheckpointError,
    arch_from_args,
    check_state_dict,
    convert_checkpoint,
    convert_hint,
    converted_path,
    expected_state_dict_shapes,
    level_of,
    load_hific_model,
    read_checkpoint,
    read_converted,
)
from moediffir.codecs.hific_nets import (
    LIKELIHOOD_EPS,
    FactorizedDensity,
    HiFiCModel,
    latent_likelihood,
    standardized_cdf,
    standardized_quantile,
)

__all__ = [
    "CHECKPOINT_FILES", "CONVERTED_FILES", "CONVERT_COMMAND", "LEVELS", "LEVEL_ARCH", "PUBLISHED_AT",
    "CdfTables", "HiFiCCheckpointError", "HiFiCCodec", "arch_from_args", "check_state_dict", "conditional_tables",
    "convert_checkpoint", "convert_hint", "converted_path", "expected_state_dict_shapes", "factorized_tables",
    "level_of", "load_hific_model", "padded_size", "random_hific_model", "rans_decode", "rans_encode",
    "read_checkpoint", "read_converted", "scale_indexes", "scale_table",
]

# Entropy-coding constants of the released code (src/compression/*.py).
TAIL_MASS = 2.0**-8
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64
MAX_HYPER_PMF_LENGTH = 4096  # cap of a hyper-latent table; values outside are escape-coded


# ----------------------------------------------------------------------------------- entropy tables
@dataclass(frozen=True)
class CdfTables:
    """Quantised CDFs in compressai's rANS layout: row i covers symbols offsets[i] .. offsets[i]+sizes[i]-3."""

    cdfs: list[list[int]]
    sizes: list[int]
    offsets: list[int]


def _quantized_cdf(pmf: list[float], tail: float) -> list[int]:
    from compressai._CXX import pmf_to_quantized_cdf

    return pmf_to_quantized_cdf(list(pmf) + [float(tail)], 16)


def scale_table() -> torch.Tensor:
    """The 64 log-spaced scales (0.11 ... 256) of the latent tables, float64."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS, dtype=torch.float64))


@lru_cache(maxsize=2)
def conditional_tables(likelihood_type: str) -> CdfTables:
    """Tables of the discretised zero-mean conditional at each table scale (symbols = round(y - mu))."""
    scales = scale_table()  # (64,)
    multiplier = -standardized_quantile(TAIL_MASS / 2.0, likelihood_type)
    centers = torch.ceil(scales * multiplier).long()  # (64,)
    lengths = 2 * centers + 1
    samples = torch.abs(torch.arange(int(lengths.max()), dtype=torch.float64)[None] - centers[:, None])  # (64, L)
    upper = standardized_cdf((0.5 - samples) / scales[:, None], likelihood_type)
    lower = standardized_cdf((-0.5 - samples) / scales[:, None], likelihood_type)
    pmf = upper - lower  # (64, L)
    tails = 2.0 * lower[:, 0]  # mass beyond +-(center + 1/2)
    cdfs = [_quantized_cdf(pmf[i, : lengths[i]].tolist(), tails[i].item()) for i in range(SCALES_LEVELS)]
    return CdfTables(cdfs, [int(n) + 2 for n in lengths], [-int(c) for c in centers])


def scale_indexes(scales: torch.Tensor) -> torch.Tensor:
    """Index of the smallest table scale >= each scale (the released code's ``compute_indices``)."""
    table = scale_table().to(scales.dtype).to(scales.device)
    idx = torch.searchsorted(table, scales.clamp_min(SCALES_MIN).contiguous(), right=False)
    return idx.clamp_max(SCALES_LEVELS - 1).to(torch.int32)


def _bisect_logits(density: FactorizedDensity, target: float) -> torch.Tensor:
    """Per channel, the x where the density's CDF logits equal ``target`` (monotone, so bisection)."""
    n = density.channels
    lo = torch.full((n, 1, 1), -1.0, dtype=torch.float64)
    hi = torch.full((n, 1, 1), 1.0, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return density.cdf_logits(x.float()).double()

    for _ in range(40):  # widen the bracket until it contains the target
        bad_lo, bad_hi = f(lo) > target, f(hi) < target
        if not (bad_lo.any() or bad_hi.any()):
            break
        lo = torch.where(bad_lo, lo * 2.0, lo)
        hi = torch.where(bad_hi, hi * 2.0, hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = f(mid) > target
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return (0.5 * (lo + hi)).reshape(n)  # (N,)


@torch.no_grad()
def factorized_tables(density: FactorizedDensity) -> CdfTables:
    """Per-channel tables of the hyper-latent density over [floor(lower tail), ceil(upper tail)]."""
    density = copy.deepcopy(density).float().cpu()  # small; the model's copy stays on its device
    t = math.log(2.0 / TAIL_MASS - 1.0)
    lower, upper = _bisect_logits(density, -t), _bisect_logits(density, t)  # (N,), (N,)
    lo = torch.floor(lower)
    hi = torch.ceil(upper)
    too_long = (hi - lo + 1) > MAX_HYPER_PMF_LENGTH
    if too_long.any():
        median = torch.round(_bisect_logits(density, 0.0))
        lo = torch.where(too_long, median - MAX_HYPER_PMF_LENGTH // 2, lo)
        hi = torch.where(too_long, lo + MAX_HYPER_PMF_LENGTH - 1, hi)
    lengths = (hi - lo + 1).long()  # (N,)
    grid = lo[:, None, None] + torch.arange(int(lengths.max()), dtype=torch.float64)  # (N, 1, L)
    up = density.cdf_logits((grid + 0.5).float()).double()
    dn = density.cdf_logits((grid - 0.5).float()).double()
    sign = -torch.sign(up + dn)
    pmf = torch.abs(torch.sigmoid(sign * up) - torch.sigmoid(sign * dn))[:, 0]  # (N, L)
    tail_lo = torch.sigmoid(density.cdf_logits((lo - 0.5).reshape(-1, 1, 1).float()).double()).reshape(-1)
    tail_hi = torch.sigmoid(-density.cdf_logits((hi + 0.5).reshape(-1, 1, 1).float()).double()).reshape(-1)
    tails = tail_lo + tail_hi  # (N,)
    cdfs = [_quantized_cdf(pmf[i, : lengths[i]].tolist(), tails[i].item()) for i in range(density.channels)]
    return CdfTables(cdfs, [int(n) + 2 for n in lengths], [int(v) for v in lo])


def rans_encode(symbols: torch.Tensor, indexes: torch.Tensor, tables: CdfTables) -> bytes:
    """Entropy-code integer symbols with compressai's rANS coder; out-of-table values are escape-coded."""
    from compressai.ans import RansEncoder

    return RansEncoder().encode_with_indexes(
        symbols.reshape(-1).int().tolist(), indexes.reshape(-1).int().tolist(), tables.cdfs, tables.sizes,
        tables.offsets,
    )


def rans_decode(data: bytes, indexes: torch.Tensor, tables: CdfTables) -> torch.Tensor:
    """Inverse of :func:`rans_encode`; returns int32 symbols shaped like ``indexes``."""
    from compressai.ans import RansDecoder

    out = RansDecoder().decode_with_indexes(
        data, indexes.reshape(-1).int().tolist(), tables.cdfs, tables.sizes, tables.offsets
    )
    return torch.tensor(out, dtype=torch.int32).reshape(indexes.shape)


def random_hific_model(level: str, seed: int = 0, device: str = "cpu") -> HiFiCModel:
    """Full-size networks of ``level`` with seeded random weights (smoke profile; the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + LEVELS.index(level))
        model = HiFiCModel(LEVEL_ARCH[level], with_discriminator=False)
    return model.to(device).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------- codec
@dataclass
class _Level:
    model: HiFiCModel
    checkpoint: str  # file name or "random"
    hyper_tables: CdfTables
    latent_tables: CdfTables


def padded_size(height: int, width: int) -> tuple[int, int]:
    """Size the image is edge-padded to: multiples of 64, at least 128 per side."""
    m, lo = HiFiCModel.image_multiple, HiFiCModel.min_image_side
    return max(lo, -(-height // m) * m), max(lo, -(-width // m) * m)


class HiFiCCodec:
    """HiFiC at the operating points ``low``, ``med``, ``high`` (networks cached per level).

    Args:
        weights_dir: folder holding ``hific_low.safetensors``, ``hific_med.safetensors``, ``hific_hi.safetensors``,
            converted from the public ``.pt`` files by ``moediffir convert-hific`` (``paper`` profile); a level
            whose ``.pt`` is there without its conversion is refused here, naming the file and the command.
        weights: ``"pretrained"`` (the public checkpoints) or ``"random"`` (seeded random weights, smoke).
        device: torch device of the networks; entropy coding runs on the CPU.
        seed: seed of the random weights.
        max_cached_levels: built levels kept in memory (each holds ~0.73 GB of float32 weights).
    """

    name = "hific"
    levels = LEVELS

    def __init__(self, weights_dir: str | Path, weights: str = "pretrained", device: str = "cpu",
                 seed: int = 0, max_cached_levels: int = 3, threads: int | None = 1) -> None:
        if weights not in ("pretrained", "random"):
            raise CodecError(f"hific: weights={weights!r}; use 'pretrained' (public checkpoints) or 'random' (smoke)")
        self.weights_dir = Path(weights_dir)
        self.weights = weights
        self.device = str(device)
        self.seed = int(seed)
        self.max_cached_levels = max(1, int(max_cached_levels))
        # torch threads during a call (restored after): one fixed count gives the same bits in every process
        self.threads = threads
        self._cache: OrderedDict[str, _Level] = OrderedDict()
        if weights == "pretrained":
            self._refuse_unconverted()

    # -- weights ------------------------------------------------------------------------------------
    def checkpoint_path(self, level: str) -> Path:
        """The converted file of ``level`` that the codec reads (``hific_<level>.safetensors``)."""
        return self.weights_dir / CONVERTED_FILES[self._check_level(level)]

    def pickle_path(self, level: str) -> Path:
        """The public ``.pt`` file of ``level`` (never read here: ``moediffir convert-hific`` converts it)."""
        return self.weights_dir / CHECKPOINT_FILES[self._check_level(level)]

    def missing_checkpoints(self) -> list[Path]:
        """Converted files this codec would need but cannot find (always empty for random weights)."""
        if self.weights == "random":
            return []
        return [self.checkpoint_path(lv) for lv in LEVELS if not self.checkpoint_path(lv).is_file()]

    def _refuse_unconverted(self) -> None:
        """Raise, naming the file and the command, when a public pickle lies here without its conversion."""
        for level in LEVELS:
            if not self.checkpoint_path(level).is_file() and self.pickle_path(level).is_file():
                raise CodecUnavailableError(
                    f"hific: {self.pickle_path(level)} is a full pickle, which normal runs never unpickle (it may "
                    f"run code); {convert_hint(self.pickle_path(level))}"
                )

    @staticmethod
    def _check_level(level: Any) -> str:
        if level not in LEVELS:
            raise CodecError(f"hific: unknown level {level!r}; choose one of {LEVELS}")
        return level

    def _level(self, level: str) -> _Level:
        level = self._check_level(level)
        if level in self._cache:
            self._cache.move_to_end(level)
            return self._cache[level]
        if self.weights == "random":
            model, ckpt = random_hific_model(level, self.seed, self.device), "random"
        else:
            path = self.checkpoint_path(level)
            if not path.is_file():
                self._refuse_unconverted()
                raise CodecUnavailableError(
                    f"hific: checkpoint {path.name!r} for level {level!r} not found in folder {self.weights_dir} "
                    f"(expected file {path}). Download {self.pickle_path(level).name!r} from {PUBLISHED_AT} into "
                    f"that folder and convert it once with `{CONVERT_COMMAND} {self.pickle_path(level)}`, or set "
                    "data.hific_dir; for a run without it use data.learned_weights=random (smoke, labelled)."
                )
            model, ckpt = load_hific_model(path, level, self.device), path.name
        entry = _Level(model, ckpt, factorized_tables(model.Hyperprior.hyperlatent_likelihood),
                       conditional_tables(model.arch.likelihood_type))
        self._cache[level] = entry
        while len(self._cache) > self.max_cached_levels:
            self._cache.popitem(last=False)
        return entry

    # -- coding -------------------------------------------------------------------------------------
    def __call__(self, rgb: np.ndarray, level: str) -> CodecResult:
        with torch_threads(self.threads), torch.no_grad():
            return self._code(rgb, level)

    def _code(self, rgb: np.ndarray, level: str) -> CodecResult:
        rgb = check_rgb(rgb, "hific")
        lv = self._level(level)
        model, hp = lv.model, lv.model.Hyperprior
        h, w = rgb.shape[:2]
        ph, pw = padded_size(h, w)
        padded = pad_to_multiple(rgb, HiFiCModel.image_multiple)
        if padded.shape[:2] != (ph, pw):
            padded = np.pad(padded, ((0, ph - padded.shape[0]), (0, pw - padded.shape[1]), (0, 0)), mode="edge")
        x = torch.tensor(padded, device=self.device).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, Hp, Wp)

        # Encoder side.
        y = model.Encoder(model.preprocess(x))  # (1, C, Hp/16, Wp/16)
        z = hp.analysis_net(y)  # (1, N, Hp/64, Wp/64)
        z_sym = torch.floor(z + 0.5)
        mean, scale = hp.latent_parameters(z_sym)  # (1, C, h, w) each
        y_sym = torch.floor(y - mean + 0.5)
        y_hat = y_sym + mean
        if not (torch.isfinite(y_hat).all() and torch.isfinite(z_sym).all()):
            raise CodecError(f"hific/{level}: non-finite latents ({lv.checkpoint}); the weights are broken")
        lik_bits = (-torch.log2(hp.hyperlatent_likelihood.likelihood(z_sym) + LIKELIHOOD_EPS).sum()
                    - torch.log2(latent_likelihood(y_hat, mean, scale, model.arch.likelihood_type)
                                 + LIKELIHOOD_EPS).sum()).item()
        z_idx = torch.arange(z.shape[1], dtype=torch.int32)[:, None, None].expand(z.shape[1:])  # (N, h/4, w/4)
        z_bytes = rans_encode(z_sym[0].cpu(), z_idx, lv.hyper_tables)
        y_bytes = rans_encode(y_sym[0].cpu(), scale_indexes(scale[0]).cpu(), lv.latent_tables)

        # Decoder side: only the two strings (and the padded size) are used from here on.
        z_dec = rans_decode(z_bytes, z_idx, lv.hyper_tables)[None].to(self.device).float()  # (1, N, h/4, w/4)
        mean_d, scale_d = hp.latent_parameters(z_dec)
        y_dec = rans_decode(y_bytes, scale_indexes(scale_d[0]).cpu(), lv.latent_tables)[None].to(self.device)
        if not (torch.equal(z_dec, z_sym) and torch.equal(y_dec.float(), y_sym)):
            raise CodecError(f"hific/{level}: entropy decoding did not reproduce the encoded symbols")
        x_hat = model.postprocess(model.Generator(y_dec.float() + mean_d))  # (1, 3, Hp, Wp)
        out = (x_hat[0, :, :h, :w].permute(1, 2, 0) * 255.0).round().to(torch.uint8).cpu().numpy()

        num_bits = 8 * (len(z_bytes) + len(y_bytes))
        info = {
            "backend": "hific-pytorch",
            "weights": self.weights,
            "bits_source": "bitstream",
            "checkpoint": lv.checkpoint,
            "level": level,
            "likelihood_bits": round(float(lik_bits), 3),
            "hyperlatent_bytes": len(z_bytes),
            "latent_bytes": len(y_bytes),
            "padded_size": [ph, pw],
            "likelihood_type": model.arch.likelihood_type,
        }
        return CodecResult(decoded=np.ascontiguousarray(out), num_bits=int(num_bits), info=info)
