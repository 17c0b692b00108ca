"""The paper's tables from our saved numbers, with the paper's value and our difference beside each cell.

Implements (paper §4.2, appendix B; docs/design.md §7):

* **Table 1** -- codec x test set, the mean over the levels of each codec (the paper: "average on three
  distortions"), PSNR / SSIM / LPIPS / FID, one row per codec and method (``table1``);
* **Tables 5-11 style** -- one table per codec, test set x method rows, one column group per level, every metric
  measured (PSNR, SSIM, LPIPS, FID, CLIP-IQA, MANIQA) (``table_levels_<codec>``; the paper transcribed only
  JPEG's Table 5, so only JPEG has paper values);
* **Table 4** (appendix B.1) -- VAE settings: the plain VAE decoder against the decoder compensator, PSNR /
  SSIM averaged over the seen tasks (``table4``).

Input is the tidy ``results.csv`` of :mod:`moediffir.evaluation.scoring`. Each table is written as a tidy CSV
(one row per cell: ``ours``, ``paper``, ``diff = ours - paper``), Markdown and LaTeX; each states its conventions
and weights in footnotes. A missing transcription file leaves the paper column empty and a footnote says so.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moediffir.data.tasks import CODEC_DISPLAY, SEEN_CODECS
from moediffir.evaluation.protocol import (
    BUILTIN_METHODS,
    METHOD_MOE,
    METHOD_NO_COMPENSATOR,
    PAPER_METHOD,
    task_order,
)
from moediffir.report import paper_numbers
from moediffir.utils.io import atomic_write_csv, atomic_write_text

DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 4, "fid": 2, "clipiqa": 4, "maniqa": 4}
METRIC_LABEL = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "fid": "FID↓", "clipiqa": "CLIP-IQA↑",
                "maniqa": "MANIQA↑"}
METRIC_ORDER = ("psnr", "ssim", "lpips", "fid", "clipiqa", "maniqa")
TABLE1_METRICS = ("psnr", "ssim", "lpips", "fid")
TABLE4_METRICS = ("psnr", "ssim")
RANDOM_NOTE = "random weights: these numbers say nothing about the method."
TIDY_COLUMNS = ("table", "row", "column", "method", "set", "codec", "level", "metric", "ours", "paper", "diff",
                "n_images", "n_tasks", "weights", "model_weights", "conventions")
#: Table 4 rows: our method for each of the paper's VAE settings (None: not part of the kit).
TABLE4_SETTINGS = (
    ("pretrained_vae", "Plain VAE decoder (not fine-tuned)", METHOD_NO_COMPENSATOR),
    ("vae_from_scratch", "VAE trained from scratch", None),
    ("compensator", "Decoder compensator (ours)", METHOD_MOE),
)


# ------------------------------------------------------------------------------------------ document
@dataclass
class TableDoc:
    """A rendered table: grouped column headers, rows of cells, footnotes."""

    name: str
    title: str
    index_names: list[str]
    groups: list[tuple[str, list[str]]]  # (group label, sub-column labels)
    rows: list[tuple[list[str], list[Cell]]] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)


@dataclass
class Cell:
    metric: str
    ours: float | None
    paper: float | None

    @property
    def diff(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper

    def _fmt(self, v: float | None, sign: bool = False) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        d = DECIMALS.get(self.metric, 3)
        return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"

    def markdown(self) -> str:
        if self.paper is None:
            return self._fmt(self.ours)
        return f"{self._fmt(self.ours)} ({self._fmt(self.paper)}; {self._fmt(self.diff, True)})"

    def latex(self) -> str:
        if self.paper is None:
            return self._fmt(self.ours).replace("–", "--")
        diff = self._fmt(self.diff, True).replace("-", "$-$").replace("–", "--")
        return f"{self._fmt(self.ours).replace('–', '--')} {{\\scriptsize({self._fmt(self.paper)}; {diff})}}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(doc: TableDoc) -> str:
    header = doc.index_names + [f"{g} {s}".strip() for g, subs in doc.groups for s in subs]
    lines = [f"**{doc.title}**", "", "| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join(["---"] * len(doc.index_names) + ["---:"] * (len(header) - len(doc.index_names))) + "|"]
    for index, cells in doc.rows:
        lines.append("| " + " | ".join([_md_escape(i) for i in index] + [c.markdown() for c in cells]) + " |")
    lines.append("")
    lines += [f"{i}. {_md_escape(f)}" for i, f in enumerate(doc.footnotes, 1)]
    return "\n".join(lines) + "\n"


_LATEX_SUBS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↑": r"$\uparrow$",
               "↓": r"$\downarrow$", "–": "--", "−": "-", "≥": r"$\geq$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SUBS.get(ch, ch) for ch in text)


def to_latex(doc: TableDoc) -> str:
    n_idx = len(doc.index_names)
    n_cols = sum(len(s) for _, s in doc.groups)
    out = io.StringIO()
    out.write("% generated by moediffir.report.tables from results.csv; regenerate with `moediffir report`\n")
    out.write("\\begin{table}[t]\n\\centering\n")
    out.write(f"\\caption{{{latex_escape(doc.title)}}}\n\\label{{tab:{doc.name}}}\n")
    out.write("\\resizebox{\\linewidth}{!}{%\n")
    out.write("\\begin{tabular}{" + "l" * n_idx + "r" * n_cols + "}\n\\toprule\n")
    if any(g for g, _ in doc.groups):
        parts, rules, col = [""] * n_idx, [], n_idx + 1
        for g, subs in doc.groups:
            parts.append(f"\\multicolumn{{{len(subs)}}}{{c}}{{{latex_escape(g)}}}")
            rules.append(f"\\cmidrule(lr){{{col}-{col + len(subs) - 1}}}")
            col += len(subs)
        out.write(" & ".join(parts) + " \\\\\n" + " ".join(rules) + "\n")
    out.write(" & ".join([latex_escape(i) for i in doc.index_names]
                         + [latex_escape(s) for _, subs in doc.groups for s in subs]) + " \\\\\n\\midrule\n")
    for index, cells in doc.rows:
        out.write(" & ".join([latex_escape(i) for i in index] + [c.latex() for c in cells]) + " \\\\\n")
    out.write("\\bottomrule\n\\end{tabular}}\n")
    if doc.footnotes:
        out.write("\\par\\smallskip\\footnotesize\n")
        out.write(" \\\\\n".join(f"{i}. {latex_escape(f)}" for i, f in enumerate(doc.footnotes, 1)) + "\n")
    out.write("\\end{table}\n")
    return out.getvalue()


def write_table(doc: TableDoc, tidy: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.csv`` (tidy cells), ``<name>.md`` and ``<name>.tex`` atomically; return the paths."""
    out_dir = Path(out_dir)
    return [
        atomic_write_csv(out_dir / f"{doc.name}.csv", tidy.loc[:, list(TIDY_COLUMNS)]),
        atomic_write_text(out_dir / f"{doc.name}.md", to_markdown(doc)),
        atomic_write_text(out_dir / f"{doc.name}.tex", to_latex(doc)),
    ]


