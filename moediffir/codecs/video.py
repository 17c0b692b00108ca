"""HEVC, AVC and VVC intra codecs of the CIR benchmark (paper §3.5 and the cross-type AVC tasks, docs/design.md §3).

Each codec codes ONE intra picture at a constant QP, the way still images are coded with a video codec:

1. pad the RGB image by edge pixels (bottom/right) to what the encoder accepts: even sizes for 4:2:0 with x264,
   x265 and ffmpeg/libvvenc, which add their own conformance window (x265 and libvvenc also need at least 16
   pixels a side); multiples of 8 for HM, VTM and vvencapp;
2. convert to Y'CbCr 4:2:0 with :mod:`moediffir.codecs.yuv` (BT.601 limited range by default), 8 bit;
3. encode; the QP the encoder really used is read from the encoder's own report (x265: its per-frame CSV log;
   x264: its "Avg QP" log line through libav's logger; vvenc/HM/VTM: the per-picture ``POC ... QP n`` line);
4. strip NAL units that carry no image data: SEI (x264's version/options SEI is ~550 bytes of text) and access
   unit delimiters; their size is kept in ``info["stripped_bytes"]``;
5. decode the remaining Annex-B bitstream with PyAV (libavcodec's hevc / h264 / vvc decoders), convert back
   with the same YUV module and crop to the original size.

Bits = 8 x the Annex-B byte stream after step 4 (start codes, VPS/SPS/PPS and slice data), counted over the
original width x height by the caller; padding is the codec's cost.

Pitfalls handled (measured here): a lone intra frame is coded at QP-3 by x264, x265 and vvenc unless the
intra QP offset is removed (``ipratio=1``; vvenc ``IntraQPOffset=0``), and vvenc's perceptual QPA (on by
default) moves the QP; it is switched off. The encoders run single-threaded (deterministic output, and the
benchmark parallelises over processes instead).

Backends (from :class:`moediffir.config.DataConfig`):
- HEVC: ``hevc_backend="x265"`` (PyAV libx265, preset ``x265_preset``) or ``"hm"`` (the user's HM
  ``TAppEncoderStatic``: ``data.hm_encoder`` or ``$MOEDIFFIR_HM_ENCODER`` or on PATH; optional config file
  ``$MOEDIFFIR_HM_CFG``, e.g. HM's ``encoder_intra_main.cfg``).
- AVC: x264 through PyAV, preset ``x264_preset``.
- VVC: ``vvc_backend="ffmpeg"`` (the imageio-ffmpeg binary's libvvenc, preset ``vvenc_preset``), ``"vvencapp"``
  or ``"vtm"`` (``data.vvc_encoder`` or ``$MOEDIFFIR_VVC_ENCODER`` or on PATH; optional ``$MOEDIFFIR_VTM_CFG``,
  e.g. VTM's ``encoder_intra_vtm.cfg``). libvvenc and VTM code 10-bit internally: the 8-bit planes are
  shifted left by 2 (as HM/VTM do with ``InputBitDepth=8``) and the decoded 10-bit planes are converted to RGB
  directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from moediffir.codecs.annexb import (
    NON_IMAGE_NAL_TYPES,
    decode_annexb,
    encode_pyav,
    import_av,
    strip_nal_units,
)
from moediffir.codecs.base import CodecError, CodecResult, CodecUnavailableError, check_rgb, pad_to_multiple
from moediffir.codecs.encoder_binaries import find_encoder_binary, parse_poc_qp, run_encoder
from moediffir.codecs.yuv import YUVFormat, pack_yuv420, rgb_to_yuv420, shift_bit_depth, yuv420_to_rgb

DEFAULT_YUV = YUVFormat()  # BT.601, limited range, 8 bit
HM_ENV = "MOEDIFFIR_HM_ENCODER"
VVC_ENV = "MOEDIFFIR_VVC_ENCODER"
HM_CFG_ENV = "MOEDIFFIR_HM_CFG"
VTM_CFG_ENV = "MOEDIFFIR_VTM_CFG"

_X264_AVG_QP = re.compile(r"frame I:\s*\d+\s+Avg QP:\s*([\d.]+)")


X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
VVENC_PRESETS = ("faster", "fast", "medium", "slow", "slower")


def _check_preset(preset: str, allowed: tuple[str, ...], key: str) -> str:
    if preset not in allowed:
        raise CodecError(f"config data.{key}={preset!r}: choose one of {list(allowed)}")
    return preset


# ------------------------------------------------------------------------------------------ the codecs
def _check_qp(name: str, level: Any, max_qp: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise CodecError(f"{name}: the level is a QP, an int in [0, {max_qp}]; got {level!r}")
    qp = int(level)
    if not 0 <= qp <= max_qp:
        raise CodecError(f"{name}: QP {qp} is outside [0, {max_qp}]")
    return qp


class _IntraVideoCodec:
    """Shared steps 1, 2, 4, 5 of the module docstring; subclasses implement :meth:`_encode`."""

    name = "video"
    nal_codec = "hevc"  # NAL syntax of the bitstream
    decoder = "hevc"  # PyAV decoder name
    max_qp = 51
    pad_multiple = 2
    min_side = 16  # x265 and libvvenc refuse pictures under 16 pixels a side (measured); pad tiny images up
    backend = ""

    def __init__(self, yuv: YUVFormat) -> None:
        self.yuv = yuv

    def _encode(
        self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, qp: int
    ) -> tuple[bytes, float, dict[str, Any]]:
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray, level: int) -> CodecResult:
        rgb = check_rgb(rgb, self.name)
        qp = _check_qp(self.name, level, self.max_qp)
        h, w = rgb.shape[:2]
        padded = pad_to_multiple(rgb, self.pad_multiple)  # (H', W', 3)
        ph, pw = max(0, self.min_side - padded.shape[0]), max(0, self.min_side - padded.shape[1])
        if ph or pw:
            padded = np.pad(padded, ((0, ph), (0, pw), (0, 0)), mode="edge")
        y, cb, cr = rgb_to_yuv420(padded, self.yuv)  # (H', W'), (H'/2, W'/2) x2
        raw, qp_used, extra = self._encode(y, cb, cr, qp)
        data, stripped = strip_nal_units(self.nal_codec, raw, NON_IMAGE_NAL_TYPES[self.nal_codec])
        if not data:
            raise CodecError(f"{self.name}: the encoder wrote an empty bitstream")
        dy, dcb, dcr, bits = decode_annexb(data, self.decoder)
        if dy.shape != y.shape:
            raise CodecError(f"{self.name}: decoded picture {dy.shape} differs from the coded one {y.shape}")
        decoded = yuv420_to_rgb(dy, dcb, dcr, self.yuv.with_bit_depth(bits))[:h, :w]  # (H, W, 3)
        info = {
            "backend": self.backend,
            "weights": "n/a",
            "bits_source": "bitstream",
            "qp": qp,
            "qp_used": qp_used,
            "yuv": self.yuv.name,
            "coded_bit_depth": bits,
            "coded_size": f"{y.shape[1]}x{y.shape[0]}",
            "stripped_bytes": stripped,  # SEI / AUD NAL units removed (not image data), not counted
            **extra,
        }
        return CodecResult(decoded=np.ascontiguousarray(decoded), num_bits=8 * len(data), info=info)


class X265Codec(_IntraVideoCodec):
    """HEVC intra through PyAV libx265, constant QP, ``ipratio=1``, no AQ/cutree, no info SEI."""

    name = "hevc"
    nal_codec = decoder = "hevc"

    def __init__(self, preset: str = "slow", yuv: YUVFormat = DEFAULT_YUV) -> None:
        super().__init__(yuv)
        av = import_av()
        if "libx265" not in av.codecs_available:
            raise CodecUnavailableError(
                "hevc: this PyAV build has no libx265 encoder; install the PyAV wheel"
            )
        self.preset = _check_preset(preset, X26X_PRESETS, "x265_preset")
        self.backend = f"pyav-libx265/{preset}"

    def x265_params(self, qp: int, csv_path: str) -> str:
        return ":".join(
            [
                f"qp={qp}",
                "ipratio=1",  # no intra QP offset (a lone I frame would otherwise get QP-3)
                "aq-mode=0",
                "cutree=0",
                "info=0",  # no version/options SEI
                "keyint=1",
                "pools=none",  # single-threaded: deterministic, and the benchmark runs processes in parallel
                "frame-threads=1",
                "log-level=none",
                f"csv={csv_path}",  # x265's own per-frame report: the QP it used
                "csv-log-level=1",
            ]
        )

    def _encode(self, y, cb, cr, qp):
        with tempfile.TemporaryDirectory(prefix="moediffir-x265-") as tmp:
            csv_path = os.path.join(tmp, "frames.csv")  # must not exist yet, or x265 writes no header
            if ":" in csv_path:
                raise CodecError(
                    f"hevc: temp path {csv_path!r} contains ':' which x265-params cannot carry; set TMPDIR"
                )
            params = self.x265_params(qp, csv_path)
            data = encode_pyav("libx265", y, cb, cr, {"preset": self.preset, "x265-params": params})
            if not os.path.exists(csv_path):
                raise CodecError("hevc: x265 wrote no CSV log; cannot read the QP it used")
            qp_used = self.read_csv_qp(Path(csv_path).read_text())
        return data, qp_used, {"preset": self.preset}

    @staticmethod
    def read_csv_qp(text: str) -> float:
        """The frame's average QP from x265's CSV log (header row, then one row per frame)."""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) < 2:
            raise CodecError("hevc: x265 wrote no per-frame CSV row; cannot read the QP it used")
        header = [c.strip() for c in lines[0].split(",")]
        row = [c.strip() for c in lines[1].split(",")]
        try:
            return float(row[header.index("QP")])
        except (ValueError, IndexError) as exc:
            raise CodecError(f"hevc: cannot read the QP column of x265's CSV log: {lines[:2]}") from exc


class X264Codec(_IntraVideoCodec):
    """AVC intra through PyAV libx264, constant QP (``qp=``), ``ipratio=1``; x264's SEI removed."""

    name = "avc"
    nal_codec = decoder = "h264"
    min_side = 2

    def __init__(self, preset: str = "slow", yuv: YUVFormat = DEFAULT_YUV) -> None:
        super().__init__(yuv)
        av = import_av()
        if "libx264" not in av.codecs_available:
            raise CodecUnavailableError("avc: this PyAV build has no libx264 encoder; install the PyAV wheel")
        self.preset = _check_preset(preset, X26X_PRESETS, "x264_preset")
        self.backend = f"pyav-libx264/{preset}"

    def _encode(self, y, cb, cr, qp):
        import av.logging

        options = {"preset": self.preset, "qp": str(qp), "x264-params": "ipratio=1:keyint=1:threads=1"}
        previous = av.logging.get_level()
        av.logging.set_level(av.logging.INFO)
        try:
            with av.logging.Capture() as logs:
                data = encode_pyav("libx264", y, cb, cr, options)
        finally:
            av.logging.set_level(previous)
        log = "".join(msg for _, _, msg in logs)
        m = _X264_AVG_QP.search(log)
        if m is None:
            raise CodecError(f"avc: x264 did not report 'frame I: Avg QP'; log was:\n{log[-800:]}")
        return data, float(m.group(1)), {"preset": self.preset}


