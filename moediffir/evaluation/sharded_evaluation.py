"""The evaluation of paper §4.2 in shards: one share of the test items per process or machine, merged into one
results file (sharding rules in :mod:`moediffir.sharding`).

``moediffir evaluate --shard K/N`` restores and scores the items shard ``K`` owns (an item's key is
``<set>/<task>/<stem>``) and writes its part ``<results>/<profile>/metrics/parts/<K>-of-<N>/``: the per-image
scores (``per_image.csv``), the InceptionV3 features of every image for FID (``features.npz``), the prompt
similarity of the model and ``part.json`` (what the shard was asked to do). Restored images go where an unsharded
run puts them. Under ``accelerate launch`` every process takes the shard of its rank and the main process merges
once all are done (:func:`moediffir.evaluation.evaluator.evaluate_launched`).

:func:`merge_evaluation` (``moediffir evaluate --merge``; ``moediffir report`` when parts are newer than the
results) checks that every part is there and current (same settings, model, benchmark and item list), then
computes FID from the saved features and writes the same files as an unsharded run
(:func:`moediffir.evaluation.results.write_evaluation`); per-image numbers do not depend on the sharding, so
the results file equals one process's when the restorations do (``sample.batch_size`` 1 makes every
restoration independent of which images share its batch).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moediffir.config import Config
from moediffir.evaluation import benchmark_restore, protocol
from moediffir.evaluation.external import ExternalMatch, match_external
from moediffir.evaluation.results import (
    METRICS_DIR,
    EvaluationResult,
    Scored,
    read_csv,
    write_csv,
    write_evaluation,
)
from moediffir.sharding import (
    PART_FILE,
    Shard,
    check_parts,
    digest,
    keys_digest,
    part_counts,
    read_part,
    resolve_count,
)
from moediffir.utils.io import atomic_directory, atomic_write_json, sha256_file
from moediffir.utils.locks import folder_lock

PARTS_DIR = "parts"
FEATURES_FILE = "features.npz"
RERUN = "moediffir evaluate --shard {shard}"


def parts_root(out: Path) -> Path:
    return Path(out) / METRICS_DIR / PARTS_DIR


def part_folder(out: Path, shard: Shard) -> Path:
    return parts_root(out) / shard.name


def share_of(items: pd.DataFrame, shard: Shard) -> pd.DataFrame:
    """The rows of ``items`` that ``shard`` owns, in their order."""
    mask = [shard.owns(protocol.item_key(r)) for r in items.itertuples(index=False)]
    return items[mask].reset_index(drop=True)


def _settings(cfg: Config, folder: Path | None, externals: Mapping[str, str], include_lq: bool) -> str:
    sample = {k: v for k, v in asdict(cfg.sample).items() if k != "batch_size"}
    return digest({
        "eval": asdict(cfg.eval), "sample": sample, "seed": cfg.seed, "include_lq": include_lq,
        "model": benchmark_restore.folder_fingerprint(folder) if folder is not None else None,
        "externals": dict(externals), "manifest": sha256_file(cfg.benchmark_dir / "manifest.csv"),
    })


def _keys(items: pd.DataFrame) -> list[str]:
    return [protocol.item_key(r) for r in items.itertuples(index=False)]


def write_part(
    cfg: Config, out: Path, shard: Shard, share: pd.DataFrame, scored: Scored, suite: Any, folder: Path | None,
    matches: Mapping[str, ExternalMatch], skipped: Sequence[str], include_lq: bool, request: Mapping[str, Any],
) -> Path:
    """Write one shard's part folder atomically (layout in the module docstring)."""
    externals = {n: str(m.folder) for n, m in matches.items()}
    record = {
        "shard": str(shard), "settings": _settings(cfg, folder, externals, include_lq), "items": keys_digest(_keys(share)),
        "n_items": len(share), "request": dict(request), "model_dir": str(folder) if folder is not None else None,
        "externals": externals, "include_lq": include_lq, "weights_of": scored.weights_of, "ours": scored.ours,
        "methods": list(scored.weights_of),  # JSON objects are written with sorted keys: the order is kept here
        "skipped_tasks": list(skipped), "restore": {m: asdict(s) for m, s in scored.stats.items()},
        "conventions": suite.conventions_text,
    }
    arrays: dict[str, np.ndarray] = {}
    for i, (method, feats) in enumerate(scored.features.items()):
        arrays[f"method{i}_keys"] = np.array(list(feats), dtype=str)
        arrays[f"method{i}_feats"] = np.stack(list(feats.values())) if feats else np.zeros((0, 2048))  # (N, 2048)
        record.setdefault("feature_methods", []).append(method)
    arrays["gt_keys"] = np.array(list(scored.gt_features), dtype=str)
    arrays["gt_feats"] = np.stack(list(scored.gt_features.values())) if scored.gt_features else np.zeros((0, 2048))
    folder_out = part_folder(out, shard)
    with atomic_directory(folder_out) as tmp:
        write_csv(scored.per_image, tmp / "per_image.csv")
        np.savez(tmp / FEATURES_FILE, **arrays)
        if scored.similarity is not None and len(scored.similarity):
            write_csv(scored.similarity, tmp / "prompt_similarity.csv")
        atomic_write_json(tmp / PART_FILE, record)
    return folder_out


