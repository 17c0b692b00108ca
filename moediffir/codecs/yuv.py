"""RGB <-> Y'CbCr 4:2:0 conversion used by every video codec of the CIR benchmark (paper §3.5, docs/design.md §3).

HEVC, AVC and VVC code Y'CbCr 4:2:0 pictures, not RGB. Which matrix and range turn the RGB image into those
planes is not a detail: a matrix or range mismatch between the forward and the inverse conversion costs 5-12 dB
(measured). So the kit never relies on a library default: this module is the one conversion, in plain numpy,
used both before every video encoder and after every video decoder.

Conversion (ITU-R BT.601 / BT.709, non-linear R'G'B' in [0, 1], ``Kr``/``Kb`` from the matrix):

    Y' = Kr R' + (1 - Kr - Kb) G' + Kb B'
    Pb = (B' - Y') / (2 (1 - Kb)),   Pr = (R' - Y') / (2 (1 - Kr))          (Pb, Pr in [-0.5, 0.5])

    BT.601: Kr = 0.299,  Kb = 0.114          BT.709: Kr = 0.2126, Kb = 0.0722

Quantisation to ``n``-bit code values (``s = 2 ** (n - 8)``):

    limited ("studio", default):  Y = s (16 + 219 Y'),   Cb = s (128 + 224 Pb),   Cr = s (128 + 224 Pr)
    full    ("JPEG/JFIF"):        Y = (2^n - 1) Y',      Cb = 2^(n-1) + (2^n - 1) Pb (same for Cr)

Chroma 4:2:0: each chroma sample is the mean of its 2x2 block of full-resolution chroma values (centre siting,
i.e. between the four luma samples, as in JPEG/MPEG-1); the inverse upsamples with the matching bilinear
filter (weights 3/4 and 1/4 per axis, edges replicated). The siting only has to agree between our own two
directions: the decoders hand back the coded planes untouched.

Picture sizes must be even (the video codecs pad odd sizes by edge pixels before calling this module).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (Kr, Kb) of each matrix.
MATRICES: dict[str, tuple[float, float]] = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
RANGES: tuple[str, ...] = ("limited", "full")


@dataclass(frozen=True)
class YUVFormat:
    """Matrix, range and bit depth of a Y'CbCr 4:2:0 picture."""

    matrix: str = "bt601"
    yuv_range: str = "limited"
    bit_depth: int = 8

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES:
            raise ValueError(f"yuv matrix {self.matrix!r} is not supported; choose one of {sorted(MATRICES)}")
        if self.yuv_range not in RANGES:
            raise ValueError(f"yuv range {self.yuv_range!r} is not supported; choose one of {list(RANGES)}")
        if self.bit_depth not in (8, 10, 12, 16):
            raise ValueError(f"yuv bit depth {self.bit_depth} is not supported; choose 8, 10, 12 or 16")

    @property
    def name(self) -> str:
        """E.g. ``"bt601-limited"`` (``"bt601-limited-10bit"`` above 8 bits); recorded in codec info."""
        base = f"{self.matrix}-{self.yuv_range}"
        return base if self.bit_depth == 8 else f"{base}-{self.bit_depth}bit"

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bit_depth == 8 else np.uint16

    def with_bit_depth(self, bit_depth: int) -> YUVFormat:
        return YUVFormat(self.matrix, self.yuv_range, bit_depth)


def _scales(fmt: YUVFormat) -> tuple[float, float, float, float]:
    """(y_offset, y_scale, c_offset, c_scale) mapping Y' in [0,1] and Pb/Pr in [-.5,.5] to code values."""
    s = float(2 ** (fmt.bit_depth - 8))
    if fmt.yuv_range == "limited":
        return 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s
    peak = float(2**fmt.bit_depth - 1)
    return 0.0, peak, float(2 ** (fmt.bit_depth - 1)), peak


