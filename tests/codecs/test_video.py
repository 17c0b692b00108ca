"""Tests of moediffir.codecs.video: HEVC (x265 / HM), AVC (x264) and VVC (libvvenc / vvencapp / VTM) intra coding."""

from __future__ import annotations

import stat
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from moediffir.codecs import CodecError, CodecUnavailableError, annexb, encoder_binaries, make_codec, video
from moediffir.codecs.yuv import rgb_to_yuv420
from moediffir.metrics.fidelity import psnr
from moediffir.utils.io import read_image_rgb

VIDEO = ["hevc", "avc", "vvc"]


@pytest.fixture(scope="module")
def codecs(data_cfg):
    return {name: make_codec(name, data_cfg) for name in VIDEO}


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", VIDEO)
def test_round_trip_rate_order_and_qp_used(name, codecs, photo):
    codec = codecs[name]
    for img in (photo[:96, :128], photo[:75, :101]):  # even and odd sizes
        h, w = img.shape[:2]
        results = {qp: codec(img, qp) for qp in (37, 42, 47)}
        for qp, res in results.items():
            assert res.decoded.shape == img.shape and res.decoded.dtype == np.uint8
            assert res.num_bits > 0 and res.num_bits % 8 == 0
            assert res.info["qp_used"] == qp, (name, qp, res.info)  # read from the encoder's own report
            assert res.info["yuv"] == "bt601-limited"
            assert res.info["weights"] == "n/a" and res.info["bits_source"] == "bitstream"
        bpp = [results[qp].bpp(h, w) for qp in (37, 42, 47)]
        quality = [psnr(results[qp].decoded, img) for qp in (37, 42, 47)]
        assert bpp[0] > bpp[1] > bpp[2], (name, bpp)
        assert quality[0] > quality[1] > quality[2], (name, quality)
        assert quality[0] > 24.0 and quality[2] > 19.0, (name, quality)


@pytest.mark.parametrize("name", VIDEO)
def test_deterministic(name, codecs, photo):
    a = codecs[name](photo[:64, :64], 42)
    b = codecs[name](photo[:64, :64], 42)
    assert a.num_bits == b.num_bits and np.array_equal(a.decoded, b.decoded)


@pytest.mark.parametrize("name", VIDEO)
def test_grayscale_as_rgb(name, codecs, photo):
    gray = np.repeat(photo[:64, :64, 1:2], 3, axis=2)
    res = codecs[name](gray, 37)
    assert res.decoded.shape == gray.shape
    spread = res.decoded.max(axis=2).astype(int) - res.decoded.min(axis=2)
    assert spread.max() <= 2  # Cb = Cr = 128 exactly: the decoded image stays gray


@pytest.mark.parametrize("name", VIDEO)
def test_tiny_and_odd_images(name, codecs, photo):
    """Images smaller than a coding block come back at their size, their colour, the right way up."""
    colour, other = np.array([90, 140, 200]), np.array([220, 60, 30])
    for h, w in ((1, 1), (3, 5), (17, 2)):
        res = codecs[name](photo[:h, :w], 37)
        assert res.decoded.shape == (h, w, 3) and res.num_bits > 0
        flat = np.broadcast_to(colour, (h, w, 3)).astype(np.uint8)
        assert np.abs(codecs[name](flat, 37).decoded.astype(int) - colour).max() <= 6, (name, h, w)
    halves = np.concatenate([np.broadcast_to(colour, (8, 2, 3)), np.broadcast_to(other, (9, 2, 3))]).astype(np.uint8)
    out = codecs[name](halves, 37).decoded.astype(int)
    assert np.abs(out[0] - colour).max() <= 12 and np.abs(out[-1] - other).max() <= 12, name  # not cropped wrongly


def test_vvc_is_10bit_and_coded_size_is_even(codecs, photo):
    res = codecs["vvc"](photo[:75, :101], 37)
    assert res.info["coded_bit_depth"] == 10
    assert res.info["coded_size"] == "102x76"
    assert codecs["hevc"](photo[:75, :101], 37).info["coded_bit_depth"] == 8


# ------------------------------------------------------------------------------ QP pitfalls -----------
def test_x265_qp_report_detects_the_intra_offset(codecs, photo, monkeypatch):
    """Without ipratio=1 x265 codes the lone I frame at QP-3; the QP check must see it (so it is not vacuous)."""
    codec = codecs["hevc"]
    original = video.X265Codec.x265_params
    monkeypatch.setattr(
        video.X265Codec, "x265_params", lambda self, qp, p: original(self, qp, p).replace("ipratio=1:", "")
    )
    assert codec(photo[:64, :64], 37).info["qp_used"] == 34


