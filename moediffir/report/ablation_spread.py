"""The bootstrap intervals of Fig. 6, Table 2 and Table 3 (paper §4.3; docs/design.md §9).

:func:`cell_spread` computes, from a sweep's per-image rows (:mod:`moediffir.ablation.per_image`), the interval
over images of every cell of our method and of its paired difference to the sweep's reference variant
(:func:`moediffir.ablation.spread.cell_intervals`). The rest turns them into what the tables show: the
half-width beside the mean (``ours ± half``), the tidy columns
:data:`~moediffir.report.table_doc.SPREAD_COLUMNS`, the table of paired differences rendered below the main one
and the footnote that says how to read them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moediffir.ablation.spread import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    INTERVAL_COLUMNS,
    cell_intervals,
)
from moediffir.report.table_doc import METRIC_ORDER, SPREAD_COLUMNS, IntervalCell, TableDoc

CELL_KEYS = ("variant", "evaluation", "set", "metric")
IMAGE_KEYS = ("variant", "evaluation", "set", "task", "stem")
CONFIDENCE_PCT = f"{DEFAULT_CONFIDENCE:.0%}"


def cell_spread(per_image: pd.DataFrame | None, method: str, reference: str = "") -> pd.DataFrame:
    """The interval of every (variant, evaluation, set, metric) cell of ``method`` (columns :data:`CELL_KEYS`
    then :data:`~moediffir.ablation.spread.INTERVAL_COLUMNS`); empty without per-image rows."""
    empty = pd.DataFrame(columns=[*CELL_KEYS, *INTERVAL_COLUMNS])
    if per_image is None or per_image.empty or not {"method", *IMAGE_KEYS} <= set(per_image.columns):
        return empty
    d = per_image[per_image["method"] == method]
    metrics = [m for m in METRIC_ORDER if m in d.columns]
    if d.empty or not metrics:
        return empty
    long = d.assign(task=d["task"].astype(str), stem=d["stem"].astype(str)).melt(
        id_vars=list(IMAGE_KEYS), value_vars=metrics, var_name="metric", value_name="value")
    return cell_intervals(long, ["evaluation", "set", "metric"], reference=reference or None)


def spread_of(spread: pd.DataFrame, key: tuple, reference: str) -> dict:
    """The :data:`SPREAD_COLUMNS` of one cell (``key``: its :data:`CELL_KEYS` values; ``reference``: the table's
    reference variant, "" for none); NaN where the cell has no interval (no per-image rows, FID)."""
    out = {c: np.nan for c in SPREAD_COLUMNS} | {"reference": reference}
    if key in spread.index:
        r = spread.loc[key]
        out |= {"ci_lo": float(r["lo"]), "ci_hi": float(r["hi"]), "ref_diff": float(r["diff"]),
                "ref_diff_lo": float(r["diff_lo"]), "ref_diff_hi": float(r["diff_hi"])}
    return out


def half_width(info: dict) -> float | None:
    """Half the width of a cell's interval (what follows ``±``), None without one."""
    lo, hi = info["ci_lo"], info["ci_hi"]
    return None if np.isnan(lo) or np.isnan(hi) else (hi - lo) / 2.0


def paired_cell(metric: str, info: dict, is_reference: bool) -> IntervalCell:
    """The cell of the paired-differences table: ``ours - reference [lo, hi]``."""
    return IntervalCell(metric, info["ref_diff"], info["ref_diff_lo"], info["ref_diff_hi"], is_reference)


def paired_table(doc: TableDoc, rows: Sequence[tuple[list[str], list[IntervalCell]]],
                 reference_label: str) -> TableDoc:
    """The table of paired differences to the reference, laid out like ``doc`` (rendered below it)."""
    title = (f"Paired difference to {reference_label} (variant − reference, {CONFIDENCE_PCT} bootstrap interval "
             "over images)")
    return TableDoc(f"{doc.name}_paired", title, list(doc.index_names), list(doc.groups), list(rows))


def attach(doc: TableDoc, spread: pd.DataFrame, has_rows: bool,
           paired: Sequence[tuple[list[str], list[IntervalCell]]], reference_label: str) -> list[str]:
    """Put the paired-differences table below ``doc`` when a reference has numbers; return the notes on reading
    the intervals (``spread``: :func:`cell_spread` indexed by :data:`CELL_KEYS`; ``has_rows``: whether the sweep
    has per-image rows at all)."""
    if has_rows and (spread["reference"] != "").any():
        doc.below.append(paired_table(doc, paired, reference_label))
    return spread_notes(spread.reset_index(), has_rows)


def spread_notes(spread: pd.DataFrame, has_rows: bool) -> list[str]:
    """How to read ``±`` and the paired table; or why there is no interval."""
    if not has_rows:
        return [("No interval: these sweep results hold no per-image rows (gathered before they were kept); "
                 "rerun the sweep to add them (its runs are re-evaluated, not retrained).")]
    n = sorted({int(v) for v in spread["n_images"]})
    shown = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    notes = [(f"± : half the width of the {CONFIDENCE_PCT} percentile bootstrap interval of the cell's mean over "
              f"the {shown} test image(s) of each set ({DEFAULT_RESAMPLES} resamples of the images, seed "
              f"{DEFAULT_SEED}; the same draws for every variant); its bounds are the CSV columns ci_lo, ci_hi.")]
    if (spread["reference"] != "").any():
        notes.append("Paired difference: the same bootstrap on each variant minus the reference, image by image. "
                     "A difference whose interval contains 0 is not distinguishable from noise at this number of "
                     "images.")
    if min(n) < 2:
        notes.append("A set with one image has no interval ('–'): one image shows no spread.")
    return notes