def _read_scored(folders: list[Path], items: pd.DataFrame) -> Scored:
    recs = [read_part(f) for f in folders]
    first = recs[0]
    methods = first["methods"]
    weights_of = {m: first["weights_of"][m] for m in methods}
    per_image = pd.concat([read_csv(f / "per_image.csv") for f in folders], ignore_index=True)
    pos = {k: i for i, k in enumerate(_keys(items))}
    order = per_image.apply(lambda r: (methods.index(r["method"]), pos[f"{r['set']}/{r['task']}/{r['stem']}"]), axis=1)
    per_image = per_image.iloc[sorted(range(len(per_image)), key=lambda i: order.iloc[i])].reset_index(drop=True)
    features: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods if m in first.get("feature_methods", [])}
    gt: dict[str, np.ndarray] = {}
    for f, rec in zip(folders, recs):
        with np.load(f / FEATURES_FILE) as z:
            for i, method in enumerate(rec.get("feature_methods", [])):
                features[method].update(zip(z[f"method{i}_keys"].tolist(), z[f"method{i}_feats"]))
            gt.update(zip(z["gt_keys"].tolist(), z["gt_feats"]))
    sim_file = folders[0] / "prompt_similarity.csv"
    stats = {m: benchmark_restore.RestoreStats() for m in first["ours"]}
    for rec in recs:
        for m, s in rec["restore"].items():
            stats[m].restored += s["restored"]
            stats[m].kept += s["kept"]
            stats[m].seconds = max(stats[m].seconds, s["seconds"])
    return Scored(per_image, features, gt, weights_of, first["ours"],
                  read_csv(sim_file) if sim_file.is_file() else None, stats)


def merge_evaluation(
    cfg: Config, out_dir: str | Path | None = None, count: int | None = None, *,
    log: Callable[[str], None] | None = print,
) -> EvaluationResult:
    """Assemble the results of a sharded evaluation (see the module docstring); idempotent.

    Holds the lock of the results folder while it works (:func:`~moediffir.utils.locks.folder_lock`).

    Raises :class:`~moediffir.sharding.ShardError` naming every missing or stale part (nothing is written then), and
    :class:`~moediffir.utils.locks.FolderLockedError` when another run writes the results folder (nothing changed).
    """
    out = Path(out_dir) if out_dir is not None else cfg.profile_results_dir
    with folder_lock(out, what="results folder"):
        return _merge_locked(cfg, out, count, log=log)


def _merge_locked(cfg: Config, out: Path, count: int | None, *,
                  log: Callable[[str], None] | None) -> EvaluationResult:
    """The merge of :func:`merge_evaluation` into ``out``, inside the lock of that folder."""
    from moediffir.metrics import MetricSuite

    t0 = time.perf_counter()
    root = parts_root(out)
    count = resolve_count(root, count, "evaluation")
    rec = next((r for k in range(1, count + 1) if (r := read_part(part_folder(out, Shard(k, count))))), None)
    if rec is None:
        check_parts(root, count, {k: {} for k in range(1, count + 1)}, "evaluation", RERUN)  # names them all
    req = rec["request"]
    items = protocol.select_items(cfg.benchmark_dir, req["sets"], req["tasks"], cfg.eval.max_images, cfg.data.preset,
                                  strict=req["strict"])
    folder = Path(rec["model_dir"]) if rec["model_dir"] else None
    settings = _settings(cfg, folder, rec["externals"], rec["include_lq"])
    expected = {k: {"settings": settings, "items": keys_digest(_keys(share_of(items, Shard(k, count))))}
                for k in range(1, count + 1)}
    folders = check_parts(root, count, expected, "evaluation", RERUN)
    matches = {name: match_external(name, path, items) for name, path in rec["externals"].items()}
    scored = _read_scored(folders, items)
    suite = MetricSuite.from_config(cfg, device="cpu")  # FID comes from the saved features: no network runs
    if log:
        log(f"[evaluate] merging {count} part(s) of {len(items)} items under {root}")
    return write_evaluation(cfg, out, items, scored, suite, folder, matches, rec["skipped_tasks"], t0=t0, log=log)


def merge_if_newer(cfg: Config, out_dir: str | Path, log: Callable[[str], None] | None = None) -> bool:
    """Merge the parts when some part is newer than ``results.csv`` (what ``moediffir report`` does first)."""
    out = Path(out_dir)
    results = out / METRICS_DIR / "results.csv"
    counts = part_counts(parts_root(out))
    if len(counts) != 1:
        return False
    newest = max(p.stat().st_mtime for p in parts_root(out).glob(f"*/{PART_FILE}"))
    if results.is_file() and results.stat().st_mtime >= newest:
        return False
    merge_evaluation(cfg, out, counts.pop(), log=log)
    return True


def remove_parts(out: Path) -> None:
    """Drop the parts of an earlier sharded run once an unsharded run has written the results."""
    shutil.rmtree(parts_root(out), ignore_errors=True)