def test_x264_qp_report_detects_the_intra_offset(codecs, photo, monkeypatch):
    y, cb, cr = rgb_to_yuv420(np.ascontiguousarray(photo[:64, :64]))
    import av.logging

    av.logging.set_level(av.logging.INFO)
    try:
        with av.logging.Capture() as logs:
            annexb.encode_pyav(
                "libx264", y, cb, cr, {"preset": "medium", "qp": "37", "x264-params": "keyint=1:threads=1"}
            )
    finally:
        av.logging.set_level(None)
    log = "".join(m for _, _, m in logs)
    assert video._X264_AVG_QP.search(log).group(1) == "34.00"


def test_vvenc_qp_report_detects_the_intra_offset(codecs, photo, monkeypatch):
    codec = codecs["vvc"]
    original = video.VvencFFmpegCodec.command
    monkeypatch.setattr(
        video.VvencFFmpegCodec,
        "command",
        lambda self, *a: [x.replace("IntraQPOffset=0:", "") for x in original(self, *a)],
    )
    assert codec(photo[:64, :64], 37).info["qp_used"] == 34


def test_vvenc_qpa_off_is_checked(codecs, photo, monkeypatch):
    """With QPA on (libvvenc's default), the codec refuses: the QP would no longer be constant."""
    original = video.VvencFFmpegCodec.command

    def without_qpa(self, *a):
        cmd = original(self, *a)
        i = cmd.index("-qpa")
        return cmd[:i] + cmd[i + 2 :]

    monkeypatch.setattr(video.VvencFFmpegCodec, "command", without_qpa)
    with pytest.raises(CodecError, match="QPA"):
        codecs["vvc"](photo[:64, :64], 37)


# -------------------------------------------------------------------------------- non-image NAL units
def test_x264_sei_is_stripped_and_not_counted(codecs, photo):
    codec = codecs["avc"]
    img = np.ascontiguousarray(photo[:64, :64])
    raw, _, _ = codec._encode(*rgb_to_yuv420(img), 37)
    assert 6 in annexb.nal_types("h264", raw)  # x264 writes its version/options SEI...
    res = codec(img, 37)
    assert res.info["stripped_bytes"] > 200  # ...of several hundred bytes
    assert res.num_bits == 8 * (len(raw) - res.info["stripped_bytes"])


def test_x265_and_vvenc_write_no_sei(codecs, photo):
    img = np.ascontiguousarray(photo[:64, :64])
    for name, sei in (("hevc", {39, 40}), ("vvc", {23, 24})):  # info=0 / no SEI from libvvenc
        raw, _, _ = codecs[name]._encode(*rgb_to_yuv420(img), 37)
        types = annexb.nal_types(name, raw)
        assert types and not set(types) & sei, (name, types)


def test_strip_nal_units_on_synthetic_stream():
    sps = b"\x00\x00\x00\x01\x67\xaa\xbb"
    sei = b"\x00\x00\x01\x06\x05\x01\x02\x03"
    idr = b"\x00\x00\x01\x65\x88\x00\x00\x03\x01"  # emulation prevention byte inside the payload
    stream = sps + sei + idr
    assert annexb.nal_types("h264", stream) == [7, 6, 5]
    out, removed = annexb.strip_nal_units("h264", stream, frozenset({6}))
    assert out == sps + idr and removed == len(sei)
    assert annexb.nal_type("hevc", bytes([40 << 1, 1])) == 40
    assert annexb.nal_type("vvc", bytes([0, (23 << 3) | 1])) == 23


