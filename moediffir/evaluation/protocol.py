"""The evaluation protocol: which images, which methods, where outputs go (paper §4.2, appendix B; docs/design.md §7).

Every method is scored on the same items: the rows of the benchmark manifest of split ``test`` for the
configured test sets (``eval.test_sets``), every task built for them (seen and unseen), the first
``eval.max_images`` images (sorted by stem) per set and task, optionally only ``eval.tasks``.

Methods (the ``method`` column of every results file):

* ``moe-diffir`` -- the pipeline with the decoder compensator at ``sample.fusion_weight``;
* ``moe-diffir (no compensator)`` -- the same sampling, decoded by the plain VAE decoder (Table 4);
* ``no restoration`` -- the compressed input itself;
* any external method named on the command line (``--external NAME=DIR``).

Restored images live under ``<results>/<profile>/restored/<method slug>/<set>/<task>/<stem>.png``; the slug is
the method name with every run of characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by
``-`` (``moe-diffir (no compensator)`` -> ``moe-diffir-no-compensator``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from moediffir.data.manifest import read_manifest
from moediffir.data.tasks import TaskError, all_tasks
from moediffir.errors import MoEDiffIRError

METHOD_MOE = "moe-diffir"
METHOD_NO_COMPENSATOR = "moe-diffir (no compensator)"
METHOD_LQ = "no restoration"
BUILTIN_METHODS = (METHOD_MOE, METHOD_NO_COMPENSATOR, METHOD_LQ)
#: The paper's name of each of our methods in its tables (``moediffir.report.paper_numbers``).
PAPER_METHOD = {METHOD_MOE: "MoE-DiffIR"}

ITEM_COLUMNS = (
    "set", "task", "codec", "level", "label", "kind", "stem", "width", "height", "bpp", "lq_psnr", "lq_ssim",
    "path", "gt_path", "sha256", "gt_sha256",
)


class EvaluationError(MoEDiffIRError, RuntimeError):
    """The evaluation cannot run as configured; the message names the file or key and the fix."""


def method_slug(method: str) -> str:
    """Folder name of a method: ``moe-diffir (no compensator)`` -> ``moe-diffir-no-compensator``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", method.strip()).strip("-")
    if not slug:
        raise EvaluationError(f"method name {method!r} has no letter or digit; choose another name")
    return slug


def task_order(preset: str = "paper") -> dict[str, int]:
    """Position of every known task id (seen tasks in label order, then unseen) for sorting."""
    try:
        return {t.id: i for i, t in enumerate(all_tasks(preset))}
    except TaskError:
        return {t.id: i for i, t in enumerate(all_tasks("paper"))}


def sort_tasks(task_ids: Iterable[str], preset: str = "paper") -> list[str]:
    order = task_order(preset)
    return sorted(set(task_ids), key=lambda t: (order.get(t, len(order)), t))


def image_seed(seed: int, set_name: str, task: str, stem: str) -> int:
    """The sampling seed of one image: depends on the image only, never on the batch or the run order, so a
    resumed evaluation samples exactly what a one-shot run does."""
    digest = hashlib.sha256(f"{seed}/{set_name}/{task}/{stem}".encode()).hexdigest()
    return int(digest[:8], 16)


def select_items(
    benchmark_dir: str | Path,
    sets: Sequence[str],
    tasks: Sequence[str] | None = None,
    max_images: int = 0,
    preset: str = "paper",
    strict: bool = True,
) -> pd.DataFrame:
    """The evaluated items: one row per (set, task, stem) with the manifest's columns :data:`ITEM_COLUMNS`.

    With ``strict=False`` requested tasks that were not built are skipped and listed in
    ``df.attrs["skipped_tasks"]`` (an error only when none is left).

    Raises:
        EvaluationError: a requested set (or, when strict, task) is not in the manifest (the message lists what
            is there).
    """
    benchmark_dir = Path(benchmark_dir)
    df = read_manifest(benchmark_dir)
    df = df[df["split"] == "test"]
    have_sets = sorted(set(df["set"]))
    missing_sets = [s for s in sets if s not in have_sets]
    if missing_sets:
        raise EvaluationError(
            f"{benchmark_dir / 'manifest.csv'}: test set(s) {missing_sets} not in the benchmark (it has "
            f"{have_sets}); build them (`moediffir data build --set data.test_sets=...`) or set eval.test_sets"
        )
    df = df[df["set"].isin(list(sets))]
    if tasks:
        have_tasks = set(df["task"])
        missing = [t for t in tasks if t not in have_tasks]
        if missing and (strict or len(missing) == len(tasks)):
            raise EvaluationError(
                f"{benchmark_dir / 'manifest.csv'}: task(s) {missing} not built for sets {list(sets)} (built: "
                f"{sort_tasks(have_tasks, preset)}); choose from those (eval.tasks) or build them"
            )
        df = df[df["task"].isin(list(tasks))]
    if df.empty:
        raise EvaluationError(f"{benchmark_dir / 'manifest.csv'}: no test images for sets {list(sets)}")
    order = task_order(preset)
    set_pos = {s: i for i, s in enumerate(sets)}
    df = df.assign(
        _set=df["set"].map(set_pos), _task=df["task"].map(lambda t: order.get(t, len(order))),
        level=df["level"].astype(str), stem=df["stem"].astype(str),
    ).sort_values(["_set", "_task", "task", "stem"], kind="stable")
    if max_images > 0:
        df = df.groupby(["set", "task"], sort=False, group_keys=False).head(max_images)
    out = df.loc[:, list(ITEM_COLUMNS)].reset_index(drop=True)
    out["label"] = out["label"].astype(int)
    out.attrs["skipped_tasks"] = [t for t in (tasks or ()) if t not in set(out["task"])]
    return out


def item_key(row) -> str:
    """``<set>/<task>/<stem>`` -- the relative path (without ``.png``) of an item in every restored folder."""
    return f"{row['set']}/{row['task']}/{row['stem']}" if isinstance(row, dict) else f"{row.set}/{row.task}/{row.stem}"
