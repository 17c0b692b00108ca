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

Work is split into units of one image x one codec (all its levels; :mod:`moediffir.data.build_plan`), sent to a process
pool whose workers build their codecs once in an initializer (:mod:`moediffir.data.work`); the time spent inside
codec calls is measured in the workers. A sharded build writes its part instead (:mod:`moediffir.data.sharded_build`).

One build per folder: a build holds the folder's lock (:func:`~moediffir.utils.locks.folder_lock`; a shard holds
the lock of its shard, so the shards of one build run side by side) and a second build into it stops at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moediffir.config import Config, save_config
from moediffir.data.build_plan import GT, SPLITS, SUMMARY_NAME, BuildError, Plan, Unit, plan_benchmark
from moediffir.data.manifest import FAILURES_NAME, MANIFEST_NAME, write_failures, write_manifest
from moediffir.data.sharded_build import manifest_order, shard_plan, write_part
from moediffir.data.sources import DatasetMissingError
from moediffir.data.tasks import CODEC_DISPLAY
from moediffir.data.work import WorkerState, init_worker, run_unit
from moediffir.sharding import Shard
from moediffir.utils.io import atomic_write_json
from moediffir.utils.locks import folder_lock


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
            (:mod:`moediffir.data.sharded_build`; ``moediffir data merge`` assembles the manifest).

    Returns:
        A :class:`BuildReport`; bad inputs and failed items are in ``report.failures`` and ``failures.csv``,
        unavailable codecs in ``report.unavailable``. The manifest lists every output that exists.

    Raises:
        BuildError: no task selected, or every selected codec is unavailable, or a codec is unavailable
            while ``data.allow_missing_codecs`` is false.
        moediffir.data.sources.DatasetMissingError: a configured dataset folder is missing.
        moediffir.utils.locks.FolderLockedError: another build writes the same benchmark folder (or the same
            shard of it); the message names it, and nothing was changed.
    """
    with folder_lock(cfg.benchmark_dir, name=shard.name if shard is not None else "", what="benchmark folder"):
        return _build_locked(cfg, workers, splits, progress, shard)


def _build_locked(cfg: Config, workers: int | None, splits: Iterable[str], progress: bool,
                  shard: Shard | None) -> BuildReport:
    """The build of :func:`build_benchmark`, inside the lock of its benchmark folder (or of its shard)."""
    t_start = time.perf_counter()
    plan = plan_benchmark(cfg, splits)
    if shard is not None:
        plan = shard_plan(plan, shard)
    if not plan.n_outputs and not plan.failures and shard is None:
        raise BuildError("no task selected: check data.codecs, data.tasks and data.unseen")
    # pre-flight, before the folder is touched: the codecs are made here once (a one-process build codes with
    # them), so a build that every codec would fail (or any, without data.allow_missing_codecs) changes nothing
    state = WorkerState(cfg, plan.codecs)
    _check_usable(state.unavailable, plan, cfg)
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
    results, unavailable = _run_units(cfg, plan, units, n_workers, progress, state)

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

    rows.sort(key=manifest_order(cfg.data.preset))
    for codec, msg in sorted(unavailable.items()):
        skipped = sorted({t.id for ts in plan.tasks.values() for t in ts if t.codec == codec})
        failures.append({"split": "*", "set": "*", "image": "*", "task": " ".join(skipped),
                         "error_type": f"{CODEC_DISPLAY.get(codec, codec)} unavailable", "error": msg})
    failures.sort(key=lambda f: (f["split"], f["set"], f["image"], f["task"]))
    if shard is None:
        write_failures(failures, root / FAILURES_NAME)
    _check_usable(unavailable, plan, cfg)  # a worker may still find a codec unusable; no manifest is written then
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


def _run_units(cfg: Config, plan: Plan, units: list[Unit], n_workers: int, progress: bool,
               state: WorkerState) -> tuple[list[dict], dict[str, str]]:
    """Run every unit (in this process with ``state``'s codecs when ``n_workers == 1``, else in a pool of spawned
    workers, each making its own); the units' results and the codecs found unavailable."""
    unavailable: dict[str, str] = dict(state.unavailable)
    results: list[dict] = []
    bar = _progress(progress, total=sum(_n_items(u) for u in units), desc=f"benchmark, {n_workers} worker(s)")
    try:
        if n_workers == 1:
            for u in units:
                results.append(run_unit(u, state))
                bar.update(_n_items(u))
        else:
            # each worker makes its codecs once in its initializer and reports unavailable ones per unit
            threads = max(1, resolve_workers(0) // n_workers)
            with cf.ProcessPoolExecutor(
                max_workers=n_workers, mp_context=_mp_context(), initializer=init_worker,
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
    return results, unavailable


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
        other = shard_plan(other, shard)
    state = WorkerState(cfg, ())
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
