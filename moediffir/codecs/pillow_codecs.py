"""JPEG and WebP codecs of the CIR benchmark, through Pillow (paper §3.5, docs/design.md §3).

- JPEG: libjpeg(-turbo) through Pillow, baseline sequential, 4:2:0 chroma subsampling (``subsampling=2``),
  ``quality=QF`` with the standard IJG tables scaled by QF, default Huffman tables (``optimize=False``), not
  progressive. The call is exactly ``Image.save(buf, "JPEG", quality=QF, subsampling=2)``, so the bytes equal
  Pillow's own output for those arguments. Pillow converts RGB to YCbCr itself (JFIF: BT.601 full range).
- WebP: libwebp through Pillow, lossy (``lossless=False``), ``quality=QF``, ``method=4`` (libwebp's and cwebp's
  default speed/efficiency trade-off), no metadata. libwebp codes 4:2:0 with its own BT.601 conversion.

Bits: the whole file (``len(bytes) * 8``), headers included (JFIF APP0 18 bytes, quantisation and Huffman
tables; the RIFF/VP8 chunk headers for WebP, 20 bytes). That is what a user stores and what the JPEG
artifact-removal literature reports; no marker is stripped. Odd sizes need no padding (both formats code any
size); the decoded image has the input size.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, features

from moediffir.codecs.base import CodecError, CodecResult, CodecUnavailableError, check_rgb

WEBP_METHOD = 4  # libwebp speed/quality knob (0 fast .. 6 slow); 4 is libwebp's default


def _check_quality(name: str, level: Any, low: int, high: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise CodecError(f"{name}: the level is a quality factor, an int in [{low}, {high}]; got {level!r}")
    qf = int(level)
    if not low <= qf <= high:
        raise CodecError(f"{name}: quality factor {qf} is outside [{low}, {high}]")
    return qf


def _decode(data: bytes, name: str, shape: tuple[int, ...]) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        decoded = np.asarray(img.convert("RGB"))
    if decoded.shape != shape:
        raise CodecError(f"{name}: decoded size {decoded.shape} differs from the input {shape}")
    return np.ascontiguousarray(decoded)


class _PillowCodec:
    """Shared round trip of the Pillow codecs: encode to file bytes, decode, count every byte of the file."""

    name: str
    backend: str
    quality_range: tuple[int, int]
    bits_counted: str

    def encode(self, rgb: np.ndarray, qf: int) -> bytes:
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray, level: int) -> CodecResult:
        rgb = check_rgb(rgb, self.name)
        qf = _check_quality(self.name, level, *self.quality_range)
        data = self.encode(rgb, qf)
        decoded = _decode(data, self.name, rgb.shape)
        info = {
            "backend": self.backend,
            "weights": "n/a",
            "bits_source": "bitstream",
            "bits_counted": self.bits_counted,
            "subsampling": "4:2:0",
            "quality": qf,
        }
        return CodecResult(decoded=decoded, num_bits=8 * len(data), info=info)


class JPEGCodec(_PillowCodec):
    """libjpeg through Pillow, 4:2:0, ``quality=QF``; level = QF (int, 1..100)."""

    name = "jpeg"
    quality_range = (1, 100)
    bits_counted = "whole .jpg file (JFIF headers included)"

    def __init__(self) -> None:
        if not features.check("jpg"):
            raise CodecUnavailableError("jpeg: this Pillow build has no libjpeg support; reinstall Pillow")
        self.backend = f"pillow-libjpeg-{features.version('jpg')}"

    def encode(self, rgb: np.ndarray, qf: int) -> bytes:
        """The JPEG file bytes, exactly as ``Image.save(buf, "JPEG", quality=qf, subsampling=2)`` writes them."""
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=qf, subsampling=2)
        return buf.getvalue()


class WebPCodec(_PillowCodec):
    """libwebp (lossy) through Pillow, ``quality=QF``, ``method=4``; level = QF (int, 0..100)."""

    name = "webp"
    quality_range = (0, 100)
    bits_counted = "whole .webp file (RIFF/VP8 headers included)"

    def __init__(self, method: int = WEBP_METHOD) -> None:
        if not features.check("webp"):
            raise CodecUnavailableError("webp: this Pillow build has no libwebp support; reinstall Pillow")
        self.method = int(method)
        self.backend = f"pillow-libwebp-{features.version('webp')}/method{self.method}"

    def encode(self, rgb: np.ndarray, qf: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "WEBP", quality=qf, method=self.method, lossless=False)
        return buf.getvalue()