def _rgb_matrix(matrix: str) -> np.ndarray:
    """3x3 matrix taking R'G'B' to (Y', Pb, Pr)."""
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    return np.array(
        [
            [kr, kg, kb],
            [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
            [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
        ],
        dtype=np.float64,
    )


def rgb_to_ycbcr_float(rgb: np.ndarray, fmt: YUVFormat = YUVFormat()) -> np.ndarray:
    """Full-resolution Y'CbCr code values as float32 (not rounded, not subsampled).

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB.
    Returns:
        ``(H, W, 3)`` float32 with channels (Y, Cb, Cr) in ``fmt``'s code values.
    """
    m = _rgb_matrix(fmt.matrix)
    y_off, y_scale, c_off, c_scale = _scales(fmt)
    scale = np.array([y_scale, c_scale, c_scale]) / 255.0  # code values per 8-bit RGB step
    offset = np.array([y_off, c_off, c_off], dtype=np.float32)
    mat = (m * scale[:, None]).T.astype(np.float32)  # (3, 3): rgb @ mat
    return rgb.astype(np.float32) @ mat + offset  # (H, W, 3)


def ycbcr_float_to_rgb(ycc: np.ndarray, fmt: YUVFormat = YUVFormat()) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr_float`: float (Y, Cb, Cr) code values -> ``(H, W, 3)`` uint8 RGB (rounded, clipped)."""
    m_inv = np.linalg.inv(_rgb_matrix(fmt.matrix))
    y_off, y_scale, c_off, c_scale = _scales(fmt)
    offset = np.array([y_off, c_off, c_off], dtype=np.float32)
    inv_scale = 255.0 / np.array([y_scale, c_scale, c_scale])
    mat = (m_inv * inv_scale[None, :]).T.astype(np.float32)  # (3, 3): (ycc - offset) @ mat
    rgb = (ycc.astype(np.float32) - offset) @ mat  # (H, W, 3)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _check_even(h: int, w: int) -> None:
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"4:2:0 needs an even picture size >= 2x2, got {w}x{h}; pad by edge pixels first")


def downsample_chroma(c: np.ndarray) -> np.ndarray:
    """``(H, W)`` float chroma -> ``(H/2, W/2)``: mean of each 2x2 block (centre siting)."""
    h, w = c.shape
    return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # (H/2, W/2)


def upsample_chroma(c: np.ndarray) -> np.ndarray:
    """``(h, w)`` chroma -> ``(2h, 2w)`` float32, bilinear for centre-sited samples (weights 3/4, 1/4)."""
    c = c.astype(np.float32)
    h, w = c.shape
    p = np.pad(c, ((1, 1), (0, 0)), mode="edge")  # (h+2, w)
    rows = np.empty((h, 2, w), dtype=np.float32)
    rows[:, 0] = 0.25 * p[:-2] + 0.75 * p[1:-1]  # output rows 2k
    rows[:, 1] = 0.75 * p[1:-1] + 0.25 * p[2:]  # output rows 2k+1
    rows = rows.reshape(2 * h, w)
    p = np.pad(rows, ((0, 0), (1, 1)), mode="edge")  # (2h, w+2)
    out = np.empty((2 * h, w, 2), dtype=np.float32)
    out[:, :, 0] = 0.25 * p[:, :-2] + 0.75 * p[:, 1:-1]
    out[:, :, 1] = 0.75 * p[:, 1:-1] + 0.25 * p[:, 2:]
    return out.reshape(2 * h, 2 * w)  # (2h, 2w)


def _to_code(x: np.ndarray, fmt: YUVFormat) -> np.ndarray:
    return np.clip(np.rint(x), 0, 2**fmt.bit_depth - 1).astype(fmt.dtype)


def rgb_to_yuv420(rgb: np.ndarray, fmt: YUVFormat = YUVFormat()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 RGB (H, W even) -> Y ``(H, W)``, Cb ``(H/2, W/2)``, Cr ``(H/2, W/2)`` code values.

    The planes are uint8 for 8-bit formats, uint16 otherwise.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_yuv420 expects (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    _check_even(h, w)
    ycc = rgb_to_ycbcr_float(rgb, fmt)  # (H, W, 3)
    y = _to_code(ycc[..., 0], fmt)  # (H, W)
    cb = _to_code(downsample_chroma(ycc[..., 1]), fmt)  # (H/2, W/2)
    cr = _to_code(downsample_chroma(ycc[..., 2]), fmt)  # (H/2, W/2)
    return y, cb, cr


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, fmt: YUVFormat = YUVFormat()) -> np.ndarray:
    """Y ``(H, W)``, Cb/Cr ``(H/2, W/2)`` code values of ``fmt`` -> ``(H, W, 3)`` uint8 RGB."""
    h, w = y.shape
    _check_even(h, w)
    if cb.shape != (h // 2, w // 2) or cr.shape != (h // 2, w // 2):
        raise ValueError(f"chroma planes {cb.shape}/{cr.shape} do not match luma {y.shape} in 4:2:0")
    ycc = np.empty((h, w, 3), dtype=np.float32)
    ycc[..., 0] = y
    ycc[..., 1] = upsample_chroma(cb)
    ycc[..., 2] = upsample_chroma(cr)
    return ycbcr_float_to_rgb(ycc, fmt)  # (H, W, 3)


def shift_bit_depth(plane: np.ndarray, from_bits: int, to_bits: int) -> np.ndarray:
    """Change a plane's bit depth by a left shift (up, as HM/VTM do for 8-bit input) or a rounded right shift (down)."""
    if to_bits >= from_bits:
        return plane.astype(np.uint16 if to_bits > 8 else np.uint8) << (to_bits - from_bits)
    d = from_bits - to_bits
    out = (plane.astype(np.int32) + (1 << (d - 1))) >> d
    return np.clip(out, 0, 2**to_bits - 1).astype(np.uint8 if to_bits == 8 else np.uint16)


def pack_yuv420(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> bytes:
    """Planar I420 bytes (Y then Cb then Cr; 16-bit samples little-endian), the raw ``.yuv`` file layout."""
    if y.dtype == np.uint8:
        return y.tobytes() + cb.tobytes() + cr.tobytes()
    return b"".join(p.astype("<u2").tobytes() for p in (y, cb, cr))


def unpack_yuv420(
    data: bytes, width: int, height: int, bit_depth: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_yuv420` for one ``width x height`` picture."""
    _check_even(height, width)
    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype("<u2")
    n_y, n_c = width * height, (width // 2) * (height // 2)
    expected = (n_y + 2 * n_c) * dtype.itemsize
    if len(data) < expected:
        raise ValueError(f"raw yuv420 data has {len(data)} bytes, expected {expected} for {width}x{height}")
    arr = np.frombuffer(data[:expected], dtype=dtype)
    y = arr[:n_y].reshape(height, width)
    cb = arr[n_y : n_y + n_c].reshape(height // 2, width // 2)
    cr = arr[n_y + n_c :].reshape(height // 2, width // 2)
    return y, cb, cr
