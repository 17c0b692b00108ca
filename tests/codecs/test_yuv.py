"""Tests of moediffir.codecs.yuv: the one RGB <-> Y'CbCr 4:2:0 conversion of the video codecs."""

from __future__ import annotations

import numpy as np
import pytest

from moediffir.codecs.yuv import (
    YUVFormat,
    downsample_chroma,
    pack_yuv420,
    rgb_to_ycbcr_float,
    rgb_to_yuv420,
    shift_bit_depth,
    unpack_yuv420,
    upsample_chroma,
    ycbcr_float_to_rgb,
    yuv420_to_rgb,
)
from moediffir.metrics.fidelity import psnr
from moediffir.utils.io import read_image_rgb


# Reference code values of the primaries, from the matrix definitions (BT.601: Kr .299, Kb .114; BT.709:
# Kr .2126, Kb .0722); limited range Y 16..235, C 16..240; full range 0..255 (JPEG/JFIF).
@pytest.mark.parametrize(
    "fmt, rgb, expected",
    [
        (YUVFormat("bt601", "limited"), (255, 255, 255), (235, 128, 128)),
        (YUVFormat("bt601", "limited"), (0, 0, 0), (16, 128, 128)),
        (YUVFormat("bt601", "limited"), (255, 0, 0), (81, 90, 240)),
        (YUVFormat("bt601", "limited"), (0, 255, 0), (145, 54, 34)),
        (YUVFormat("bt601", "limited"), (0, 0, 255), (41, 240, 110)),
        (YUVFormat("bt709", "limited"), (255, 0, 0), (63, 102, 240)),
        (YUVFormat("bt709", "limited"), (0, 255, 0), (173, 42, 26)),
        (YUVFormat("bt601", "full"), (255, 255, 255), (255, 128, 128)),
        (YUVFormat("bt601", "full"), (255, 0, 0), (76, 85, 255)),
        (YUVFormat("bt601", "limited", 10), (255, 255, 255), (940, 512, 512)),
        (YUVFormat("bt601", "limited", 10), (0, 0, 0), (64, 512, 512)),
    ],
)
def test_reference_code_values(fmt, rgb, expected):
    px = np.array([[rgb]], dtype=np.uint8)
    got = np.clip(np.rint(rgb_to_ycbcr_float(px, fmt)[0, 0]), 0, 2**fmt.bit_depth - 1)
    assert tuple(int(v) for v in got) == expected


@pytest.mark.parametrize(
    "fmt, max_err",
    [
        (YUVFormat("bt601", "limited"), 2),
        (YUVFormat("bt709", "limited"), 2),
        (YUVFormat("bt601", "full"), 1),
        (YUVFormat("bt601", "limited", 10), 0),
    ],
)
def test_444_round_trip_on_photo(photo, fmt, max_err):
    ycc = np.rint(rgb_to_ycbcr_float(photo, fmt))  # quantised to code values
    back = ycbcr_float_to_rgb(ycc, fmt)
    assert back.dtype == np.uint8 and back.shape == photo.shape
    assert int(np.abs(back.astype(int) - photo).max()) <= max_err


@pytest.mark.parametrize("fmt", [YUVFormat(), YUVFormat("bt709", "full"), YUVFormat(bit_depth=10)])
def test_420_round_trip_on_photo(photo, fmt):
    y, cb, cr = rgb_to_yuv420(photo, fmt)
    assert y.shape == (192, 128) and cb.shape == cr.shape == (96, 64)
    assert y.dtype == (np.uint8 if fmt.bit_depth == 8 else np.uint16)
    back = yuv420_to_rgb(y, cb, cr, fmt)
    assert back.shape == photo.shape
    # chroma subsampling is lossy, but a real photo survives it at well above 35 dB
    assert psnr(back, photo) > 38.0


def test_420_round_trip_on_kodak(shared_datasets):
    files = sorted((shared_datasets / "kodak24").glob("*.png"))
    if not files:
        pytest.skip("kodak24 not present")
    img = read_image_rgb(files[0])[:256, :384]
    y, cb, cr = rgb_to_yuv420(img)
    assert psnr(yuv420_to_rgb(y, cb, cr), img) > 35.0


