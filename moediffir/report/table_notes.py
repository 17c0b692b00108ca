"""What the paper's tables say beside our numbers: the paper column (transcriptions in ``results/paper``,
:mod:`moediffir.report.paper_numbers`), the row and level labels, and the footnotes on conventions, weights and
empty cells (paper §4.2, appendix B; docs/design.md §7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from moediffir.data.tasks import CODEC_DISPLAY
from moediffir.evaluation.protocol import BUILTIN_METHODS, PAPER_METHOD, task_order
from moediffir.provenance import PRIOR_TRAINED_LABEL, label_is_random
from moediffir.report import paper_numbers

RANDOM_NOTE = "random weights: these numbers say nothing about the method."


@dataclass
class PaperTable:
    """One transcription (or its absence) and the footnote that says where the paper column comes from."""

    name: str
    df: pd.DataFrame | None
    note: str

    def value(self, metric: str, **keys: object) -> float | None:
        if self.df is None or metric not in self.df.columns:
            return None
        mask = pd.Series(True, index=self.df.index)
        for k, v in keys.items():
            mask &= self.df[k] == v
        hit = self.df.loc[mask, metric]
        if len(hit) == 0 or pd.isna(hit.iloc[0]):
            return None
        return float(hit.iloc[0])


def load_paper(name: str, paper_root: str | Path | None = None) -> PaperTable:
    """The paper's table ``name`` from ``results/paper`` (or ``paper_root``); absent or broken -> empty column."""
    root = Path(paper_root) if paper_root is not None else paper_numbers.paper_dir()
    label = f"results/paper/{name}.csv" if paper_root is None else f"{name}.csv"
    try:
        df = paper_numbers.load_paper_table(name, root)
    except paper_numbers.PaperNumbersError as exc:
        reason = "missing" if not (root / f"{name}.csv").is_file() else f"unreadable ({exc})"
        return PaperTable(name, None, f"Paper column empty: the transcription {label} is {reason}.")
    return PaperTable(name, df, f"Paper values: {paper_numbers.SCHEMAS[name].source}, transcribed in {label}.")


def paper_method(method: str) -> str | None:
    """The paper's name of one of our methods, or of an external method named like one of the paper's."""
    if method in PAPER_METHOD:
        return PAPER_METHOD[method]
    if method in BUILTIN_METHODS:
        return None
    for m in paper_numbers.METHODS:
        if m.lower() == method.lower():
            return m
    return None


# ----------------------------------------------------------------------------------------- helpers
def method_order(methods: Sequence[str]) -> list[str]:
    """Our methods first (in their fixed order), then the others by name."""
    builtin = [m for m in BUILTIN_METHODS if m in set(methods)]
    return builtin + sorted(m for m in set(methods) if m not in BUILTIN_METHODS)


def level_label(codec: str, level: str) -> str:
    """``QF=10``, ``QP=37``, ``q=3``: a level the way the paper's tables head it."""
    if codec in ("jpeg", "webp"):
        return f"QF={level}"
    if codec in ("hevc", "vvc", "avc"):
        return f"QP={level}"
    if codec in ("c_psnr", "c_ssim"):
        return f"q={level}"
    return str(level)


def as_int(level: str) -> int | str:
    """A level as the transcriptions store it: an int when it reads as one (``"10"`` -> 10), else unchanged."""
    try:
        return int(level)
    except (TypeError, ValueError):
        return level


def _first(series: pd.Series) -> str:
    vals = [v for v in series.dropna().astype(str).unique() if v]
    return "; ".join(vals)


def common_footnotes(results: pd.DataFrame) -> list[str]:
    """Conventions, metric weights and model weights of the numbers in ``results``."""
    notes = []
    conv = _first(results["conventions"])
    if conv:
        notes.append(f"Metric conventions: {conv}.")
    net = results[results["weights"].astype(str).str.startswith(("random", "pretrained"))]
    weights = _first(net["weights"]) if len(net) else _first(results["weights"])
    notes.append(f"Metric network weights (LPIPS, FID, CLIP-IQA, MANIQA): {weights or 'n/a'}.")
    by_label: dict[str, list[str]] = {}
    for m, w in sorted(set(zip(results["method"], results["model_weights"].fillna("")))):
        if isinstance(w, str) and w:
            by_label.setdefault(w, []).append(m)
    if by_label:
        notes.append("Model weights: " + "; ".join(f"{', '.join(ms)}: {w}" for w, ms in by_label.items()) + ".")
    if is_random(results):
        notes.insert(0, RANDOM_NOTE[0].upper() + RANDOM_NOTE[1:])
    return notes


#: the columns of a results or ablation table that hold weights labels
WEIGHTS_COLUMNS = ("weights", "model_weights", "weights_label")


def is_random(results: pd.DataFrame) -> bool:
    """Whether any number in ``results`` comes from random metric weights or a random model (its weights labels,
    read by :func:`moediffir.provenance.label_is_random`)."""
    return any(label_is_random(v) for c in WEIGHTS_COLUMNS if c in results.columns for v in results[c])


def trained_here_note(results: pd.DataFrame) -> str:
    """The ``model_weights`` label of rows whose diffusion prior was trained here (stage 0), or ``""``."""
    labels = results["model_weights"].fillna("").astype(str)
    hits = sorted(set(labels[labels.str.startswith(PRIOR_TRAINED_LABEL)]))
    return hits[0] if hits else ""


def fid_note(results: pd.DataFrame) -> list[str]:
    notes = results.loc[(results["metric"] == "fid") & results["note"].fillna("").astype(bool), "note"]
    if len(notes):
        n = results.loc[(results["metric"] == "fid") & (results["scope"] == "task"), "n_images"]
        count = f"{int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "")
        return [(f"FID on {count} images per set and task (fewer than 2048): biased by the set size, comparable "
                 "only between sets of equal size.")]
    return []


def missing_paper_note(pairs: set[tuple[str, str]], what: str) -> list[str]:
    """Footnotes for empty paper cells: whole test sets the paper never used, then single cells."""
    if not pairs:
        return []
    notes = []
    foreign = sorted({s for s, _ in pairs if s not in paper_numbers.DATASETS})
    if foreign:
        notes.append(f"The paper has no results on test set(s) {', '.join(foreign)} (paper column empty).")
    rest = sorted((s, c) for s, c in pairs if s in paper_numbers.DATASETS)
    if rest:
        text = ", ".join(f"{a} / {b}" for a, b in rest)
        notes.append(f"The paper reports no {what} for: {text} (paper column empty).")
    return notes


def result_lookup(results: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Rows of ``results`` by (method, set, codec, kind, task, scope, metric)."""
    return {(r["method"], r["set"], r["codec"], r["kind"], r["task"], r["scope"], r["metric"]): r
            for _, r in results.iterrows()}


def levels_text(results: pd.DataFrame, codecs: Sequence[str]) -> str:
    """``JPEG 5/10/15; WebP 5/10/15``: the seen levels evaluated per codec, strongest compression first."""
    seen = results[(results["scope"] == "task") & (results["kind"] == "seen")].drop_duplicates("task")
    order = task_order()
    levels: dict[str, list[str]] = {}
    for r in sorted(seen.itertuples(index=False), key=lambda r: (order.get(r.task, len(order)), r.task)):
        levels.setdefault(r.codec, []).append(str(r.level))
    return "; ".join(f"{CODEC_DISPLAY[c]} {'/'.join(levels[c])}" for c in codecs if c in levels)
