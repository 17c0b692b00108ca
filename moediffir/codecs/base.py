"""The codec interface of the CIR benchmark (paper §3.5, docs/design.md §3).

Every codec takes an ``(H, W, 3)`` uint8 RGB array and a level (quality factor, QP, learned-codec quality or
HiFiC operating point) and returns the decoded ``(H, W, 3)`` uint8 RGB array and the exact number of bits the
codec wrote for the image. Bits per pixel are always counted over the original width x height.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from moediffir.errors import MoEDiffIRError

#: HiFiC's public checkpoint file per level (Zenodo record 4026003; Google Drive links in its README); in this
#: light module so the preflight names them without importing torch.
HIFIC_CHECKPOINT_FILES: dict[str, str] = {"low": "hific_low.pt", "med": "hific_med.pt", "high": "hific_hi.pt"}
#: What the codec reads: each public file converted once by ``moediffir convert-hific`` (``hific_<level>.safetensors``
#: beside it; :mod:`moediffir.codecs.hific_checkpoint`).
HIFIC_CONVERTED_FILES: dict[str, str] = {lv: name.removesuffix(".pt") + ".safetensors"
                                         for lv, name in HIFIC_CHECKPOINT_FILES.items()}


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as the caller set them), then put the count back.

    A learned codec's float results depend on how its convolutions split their sums over threads, and a
    rounding step (``floor``) turns a last-bit difference into another symbol: a fixed count makes every
    image's bits the same whichever process (and thread count) codes it (``data build --workers N``).
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)


class CodecError(MoEDiffIRError, RuntimeError):
    """A codec failed or is not available; the message says which and how to fix it."""


class CodecUnavailableError(CodecError):
    """A codec's backend (binary, library or weights) is missing."""


@dataclass
class CodecResult:
    """Output of one encode/decode round trip."""

    decoded: np.ndarray  # (H, W, 3) uint8, same size as the input
    num_bits: int  # bits of image data (entropy-coded length, or -log2 likelihood, see info)
    info: dict[str, Any] = field(default_factory=dict)  # backend, qp_used, weights, bits_source, ...

    def bpp(self, height: int | None = None, width: int | None = None) -> float:
        h = height if height is not None else self.decoded.shape[0]
        w = width if width is not None else self.decoded.shape[1]
        return self.num_bits / float(h * w)


@runtime_checkable
class Codec(Protocol):
    """One codec at any of its levels."""

    name: str

    def __call__(self, rgb: np.ndarray, level: Any) -> CodecResult: ...


def check_rgb(rgb: np.ndarray, who: str) -> np.ndarray:
    """Validate a codec input: ``(H, W, 3)`` uint8 with H, W >= 1."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise CodecError(f"{who}: expected an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise CodecError(f"{who}: empty image {rgb.shape}")
    return np.ascontiguousarray(rgb)


def pad_to_multiple(rgb: np.ndarray, multiple: int) -> np.ndarray:
    """Pad ``(H, W, C)`` by repeating edge pixels (bottom/right) to multiples of ``multiple``."""
    h, w = rgb.shape[:2]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return rgb
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
