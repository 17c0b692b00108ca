"""The files of an evaluation (paper §4.2, appendix B; docs/design.md §7): the numbers of
:mod:`moediffir.evaluation.evaluator` (or of the merged shards, :mod:`moediffir.evaluation.sharded_evaluation`) written under
``<results>/<profile>/metrics/``:

==========================  =================================================================================
``results.csv``             the tidy results: method, set, task, codec, level, kind, scope, metric, value,
                            n_images, n_tasks, conventions, weights, model_weights, note
``per_image.csv``           one row per method and image (bpp, PSNR, SSIM, LPIPS, CLIP-IQA, MANIQA)
``routing.csv``             expert usage per method, set, task, scale and expert (top-K counts, gate sums)
``prompt_similarity.csv``   Fig. 8: cosine similarity of the prompt matrices per scale
``visual.json``, ``visual/``  the crops of the visual comparison grids and their scores
``evaluation.json``         what ran: items, methods, model, externals (missing / extra files), timings
==========================  =================================================================================

:func:`write_evaluation` aggregates the per-image scores and the FID features, writes those files, records the
numbers in the model card. The tables and figures are drawn from these files by its callers
(:func:`moediffir.report.regenerate.regenerate_report`: ``moediffir evaluate``, ``moediffir report``, notebook 06).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from moediffir.config import Config, save_config
from moediffir.evaluation import analysis, benchmark_restore, protocol, scoring
from moediffir.evaluation.external import ExternalMatch
from moediffir.evaluation.protocol import METHOD_LQ, EvaluationError
from moediffir.utils.io import (
    atomic_save_png,
    atomic_write_csv,
    atomic_write_json,
    read_image_rgb,
)

METRICS_DIR = "metrics"
RESTORED_DIR = "restored"
VISUAL_CROP = 128  # side of the visual-comparison crops (pixels)


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` produced."""

    results: pd.DataFrame
    per_image: pd.DataFrame
    out_dir: Path
    externals: dict[str, ExternalMatch] = field(default_factory=dict)
    restore_stats: dict[str, benchmark_restore.RestoreStats] = field(default_factory=dict)
    skipped_tasks: list[str] = field(default_factory=list)

    @property
    def metrics_dir(self) -> Path:
        return self.out_dir / METRICS_DIR


@dataclass
class Scored:
    """The numbers of one evaluation (or one shard of it) before they are written: per-image scores and the FID
    features of every method, by item key."""

    per_image: pd.DataFrame
    features: dict[str, dict[str, Any]]  # method -> "<set>/<task>/<stem>" -> (2048,) InceptionV3 feature
    gt_features: dict[str, Any]  # gt_path -> (2048,)
    weights_of: dict[str, str]  # method -> the model_weights label of its rows
    ours: list[str]  # our methods (restored by the model), in order
    similarity: pd.DataFrame | None = None
    stats: dict[str, benchmark_restore.RestoreStats] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- helpers
