"""The work of a CIR benchmark build: one unit (image x codec, all its levels) coded, checked and written, in a
worker process or in the build's own (paper §3.5; layout and resume rule in docs/design.md §3).

Every PNG and every record is written atomically, the PNG before its record; an output whose record, fingerprint
(task, codec settings, source file size/mtime, tile) and PNG SHA-256 check out is kept, anything else is redone.
Workers build their codecs once (:func:`init_worker`), die with the build process, and measure the time spent
inside codec calls.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from moediffir.config import Config
from moediffir.data.build_plan import GT, Unit, codec_settings, failure_row, output_rel, record_rel
from moediffir.data.sources import SourceImage
from moediffir.data.tasks import Task
from moediffir.metrics.fidelity import SSIMReference, psnr
from moediffir.utils.digests import json_digest, output_done, read_record, write_output
from moediffir.utils.io import ImageReadError, encode_png, read_image_rgb


def _source_signature(src: SourceImage) -> dict[str, Any]:
    st = src.path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "box": list(src.box) if src.box else None}


class WorkerState:
    """Per-process state: the config and one instance of each codec, made once."""

    def __init__(self, cfg: Config, codec_names: Iterable[str]) -> None:
        from moediffir.codecs import make_codec  # the codec package is only needed where work happens

        self.cfg = cfg
        self.root = cfg.benchmark_dir
        self.settings = codec_settings(cfg.data)
        self.codecs: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        for name in codec_names:
            try:
                self.codecs[name] = make_codec(name, cfg.data)
            except Exception as exc:  # noqa: BLE001 - CodecUnavailableError and friends, reported per codec
                self.unavailable[name] = f"{type(exc).__name__}: {exc}"


_STATE: WorkerState | None = None


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the parent dies, so kill -9 of a build leaves no orphans."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - best effort only
        return


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Daemon thread: exit this worker as soon as the build process is gone (any OS, any start method)."""
    import threading

    def watch() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except OSError:
                os._exit(1)
            time.sleep(interval)

    threading.Thread(target=watch, name="moediffir-parent-watch", daemon=True).start()


def init_worker(cfg: Config, codec_names: tuple[str, ...], parent_pid: int, threads: int) -> None:
    global _STATE
    _die_with_parent()
    _watch_parent(parent_pid)
    _STATE = WorkerState(cfg, codec_names)
    torch = sys.modules.get("torch")  # imported only if a learned codec needs it
    if torch is not None:
        torch.set_num_threads(threads)  # the workers share the cores


def _is_done(root: Path, record: dict | None, fp: str, full: bool = True) -> bool:
    """A finished output: record with this fingerprint, and its PNG with the recorded SHA-256 (``full``) or,
    for a quick look, the recorded size."""
    return record is not None and output_done(root / record.get("path", ""), record, fp, full=full)


def _load_source(src: SourceImage) -> np.ndarray:
    rgb = read_image_rgb(src.path)  # (H, W, 3) uint8
    if src.box is not None:
        y, x, h, w = src.box
        rgb = np.ascontiguousarray(rgb[y : y + h, x : x + w])  # (h, w, 3)
        if rgb.shape[:2] != (h, w):
            raise ImageReadError(f"{src.path}: tile {src.box} lies outside the image {rgb.shape[:2]}")
    return rgb


def _gt_record(unit: Unit, rgb: np.ndarray, fp: str) -> dict:
    src = unit.source
    return {"split": unit.split, "set": src.set_name, "image": f"{src.set_name}/{src.rel}", "stem": src.stem,
            "task": GT, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "path": output_rel(unit.split, src.set_name, GT, src.stem), "fingerprint": fp}


