"""Score restored images and aggregate them into the tidy results file (paper §4.2, Table 1, appendix B).

Per image: PSNR, SSIM, LPIPS against the ground truth and the no-reference CLIP-IQA+ / MANIQA of the restored
image (whichever of them ``eval.metrics`` lists), through :class:`moediffir.metrics.MetricSuite`. Per set and
task: FID between the restored images and the ground truths of the same images.

Aggregation (one tidy table, column ``scope``):

* ``task``  -- one method x set x task (codec at one level): the mean over its images (FID: the set's FID);
* ``codec`` -- one method x set x codec x kind: the mean of the task values over the levels (the paper's
  "average on three distortions", Table 1); ``level`` and ``task`` are ``all``;
* ``kind``  -- one method x set x kind (seen / unseen_degree / unseen_type): the mean of the task values
  (the paper's "average on 21 tasks", Tables 2-4); ``codec``, ``level`` and ``task`` are ``all``.

Per-image scores are cached in ``per_image.csv`` keyed by the restored file's SHA-256 and the conventions, so
a rerun scores only images that changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from moediffir.metrics import MetricSuite
from moediffir.metrics.suite import PAIR_METRICS
from moediffir.utils.io import read_image_rgb, sha256_file

ALL = "all"
NETWORK_METRICS = ("lpips", "fid", "clipiqa", "maniqa")
RESULT_COLUMNS = (
    "method", "set", "task", "codec", "level", "kind", "scope", "metric", "value", "n_images", "n_tasks",
    "conventions", "weights", "model_weights", "note",
)
PER_IMAGE_KEYS = ("method", "set", "task", "stem")
PER_IMAGE_INFO = ("codec", "level", "label", "kind", "bpp", "restored", "restored_sha256", "gt_sha256")


def pair_metrics(suite: MetricSuite) -> list[str]:
    return [m for m in suite.metrics if m in PAIR_METRICS]


def metric_weights(metric: str, suite: MetricSuite) -> str:
    """The ``weights`` value of a metric: the suite's label for network metrics, ``none`` for PSNR / SSIM."""
    return suite.conventions.weights_label if metric in NETWORK_METRICS else "none (no network)"