def write_csv(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write_csv(path, df)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV written by :func:`write_csv` (floats round-trip exactly; keys stay strings)."""
    return pd.read_csv(path, float_precision="round_trip", dtype={"level": str, "stem": str, "task": str},
                       keep_default_na=False, na_values=[""])



def _crop_box(h: int, w: int, crop: int) -> tuple[int, int, int, int]:
    c = min(crop, h, w)
    return ((h - c) // 2, (w - c) // 2, c, c)


def save_visual_crops(
    items: pd.DataFrame,
    per_image: pd.DataFrame,
    paths: Mapping[str, Mapping[str, Path]],
    benchmark_dir: Path,
    metrics_dir: Path,
    crop: int = VISUAL_CROP,
) -> dict:
    """Crops for the Fig. 4 grids: per codec one image, per task LQ / every method / GT; returns ``visual.json``.

    ``paths``: method -> item key -> image (``no restoration`` maps to the LQ files).
    """
    vis_dir = metrics_dir / "visual"
    shutil.rmtree(vis_dir, ignore_errors=True)
    scores = per_image.set_index(["method", "set", "task", "stem"]) if len(per_image) else None
    methods = [METHOD_LQ] + [m for m in paths if m != METHOD_LQ]
    entries = []
    for codec in dict.fromkeys(items["codec"]):
        sub = items[items["codec"] == codec]
        first = sub.iloc[0]
        pick = sub[(sub["set"] == first["set"]) & (sub["stem"] == first["stem"])]
        for it in pick.itertuples(index=False):
            box = _crop_box(int(it.height), int(it.width), crop)
            key = f"{it.set}/{it.task}/{it.stem}"
            panels = []
            for m in methods:
                if key not in paths.get(m, {}):
                    continue
                img = read_image_rgb(paths[m][key])[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
                rel = f"visual/{it.task}/{protocol.method_slug(m)}.png"
                atomic_save_png(metrics_dir / rel, img)
                p: dict[str, Any] = {"label": "LQ" if m == METHOD_LQ else m, "method": m, "file": rel}
                if scores is not None and (m, it.set, it.task, str(it.stem)) in scores.index:
                    s = scores.loc[(m, it.set, it.task, str(it.stem))]
                    for k in ("psnr", "lpips"):
                        if k in s and pd.notna(s[k]):
                            p[k] = float(s[k])
                if m == METHOD_LQ:
                    p["bpp"] = float(it.bpp)
                panels.append(p)
            gt = read_image_rgb(benchmark_dir / it.gt_path)[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
            atomic_save_png(metrics_dir / f"visual/{it.task}/gt.png", gt)
            panels.append({"label": "GT", "method": "ground truth", "file": f"visual/{it.task}/gt.png"})
            entries.append({"codec": it.codec, "task": it.task, "level": str(it.level), "kind": it.kind,
                            "set": it.set, "stem": str(it.stem), "box": list(box), "panels": panels})
    index = {"crop": crop, "entries": entries}
    atomic_write_json(metrics_dir / "visual.json", index)
    return index


def log_message(log: Callable[[str], None] | None, msg: str) -> None:
    """``log(msg)`` unless ``log`` is None (silent)."""
    if log is not None:
        log(msg)


def method_paths(items: pd.DataFrame, bench: Path, restored_root: Path, ours: Sequence[str],
                 matches: Mapping[str, ExternalMatch]) -> dict[str, dict[str, Path]]:
    """method -> item key -> image, for the compressed input, our restorations on disk and the externals."""
    paths = {METHOD_LQ: {protocol.item_key(r): bench / r.path for r in items.itertuples(index=False)}}
    for m in ours:
        paths[m] = benchmark_restore.restored_paths(items, restored_root, m)
    for name, match in matches.items():
        paths[name] = match.paths
    return paths


def write_evaluation(
    cfg: Config, out: Path, items: pd.DataFrame, scored: Scored, suite, folder: Path | None,
    matches: Mapping[str, ExternalMatch], skipped: Sequence[str], *, t0: float,
    log: Callable[[str], None] | None = print,
) -> EvaluationResult:
    """Aggregate ``scored`` over ``items`` and write every file of the module docstring (and the model card)."""
    metrics_dir, restored_root, bench = out / METRICS_DIR, out / RESTORED_DIR, cfg.benchmark_dir
    per_image_df = scored.per_image
    fid = [scoring.score_fid(suite, items, feats, m, scored.gt_features) for m, feats in scored.features.items()]
    fid_df = pd.concat(fid, ignore_index=True) if fid else pd.DataFrame(columns=["method", "set", "task", "fid"])
    results = scoring.aggregate(per_image_df, fid_df, items, suite, scored.weights_of)

    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_csv(results, metrics_dir / "results.csv")
    write_csv(per_image_df, metrics_dir / "per_image.csv")
    routing_recs = [r for m in scored.ours for r in benchmark_restore.routing_records(items, restored_root, m)]
    routing = analysis.routing_table(routing_recs)
    for name, df in (("routing.csv", routing if len(routing) else None), ("prompt_similarity.csv", scored.similarity)):
        if df is not None and len(df):
            write_csv(df, metrics_dir / name)
        else:  # numbers of a model that was not evaluated now must not linger beside the new ones
            (metrics_dir / name).unlink(missing_ok=True)
    paths = method_paths(items, bench, restored_root, scored.ours, matches)
    save_visual_crops(items, per_image_df, paths, bench, metrics_dir)
    save_config(cfg, metrics_dir)
    atomic_write_json(metrics_dir / "evaluation.json", {
        "profile": cfg.profile,
        "benchmark": str(bench),
        "sets": list(dict.fromkeys(items["set"])),
        "tasks": protocol.sort_tasks(items["task"], cfg.data.preset),
        "skipped_tasks": list(skipped),
        "max_images": cfg.eval.max_images,
        "n_items": len(items),
        "model": folder.name if folder is not None else None,
        "model_weights": dict(scored.weights_of),
        "methods": list(dict.fromkeys(per_image_df["method"])),
        "externals": {n: m.to_json() for n, m in matches.items()},
        "restore": {m: asdict(s) | {"seconds": round(s.seconds, 1)} for m, s in scored.stats.items()},
        "conventions": suite.conventions_text,
        "metric_weights": suite.conventions.weights_label,
        "seconds": round(time.perf_counter() - t0, 1),
    })
    if folder is not None and scored.ours:  # the model card carries the numbers of its last evaluation
        from moediffir.weights.model_card import evaluation_summary
        from moediffir.weights.model_folder import record_evaluation

        try:
            record_evaluation(folder, evaluation_summary(results, scored.ours, suite.conventions.weights_label,
                                                         suite.conventions_text))
        except OSError as exc:  # a read-only model folder keeps its card; the results are written all the same
            log_message(log, f"[evaluate] {folder}: model card not updated ({exc})")
    log_message(log, f"[evaluate] done in {time.perf_counter() - t0:.0f} s")
    return EvaluationResult(results, per_image_df, out, dict(matches), scored.stats, list(skipped))


def read_results(out_dir: str | Path) -> pd.DataFrame:
    """``metrics/results.csv`` of an evaluation folder."""
    path = Path(out_dir) / METRICS_DIR / "results.csv"
    if not path.is_file():
        raise EvaluationError(f"{path}: no saved results; run `moediffir evaluate` (or notebook 06) first")
    return read_csv(path)