# ------------------------------------------------------------------------------------ paper numbers
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
    builtin = [m for m in BUILTIN_METHODS if m in set(methods)]
    return builtin + sorted(m for m in set(methods) if m not in BUILTIN_METHODS)


def level_label(codec: str, level: str) -> str:
    if codec in ("jpeg", "webp"):
        return f"QF={level}"
    if codec in ("hevc", "vvc", "avc"):
        return f"QP={level}"
    if codec in ("c_psnr", "c_ssim"):
        return f"q={level}"
    return str(level)


def _as_int(level: str) -> int | str:
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


def is_random(results: pd.DataFrame) -> bool:
    """Whether any number in ``results`` comes from random metric weights or a random model."""
    w = results["weights"].astype(str).str.contains("random").any()
    m = results["model_weights"].fillna("").astype(str).str.contains("random").any()
    return bool(w or m)


def _fid_note(results: pd.DataFrame) -> list[str]:
    notes = results.loc[(results["metric"] == "fid") & results["note"].fillna("").astype(bool), "note"]
    if len(notes):
        n = results.loc[(results["metric"] == "fid") & (results["scope"] == "task"), "n_images"]
        count = f"{int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "")
        return [(f"FID on {count} images per set and task (fewer than 2048): biased by the set size, comparable "
                 "only between sets of equal size.")]
    return []


def _missing_paper_note(pairs: set[tuple[str, str]], what: str) -> list[str]:
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


def _tidy_row(table: str, row: str, column: str, method: str, set_name: str, codec: str, level: str, metric: str,
              cell: Cell, sub: pd.Series | None) -> dict:
    return {
        "table": table, "row": row, "column": column, "method": method, "set": set_name, "codec": codec,
        "level": level, "metric": metric, "ours": cell.ours, "paper": cell.paper, "diff": cell.diff,
        "n_images": int(sub["n_images"]) if sub is not None else None,
        "n_tasks": int(sub["n_tasks"]) if sub is not None else None,
        "weights": sub["weights"] if sub is not None else "",
        "model_weights": sub["model_weights"] if sub is not None else "",
        "conventions": sub["conventions"] if sub is not None else "",
    }


def _lookup(results: pd.DataFrame) -> dict[tuple, pd.Series]:
    return {(r["method"], r["set"], r["codec"], r["kind"], r["task"], r["scope"], r["metric"]): r
            for _, r in results.iterrows()}