def run_unit(unit: Unit, state: WorkerState | None = None, build: bool = True) -> dict:
    """Build (or verify) every output of one unit; never raises for a bad input or a codec failure.

    With ``build=False`` nothing is coded: only the records of finished outputs come back (checked by size).
    """
    state = state or _STATE
    assert state is not None, "worker state not initialised"
    root = state.root
    src = unit.source
    res: dict[str, Any] = {"records": [], "failures": [], "built": 0, "skipped": 0, "codec_s": 0.0,
                           "unit_s": 0.0, "unavailable": {}}  # built/skipped count task outputs, not GT
    t_unit = time.perf_counter()
    try:
        sig = _source_signature(src)
    except OSError as exc:
        res["failures"] = [failure_row(unit.split, src, t.id, exc) for t in unit.tasks] or [
            failure_row(unit.split, src, GT, exc)]
        return res
    level_png = state.cfg.data.png_compress_level
    if not unit.tasks:  # GT conversion
        fp = json_digest({"task": GT, "source": sig}, 16)
        rec_path = root / record_rel(unit.split, src.set_name, GT, src.stem)
        rec = read_record(rec_path)
        if _is_done(root, rec, fp, full=build):
            res["records"].append(rec)
        elif build:
            try:
                rgb = _load_source(src)
            except Exception as exc:  # noqa: BLE001
                res["failures"].append(failure_row(unit.split, src, GT, exc))
            else:
                png = encode_png(rgb, level_png)
                rec = _gt_record(unit, rgb, fp)
                rec = write_output(root / rec["path"], png, rec_path, rec)
                res["records"].append(rec)
        res["unit_s"] = time.perf_counter() - t_unit
        return res

    codec_name = unit.codec
    todo: list[tuple[Task, str, Path]] = []
    for task in unit.tasks:
        fp = json_digest({"task": task.id, "codec": state.settings, "source": sig}, 16)
        rec_path = root / record_rel(unit.split, src.set_name, task.id, src.stem)
        rec = read_record(rec_path)
        if _is_done(root, rec, fp, full=build):
            res["records"].append(rec)
            res["skipped"] += 1
        else:
            todo.append((task, fp, rec_path))
    if not todo or not build:
        res["unit_s"] = time.perf_counter() - t_unit
        return res
    if codec_name in state.unavailable:
        res["unavailable"][codec_name] = state.unavailable[codec_name]
        res["unit_s"] = time.perf_counter() - t_unit
        return res
    codec = state.codecs[codec_name]
    try:
        gt = _load_source(src)  # (H, W, 3) uint8
    except Exception as exc:  # noqa: BLE001
        res["failures"] = [failure_row(unit.split, src, t.id, exc) for t, _, _ in todo]
        res["unit_s"] = time.perf_counter() - t_unit
        return res
    h, w = gt.shape[:2]
    ssim = SSIMReference(gt)  # the GT's local moments, once for all levels
    gt_rel = output_rel(unit.split, src.set_name, GT, src.stem)
    for task, fp, rec_path in todo:
        try:
            t0 = time.perf_counter()
            out = codec(gt, task.level)
            dt = time.perf_counter() - t0
            res["codec_s"] += dt
            dec = out.decoded
            if dec.shape != gt.shape or dec.dtype != np.uint8:
                raise ValueError(f"codec {codec_name} returned {dec.shape} {dec.dtype} for a {gt.shape} input")
            png = encode_png(dec, level_png)
            info = out.info or {}
            rec = {
                "split": unit.split, "set": src.set_name, "image": f"{src.set_name}/{src.rel}",
                "stem": src.stem, "task": task.id, "codec": task.codec, "level": task.level,
                "label": task.label, "kind": task.kind, "width": w, "height": h,
                "bits": int(out.num_bits), "bpp": float(out.num_bits) / float(h * w),
                "lq_psnr": psnr(dec, gt), "lq_ssim": ssim(dec),
                "path": output_rel(unit.split, src.set_name, task.id, src.stem), "gt_path": gt_rel,
                "backend": str(info.get("backend", "")), "weights": str(info.get("weights", "n/a")),
                "bits_source": str(info.get("bits_source", "")), "qp_used": info.get("qp_used"),
                "fingerprint": fp, "codec_s": round(dt, 4), "info": info,
            }
            rec = write_output(root / rec["path"], png, rec_path, rec)
            res["records"].append(rec)
            res["built"] += 1
        except Exception as exc:  # noqa: BLE001 - one bad item never stops the run
            res["failures"].append(failure_row(unit.split, src, task.id, exc))
    res["unit_s"] = time.perf_counter() - t_unit
    return res

