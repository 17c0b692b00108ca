"""Build the CIR benchmark: every source image under every task, in parallel, resumable (paper §3.5).

Layout under ``benchmark_dir`` (docs/design.md §3)::

    <split>/<set>/gt/<stem>.png          the source converted once to RGB uint8 PNG (GT)
    <split>/<set>/<task_id>/<stem>.png   the decoded compressed image (LQ), same size as the GT
    records/<split>/<set>/<task_id|gt>/<stem>.json   one small record per output (resume bookkeeping)
    manifest.csv  failures.csv  build_summary.json  config.json

``split`` is ``train`` (the training sets, seen tasks only, optionally cut into tiles) or ``test`` (the test
sets, seen and unseen tasks, whole images).

How a run stays correct when it is killed at any moment: every PNG and every record is written atomically
(temp file + ``os.replace``), the PNG before its record. A rerun re-verifies each output (record present, its
fingerprint — task, codec settings, source file size/mtime, tile — unchanged, PNG present with the recorded
SHA-256) and redoes only what fails the check. The manifest is removed when a build starts and assembled from
the records at the end, so a manifest on disk always describes a finished build.

Work is split into units of one image x one codec (all its levels), sent to a process pool whose workers build
their codecs once in an initializer; the time spent inside codec calls is measured in the workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from moediffir.config import Config, DataConfig, save_config
from moediffir.data.manifest import FAILURES_NAME, MANIFEST_NAME, write_failures, write_manifest
from moediffir.data.sources import DatasetMissingError, SourceImage, list_sources, tile_boxes, tile_stem
from moediffir.data.tasks import CODEC_DISPLAY, Task, select_tasks
from moediffir.errors import MoEDiffIRError
from moediffir.metrics.fidelity import SSIMReference, psnr
from moediffir.shards import Shard
from moediffir.utils.digests import json_digest, output_done, read_record, write_output
from moediffir.utils.io import ImageReadError, atomic_write_json, encode_png, read_image_rgb

SPLITS = ("train", "test")
GT = "gt"
RECORDS_DIR = "records"
SUMMARY_NAME = "build_summary.json"

# DataConfig fields that choose *what* is built, not *how* a codec codes; every other field is a codec
# setting and enters each output's fingerprint (so changing, e.g., x265_preset redoes the outputs).
_BUILD_FIELDS = frozenset({
    "root", "datasets_dir", "preset", "train_sets", "test_sets", "codecs", "unseen", "train_tile",
    "max_train_images", "max_test_images", "workers", "out_dir", "tasks", "allow_missing_codecs",
    "png_compress_level",
})
# Rough relative cost of one task per pixel (CPU, measured on the smoke set), used only to start slow units
# first so that the last units to finish are short ones.
_CODEC_COST = {"hific": 20.0, "c_psnr": 10.0, "c_ssim": 10.0, "vvc": 3.0, "hevc": 1.0, "avc": 0.3,
               "webp": 0.3, "jpeg": 0.1}


class BuildError(MoEDiffIRError, RuntimeError):
    """The benchmark cannot be built as configured (the message says what to change)."""


# ------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Unit:
    """One source image (or tile) and the tasks of one codec; ``tasks == ()`` converts the GT."""

    split: str
    source: SourceImage
    tasks: tuple[Task, ...]
    cost: float = 0.0

    @property
    def codec(self) -> str:
        return self.tasks[0].codec if self.tasks else GT


@dataclass
class Plan:
    """Everything a build will produce, before any work is done."""

    benchmark_dir: Path
    datasets_dir: Path
    units: list[Unit]
    tasks: dict[str, list[Task]]  # split -> tasks
    sources: dict[str, list[SourceImage]]  # split -> GT items
    failures: list[dict] = field(default_factory=list)  # inputs that failed already while planning

    @property
    def codecs(self) -> list[str]:
        """Codecs that some unit will call."""
        return sorted({u.codec for u in self.units if u.tasks})

    @property
    def n_outputs(self) -> int:
        return sum(len(u.tasks) for u in self.units)


def codec_settings(data: DataConfig) -> dict[str, Any]:
    """The DataConfig fields that change how codecs code (part of every output's fingerprint)."""
    return {f.name: getattr(data, f.name) for f in fields(data) if f.name not in _BUILD_FIELDS}


def _split_sets(cfg: Config, split: str) -> tuple[tuple[str, ...], int]:
    d = cfg.data
    return (d.train_sets, d.max_train_images) if split == "train" else (d.test_sets, d.max_test_images)


def plan_benchmark(cfg: Config, splits: Iterable[str] = SPLITS) -> Plan:
    """List the units of work for ``cfg`` (no image is coded). Missing dataset folders raise early."""
    d = cfg.data
    splits = tuple(splits)
    for s in splits:
        if s not in SPLITS:
            raise BuildError(f"unknown split {s!r}; choose from {SPLITS}")
    selected = select_tasks(d.preset, d.codecs, d.unseen, d.tasks)
    tasks = {"train": [t for t in selected if t.seen], "test": list(selected)}
    units: list[Unit] = []
    sources: dict[str, list[SourceImage]] = {}
    failures: list[dict] = []
    for split in splits:
        set_names, max_images = _split_sets(cfg, split)
        sources[split] = []
        for set_name in set_names:
            for src in list_sources(cfg.datasets_dir, set_name, max_images):
                if split == "train" and d.train_tile > 0:
                    try:
                        with Image.open(src.path) as im:
                            w, h = im.size
                    except Exception as exc:  # noqa: BLE001 - reported by name, the run goes on
                        failures.append(_failure_row(split, src, "*", exc))
                        continue
                    items = [SourceImage(src.set_name, src.path, src.rel, tile_stem(src.stem, b), b)
                             for b in tile_boxes(h, w, d.train_tile)]
                else:
                    items = [src]
                sources[split].extend(items)
    for split, items in sources.items():
        by_codec: dict[str, list[Task]] = {}
        for t in tasks[split]:
            by_codec.setdefault(t.codec, []).append(t)
        for src in items:
            units.append(Unit(split, src, ()))
            for codec, ts in by_codec.items():
                units.append(Unit(split, src, tuple(ts), _CODEC_COST.get(codec, 5.0) * len(ts)))
    return Plan(cfg.benchmark_dir, cfg.datasets_dir, units, {s: tasks[s] for s in splits}, sources, failures)


# ---------------------------------------------------------------------------------------------- paths
def output_rel(split: str, set_name: str, task: str, stem: str) -> str:
    """Path of an output (or GT when ``task == "gt"``) relative to ``benchmark_dir``."""
    return f"{split}/{set_name}/{task}/{stem}.png"


def record_rel(split: str, set_name: str, task: str, stem: str) -> str:
    return f"{RECORDS_DIR}/{split}/{set_name}/{task}/{stem}.json"


def _source_signature(src: SourceImage) -> dict[str, Any]:
    st = src.path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "box": list(src.box) if src.box else None}


