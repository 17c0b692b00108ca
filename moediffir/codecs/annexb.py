"""Annex-B bitstreams of the intra video codecs, and PyAV around them (paper §3.5; docs/design.md §3).

NAL-unit parsing for H.264, HEVC and VVC (types, splitting, stripping the units that carry no image data:
SEI messages and access unit delimiters are not counted as image bits), one-picture encoding through a PyAV
encoder and decoding of an Annex-B stream back to 4:2:0 planes (:mod:`moediffir.codecs.video` uses them).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from moediffir.codecs.base import CodecError, CodecUnavailableError

# NAL unit types that carry no image data (SEI messages, access unit delimiters), per standard; they are
# removed before counting bits and decoding.
NON_IMAGE_NAL_TYPES: dict[str, frozenset[int]] = {
    "h264": frozenset({6, 9}),  # SEI, AUD
    "hevc": frozenset({35, 39, 40}),  # AUD_NUT, PREFIX_SEI_NUT, SUFFIX_SEI_NUT
    "vvc": frozenset({20, 23, 24}),  # AUD_NUT, PREFIX_SEI_NUT, SUFFIX_SEI_NUT
}


# --------------------------------------------------------------------------------------- Annex-B streams
def nal_type(codec: str, header: bytes) -> int:
    """NAL unit type from the first header byte(s) of an H.264, HEVC or VVC NAL unit."""
    if codec == "h264":
        return header[0] & 0x1F
    if codec == "hevc":
        return (header[0] >> 1) & 0x3F
    if codec == "vvc":
        return (header[1] >> 3) & 0x1F
    raise ValueError(f"unknown codec {codec!r} for NAL parsing")


def split_annexb(data: bytes) -> list[tuple[int, int, int]]:
    """NAL units of an Annex-B byte stream as ``(unit_start, payload_start, end)`` offsets.

    ``unit_start`` includes the start code (and its leading zero byte for 4-byte start codes); the units tile
    the stream after the first start code.
    """
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01", i + 3)
    begins = [s - 1 if s > 0 and data[s - 1] == 0 else s for s in starts]
    units = []
    for k, s in enumerate(starts):
        end = begins[k + 1] if k + 1 < len(starts) else len(data)
        units.append((begins[k], s + 3, end))
    return units


def nal_types(codec: str, data: bytes) -> list[int]:
    """Types of the NAL units in an Annex-B stream, in order."""
    return [nal_type(codec, data[p : p + 2]) for _, p, e in split_annexb(data) if e - p >= 2]


def strip_nal_units(codec: str, data: bytes, drop: frozenset[int]) -> tuple[bytes, int]:
    """Remove NAL units whose type is in ``drop``; return the new stream and the number of bytes removed."""
    kept = []
    removed = 0
    for begin, payload, end in split_annexb(data):
        if end - payload >= 2 and nal_type(codec, data[payload : payload + 2]) in drop:
            removed += end - begin
        else:
            kept.append(data[begin:end])
    return b"".join(kept), removed


# ------------------------------------------------------------------------------------------ PyAV helpers
def import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a declared dependency
        raise CodecUnavailableError("video codecs need PyAV: pip install av") from exc
    return av


def _plane(plane: Any, dtype: np.dtype) -> np.ndarray:
    arr = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
    return arr[:, : plane.width]


def decode_annexb(data: bytes, decoder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Decode a one-picture Annex-B stream with PyAV; return the Y, Cb, Cr planes and their bit depth."""
    av = import_av()
    try:
        ctx = av.CodecContext.create(decoder, "r")
    except Exception as exc:
        raise CodecUnavailableError(
            f"PyAV has no {decoder!r} decoder ({exc}); install a PyAV build with it"
        ) from exc
    ctx.thread_count = 1
    frames = []
    try:
        frames.extend(ctx.decode(av.Packet(data)))  # the whole access unit (parameter sets + slices) at once
        frames.extend(ctx.decode(None))
    except Exception as exc:
        raise CodecError(f"{decoder} decoder failed on a {len(data)}-byte bitstream: {exc}") from exc
    if len(frames) != 1:
        raise CodecError(f"{decoder} decoder returned {len(frames)} pictures for a one-picture bitstream")
    frame = frames[0]
    fmt = frame.format.name
    if fmt == "yuv420p":
        bits, dtype = 8, np.dtype(np.uint8)
    elif fmt == "yuv420p10le":
        bits, dtype = 10, np.dtype("<u2")
    else:
        raise CodecError(f"{decoder} decoder returned pixel format {fmt!r}; expected yuv420p or yuv420p10le")
    y, cb, cr = (_plane(p, dtype) for p in frame.planes[:3])
    return y, cb, cr, bits


def encode_pyav(
    codec_name: str, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, options: dict[str, str]
) -> bytes:
    """One 8-bit 4:2:0 picture through a PyAV encoder; returns the Annex-B stream."""
    av = import_av()
    h, w = y.shape
    frame = av.VideoFrame.from_ndarray(
        np.concatenate([y.ravel(), cb.ravel(), cr.ravel()]).reshape(h * 3 // 2, w), format="yuv420p"
    )
    ctx = av.CodecContext.create(codec_name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.thread_count = 1
    ctx.options = options
    try:
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    except Exception as exc:
        raise CodecError(f"{codec_name} failed on a {w}x{h} picture with options {options}: {exc}") from exc
    data = b"".join(bytes(p) for p in packets)
    del packets, ctx  # closes the encoder now (x264 prints its summary, x265 writes its CSV on close)
    return data