class VvencFFmpegCodec(_IntraVideoCodec):
    """VVC intra through the imageio-ffmpeg binary's libvvenc: constant QP, ``IntraQPOffset=0``, QPA off."""

    name = "vvc"
    nal_codec = decoder = "vvc"
    max_qp = 63

    def __init__(
        self, preset: str = "medium", yuv: YUVFormat = DEFAULT_YUV, ffmpeg: str | None = None
    ) -> None:
        super().__init__(yuv)
        self.ffmpeg = ffmpeg or self._find_ffmpeg()
        self.preset = _check_preset(preset, VVENC_PRESETS, "vvenc_preset")
        self.backend = f"ffmpeg-libvvenc/{preset}"
        probe = subprocess.run([self.ffmpeg, "-hide_banner", "-encoders"], capture_output=True, check=False)
        if b"libvvenc" not in probe.stdout:
            raise CodecUnavailableError(
                f"vvc: {self.ffmpeg} has no libvvenc encoder; install imageio-ffmpeg>=0.6 (its binary has it) "
                "or set data.vvc_backend to 'vvencapp' or 'vtm'"
            )
        av = import_av()
        if "vvc" not in av.codecs_available:
            raise CodecUnavailableError("vvc: this PyAV build has no VVC decoder; install PyAV >= 14")

    @staticmethod
    def _find_ffmpeg() -> str:
        try:
            import imageio_ffmpeg
        except ImportError as exc:
            raise CodecUnavailableError(
                "vvc: the ffmpeg backend needs imageio-ffmpeg: pip install imageio-ffmpeg"
            ) from exc
        return imageio_ffmpeg.get_ffmpeg_exe()

    def command(self, width: int, height: int, qp: int, out_path: str) -> list[str]:
        return [
            self.ffmpeg, "-hide_banner", "-nostats", "-loglevel", "verbose",
            "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{width}x{height}", "-r", "25", "-i", "pipe:0",
            "-frames:v", "1", "-c:v", "libvvenc", "-preset", self.preset, "-qp", str(qp),
            "-qpa", "0",  # perceptual QPA off: the QP asked is the QP used
            "-vvenc-params", "IntraQPOffset=0:HrdParametersPresent=0",  # no intra QP offset; no HRD timing info
            "-threads", "1", "-f", "vvc", "-y", out_path,  # a file: vvenc prints its per-picture line on stdout
        ]  # fmt: skip

    def _encode(self, y, cb, cr, qp):
        h, w = y.shape
        planes10 = [shift_bit_depth(p, 8, 10) for p in (y, cb, cr)]  # libvvenc takes 10-bit input only
        with tempfile.TemporaryDirectory(prefix="moediffir-vvc-") as tmp:
            out_path = os.path.join(tmp, "out.266")
            log = run_encoder(
                self.command(w, h, qp, out_path), "vvc (ffmpeg/libvvenc)", stdin=pack_yuv420(*planes10)
            )
            if not os.path.exists(out_path):
                raise CodecError(f"vvc: ffmpeg/libvvenc wrote no bitstream; log tail:\n{log[-800:]}")
            data = Path(out_path).read_bytes()
        if not re.search(r"Perceptual optimization\s*:\s*Disabled", log):
            raise CodecError(
                "vvc: libvvenc did not report perceptual QPA as disabled; cannot guarantee constant QP"
            )
        return data, parse_poc_qp(log, "vvc"), {"preset": self.preset}