def _levels_text(results: pd.DataFrame, codecs: Sequence[str]) -> str:
    """``JPEG 5/10/15; WebP 5/10/15``: the seen levels evaluated per codec, strongest compression first."""
    seen = results[(results["scope"] == "task") & (results["kind"] == "seen")].drop_duplicates("task")
    order = task_order()
    levels: dict[str, list[str]] = {}
    for r in sorted(seen.itertuples(index=False), key=lambda r: (order.get(r.task, len(order)), r.task)):
        levels.setdefault(r.codec, []).append(str(r.level))
    return "; ".join(f"{CODEC_DISPLAY[c]} {'/'.join(levels[c])}" for c in codecs if c in levels)


# ---------------------------------------------------------------------------------------- Table 1
def table1(results: pd.DataFrame, sets: Sequence[str] | None = None,
           paper_root: str | Path | None = None) -> tuple[TableDoc, pd.DataFrame]:
    """Table 1: per codec and method, per test set, the mean over the codec's levels of each metric."""
    res = results[(results["scope"] == "codec") & (results["kind"] == "seen")]
    sets = list(sets) if sets else list(dict.fromkeys(res["set"]))
    metrics = [m for m in TABLE1_METRICS if m in set(res["metric"])]
    codecs = [c for c in SEEN_CODECS if c in set(res["codec"])]
    paper = load_paper("table1", paper_root)
    look = _lookup(res)
    doc = TableDoc("table1", "Table 1: restoration per codec and test set (mean over each codec's levels)",
                   ["Codec", "Method"], [(s, [METRIC_LABEL[m] for m in metrics]) for s in sets])
    tidy, no_paper = [], set()
    for codec in codecs:
        for method in method_order(res["method"]):
            cells = []
            for s in sets:
                for m in metrics:
                    sub = look.get((method, s, codec, "seen", "all", "codec", m))
                    ours = float(sub["value"]) if sub is not None else None
                    pm = paper_method(method)
                    pv = paper.value(m, codec=codec, method=pm, dataset=s) if pm else None
                    if pm and pv is None and paper.df is not None:
                        no_paper.add((s, CODEC_DISPLAY[codec]))
                    cell = Cell(m, ours, pv)
                    cells.append(cell)
                    tidy.append(_tidy_row("table1", f"{codec}/{method}", f"{s}/{m}", method, s, codec, "all", m,
                                          cell, sub))
            doc.rows.append(([CODEC_DISPLAY[codec], method], cells))
    lv_text = _levels_text(results, codecs)
    doc.footnotes = [
        "Cells: ours (paper; ours − paper). Ours = mean over the levels evaluated of each codec"
        + (f" ({lv_text})" if lv_text else "") + "; the paper averages three levels.",
        paper.note,
        *_missing_paper_note(no_paper, "value of MoE-DiffIR or the named method"),
        *_fid_note(results[results["kind"] == "seen"]),
        *common_footnotes(res if len(res) else results),
    ]
    return doc, pd.DataFrame(tidy, columns=list(TIDY_COLUMNS))