def _failure_row(split: str, src: SourceImage, task: str, exc: BaseException) -> dict:
    return {"split": split, "set": src.set_name, "image": f"{src.set_name}/{src.rel}", "task": task,
            "error_type": type(exc).__name__, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)}


# --------------------------------------------------------------------------------------------- worker
class _WorkerState:
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


_STATE: _WorkerState | None = None


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


def _init_worker(cfg: Config, codec_names: tuple[str, ...], parent_pid: int, threads: int) -> None:
    global _STATE
    _die_with_parent()
    _watch_parent(parent_pid)
    _STATE = _WorkerState(cfg, codec_names)
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


def run_unit(unit: Unit, state: _WorkerState | None = None, build: bool = True) -> dict:
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
        res["failures"] = [_failure_row(unit.split, src, t.id, exc) for t in unit.tasks] or [
            _failure_row(unit.split, src, GT, exc)]
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
                res["failures"].append(_failure_row(unit.split, src, GT, exc))
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
        res["failures"] = [_failure_row(unit.split, src, t.id, exc) for t, _, _ in todo]
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
            res["failures"].append(_failure_row(unit.split, src, task.id, exc))
    res["unit_s"] = time.perf_counter() - t_unit
    return res


# ---------------------------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    """What a build did; ``summary()`` is the text printed at the end."""

    benchmark_dir: Path
    manifest_path: Path | None
    n_outputs: int  # planned task outputs (GT excluded)
    n_built: int  # task outputs coded in this run
    n_skipped: int  # task outputs verified and kept from an earlier run
    n_gt: int
    failures: list[dict]
    unavailable: dict[str, str]
    workers: int
    wall_s: float
    codec_s: float  # summed over workers
    worker_s: float  # time spent inside units, summed over workers

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def outside_codec_share(self) -> float:
        """Share of the workers' wall time (wall x workers) not spent inside codec calls."""
        total = self.wall_s * max(self.workers, 1)
        return 1.0 - self.codec_s / total if total > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.n_built / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.manifest_path is not None and not self.failures and not self.unavailable

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark_dir": str(self.benchmark_dir), "manifest": str(self.manifest_path or ""),
            "n_outputs": self.n_outputs, "n_built": self.n_built, "n_skipped": self.n_skipped,
            "n_gt": self.n_gt, "n_failed": self.n_failed, "unavailable": self.unavailable,
            "workers": self.workers, "wall_s": round(self.wall_s, 3), "codec_s": round(self.codec_s, 3),
            "worker_s": round(self.worker_s, 3), "outside_codec_share": round(self.outside_codec_share, 4),
            "items_per_s": round(self.items_per_s, 3),
        }

    def summary(self) -> str:
        lines = [
            f"benchmark: {self.benchmark_dir}",
            (f"  outputs: {self.n_outputs} planned, {self.n_built} built, {self.n_skipped} verified and kept, "
             f"{self.n_failed} failed; {self.n_gt} GT images"),
            (f"  {self.workers} worker(s), {self.wall_s:.1f} s wall, {self.codec_s:.1f} s in codec calls "
             f"({100 * (1 - self.outside_codec_share):.0f}% of worker wall time)"),
        ]
        for codec, msg in sorted(self.unavailable.items()):
            lines.append(f"  codec {codec} NOT AVAILABLE, its tasks were skipped: {msg}")
        if self.failures:
            by_image: dict[str, list[dict]] = {}
            for f in self.failures:
                by_image.setdefault(f["image"], []).append(f)
            lines.append(f"  {len(self.failures)} failed output(s) on {len(by_image)} input(s) "
                         f"(all listed in {self.benchmark_dir / FAILURES_NAME}):")
            for image, rows in sorted(by_image.items())[:20]:
                tasks = ", ".join(sorted({r["task"] for r in rows}))
                lines.append(f"    {image} [{tasks}]: {rows[0]['error_type']}: {rows[0]['error']}")
        lines.append(f"  manifest: {self.manifest_path}" if self.manifest_path else
                     "  manifest: not written")
        return "\n".join(lines)