class _ExternalEncoderCodec(_IntraVideoCodec):
    """A user's reference encoder binary: 8-bit .yuv in a temp dir -> Annex-B file -> PyAV decode."""

    pad_multiple = 8  # HM/VTM/vvencapp want multiples of the minimum CU size
    cfg_env = ""

    def __init__(self, binary: str, yuv: YUVFormat) -> None:
        super().__init__(yuv)
        self.binary = binary
        self.cfg = os.environ.get(self.cfg_env, "") if self.cfg_env else ""

    def command(self, yuv_path: str, out_path: str, width: int, height: int, qp: int) -> list[str]:
        raise NotImplementedError

    def _encode(self, y, cb, cr, qp):
        h, w = y.shape
        with tempfile.TemporaryDirectory(prefix=f"moediffir-{self.name}-") as tmp:
            yuv_path = os.path.join(tmp, "in.yuv")
            out_path = os.path.join(tmp, "out.bin")
            Path(yuv_path).write_bytes(pack_yuv420(y, cb, cr))
            log = run_encoder(self.command(yuv_path, out_path, w, h, qp), self.name, cwd=tmp)
            if not os.path.exists(out_path):
                raise CodecError(f"{self.name}: {Path(self.binary).name} wrote no bitstream at {out_path}")
            data = Path(out_path).read_bytes()
        return data, parse_poc_qp(log, self.name), {"cfg": self.cfg or "none"}