# ----------------------------------------------------------------------------- per-level (Tables 5-11)
def table_levels(results: pd.DataFrame, codec: str, sets: Sequence[str] | None = None,
                 paper_root: str | Path | None = None) -> tuple[TableDoc, pd.DataFrame]:
    """Appendix Tables 5-11 style: one codec, rows set x method, one column group per level."""
    res = results[(results["scope"] == "task") & (results["codec"] == codec)]
    if res.empty:
        raise ValueError(f"no task-level results for codec {codec!r}")
    sets = [s for s in (sets or dict.fromkeys(res["set"])) if s in set(res["set"])]
    metrics = [m for m in METRIC_ORDER if m in set(res["metric"])]
    order = task_order()
    tasks = sorted(dict.fromkeys(res["task"]), key=lambda t: (order.get(t, len(order)), t))
    task_level = {t: str(res.loc[res["task"] == t, "level"].iloc[0]) for t in tasks}
    task_kind = {t: str(res.loc[res["task"] == t, "kind"].iloc[0]) for t in tasks}
    paper = load_paper("table5", paper_root) if codec == "jpeg" else PaperTable("table5", None, "")
    look = _lookup(res)
    groups = [(level_label(codec, task_level[t]) + ("" if task_kind[t] == "seen" else " (unseen)"),
               [METRIC_LABEL[m] for m in metrics]) for t in tasks]
    doc = TableDoc(f"table_levels_{codec}",
                   f"{CODEC_DISPLAY[codec]} per level (appendix Tables 5-11 style)", ["Test set", "Method"], groups)
    tidy, no_paper = [], set()
    for s in sets:
        for method in method_order(res["method"]):
            cells = []
            for t in tasks:
                for m in metrics:
                    sub = look.get((method, s, codec, task_kind[t], t, "task", m))
                    ours = float(sub["value"]) if sub is not None else None
                    pm = paper_method(method)
                    pv = None
                    if pm and paper.df is not None:
                        pv = paper.value(m, codec=codec, level=_as_int(task_level[t]), dataset=s, method=pm)
                        if pv is None:
                            no_paper.add((s, level_label(codec, task_level[t])))
                    cell = Cell(m, ours, pv)
                    cells.append(cell)
                    tidy.append(_tidy_row(doc.name, f"{s}/{method}", f"{t}/{m}", method, s, codec, task_level[t], m,
                                          cell, sub))
            doc.rows.append(([s, method], cells))
    notes = [("Cells: ours (paper; ours − paper) where the paper has a value; each cell is the mean over the "
              "images of one set and task (FID: over the set).")]
    if codec == "jpeg":
        notes.append(paper.note)
        notes += _missing_paper_note(no_paper, "value of MoE-DiffIR or the named method")
    else:
        notes.append(f"Paper column empty: the paper's {CODEC_DISPLAY[codec]} table is not transcribed "
                     "(results/paper/ holds JPEG's Table 5 only).")
    n = res["n_images"]
    notes.append(f"Images per set and task: {int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "") + ".")
    notes += _fid_note(res)
    notes += common_footnotes(res)
    doc.footnotes = notes
    return doc, pd.DataFrame(tidy, columns=list(TIDY_COLUMNS))


# ---------------------------------------------------------------------------------------- Table 4
def table4(results: pd.DataFrame, sets: Sequence[str] | None = None,
           paper_root: str | Path | None = None) -> tuple[TableDoc, pd.DataFrame]:
    """Appendix Table 4: PSNR / SSIM of the plain VAE decoder and the decoder compensator, mean over seen tasks."""
    res = results[(results["scope"] == "kind") & (results["kind"] == "seen")]
    sets = list(sets) if sets else list(dict.fromkeys(res["set"]))
    metrics = [m for m in TABLE4_METRICS if m in set(res["metric"])]
    paper = load_paper("table4", paper_root)
    look = _lookup(res)
    doc = TableDoc("table4", "Table 4: VAE settings (mean over the seen tasks)", ["VAE setting", "Method"],
                   [(s, [METRIC_LABEL[m] for m in metrics]) for s in sets])
    tidy, no_paper = [], set()
    for setting, label, method in TABLE4_SETTINGS:
        cells = []
        for s in sets:
            for m in metrics:
                sub = look.get((method, s, "all", "seen", "all", "kind", m)) if method else None
                pv = paper.value(m, setting=setting, dataset=s)
                if pv is None and paper.df is not None:
                    no_paper.add((s, label))
                cell = Cell(m, float(sub["value"]) if sub is not None else None, pv)
                cells.append(cell)
                tidy.append(_tidy_row("table4", setting, f"{s}/{m}", method or "", s, "all", "all", m, cell, sub))
        doc.rows.append(([label, method or "not in the kit"], cells))
    n_tasks = sorted(set(res["n_tasks"].astype(int)))
    doc.footnotes = [
        "Cells: ours (paper; ours − paper). Ours = mean over the "
        + "/".join(map(str, n_tasks)) + " seen task(s) evaluated (the paper: 21 tasks, LIVE1 only).",
        "Both rows of ours share the same diffusion samples (same seeds); only the decoder differs.",
        paper.note,
        *_missing_paper_note(no_paper, "value"),
        *common_footnotes(res if len(res) else results),
    ]
    return doc, pd.DataFrame(tidy, columns=list(TIDY_COLUMNS))


def write_all_tables(results: pd.DataFrame, out_dir: str | Path, sets: Sequence[str] | None = None,
                     paper_root: str | Path | None = None) -> list[Path]:
    """Table 1, Table 4 and one per-level table per codec, each as CSV + Markdown + LaTeX."""
    paths: list[Path] = []
    if ((results["scope"] == "codec") & (results["kind"] == "seen")).any():
        paths += write_table(*table1(results, sets, paper_root), out_dir)
    order = {c: i for i, c in enumerate(SEEN_CODECS + ("avc",))}
    for codec in sorted(set(results.loc[results["scope"] == "task", "codec"]), key=lambda c: (order.get(c, 99), c)):
        paths += write_table(*table_levels(results, codec, sets, paper_root), out_dir)
    if results["method"].isin([METHOD_MOE, METHOD_NO_COMPENSATOR]).any() and (
            (results["scope"] == "kind") & (results["kind"] == "seen")).any():
        paths += write_table(*table4(results, sets, paper_root), out_dir)
    return paths
