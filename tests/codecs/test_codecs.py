"""Tests of moediffir.codecs: the registry, the shared input checks, and the Pillow codecs (JPEG, WebP).

Video codecs are tested in test_video.py, the learned codecs in test_learned.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from repo_paths import REPO_ROOT as REPO

from moediffir.codecs import CODECS, LEVEL_TYPES, CodecError, CodecResult, CodecUnavailableError, make_codec
from moediffir.codecs.pillow_codecs import JPEGCodec, WebPCodec
from moediffir.config import resolve_config
from moediffir.metrics.fidelity import psnr
from moediffir.utils.io import read_image_rgb


# ------------------------------------------------------------------------------------------ registry
def test_registry_keys_and_level_types():
    assert set(CODECS) == {"jpeg", "webp", "hevc", "avc", "vvc", "c_psnr", "c_ssim", "hific"}
    assert set(LEVEL_TYPES) == set(CODECS)
    assert LEVEL_TYPES["hific"] is str
    assert all(LEVEL_TYPES[k] is int for k in CODECS if k != "hific")


def test_unknown_codec_is_named(data_cfg):
    with pytest.raises(CodecError, match="bpg"):
        make_codec("bpg", data_cfg)


def test_import_is_light():
    """`import moediffir.codecs` must not pull torch, compressai or PyAV (they load inside the factories)."""
    code = "import sys, moediffir.codecs; print(sorted(m for m in ('torch', 'compressai', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["jpeg", "webp", "hevc", "avc", "vvc"])
def test_factories_build_and_report_info(name, data_cfg, photo):
    codec = make_codec(name, data_cfg)
    assert codec.name == name
    level = {"jpeg": 10, "webp": 10}.get(name, 37)
    res = codec(photo[:64, :96], level)
    assert isinstance(res, CodecResult)
    for key in ("backend", "weights", "bits_source"):
        assert key in res.info, key
    assert res.info["weights"] == "n/a" and res.info["bits_source"] == "bitstream"


def test_backends_follow_config(data_cfg):
    assert make_codec("hevc", data_cfg).backend == f"pyav-libx265/{data_cfg.x265_preset}"
    assert make_codec("avc", data_cfg).backend == f"pyav-libx264/{data_cfg.x264_preset}"
    assert make_codec("vvc", data_cfg).backend == f"ffmpeg-libvvenc/{data_cfg.vvenc_preset}"
    paper = resolve_config("paper").data
    assert make_codec("hevc", paper).backend == "pyav-libx265/slow"
    with pytest.raises(CodecError, match="hevc_backend"):
        make_codec("hevc", replace(data_cfg, hevc_backend="ffmpeg"))
    with pytest.raises(CodecError, match="vvc_backend"):
        make_codec("vvc", replace(data_cfg, vvc_backend="x266"))
    with pytest.raises(CodecError, match="x265_preset"):
        make_codec("hevc", replace(data_cfg, x265_preset="turbo"))
    with pytest.raises(CodecError, match="vvenc_preset"):
        make_codec("vvc", replace(data_cfg, vvenc_preset="veryslow"))
    with pytest.raises(CodecError, match="yuv"):
        make_codec("hevc", replace(data_cfg, yuv_range="studio"))


def test_hific_factory_missing_module_is_unavailable(data_cfg, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "moediffir.codecs.hific", None
    )  # import now fails as if the file were absent
    with pytest.raises(CodecUnavailableError, match="hific"):
        make_codec("hific", data_cfg)


def test_hific_weights_dir_default(data_cfg):
    from moediffir.codecs import hific_weights_dir

    assert hific_weights_dir(data_cfg) == Path(data_cfg.root) / "weights" / "hific"
    assert hific_weights_dir(replace(data_cfg, hific_dir="somewhere/hific")) == Path("somewhere/hific")


# ---------------------------------------------------------------------------------------- bad inputs
BAD_INPUTS = [
    np.zeros((8, 8, 3), np.float32),  # wrong dtype
    np.zeros((8, 8), np.uint8),  # grayscale 2-D: callers convert to RGB first
    np.zeros((8, 8, 4), np.uint8),  # RGBA
    np.zeros((0, 8, 3), np.uint8),  # empty
    [[[0, 0, 0]]],  # not an array
]


@pytest.mark.parametrize("name", ["jpeg", "webp", "hevc", "avc", "vvc"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=["float", "2d", "rgba", "empty", "list"])
def test_bad_input_arrays_raise_codec_error(name, bad, data_cfg):
    codec = make_codec(name, data_cfg)
    with pytest.raises(CodecError, match=name):
        codec(bad, 10 if name in ("jpeg", "webp") else 37)


@pytest.mark.parametrize(
    "name, level",
    [
        ("jpeg", 0),
        ("jpeg", 101),
        ("jpeg", "10"),
        ("jpeg", 10.0),
        ("webp", -1),
        ("webp", True),
        ("hevc", 52),
        ("hevc", "37"),
        ("avc", -1),
        ("vvc", 64),
    ],
)
def test_bad_levels_raise_codec_error(name, level, data_cfg, photo):
    with pytest.raises(CodecError, match=name):
        make_codec(name, data_cfg)(photo[:16, :16], level)


# ---------------------------------------------------------------------------------------------- JPEG
def test_jpeg_qf10_equals_pillow_byte_for_byte(photo):
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=10, subsampling=2)
    reference = buf.getvalue()
    codec = JPEGCodec()
    assert codec.encode(photo, 10) == reference
    res = codec(photo, 10)
    assert res.num_bits == 8 * len(reference)
    with Image.open(io.BytesIO(reference)) as img:
        assert np.array_equal(res.decoded, np.asarray(img.convert("RGB")))


def test_jpeg_is_baseline_420(photo):
    data = JPEGCodec().encode(photo, 10)
    assert data[:2] == b"\xff\xd8"
    assert b"\xff\xc0" in data  # SOF0: baseline sequential (no progressive SOF2)
    assert b"\xff\xc2" not in data
    with Image.open(io.BytesIO(data)) as img:
        assert img.layer[0][1:3] == (2, 2) and img.layer[1][1:3] == (1, 1)  # luma 2x2 sampling = 4:2:0


@pytest.mark.parametrize("codec_cls", [JPEGCodec, WebPCodec])
def test_pillow_codecs_round_trip_and_rate_order(codec_cls, photo):
    codec = codec_cls()
    for img in (photo, photo[:75, :101]):  # even and odd sizes
        results = {qf: codec(img, qf) for qf in (15, 10, 5)}
        for qf, res in results.items():
            assert res.decoded.shape == img.shape and res.decoded.dtype == np.uint8
            assert res.num_bits > 0
            assert res.info["quality"] == qf
        bpp = [results[qf].bpp(*img.shape[:2]) for qf in (15, 10, 5)]
        quality = [psnr(results[qf].decoded, img) for qf in (15, 10, 5)]
        assert bpp[0] > bpp[1] > bpp[2], bpp
        assert quality[0] > quality[2], quality
        assert 18.0 < quality[2] < quality[0] < 40.0


@pytest.mark.parametrize("codec_cls", [JPEGCodec, WebPCodec])
def test_pillow_codecs_take_grayscale_as_rgb(codec_cls, photo):
    gray = np.repeat(photo[:64, :64, 1:2], 3, axis=2)  # (64, 64, 3) equal channels
    res = codec_cls()(gray, 10)
    assert res.decoded.shape == gray.shape
    spread = res.decoded.max(axis=2).astype(int) - res.decoded.min(axis=2)
    assert spread.mean() < 3.0  # stays (nearly) gray: chroma carries no signal


def test_webp_is_lossy_vp8(photo):
    data = WebPCodec().encode(photo, 10)
    assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8 "  # simple lossy format, no VP8L/VP8X
    assert WebPCodec()(photo, 10).info["backend"].endswith("/method4")


def test_jpeg_anchor_on_kodak(shared_datasets):
    """Sanity anchor: JPEG QF10 on Kodak images gives an RGB PSNR in the high 20s at ~0.3-0.5 bpp."""
    files = sorted((shared_datasets / "kodak24").glob("*.png"))[:4]
    if not files:
        pytest.skip("kodak24 not present")
    codec = JPEGCodec()
    values = []
    for f in files:
        img = read_image_rgb(f)
        res = codec(img, 10)
        values.append((psnr(res.decoded, img), res.bpp(*img.shape[:2])))
    mean_psnr = np.mean([v[0] for v in values])
    mean_bpp = np.mean([v[1] for v in values])
    assert 24.0 < mean_psnr < 31.0, values
    assert 0.15 < mean_bpp < 0.8, values
