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
(one row per cell: ``ours``, ``paper``, ``diff = ours - paper``), Markdown and LaTeX
(:mod:`moediffir.report.table_doc`); each states its conventions and weights in footnotes
(:mod:`moediffir.report.table_notes`). A missing transcription file leaves the paper column empty and a footnote
says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from moediffir.data.tasks import CODEC_DISPLAY, SEEN_CODECS
from moediffir.evaluation.protocol import METHOD_MOE, METHOD_NO_COMPENSATOR, task_order
from moediffir.report.table_doc import (
    METRIC_LABEL,
    METRIC_ORDER,
    TIDY_COLUMNS,
    Cell,
    TableDoc,
    tidy_row,
    write_doc,
)
from moediffir.report.table_notes import (
    PaperTable,
    as_int,
    common_footnotes,
    fid_note,
    level_label,
    levels_text,
    load_paper,
    method_order,
    missing_paper_note,
    paper_method,
    result_lookup,
)

TABLE1_METRICS = ("psnr", "ssim", "lpips", "fid")
TABLE4_METRICS = ("psnr", "ssim")
#: Table 4 rows: our method for each of the paper's VAE settings (None: not part of the kit).
TABLE4_SETTINGS = (
    ("pretrained_vae", "Plain VAE decoder (not fine-tuned)", METHOD_NO_COMPENSATOR),
    ("vae_from_scratch", "VAE trained from scratch", None),
    ("compensator", "Decoder compensator (ours)", METHOD_MOE),
)


# ---------------------------------------------------------------------------------------- Table 1
def table1(results: pd.DataFrame, sets: Sequence[str] | None = None,
           paper_root: str | Path | None = None) -> tuple[TableDoc, pd.DataFrame]:
    """Table 1: per codec and method, per test set, the mean over the codec's levels of each metric."""
    res = results[(results["scope"] == "codec") & (results["kind"] == "seen")]
    sets = list(sets) if sets else list(dict.fromkeys(res["set"]))
    metrics = [m for m in TABLE1_METRICS if m in set(res["metric"])]
    codecs = [c for c in SEEN_CODECS if c in set(res["codec"])]
    paper = load_paper("table1", paper_root)
    look = result_lookup(res)
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
                    tidy.append(tidy_row("table1", f"{codec}/{method}", f"{s}/{m}", method, s, codec, "all", m,
                                          cell, sub))
            doc.rows.append(([CODEC_DISPLAY[codec], method], cells))
    lv_text = levels_text(results, codecs)
    doc.footnotes = [
        "Cells: ours (paper; ours − paper). Ours = mean over the levels evaluated of each codec"
        + (f" ({lv_text})" if lv_text else "") + "; the paper averages three levels.",
        paper.note,
        *missing_paper_note(no_paper, "value of MoE-DiffIR or the named method"),
        *fid_note(results[results["kind"] == "seen"]),
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
    look = result_lookup(res)
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
                        pv = paper.value(m, codec=codec, level=as_int(task_level[t]), dataset=s, method=pm)
                        if pv is None:
                            no_paper.add((s, level_label(codec, task_level[t])))
                    cell = Cell(m, ours, pv)
                    cells.append(cell)
                    tidy.append(tidy_row(doc.name, f"{s}/{method}", f"{t}/{m}", method, s, codec, task_level[t], m,
                                          cell, sub))
            doc.rows.append(([s, method], cells))
    notes = [("Cells: ours (paper; ours − paper) where the paper has a value; each cell is the mean over the "
              "images of one set and task (FID: over the set).")]
    if codec == "jpeg":
        notes.append(paper.note)
        notes += missing_paper_note(no_paper, "value of MoE-DiffIR or the named method")
    else:
        notes.append(f"Paper column empty: the paper's {CODEC_DISPLAY[codec]} table is not transcribed "
                     "(results/paper/ holds JPEG's Table 5 only).")
    n = res["n_images"]
    notes.append(f"Images per set and task: {int(n.min())}" + (f"-{int(n.max())}" if n.max() != n.min() else "") + ".")
    notes += fid_note(res)
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
    look = result_lookup(res)
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
                tidy.append(tidy_row("table4", setting, f"{s}/{m}", method or "", s, "all", "all", m, cell, sub))
        doc.rows.append(([label, method or "not in the kit"], cells))
    n_tasks = sorted(set(res["n_tasks"].astype(int)))
    doc.footnotes = [
        "Cells: ours (paper; ours − paper). Ours = mean over the "
        + "/".join(map(str, n_tasks)) + " seen task(s) evaluated (the paper: 21 tasks, LIVE1 only).",
        "Both rows of ours share the same diffusion samples (same seeds); only the decoder differs.",
        paper.note,
        *missing_paper_note(no_paper, "value"),
        *common_footnotes(res if len(res) else results),
    ]
    return doc, pd.DataFrame(tidy, columns=list(TIDY_COLUMNS))


def write_all_tables(results: pd.DataFrame, out_dir: str | Path, sets: Sequence[str] | None = None,
                     paper_root: str | Path | None = None) -> list[Path]:
    """Table 1, Table 4 and one per-level table per codec, each as CSV + Markdown + LaTeX."""
    paths: list[Path] = []
    if ((results["scope"] == "codec") & (results["kind"] == "seen")).any():
        paths += write_doc(*table1(results, sets, paper_root), out_dir)
    order = {c: i for i, c in enumerate(SEEN_CODECS + ("avc",))}
    for codec in sorted(set(results.loc[results["scope"] == "task", "codec"]), key=lambda c: (order.get(c, 99), c)):
        paths += write_doc(*table_levels(results, codec, sets, paper_root), out_dir)
    if results["method"].isin([METHOD_MOE, METHOD_NO_COMPENSATOR]).any() and (
            (results["scope"] == "kind") & (results["kind"] == "seen")).any():
        paths += write_doc(*table4(results, sets, paper_root), out_dir)
    return paths
