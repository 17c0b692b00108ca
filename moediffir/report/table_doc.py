"""A paper-style table as a document (grouped columns, cells of ours / paper / difference, footnotes) and its
three renderings: a tidy CSV (one row per cell), Markdown and LaTeX (paper §4.2, appendix B; docs/design.md §7).
The tables themselves are laid out in :mod:`moediffir.report.tables` and :mod:`moediffir.report.ablations`.

An ablation cell may carry the half-width of its bootstrap interval (``ours ± half``), and a table may carry
tables rendered below it in the same file (the paired differences to a reference row, :class:`IntervalCell`;
docs/design.md §9)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moediffir.report.output import write_table

DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 4, "fid": 2, "clipiqa": 4, "maniqa": 4}
METRIC_LABEL = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "fid": "FID↓", "clipiqa": "CLIP-IQA↑",
                "maniqa": "MANIQA↑"}
METRIC_ORDER = ("psnr", "ssim", "lpips", "fid", "clipiqa", "maniqa")
TIDY_COLUMNS = ("table", "row", "column", "method", "set", "codec", "level", "metric", "ours", "paper", "diff",
                "n_images", "n_tasks", "weights", "model_weights", "conventions")
#: The ablation tables' extra tidy columns: the bootstrap interval of ``ours`` and the paired difference to the
#: reference row with its interval (:mod:`moediffir.ablation.spread`).
SPREAD_COLUMNS = ("ci_lo", "ci_hi", "reference", "ref_diff", "ref_diff_lo", "ref_diff_hi")


@dataclass
class TableDoc:
    """A rendered table: grouped column headers, rows of cells, footnotes."""

    name: str
    title: str
    index_names: list[str]
    groups: list[tuple[str, list[str]]]  # (group label, sub-column labels)
    rows: list[tuple[list[str], list[Cell | IntervalCell]]] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    below: list[TableDoc] = field(default_factory=list)  # rendered after the rows, before the footnotes


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(metric: str, v: float | None, sign: bool = False) -> str:
    """``v`` at the metric's decimals (``+`` sign if asked); ``–`` when missing."""
    if _missing(v):
        return "–"
    d = DECIMALS.get(metric, 3)
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


