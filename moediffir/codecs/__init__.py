"""The codecs of the CIR benchmark (paper §3.5, docs/design.md §3): one interface, a plain dict of factories.

    from moediffir.codecs import CODECS, make_codec, LEVEL_TYPES
    codec = make_codec("hevc", cfg.data)      # build once, reuse for many images (models/binaries are cached)
    res = codec(rgb_uint8_hw3, 37)            # CodecResult(decoded, num_bits, info)

| key | codec | level |
|---|---|---|
| ``jpeg`` | libjpeg through Pillow, 4:2:0 | quality factor (int) |
| ``webp`` | libwebp through Pillow, lossy | quality factor (int) |
| ``hevc`` | x265 through PyAV, or the user's HM | QP (int) |
| ``avc`` | x264 through PyAV (unseen cross-type tasks) | QP (int) |
| ``vvc`` | libvvenc through imageio-ffmpeg, or the user's vvencapp / VTM | QP (int) |
| ``c_psnr`` / ``c_ssim`` | compressai ``cheng2020_attn`` (mse / ms-ssim) | quality 1..6 (int) |
| ``hific`` | HiFiC (``moediffir.codecs.hific``) | ``"low"``, ``"med"``, ``"high"`` |

Every ``info`` has ``backend``, ``weights`` (``"n/a"``, ``"pretrained"`` or ``"random"``) and ``bits_source``
(``"bitstream"`` or ``"likelihood"``); video codecs add ``qp_used`` (from the encoder's own report) and ``yuv``.
Heavy libraries (torch, compressai, PyAV) are imported inside the factories, so ``import moediffir.codecs`` is
cheap and has no side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from moediffir.codecs.base import (
    HIFIC_CHECKPOINT_FILES,
    Codec,
    CodecError,
    CodecResult,
    CodecUnavailableError,
    check_rgb,
    pad_to_multiple,
)


def _jpeg(data_cfg: Any) -> Codec:
    from moediffir.codecs.pillow_codecs import JPEGCodec

    return JPEGCodec()


def _webp(data_cfg: Any) -> Codec:
    from moediffir.codecs.pillow_codecs import WebPCodec

    return WebPCodec()


def _hevc(data_cfg: Any) -> Codec:
    from moediffir.codecs.video import make_hevc

    return make_hevc(data_cfg)


def _avc(data_cfg: Any) -> Codec:
    from moediffir.codecs.video import make_avc

    return make_avc(data_cfg)


def _vvc(data_cfg: Any) -> Codec:
    from moediffir.codecs.video import make_vvc

    return make_vvc(data_cfg)


def _c_psnr(data_cfg: Any) -> Codec:
    from moediffir.codecs.learned import CompressAICodec

    return CompressAICodec("c_psnr", weights=data_cfg.learned_weights)


def _c_ssim(data_cfg: Any) -> Codec:
    from moediffir.codecs.learned import CompressAICodec

    return CompressAICodec("c_ssim", weights=data_cfg.learned_weights)


def hific_weights_dir(data_cfg: Any) -> Path:
    """``data.hific_dir``, or ``<data.root>/weights/hific`` when empty."""
    return Path(data_cfg.hific_dir) if data_cfg.hific_dir else Path(data_cfg.root) / "weights" / "hific"


def _hific(data_cfg: Any) -> Codec:
    try:
        from moediffir.codecs.hific import HiFiCCodec
    except ModuleNotFoundError as exc:
        if exc.name == "moediffir.codecs.hific":
            raise CodecUnavailableError(
                "hific: moediffir.codecs.hific is not part of this installation yet"
            ) from exc
        raise CodecUnavailableError(
            f"hific: a dependency is missing ({exc}); reinstall the kit with its extras"
        ) from exc
    return HiFiCCodec(hific_weights_dir(data_cfg), weights=data_cfg.learned_weights, device="cpu")


CODECS: dict[str, Callable[[Any], Codec]] = {
    "jpeg": _jpeg,
    "webp": _webp,
    "hevc": _hevc,
    "avc": _avc,
    "vvc": _vvc,
    "c_psnr": _c_psnr,
    "c_ssim": _c_ssim,
    "hific": _hific,
}

# Python type of each codec's level (quality factor / QP / quality are ints; HiFiC names its operating points).
LEVEL_TYPES: dict[str, type] = {
    "jpeg": int,
    "webp": int,
    "hevc": int,
    "avc": int,
    "vvc": int,
    "c_psnr": int,
    "c_ssim": int,
    "hific": str,
}


def make_codec(name: str, data_cfg: Any) -> Codec:
    """Build codec ``name`` from a :class:`moediffir.config.DataConfig` (backends, presets, YUV, weights).

    Raises:
        CodecError: unknown name or bad config value.
        CodecUnavailableError: the backend (binary, library or weights) is missing; the message says how to fix it.
    """
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; choose one of {sorted(CODECS)}")
    return CODECS[name](data_cfg)


__all__ = [
    "CODECS",
    "HIFIC_CHECKPOINT_FILES",
    "LEVEL_TYPES",
    "Codec",
    "CodecError",
    "CodecResult",
    "CodecUnavailableError",
    "check_rgb",
    "hific_weights_dir",
    "make_codec",
    "pad_to_multiple",
]
