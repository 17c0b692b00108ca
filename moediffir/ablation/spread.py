"""Bootstrap confidence intervals of the ablation means over the test images (paper §4.3; docs/design.md §9).

The ablations of paper §4.3 (Fig. 6, Tables 2-3) compare variants by one number per cell: the mean, over the
tasks of an evaluation, of each task's mean over its test images. On a small test set (the ``mini`` profile
holds out 6 images) two variants can differ by noise alone, so every cell also gets a **percentile bootstrap
interval over the images**:

* the unit resampled is the *image* (its ``stem``): one test image carries every task's degraded copy, so a
  resample draws ``S`` images with replacement and every task of the cell keeps the drawn images (a task that
  lacks an image simply has fewer); the resampled statistic is the cell's own formula (mean over tasks of the
  per-task means), so at the original sample it reproduces the table's number exactly;
* every variant of a cell is resampled with the **same** draws (one seeded :class:`numpy.random.Generator`), so
  the interval of a variant's **paired difference** to a reference variant removes what the images share
  (some images are easy for every variant) and shows whether the variants differ beyond noise: a difference
  whose paired interval contains 0 is not distinguishable from noise at this number of images.

With a handful of images a percentile interval runs narrower than its nominal level (docs/design.md §9 gives the
numbers): it is the least uncertainty there is, and it ignores the variance from training.

:func:`bootstrap_interval` works on an array of per-image values; :func:`cell_intervals` applies it to a tidy
table of per-image rows (one call per cell, the same seed for every cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
INTERVAL_COLUMNS = ("mean", "lo", "hi", "n_images", "reference", "diff", "diff_lo", "diff_hi")


@dataclass(frozen=True)
class Spread:
    """The intervals of :func:`bootstrap_interval`, one entry per variant (``(V,)`` arrays).

    ``mean`` is the statistic on the sample itself; ``lo`` / ``hi`` its interval (NaN with fewer than 2 images:
    one image shows no spread); ``diff*`` the same for the paired difference to the reference variant (NaN
    everywhere without a reference; 0 with a zero-width interval for the reference itself).
    """

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    diff: np.ndarray
    diff_lo: np.ndarray
    diff_hi: np.ndarray
    n_images: np.ndarray  # images with at least one value, per variant


def _as_cube(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[None, None, :]  # one variant, one task
    elif x.ndim == 2:
        x = x[:, None, :]  # variants x images, one task
    if x.ndim != 3 or x.shape[-1] == 0 or x.shape[0] == 0:
        raise ValueError(f"per-image values of shape {np.shape(values)}: give (images,), (variants, images) or "
                         "(variants, tasks, images) with at least one image")
    if np.isinf(x).any():
        raise ValueError("per-image values hold an infinite value (a PSNR of identical images?); "
                         "the mean and its interval are undefined")
    return x


def _resample_counts(n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each image is drawn in each resample, ``(n_resamples, n_images)``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(n_resamples, n_images))  # (B, S)
    flat = idx + np.arange(n_resamples)[:, None] * n_images  # (B, S) index into the flattened (B, S) counts
    return np.bincount(flat.ravel(), minlength=n_resamples * n_images).reshape(n_resamples, n_images).astype(float)


def _cell_statistic(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over tasks of the weighted per-task image means: ``(V, T, S)`` values, ``(B, S)`` weights -> ``(V, B)``."""
    present = ~np.isnan(x)  # (V, T, S)
    num = np.einsum("vts,bs->vbt", np.where(present, x, 0.0), weights)  # (V, B, T)
    den = np.einsum("vts,bs->vbt", present.astype(float), weights)  # (V, B, T)
    task_means = np.divide(num, den, out=np.zeros_like(num), where=den > 0)  # (V, B, T)
    n_tasks = (den > 0).sum(-1)  # (V, B)
    return np.divide(task_means.sum(-1), n_tasks, out=np.full(n_tasks.shape, np.nan), where=n_tasks > 0)