def resolve_workers(workers: int) -> int:
    """``0`` means one worker per available CPU core."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _mp_context() -> mp.context.BaseContext:
    # fork is unsafe once torch's thread pools exist in the parent (the availability check may have built a
    # learned codec); spawn starts clean workers that are direct children of the build, so PR_SET_PDEATHSIG
    # reaches them (forkserver workers hold the server's liveness pipe open and outlive a killed build).
    return mp.get_context("spawn")


def _check_usable(unavailable: dict[str, str], plan: Plan, cfg: Config) -> None:
    """Stop when every codec asked for is unavailable, or any is while ``data.allow_missing_codecs`` is off."""
    if unavailable and (set(unavailable) >= set(plan.codecs) or not cfg.data.allow_missing_codecs):
        msgs = "; ".join(f"{k}: {v}" for k, v in sorted(unavailable.items()))
        raise BuildError(f"codec(s) not available: {msgs}" + (
            "" if cfg.data.allow_missing_codecs else " (set data.allow_missing_codecs=true to skip them)"))


# long function: one build from plan to manifest, each phase a commented block (plan, run, report)
def build_benchmark(
    cfg: Config,
    *,
    workers: int | None = None,
    splits: Iterable[str] = SPLITS,
    progress: bool = True,
    shard: Shard | None = None,
) -> BuildReport:
    """Build (or complete) the CIR benchmark described by ``cfg`` and write its manifest.

    Args:
        cfg: resolved config (``moediffir.config.resolve_config``); ``cfg.benchmark_dir`` is the output.
        workers: processes (``None`` -> ``cfg.data.workers``; 0 -> one per core; 1 -> no pool).
        splits: ``("train", "test")`` or one of them.
        progress: show a tqdm progress bar (on stderr).
        shard: build only this shard's images and write its part instead of the manifest
            (:mod:`moediffir.data.shards`; ``moediffir data merge`` assembles the manifest).

    Returns:
        A :class:`BuildReport`; bad inputs and failed items are in ``report.failures`` and ``failures.csv``,
        unavailable codecs in ``report.unavailable``. The manifest lists every output that exists.

    Raises:
        BuildError: no task selected, or every selected codec is unavailable, or a codec is unavailable
            while ``data.allow_missing_codecs`` is false.
        moediffir.data.sources.DatasetMissingError: a configured dataset folder is missing.
    """
    t_start = time.perf_counter()
    plan = plan_benchmark(cfg, splits)
    if shard is not None:
        from moediffir.data import shards

        plan = shards.shard_plan(plan, shard)
    if not plan.n_outputs and not plan.failures and shard is None:
        raise BuildError("no task selected: check data.codecs, data.tasks and data.unseen")
    root = plan.benchmark_dir
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # a manifest on disk always means a finished build
    if shard is None:  # other shards may be writing beside this one
        _remove_stale_temp_files(root)
    save_config(cfg, root)

    n_workers = resolve_workers(cfg.data.workers if workers is None else workers)
    # slow units first (largest images, slowest codecs), GT conversions interleaved by their own cost
    units = sorted(plan.units, key=lambda u: -(u.cost or 0.05) * _pixels_hint(u))
    n_workers = max(1, min(n_workers, len(units)))
    unavailable: dict[str, str] = {}
    results: list[dict] = []
    bar = _progress(progress, total=sum(_n_items(u) for u in units), desc=f"benchmark, {n_workers} worker(s)")
    try:
        if n_workers == 1:
            state = _WorkerState(cfg, plan.codecs)  # the codecs, made once
            unavailable.update(state.unavailable)
            _check_usable(unavailable, plan, cfg)  # fail fast, before any work
            for u in units:
                results.append(run_unit(u, state))
                bar.update(_n_items(u))
        else:
            # each worker makes its codecs once in its initializer and reports unavailable ones per unit
            threads = max(1, resolve_workers(0) // n_workers)
            with cf.ProcessPoolExecutor(
                max_workers=n_workers, mp_context=_mp_context(), initializer=_init_worker,
                initargs=(cfg, tuple(plan.codecs), os.getpid(), threads),
            ) as pool:
                futures = {pool.submit(run_unit, u): u for u in units}
                try:
                    for fut in cf.as_completed(futures):
                        results.append(fut.result())
                        bar.update(_n_items(futures[fut]))
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()

    failures = list(plan.failures)
    records: list[dict] = _finished_records_of_other_splits(cfg, plan, shard)
    n_built = n_skipped = 0
    codec_s = worker_s = 0.0
    for r in results:
        failures.extend(r["failures"])
        records.extend(r["records"])
        unavailable.update(r["unavailable"])
        codec_s += r["codec_s"]
        worker_s += r["unit_s"]
    gt_by_key = {(r["split"], r["set"], r["stem"]): r for r in records if r["task"] == GT}
    rows = []
    for r in records:
        if r["task"] == GT:
            continue
        gt = gt_by_key.get((r["split"], r["set"], r["stem"]))
        if gt is None:  # the GT conversion failed although coding worked: keep the pair consistent
            failures.append({"split": r["split"], "set": r["set"], "image": r["image"], "task": r["task"],
                             "error_type": "MissingGT", "error": "the GT image was not written"})
            continue
        rows.append({**r, "gt_sha256": gt["sha256"]})
    for r in results:
        n_built += r["built"]
        n_skipped += r["skipped"]
    n_gt = len(gt_by_key)

    from moediffir.data.shards import manifest_order, write_part

    rows.sort(key=manifest_order(cfg.data.preset))
    for codec, msg in sorted(unavailable.items()):
        skipped = sorted({t.id for ts in plan.tasks.values() for t in ts if t.codec == codec})
        failures.append({"split": "*", "set": "*", "image": "*", "task": " ".join(skipped),
                         "error_type": f"{CODEC_DISPLAY.get(codec, codec)} unavailable", "error": msg})
    failures.sort(key=lambda f: (f["split"], f["set"], f["image"], f["task"]))
    if shard is None:
        write_failures(failures, root / FAILURES_NAME)
    _check_usable(unavailable, plan, cfg)  # with a pool this is known only now; no manifest is written then
    manifest_path = None if shard is not None else write_manifest(rows, root / MANIFEST_NAME)
    report = BuildReport(
        benchmark_dir=root, manifest_path=manifest_path, n_outputs=plan.n_outputs, n_built=n_built,
        n_skipped=n_skipped, n_gt=n_gt, failures=[f for f in failures if f["image"] != "*"],
        unavailable=unavailable, workers=n_workers, wall_s=time.perf_counter() - t_start, codec_s=codec_s,
        worker_s=worker_s,
    )
    if shard is not None:
        report.manifest_path = write_part(cfg, shard, plan, rows, failures, report.to_dict())
    else:
        atomic_write_json(root / SUMMARY_NAME, report.to_dict())
    return report


def _finished_records_of_other_splits(cfg: Config, plan: Plan, shard: Shard | None = None) -> list[dict]:
    """Records of finished outputs of the splits this build was not asked for, so that building one split
    keeps the other's rows in the manifest (checked by file size only; ``moediffir data verify`` hashes)."""
    others = [s for s in SPLITS if s not in plan.tasks]
    if not others:
        return []
    try:
        other = plan_benchmark(cfg, others)
    except DatasetMissingError:
        return []
    if shard is not None:
        from moediffir.data.shards import shard_plan

        other = shard_plan(other, shard)
    state = _WorkerState(cfg, ())
    return [rec for u in other.units for rec in run_unit(u, state, build=False)["records"]]


def _remove_stale_temp_files(root: Path) -> int:
    """Delete the ``.<name>.<random>.tmp`` files an interrupted atomic write leaves behind."""
    n = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(dirpath, name).unlink(missing_ok=True)
                n += 1
    return n


def _n_items(u: Unit) -> int:
    """Outputs of a unit (its tasks, or the one GT image)."""
    return max(1, len(u.tasks))


def _pixels_hint(u: Unit) -> float:
    if u.source.box is not None:
        return float(u.source.box[2] * u.source.box[3])
    try:
        return float(u.source.path.stat().st_size)  # file size stands in for the pixel count
    except OSError:
        return 1.0


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)