class HMCodec(_ExternalEncoderCodec):
    """HEVC intra with the user's HM reference encoder (``TAppEncoderStatic``)."""

    name = "hevc"
    nal_codec = decoder = "hevc"
    cfg_env = HM_CFG_ENV

    def __init__(self, binary: str, yuv: YUVFormat = DEFAULT_YUV) -> None:
        super().__init__(binary, yuv)
        self.backend = f"hm:{binary}"

    def command(self, yuv_path, out_path, width, height, qp):
        cfg = ["-c", self.cfg] if self.cfg else []
        return [
            self.binary, *cfg, "-i", yuv_path, "-b", out_path, "-wdt", str(width), "-hgt", str(height),
            "-fr", "1", "-f", "1", "-q", str(qp), "--InputBitDepth=8", "--InternalBitDepth=8",
            "--InputChromaFormat=420", "--Profile=main", "--IntraPeriod=1", "--DecodingRefreshType=2",
            "--GOPSize=1", "--ConformanceWindowMode=1", "--SEIDecodedPictureHash=0",
        ]  # fmt: skip


class VvencAppCodec(_ExternalEncoderCodec):
    """VVC intra with the user's ``vvencapp``: constant QP, ``IntraQPOffset=0``, QPA off."""

    name = "vvc"
    nal_codec = decoder = "vvc"
    max_qp = 63

    def __init__(self, binary: str, preset: str = "medium", yuv: YUVFormat = DEFAULT_YUV) -> None:
        super().__init__(binary, yuv)
        self.preset = _check_preset(preset, VVENC_PRESETS, "vvenc_preset")
        self.backend = f"vvencapp:{binary}/{preset}"

    def command(self, yuv_path, out_path, width, height, qp):
        return [
            self.binary, "-i", yuv_path, "-s", f"{width}x{height}", "-c", "yuv420", "-r", "25", "-f", "1",
            "-o", out_path, "--preset", self.preset, "--qp", str(qp), "--qpa", "0", "-t", "1", "-v", "5",
            "--additional", "IntraQPOffset=0",
        ]  # fmt: skip