def bootstrap_interval(
    values: np.ndarray,
    *,
    reference: int | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Spread:
    """Percentile bootstrap interval over images of each variant's mean, and of its paired difference.

    Args:
        values: per-image values, ``(images,)``, ``(variants, images)`` or ``(variants, tasks, images)``; NaN
            where a variant has no value for an image in a task. The statistic is the mean over tasks of the
            per-task means over images (the ablation tables' cell).
        reference: index of the variant the paired differences are taken to (None: no differences).
        n_resamples / confidence / seed: the bootstrap; every variant is resampled with the same draws.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}: give at least 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}: give a level strictly between 0 and 1 (e.g. 0.95)")
    x = _as_cube(values)
    n_var, _, n_img = x.shape
    if reference is not None and not 0 <= reference < n_var:
        raise ValueError(f"reference={reference}: there are {n_var} variant(s)")
    weights = np.vstack([np.ones((1, n_img)), _resample_counts(n_img, n_resamples, seed)])  # (B + 1, S)
    stat = _cell_statistic(x, weights)  # (V, B + 1): column 0 is the sample itself
    nan = np.full(n_var, np.nan)
    q = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]

    def bounds(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if n_img < 2:
            return nan.copy(), nan.copy()
        lo, hi = np.quantile(s[:, 1:], q, axis=1)  # (V,) each
        return lo, hi

    lo, hi = bounds(stat)
    diff, diff_lo, diff_hi = nan.copy(), nan.copy(), nan.copy()
    if reference is not None:
        d = stat - stat[reference]  # (V, B + 1): the same draws for both, so the images' share cancels
        diff = d[:, 0]
        diff_lo, diff_hi = bounds(d)
    n_images = (~np.isnan(x)).any(axis=1).sum(-1)  # (V,)
    return Spread(stat[:, 0], lo, hi, diff, diff_lo, diff_hi, n_images)


def cell_intervals(
    rows: pd.DataFrame,
    cell: Sequence[str],
    *,
    variant: str = "variant",
    task: str = "task",
    image: str = "stem",
    value: str = "value",
    reference: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """:func:`bootstrap_interval` of every cell of a tidy table of per-image rows.

    ``rows`` holds one row per variant, cell (the ``cell`` columns, e.g. evaluation, set, metric), task and
    image. Returns one row per variant and cell: the ``cell`` columns, ``variant`` and :data:`INTERVAL_COLUMNS`
    (``reference`` names the variant the ``diff`` columns compare to; empty when it is absent from the cell).
    """
    need = [*cell, variant, task, image, value]
    missing = [c for c in need if c not in rows.columns]
    if missing:
        raise ValueError(f"per-image rows lack the column(s) {missing} (they have {list(rows.columns)})")
    dup = rows.duplicated([*cell, variant, task, image])
    if dup.any():
        first = rows[dup].iloc[0]
        raise ValueError(f"per-image rows repeat {dict(first[[*cell, variant, task, image]])}: one value per "
                         "variant, task and image")
    out: list[dict] = []
    data = rows.dropna(subset=[value])
    for key, grp in data.groupby(list(cell), sort=False):
        variants = list(dict.fromkeys(grp[variant]))
        tasks = list(dict.fromkeys(grp[task]))
        images = sorted(set(grp[image].astype(str)))
        cube = np.full((len(variants), len(tasks), len(images)), np.nan)  # (V, T, S)
        pos = [grp[variant].map({v: i for i, v in enumerate(variants)}).to_numpy(),
               grp[task].map({t: i for i, t in enumerate(tasks)}).to_numpy(),
               grp[image].astype(str).map({s: i for i, s in enumerate(images)}).to_numpy()]
        cube[pos[0], pos[1], pos[2]] = grp[value].to_numpy(dtype=float)
        ref = variants.index(reference) if reference in variants else None
        sp = bootstrap_interval(cube, reference=ref, n_resamples=n_resamples, confidence=confidence, seed=seed)
        head = dict(zip(cell, key if isinstance(key, tuple) else (key,)))
        for i, v in enumerate(variants):
            out.append({**head, variant: v, "mean": sp.mean[i], "lo": sp.lo[i], "hi": sp.hi[i],
                        "n_images": int(sp.n_images[i]), "reference": reference if ref is not None else "",
                        "diff": sp.diff[i], "diff_lo": sp.diff_lo[i], "diff_hi": sp.diff_hi[i]})
    return pd.DataFrame(out, columns=[*cell, variant, *INTERVAL_COLUMNS])