@dataclass
class Cell:
    metric: str
    ours: float | None
    paper: float | None
    half: float | None = None  # half-width of the bootstrap interval of ``ours`` (None: not computed)

    @property
    def diff(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper

    def _fmt(self, v: float | None, sign: bool = False) -> str:
        return _fmt(self.metric, v, sign)

    def _ours(self) -> str:
        spread = "" if _missing(self.half) or _missing(self.ours) else f" ± {self._fmt(self.half)}"
        return self._fmt(self.ours) + spread

    def markdown(self) -> str:
        if self.paper is None:
            return self._ours()
        return f"{self._ours()} ({self._fmt(self.paper)}; {self._fmt(self.diff, True)})"

    def latex(self) -> str:
        ours = self._ours().replace("–", "--").replace(" ± ", " {\\scriptsize$\\pm$")
        ours += "}" if "$\\pm$" in ours else ""
        if self.paper is None:
            return ours
        diff = self._fmt(self.diff, True).replace("-", "$-$").replace("–", "--")
        return f"{ours} {{\\scriptsize({self._fmt(self.paper)}; {diff})}}"


@dataclass
class IntervalCell:
    """A value and its interval, ``+0.12 [-0.05, +0.30]`` (a paired difference); ``is_reference``: the row the
    differences are taken to."""

    metric: str
    value: float | None
    lo: float | None
    hi: float | None
    is_reference: bool = False

    def markdown(self) -> str:
        if self.is_reference:
            return "reference"
        if _missing(self.value):
            return "–"
        bounds = "" if _missing(self.lo) else f" [{_fmt(self.metric, self.lo, True)}, {_fmt(self.metric, self.hi, True)}]"
        return _fmt(self.metric, self.value, True) + bounds

    def latex(self) -> str:
        return self.markdown().replace("-", "$-$").replace("–", "--")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(doc: TableDoc) -> str:
    lines = []
    for part in [doc, *doc.below]:
        header = part.index_names + [f"{g} {s}".strip() for g, subs in part.groups for s in subs]
        n_idx = len(part.index_names)
        lines += [f"**{part.title}**", "", "| " + " | ".join(_md_escape(h) for h in header) + " |",
                  "|" + "|".join(["---"] * n_idx + ["---:"] * (len(header) - n_idx)) + "|"]
        for index, cells in part.rows:
            lines.append("| " + " | ".join([_md_escape(i) for i in index] + [c.markdown() for c in cells]) + " |")
        lines.append("")
    lines += [f"{i}. {_md_escape(f)}" for i, f in enumerate(doc.footnotes, 1)]
    return "\n".join(lines) + "\n"


_LATEX_SUBS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↑": r"$\uparrow$",
               "↓": r"$\downarrow$", "–": "--", "−": "-", "≥": r"$\geq$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SUBS.get(ch, ch) for ch in text)


def _latex_tabular(doc: TableDoc, out: io.StringIO) -> None:
    n_idx = len(doc.index_names)
    n_cols = sum(len(s) for _, s in doc.groups)
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
    out.writelines(" & ".join([latex_escape(i) for i in index] + [c.latex() for c in cells]) + " \\\\\n"
                   for index, cells in doc.rows)
    out.write("\\bottomrule\n\\end{tabular}}\n")


def to_latex(doc: TableDoc) -> str:
    out = io.StringIO()
    out.write("% generated by moediffir.report.tables from results.csv; regenerate with `moediffir report`\n")
    out.write("\\begin{table}[t]\n\\centering\n")
    out.write(f"\\caption{{{latex_escape(doc.title)}}}\n\\label{{tab:{doc.name}}}\n")
    _latex_tabular(doc, out)
    for part in doc.below:
        out.write(f"\\par\\medskip{{\\small {latex_escape(part.title)}}}\\par\\smallskip\n")
        _latex_tabular(part, out)
    if doc.footnotes:
        out.write("\\par\\smallskip\\footnotesize\n")
        out.write(" \\\\\n".join(f"{i}. {latex_escape(f)}" for i, f in enumerate(doc.footnotes, 1)) + "\n")
    out.write("\\end{table}\n")
    return out.getvalue()


def write_doc(doc: TableDoc, tidy: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write the paper table ``doc`` with :func:`~moediffir.report.output.write_table`: ``<name>.csv`` (tidy
    cells: :data:`TIDY_COLUMNS`, then those of :data:`SPREAD_COLUMNS` that ``tidy`` has), ``<name>.md`` and
    ``<name>.tex``; return the paths."""
    columns = list(TIDY_COLUMNS) + [c for c in SPREAD_COLUMNS if c in tidy.columns]
    return write_table(tidy.loc[:, columns], Path(out_dir) / doc.name, markdown=to_markdown(doc),
                       latex=to_latex(doc))


def tidy_row(table: str, row: str, column: str, method: str, set_name: str, codec: str, level: str, metric: str,
             cell: Cell, sub: pd.Series | None) -> dict:
    """One row of the tidy CSV (:data:`TIDY_COLUMNS`): where the cell sits, its numbers, and the labels of the
    results row ``sub`` it was read from (None: no result, empty labels)."""
    return {
        "table": table, "row": row, "column": column, "method": method, "set": set_name, "codec": codec,
        "level": level, "metric": metric, "ours": cell.ours, "paper": cell.paper, "diff": cell.diff,
        "n_images": int(sub["n_images"]) if sub is not None else None,
        "n_tasks": int(sub["n_tasks"]) if sub is not None else None,
        "weights": sub["weights"] if sub is not None else "",
        "model_weights": sub["model_weights"] if sub is not None else "",
        "conventions": sub["conventions"] if sub is not None else "",
    }