class VTMCodec(_ExternalEncoderCodec):
    """VVC intra with the user's VTM ``EncoderApp`` (10-bit internal, ``IntraQPOffset=0``)."""

    name = "vvc"
    nal_codec = decoder = "vvc"
    max_qp = 63
    cfg_env = VTM_CFG_ENV

    def __init__(self, binary: str, yuv: YUVFormat = DEFAULT_YUV) -> None:
        super().__init__(binary, yuv)
        self.backend = f"vtm:{binary}"

    def command(self, yuv_path, out_path, width, height, qp):
        cfg = ["-c", self.cfg] if self.cfg else []
        return [
            self.binary, *cfg, "-i", yuv_path, "-b", out_path, "-wdt", str(width), "-hgt", str(height),
            "-fr", "1", "-f", "1", "-q", str(qp), "--InputBitDepth=8", "--InternalBitDepth=10",
            "--InputChromaFormat=420", "--IntraPeriod=1", "--GOPSize=1", "--IntraQPOffset=0",
            "--ConformanceWindowMode=1", "--SEIDecodedPictureHash=0",
        ]  # fmt: skip


# ------------------------------------------------------------------------------------------ factories
def yuv_format_from_config(data_cfg: Any) -> YUVFormat:
    """The YUV format named by ``data.yuv_matrix`` / ``data.yuv_range`` (8 bit)."""
    try:
        return YUVFormat(data_cfg.yuv_matrix, data_cfg.yuv_range)
    except ValueError as exc:
        raise CodecError(f"config data.yuv_matrix/data.yuv_range: {exc}") from exc


def make_hevc(data_cfg: Any) -> _IntraVideoCodec:
    """HEVC codec of ``data.hevc_backend`` ("x265" or "hm")."""
    yuv = yuv_format_from_config(data_cfg)
    if data_cfg.hevc_backend == "x265":
        return X265Codec(data_cfg.x265_preset, yuv)
    if data_cfg.hevc_backend == "hm":
        binary = find_encoder_binary(
            data_cfg.hm_encoder,
            HM_ENV,
            ("TAppEncoderStatic", "TAppEncoder"),
            "hevc (HM backend)",
            "hm_encoder",
        )
        return HMCodec(binary, yuv)
    raise CodecError(f"config data.hevc_backend={data_cfg.hevc_backend!r}: choose 'x265' or 'hm'")


def make_avc(data_cfg: Any) -> _IntraVideoCodec:
    """AVC codec (x264 through PyAV)."""
    backend = getattr(data_cfg, "avc_backend", "x264")
    if backend != "x264":
        raise CodecError(f"config data.avc_backend={backend!r}: only 'x264' is supported")
    return X264Codec(data_cfg.x264_preset, yuv_format_from_config(data_cfg))


def make_vvc(data_cfg: Any) -> _IntraVideoCodec:
    """VVC codec of ``data.vvc_backend`` ("ffmpeg", "vvencapp" or "vtm")."""
    yuv = yuv_format_from_config(data_cfg)
    backend = data_cfg.vvc_backend
    if backend == "ffmpeg":
        return VvencFFmpegCodec(data_cfg.vvenc_preset, yuv)
    if backend == "vvencapp":
        binary = find_encoder_binary(
            data_cfg.vvc_encoder, VVC_ENV, ("vvencapp",), "vvc (vvencapp backend)", "vvc_encoder"
        )
        return VvencAppCodec(binary, data_cfg.vvenc_preset, yuv)
    if backend == "vtm":
        binary = find_encoder_binary(
            data_cfg.vvc_encoder,
            VVC_ENV,
            ("EncoderAppStatic", "EncoderApp"),
            "vvc (VTM backend)",
            "vvc_encoder",
        )
        return VTMCodec(binary, yuv)
    raise CodecError(f"config data.vvc_backend={backend!r}: choose 'ffmpeg', 'vvencapp' or 'vtm'")