def test_wrong_inverse_matrix_costs_decibels(photo):
    """The reason for one explicit conversion: decoding with the wrong matrix/range is clearly visible."""
    y, cb, cr = rgb_to_yuv420(photo, YUVFormat("bt601", "limited"))
    right = psnr(yuv420_to_rgb(y, cb, cr, YUVFormat("bt601", "limited")), photo)
    wrong_range = psnr(yuv420_to_rgb(y, cb, cr, YUVFormat("bt601", "full")), photo)
    wrong_matrix = psnr(yuv420_to_rgb(y, cb, cr, YUVFormat("bt709", "limited")), photo)
    assert right - wrong_range > 5.0
    assert right - wrong_matrix > 0.5  # a pale photo; saturated colours suffer far more:
    bars = np.repeat(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]], np.uint8), 8, axis=1)
    bars = np.repeat(bars, 4, axis=0)  # (4, 32, 3)
    ycc = np.rint(rgb_to_ycbcr_float(bars))  # 4:4:4, so only the matrix differs
    assert psnr(ycbcr_float_to_rgb(ycc), bars) - psnr(ycbcr_float_to_rgb(ycc, YUVFormat("bt709")), bars) > 5.0


def test_luma_matches_libswscale(photo):
    """Independent reference: libswscale's default RGB->yuv420p is BT.601 limited range too (luma unaffected by siting)."""
    av = pytest.importorskip("av")
    frame = av.VideoFrame.from_ndarray(photo, format="rgb24").reformat(format="yuv420p")
    plane = frame.planes[0]
    y_ref = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    y, _, _ = rgb_to_yuv420(photo)
    assert int(np.abs(y.astype(int) - y_ref).max()) <= 1


def test_gray_stays_gray():
    ramp = np.tile(
        np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], (6, 1, 3)
    )  # (6, 64, 3), equal channels
    y, cb, cr = rgb_to_yuv420(ramp)
    assert np.all(cb == 128) and np.all(cr == 128)
    back = yuv420_to_rgb(y, cb, cr)
    assert np.array_equal(back[..., 0], back[..., 1]) and np.array_equal(back[..., 1], back[..., 2])
    assert int(np.abs(back.astype(int) - ramp).max()) <= 1


def test_chroma_resampling():
    const = np.full((4, 6), 77.0, dtype=np.float32)
    assert np.allclose(upsample_chroma(const), 77.0)
    assert upsample_chroma(const).shape == (8, 12)
    block = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert np.allclose(downsample_chroma(block), [[2.5, 4.5], [10.5, 12.5]])
    # a linear ramp is reproduced exactly away from the border by down- then up-sampling
    ramp = np.tile(np.arange(16, dtype=np.float32), (8, 1))  # (8, 16)
    up = upsample_chroma(downsample_chroma(ramp))
    assert np.allclose(up[:, 1:-1], ramp[:, 1:-1])


def test_odd_sizes_and_bad_inputs_are_rejected(photo):
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420(photo[:75, :101])
    with pytest.raises(ValueError):
        rgb_to_yuv420(photo.astype(np.float32))
    with pytest.raises(ValueError, match="matrix"):
        YUVFormat("bt2020x")
    with pytest.raises(ValueError, match="range"):
        YUVFormat("bt601", "studio")


@pytest.mark.parametrize("bits", [8, 10])
def test_pack_unpack_round_trip(photo, bits):
    fmt = YUVFormat(bit_depth=bits)
    planes = rgb_to_yuv420(photo[:64, :96], fmt)
    data = pack_yuv420(*planes)
    assert len(data) == 64 * 96 * 3 // 2 * (1 if bits == 8 else 2)
    for a, b in zip(planes, unpack_yuv420(data, 96, 64, bits)):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="expected"):
        unpack_yuv420(data[:-1], 96, 64, bits)


def test_shift_bit_depth():
    p = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    up = shift_bit_depth(p, 8, 10)
    assert up.dtype == np.uint16 and up.tolist() == [[0, 4, 512, 1020]]
    assert np.array_equal(shift_bit_depth(up, 10, 8), p)
    assert shift_bit_depth(np.array([[1023, 2, 1]], np.uint16), 10, 8).tolist() == [[255, 1, 0]]
