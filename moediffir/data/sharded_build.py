"""The CIR benchmark built in shards and merged into one manifest (paper §3.5; sharding in :mod:`moediffir.sharding`).

``moediffir data build --shard K/N`` codes only the images that shard ``K`` owns (the key of an image is
``<split>/<set>/<stem>``: every task of one image, and its GT, belong to the same shard). The outputs and their
records go where an unsharded build puts them (each file is written by exactly one shard); the shard's manifest
rows and failures go into its part ``<benchmark_dir>/parts/<K>-of-<N>/`` (``manifest.csv``, ``failures.csv``,
``part.json``), swapped in atomically at the end of the shard.

:func:`merge_benchmark` (``moediffir data merge``) checks that every part is present and was built for the
current settings and image list, then writes ``manifest.csv``, ``failures.csv`` and ``build_summary.json`` in
exactly the form and row order of an unsharded build; merging the same parts again writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from moediffir.config import Config
from moediffir.data.build_plan import SPLITS, SUMMARY_NAME, Plan, codec_settings, plan_benchmark
from moediffir.data.manifest import FAILURES_NAME, MANIFEST_NAME, write_failures, write_manifest
from moediffir.data.tasks import all_tasks
from moediffir.sharding import (
    PART_FILE,
    Shard,
    bucket,
    check_parts,
    digest,
    keys_digest,
    read_part,
    resolve_count,
)
from moediffir.utils.io import (
    atomic_directory,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    csv_text,
)

PARTS_DIR = "parts"
RERUN = "moediffir data build --shard {shard}"


def parts_root(cfg: Config) -> Path:
    return cfg.benchmark_dir / PARTS_DIR


def item_key(split: str, set_name: str, stem: str) -> str:
    """The key that decides an image's shard."""
    return f"{split}/{set_name}/{stem}"


def _failure_key(row: Mapping[str, Any]) -> str:
    stem = Path(str(row.get("image", ""))).stem
    return item_key(str(row.get("split", "")), str(row.get("set", "")), stem)


def shard_plan(plan: Plan, shard: Shard) -> Plan:
    """The units (and planning failures) of ``plan`` that ``shard`` owns."""
    units = [u for u in plan.units if shard.owns(item_key(u.split, u.source.set_name, u.source.stem))]
    sources = {s: [src for src in items if shard.owns(item_key(s, src.set_name, src.stem))]
               for s, items in plan.sources.items()}
    failures = [f for f in plan.failures if shard.owns(_failure_key(f))]
    return replace(plan, units=units, sources=sources, failures=failures)


def _settings(cfg: Config, splits: Iterable[str]) -> str:
    d = cfg.data
    return digest({"splits": sorted(splits), "codec_settings": codec_settings(d), "preset": d.preset,
                   "codecs": d.codecs, "unseen": d.unseen, "tasks": d.tasks, "train_tile": d.train_tile,
                   "png_compress_level": d.png_compress_level})


def expected_parts(cfg: Config, splits: Iterable[str], count: int) -> dict[int, dict[str, Any]]:
    """What each part's ``part.json`` must say for the current settings and image lists (no image is read)."""
    splits = tuple(s for s in SPLITS if s in set(splits))
    plan = plan_benchmark(cfg, splits)
    keys: dict[int, list[str]] = {k: [] for k in range(1, count + 1)}
    for split, items in plan.sources.items():
        for src in items:
            key = item_key(split, src.set_name, src.stem)
            keys[bucket(key, count) + 1].append(key)
    settings = _settings(cfg, splits)
    return {k: {"shard": str(Shard(k, count)), "splits": list(splits), "settings": settings,
                "items": keys_digest(v), "n_items": len(v)} for k, v in keys.items()}


def manifest_order(preset: str):
    """Sort key of manifest rows (split, set, task in preset order, stem): the order of an unsharded build."""
    order = {t.id: i for i, t in enumerate(all_tasks(preset))}
    return lambda r: (SPLITS.index(r["split"]), r["set"], order.get(r["task"], 99), r["task"], r["stem"])


def failure_order(f: Mapping[str, Any]) -> tuple:
    return (f["split"], f["set"], f["image"], f["task"])


def write_part(cfg: Config, shard: Shard, mine: Plan, rows: list[dict], failures: list[dict],
               summary: Mapping[str, Any]) -> Path:
    """Write one shard's part folder atomically (``mine``: the shard's plan); returns its ``manifest.csv``."""
    splits = tuple(mine.tasks)
    keys = [item_key(s, src.set_name, src.stem) for s, items in mine.sources.items() for src in items]
    record = {"shard": str(shard), "splits": [s for s in SPLITS if s in splits], "settings": _settings(cfg, splits),
              "items": keys_digest(keys), "n_items": len(keys), "summary": dict(summary)}
    folder = parts_root(cfg) / shard.name
    with atomic_directory(folder) as tmp:
        write_manifest(rows, tmp / MANIFEST_NAME)
        write_failures(failures, tmp / FAILURES_NAME)
        atomic_write_json(tmp / PART_FILE, record)
    return folder / MANIFEST_NAME


def _read_text_table(path: Path):
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False)  # cells come back as written


def merge_benchmark(cfg: Config, count: int | None = None, splits: Iterable[str] | None = None) -> Path:
    """Assemble ``manifest.csv`` (and ``failures.csv``, ``build_summary.json``) from the parts of a sharded build.

    ``count``: the number of shards (None: the one found on disk). ``splits``: those the shards built (None:
    what the parts say). Raises :class:`~moediffir.sharding.ShardError` naming every missing or stale part;
    nothing is written then.
    """
    import pandas as pd

    root = parts_root(cfg)
    count = resolve_count(root, count, "benchmark")
    if splits is None:
        found = [read_part(root / Shard(k, count).name) for k in range(1, count + 1)]
        splits = next((rec["splits"] for rec in found if rec), SPLITS)
    folders = check_parts(root, count, expected_parts(cfg, splits, count), "benchmark", RERUN)
    manifests = [_read_text_table(f / MANIFEST_NAME) for f in folders]
    manifest = pd.concat(manifests, ignore_index=True)
    rows = sorted(manifest.to_dict("records"), key=manifest_order(cfg.data.preset))
    failures = pd.concat([_read_text_table(f / FAILURES_NAME) for f in folders], ignore_index=True)
    fail_rows = sorted({tuple(r.items()): r for r in failures.to_dict("records")}.values(), key=failure_order)
    bench = cfg.benchmark_dir
    atomic_write_csv(bench / FAILURES_NAME, pd.DataFrame(fail_rows, columns=list(failures.columns)))
    out = atomic_write_text(bench / MANIFEST_NAME, csv_text(pd.DataFrame(rows, columns=list(manifest.columns))))
    summaries = [read_part(f)["summary"] for f in folders]
    total = {k: sum(s.get(k, 0) for s in summaries) for k in ("n_outputs", "n_built", "n_skipped", "n_gt", "n_failed")}
    atomic_write_json(bench / SUMMARY_NAME, {**total, "benchmark_dir": str(bench), "manifest": str(out),
                                             "merged_from": [f.name for f in folders]})
    return out


def merge_if_sharded(cfg: Config) -> Path | None:
    """Merge the parts when the benchmark has parts but no manifest (what ``evaluate`` and training read)."""
    if (cfg.benchmark_dir / MANIFEST_NAME).is_file() or not parts_root(cfg).is_dir():
        return None
    return merge_benchmark(cfg)