# ----------------------------------------------------------------------------- external encoder binaries
@pytest.fixture
def no_binaries(monkeypatch, tmp_path):
    monkeypatch.delenv(video.HM_ENV, raising=False)
    monkeypatch.delenv(video.VVC_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH


@pytest.mark.parametrize(
    "override, env, key",
    [
        ({"hevc_backend": "hm"}, "MOEDIFFIR_HM_ENCODER", "hm_encoder"),
        ({"vvc_backend": "vvencapp"}, "MOEDIFFIR_VVC_ENCODER", "vvc_encoder"),
        ({"vvc_backend": "vtm"}, "MOEDIFFIR_VVC_ENCODER", "vvc_encoder"),
    ],
)
def test_missing_binary_names_env_var_and_config_key(override, env, key, data_cfg, no_binaries):
    name = "hevc" if "hevc_backend" in override else "vvc"
    with pytest.raises(CodecUnavailableError) as err:
        make_codec(name, replace(data_cfg, **override))
    assert env in str(err.value) and f"data.{key}" in str(err.value)


def test_configured_binary_that_does_not_exist(data_cfg, no_binaries, tmp_path, monkeypatch):
    with pytest.raises(CodecUnavailableError, match="not an executable"):
        make_codec(
            "hevc", replace(data_cfg, hevc_backend="hm", hm_encoder=str(tmp_path / "TAppEncoderStatic"))
        )
    monkeypatch.setenv(video.VVC_ENV, str(tmp_path / "nope"))
    with pytest.raises(CodecUnavailableError, match="MOEDIFFIR_VVC_ENCODER"):
        make_codec("vvc", replace(data_cfg, vvc_backend="vvencapp"))


# A stand-in for HM's TAppEncoderStatic that checks the arguments our HM backend passes, codes the 8-bit
# YUV file with x265 at the requested QP and prints HM's per-picture line. It tests OUR plumbing (arguments,
# temp files, log parsing, decoding), not HM.
FAKE_HM = textwrap.dedent(
    """
    import sys
    from fractions import Fraction
    import numpy as np, av
    args = sys.argv[1:]
    def opt(flag):
        return args[args.index(flag) + 1]
    assert "--IntraPeriod=1" in args and "--InputBitDepth=8" in args and "--InputChromaFormat=420" in args, args
    w, h, qp = int(opt("-wdt")), int(opt("-hgt")), int(opt("-q"))
    assert w % 8 == 0 and h % 8 == 0, (w, h)
    raw = np.fromfile(opt("-i"), np.uint8)
    assert raw.size == w * h * 3 // 2, (raw.size, w, h)
    frame = av.VideoFrame.from_ndarray(raw.reshape(h * 3 // 2, w), format="yuv420p")
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = w, h, "yuv420p", Fraction(1, 25)
    ctx.options = {"x265-params": f"qp={qp}:ipratio=1:log-level=none:info=0"}
    data = b"".join(bytes(p) for p in list(ctx.encode(frame)) + list(ctx.encode(None)))
    open(opt("-b"), "wb").write(data)
    print(f"POC    0 LId:  0 TId: 0 ( IDR_W_RADL, I-SLICE, nQP {qp} QP {qp} )     {8 * len(data)} bits")
    """
)


def test_hm_backend_plumbing_with_a_stand_in_binary(data_cfg, photo, tmp_path, monkeypatch):
    script = tmp_path / "TAppEncoderStatic"
    script.write_text(f"#!{sys.executable}\n{FAKE_HM}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(video.HM_ENV, str(script))
    monkeypatch.delenv(video.HM_CFG_ENV, raising=False)
    codec = make_codec("hevc", replace(data_cfg, hevc_backend="hm"))
    assert codec.backend == f"hm:{script}"
    img = photo[:75, :101]
    res = codec(img, 42)
    assert res.decoded.shape == img.shape and res.num_bits > 0
    assert res.info["qp_used"] == 42 and res.info["coded_size"] == "104x80"
    assert psnr(res.decoded, img) > 22.0


def test_reference_encoder_command_lines():
    vvencapp = video.VvencAppCodec("/opt/vvencapp", preset="slow")
    cmd = vvencapp.command("in.yuv", "out.266", 104, 80, 37)
    assert cmd[:1] == ["/opt/vvencapp"]
    assert cmd[cmd.index("--qp") + 1] == "37" and cmd[cmd.index("--qpa") + 1] == "0"
    assert cmd[cmd.index("-s") + 1] == "104x80" and cmd[cmd.index("--preset") + 1] == "slow"
    assert "IntraQPOffset=0" in cmd[cmd.index("--additional") + 1]
    vtm = video.VTMCodec("/opt/EncoderApp").command("in.yuv", "out.266", 104, 80, 47)
    assert "--IntraQPOffset=0" in vtm and vtm[vtm.index("-q") + 1] == "47" and "--InputBitDepth=8" in vtm


def test_poc_qp_parser():
    assert encoder_binaries.parse_poc_qp("POC    0 LId:  0 TId: 0 ( IDR_N_LP, I-SLICE, QP 37 ) 1234 bits", "x") == 37
    assert encoder_binaries.parse_poc_qp("POC    0 TId: 0 ( I-SLICE, nQP 41 QP 42 )    992 bits", "x") == 42
    assert encoder_binaries.parse_poc_qp("POC     0 TId: 0 (IDR_W_RADL, I-SLICE, QP 47)   800 bits", "x") == 47
    with pytest.raises(CodecError, match="QP"):
        encoder_binaries.parse_poc_qp("encoded 1 frame", "x")


# ------------------------------------------------------------------------------------------ anchors
@pytest.mark.parametrize("name", VIDEO)
def test_lq_psnr_anchor_on_kodak(name, codecs, shared_datasets):
    """Sanity anchor (one 384x256 Kodak crop at QP 37): RGB PSNR in the high 20s / low 30s."""
    files = sorted((shared_datasets / "kodak24").glob("*.png"))
    if not files:
        pytest.skip("kodak24 not present")
    img = read_image_rgb(files[0])[:256, :384]
    res = codecs[name](img, 37)
    assert 24.0 < psnr(res.decoded, img) < 34.0
    assert 0.05 < res.bpp(256, 384) < 1.0
