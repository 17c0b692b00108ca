"""Benchmark of the CIR benchmark builder (paper §3.5).

Builds the same workload twice into temporary folders — once in one process, once with one worker per core —
and prints, for each: outputs (tasks x images) per second, and the share of wall time spent outside codec
calls (1 - codec seconds summed over workers / (wall seconds x workers); codec time is measured inside the
workers around each codec call). Then the speed-up ratio. Targets: >= 1.7x with 2 workers, and
< 25% of the time outside codec calls.

Workload: the test split (every task of the preset for the chosen codecs, seen and unseen, so AVC too) of an
image folder: ``--images DIR``, else ``$MOEDIFFIR_BENCH_IMAGES``, else ``shared/datasets/kodak24`` beside
the repository when present, else the bundled ``data/smoke/smoke_test``. Codec settings come from
``--profile`` (default ``paper``: x265/x264 ``slow``, vvenc ``medium``).

    python bench/bench_datagen.py [--images DIR] [--max-images 8] [--workers 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moediffir.config import parse_override, resolve_config
from moediffir.data.builder import BuildReport, build_benchmark, resolve_workers


def default_images() -> Path:
    env = os.environ.get("MOEDIFFIR_BENCH_IMAGES")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "datasets" / "kodak24"
    return shared if shared.is_dir() else REPO / "data" / "smoke" / "smoke_test"


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (workers, encoder subprocesses)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def run_once(images: Path, workers: int, args: argparse.Namespace) -> BuildReport:
    out = Path(tempfile.mkdtemp(prefix=f"bench_datagen_w{workers}_"))
    try:
        overrides = {
            "data.datasets_dir": str(images.parent), "data.test_sets": [images.name], "data.train_sets": [],
            "data.codecs": args.codecs.split(","), "data.unseen": True, "data.max_test_images": args.max_images,
            "data.out_dir": str(out),
        }
        overrides.update(dict(parse_override(o) for o in args.set))
        cfg = resolve_config(args.profile, overrides)
        return build_benchmark(cfg, workers=workers, splits=("test",), progress=False)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=None, help="folder of test images (see module docstring)")
    p.add_argument("--max-images", type=int, default=8, help="images used (0 = all)")
    p.add_argument("--codecs", default="jpeg,webp,hevc,vvc", help="seen codecs; AVC comes with the unseen tasks")
    p.add_argument("--workers", type=int, default=0, help="parallel run: processes (0 = one per core)")
    p.add_argument("--profile", default="paper", choices=("smoke", "paper"), help="codec settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    images = args.images or default_images()
    n_par = resolve_workers(args.workers)
    print(f"workload: {images} (max {args.max_images or 'all'} images), codecs {args.codecs} + unseen tasks, "
          f"profile {args.profile}; {os.cpu_count()} CPU(s), parallel run with {n_par} worker(s)")
    rows, cpu = {}, {}
    for label, w in (("1 process", 1), (f"{n_par} workers", n_par)):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        rep = run_once(images, w, args)
        if rep.n_failed or rep.unavailable:
            print(rep.summary())
            return 1
        rows[label], cpu[label] = rep, _cpu_seconds() - c0
        print(f"{label:>12}: {rep.n_built} outputs in {rep.wall_s:6.1f} s = {rep.items_per_s:6.2f} tasks x images/s; "
              f"codec calls {rep.codec_s:6.1f} s; outside codec calls {100 * rep.outside_codec_share:4.1f}%; "
              f"CPU {cpu[label]:6.1f} s = {cpu[label] / rep.wall_s:4.2f} cores busy "
              f"(total {time.perf_counter() - t0:.1f} s)")
    one, par = rows["1 process"], rows[f"{n_par} workers"]
    ratio = par.items_per_s / one.items_per_s if one.items_per_s else float("nan")
    cores = cpu[f"{n_par} workers"] / par.wall_s
    print(f"speed-up with {n_par} workers: {ratio:.2f}x (target >= 1.7x with 2)")
    print(f"outside codec calls, parallel run: {100 * par.outside_codec_share:.1f}% (target < 25%)")
    if cores < 0.9 * n_par:
        print(f"note: the parallel run got {cores:.2f} of {n_par} cores (other processes were running); "
              "its speed-up is bounded by that, rerun on a quiet machine")
    if args.json:
        args.json.write_text(json.dumps({"images": str(images), "workers": n_par, "ratio": ratio,
                                         "cores_busy_parallel": cores, "cpu_s": cpu,
                                         "one": one.to_dict(), "parallel": par.to_dict()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