def score_images(
    suite: MetricSuite,
    items: pd.DataFrame,
    restored: Mapping[str, Path],
    benchmark_dir: Path,
    method: str,
    *,
    rel_to: Path | None = None,
    cache: pd.DataFrame | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Per-image scores of one method: one row per item present in ``restored`` (key ``<set>/<task>/<stem>``).

    ``cache`` (a previous ``per_image.csv``) supplies rows whose restored SHA-256, GT SHA-256 and conventions
    are unchanged. ``rel_to``: the restored paths are written relative to this folder.
    """
    metrics = pair_metrics(suite)
    conv = suite.conventions_text
    cached: dict[tuple, dict] = {}
    if cache is not None and len(cache):
        sub = cache[(cache["method"] == method) & (cache["conventions"] == conv)]
        for rec in sub.to_dict("records"):
            if all(m in rec and pd.notna(rec[m]) for m in metrics):
                cached[(rec["set"], rec["task"], str(rec["stem"]), rec["restored_sha256"], rec["gt_sha256"])] = rec
    rows: list[dict] = []
    for it in items.itertuples(index=False):
        key = f"{it.set}/{it.task}/{it.stem}"
        if key not in restored:
            continue
        path = Path(restored[key])
        sha = sha256_file(path)
        hit = cached.get((it.set, it.task, str(it.stem), sha, it.gt_sha256))
        row = {
            "method": method, "set": it.set, "task": it.task, "stem": str(it.stem), "codec": it.codec,
            "level": str(it.level), "label": int(it.label), "kind": it.kind, "bpp": float(it.bpp),
            "restored": _rel(path, rel_to), "restored_sha256": sha, "gt_sha256": it.gt_sha256,
        }
        if hit is not None:
            row.update({m: float(hit[m]) for m in metrics})
        else:
            img = read_image_rgb(path)
            gt = read_image_rgb(Path(benchmark_dir) / it.gt_path)
            if img.shape != gt.shape:
                raise ValueError(f"{path}: size {img.shape[1]}x{img.shape[0]} differs from the ground truth "
                                 f"{gt.shape[1]}x{gt.shape[0]} ({it.gt_path}); restore at the original size")
            scores = suite.score_pair(img, gt)
            row.update({m: float(scores[m]) for m in metrics})
            if progress:
                progress(key)
        row["conventions"] = conv
        row["weights"] = suite.conventions.weights_label
        rows.append(row)
    cols = list(PER_IMAGE_KEYS) + list(PER_IMAGE_INFO) + metrics + ["conventions", "weights"]
    return pd.DataFrame(rows, columns=cols)


def _rel(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).name


def image_features(suite: MetricSuite, paths: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """InceptionV3 features ``(2048,)`` of each image, ``{key: feature}``, computed one image at a time so that
    a feature never depends on which other images share its batch (a shard's features equal one run's)."""
    return {key: suite.features([read_image_rgb(p)])[0] for key, p in paths.items()}


def gt_features(suite: MetricSuite, items: pd.DataFrame, benchmark_dir: Path) -> dict[str, np.ndarray]:
    """Features of the items' ground truths, ``{gt_path: feature}`` (each GT once, shared by methods and tasks)."""
    paths = {g: Path(benchmark_dir) / g for g in dict.fromkeys(items["gt_path"])}
    return image_features(suite, paths)


def score_fid(
    suite: MetricSuite,
    items: pd.DataFrame,
    features: Mapping[str, np.ndarray],
    method: str,
    gt_feats: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """FID of one method per (set, task): restored images against the ground truths of the same images.

    ``features``: the method's :func:`image_features` by item key; ``gt_feats``: :func:`gt_features`. Groups with
    fewer than 2 images get no FID (a row with ``value`` NaN and a note).
    """
    rows = []
    for (set_name, task), grp in items.groupby(["set", "task"], sort=False):
        keys = [f"{set_name}/{task}/{s}" for s in grp["stem"]]
        present = [(k, g) for k, g in zip(keys, grp["gt_path"]) if k in features]
        base = {"method": method, "set": set_name, "task": task, "n_images": len(present)}
        if len(present) < 2:
            rows.append({**base, "fid": np.nan, "fid_reliable": False, "note": "fid needs >= 2 images"})
            continue
        res = suite.score_features(np.stack([features[k] for k, _ in present]),  # (N, 2048)
                                   np.stack([gt_feats[g] for _, g in present]))
        note = "" if res["fid_reliable"] else f"fid on {res['fid_n']} images: comparable only at equal set size"
        rows.append({**base, "fid": float(res["fid"]), "fid_reliable": bool(res["fid_reliable"]), "note": note})
    return pd.DataFrame(rows, columns=["method", "set", "task", "n_images", "fid", "fid_reliable", "note"])


def aggregate(
    per_image: pd.DataFrame,
    fid: pd.DataFrame,
    items: pd.DataFrame,
    suite: MetricSuite,
    model_weights: Mapping[str, str],
) -> pd.DataFrame:
    """The tidy results table (:data:`RESULT_COLUMNS`) at the ``task``, ``codec`` and ``kind`` scopes."""
    metrics = pair_metrics(suite)
    conv = suite.conventions_text
    task_info = items.drop_duplicates(["set", "task"]).set_index(["set", "task"])[["codec", "level", "kind"]]
    task_rows: list[dict] = []
    for (method, set_name, task), grp in per_image.groupby(["method", "set", "task"], sort=False):
        info = task_info.loc[(set_name, task)]
        for m in metrics:
            task_rows.append({
                "method": method, "set": set_name, "task": task, "codec": info["codec"], "level": str(info["level"]),
                "kind": info["kind"], "metric": m, "value": float(grp[m].mean()), "n_images": len(grp),
                "note": "",
            })
    if "fid" in suite.metrics and len(fid):
        for r in fid.itertuples(index=False):
            if np.isnan(r.fid):
                continue
            info = task_info.loc[(r.set, r.task)]
            task_rows.append({
                "method": r.method, "set": r.set, "task": r.task, "codec": info["codec"], "level": str(info["level"]),
                "kind": info["kind"], "metric": "fid", "value": float(r.fid), "n_images": int(r.n_images),
                "note": r.note,
            })
    tasks = pd.DataFrame(task_rows, columns=["method", "set", "task", "codec", "level", "kind", "metric", "value",
                                             "n_images", "note"])
    tasks["scope"] = "task"
    tasks["n_tasks"] = 1
    out = [tasks]
    for scope, keys in (("codec", ["method", "set", "codec", "kind", "metric"]),
                        ("kind", ["method", "set", "kind", "metric"])):
        if tasks.empty:
            break
        g = tasks.groupby(keys, sort=False).agg(value=("value", "mean"), n_images=("n_images", "sum"),
                                                n_tasks=("task", "nunique")).reset_index()
        g["scope"] = scope
        g["task"] = ALL
        g["level"] = ALL
        if "codec" not in keys:
            g["codec"] = ALL
        g["note"] = ""
        out.append(g)
    res = pd.concat(out, ignore_index=True)
    res["conventions"] = conv
    res["weights"] = [metric_weights(m, suite) for m in res["metric"]]
    res["model_weights"] = [model_weights.get(m, "") for m in res["method"]]
    res["n_images"] = res["n_images"].astype(int)
    res["n_tasks"] = res["n_tasks"].astype(int)
    return res.loc[:, list(RESULT_COLUMNS)]
