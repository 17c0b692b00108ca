"""Per-image rows of the ablation sweeps: kept with each run, gathered per sweep (paper §4.3; docs/design.md §9).

The tables of paper §4.3 give one mean per cell; its bootstrap interval
(:mod:`moediffir.ablation.spread`) needs the scores of every image behind it. The evaluator writes them to
``<eval dir>/metrics/per_image.csv``, a folder shared by every sweep that evaluates the same model (and its
scoring cache), so :mod:`moediffir.ablation.sweep` copies the rows of each evaluator call into the run folder
as ``per_image.csv`` (written atomically before ``result.csv``; ``result.json`` records how many rows it holds)
and :func:`gather_per_image` collects every finished run's rows into
``<results_dir>/<profile>/ablations/<sweep>_per_image.csv``. Each kept row is checked against the evaluator's
per-task results (same number of images, same mean), so a stale file cannot slip in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from moediffir.ablation.sweep_plan import PlannedEval, Sweep, SweepError
from moediffir.config import Config
from moediffir.utils.io import atomic_write_csv

if TYPE_CHECKING:
    from moediffir.ablation.sweep import RunPlan

PER_IMAGE_CSV = "per_image.csv"
ROWS_FIELD = "per_image_rows"  # in result.json: how many rows the run's per_image.csv holds (0: none kept)
HEAD = ("sweep", "variant", "key")  # (the evaluator's own columns include the task's "label")


def per_image_path(cfg: Config, sweep_name: str) -> Path:
    """``<results_dir>/<profile>/ablations/<sweep>_per_image.csv``."""
    return cfg.profile_results_dir / "ablations" / f"{sweep_name}_per_image.csv"


def is_kept(folder: Path, info: dict[str, Any]) -> bool:
    """Whether a finished run's ``result.json`` (``info``) has its per-image rows: recorded, and on disk if any.

    A run finished before the rows were kept has no count: it is evaluated again (its restorations are reused).
    """
    rows = info.get(ROWS_FIELD)
    return isinstance(rows, int) and (rows == 0 or (folder / PER_IMAGE_CSV).is_file())


def _check(rows: pd.DataFrame, tasks: pd.DataFrame, path: Path) -> None:
    """Every per-task row of a per-image metric has exactly its images here, with the same mean."""
    keys = ["evaluation", "method", "set", "task"]
    metrics = [m for m in dict.fromkeys(tasks["metric"]) if m in rows.columns]
    got = rows.assign(task=rows["task"].astype(str)).groupby(keys)
    for r in tasks[tasks["metric"].isin(metrics)].itertuples(index=False):
        key = (r.evaluation, r.method, r.set, str(r.task))
        vals = got.get_group(key)[r.metric].to_numpy(float) if key in got.groups else np.array([])
        if len(vals) != int(r.n_images) or not np.isclose(vals.mean(), float(r.value), rtol=1e-9, atol=1e-12):
            raise SweepError(f"{path}: its {r.metric} rows of {r.method} / {r.set} / {r.task} ({len(vals)} image(s)) "
                             f"do not match the evaluator's result ({r.n_images} image(s), mean {r.value}); "
                             "the file is stale: delete it and rerun the sweep")


def evaluator_rows(eval_dir: Path, tasks: pd.DataFrame, specs: Sequence[PlannedEval]) -> pd.DataFrame | None:
    """The per-image rows of one evaluator call, one block per spec (column ``evaluation``), checked against
    ``tasks`` (that call's per-task rows, with their ``evaluation``); None when the evaluator wrote none."""
    from moediffir.evaluation.results import METRICS_DIR, read_csv  # imported here: it loads torch

    path = Path(eval_dir) / METRICS_DIR / PER_IMAGE_CSV
    if not path.is_file():
        return None
    pi = read_csv(path)
    methods = set(tasks["method"])
    parts = [pi[pi["set"].isin(p.sets) & pi["task"].isin(p.tasks) & pi["method"].isin(methods)].assign(
        evaluation=p.spec) for p in specs]
    rows = pd.concat(parts, ignore_index=True)
    _check(rows, tasks, path)
    return rows


def gather_per_image(cfg: Config, sweep: Sweep, runs: Sequence[RunPlan]) -> pd.DataFrame:
    """Write the per-image rows of every finished run of ``sweep`` (variants sharing a run repeat its rows) to
    :func:`per_image_path`: columns ``sweep, variant, key`` then the evaluator's per-image columns and
    ``evaluation``. Written every time (empty when no run kept rows), so no stale rows linger."""
    from moediffir.evaluation.results import read_csv

    frames = []
    for run in runs:
        path = run.folder / PER_IMAGE_CSV
        if not (run.done and path.is_file()):
            continue
        rows = read_csv(path)
        for v in run.variants:
            block = rows.copy()
            for i, (c, val) in enumerate(zip(HEAD, (sweep.name, v.name, run.key))):
                block.insert(i, c, val)
            frames.append(block)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(HEAD))
    atomic_write_csv(per_image_path(cfg, sweep.name), df)
    return df


def load_per_image(cfg: Config, sweep_name: str) -> pd.DataFrame:
    """The file written by :func:`gather_per_image` (empty when absent: results gathered before rows were kept)."""
    from moediffir.evaluation.results import read_csv

    path = per_image_path(cfg, sweep_name)
    if not path.is_file():
        return pd.DataFrame(columns=list(HEAD))
    try:
        return read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(HEAD))
