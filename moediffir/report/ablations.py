"""Fig. 6, Table 2 and Table 3 of the ablation studies (paper §4.3), with the paper's values beside ours.

Reads only the tidy sweep files ``<results>/<profile>/ablations/<sweep>.csv`` and ``.json`` written by
:func:`moediffir.ablation.sweep.gather_sweep` (never a model or an image), so everything here regenerates from
saved numbers, byte-identically. Each cell is the mean, over the tasks of one evaluation (``seen``,
``cross_degree``, ``cross_type``), of the evaluator's per-task means of our method (the stage-I model decoded by
the plain VAE decoder). Writes under ``<results>/<profile>/``:

* ``figures/fig6_prompts_nk.{png,pdf}`` and ``tables/fig6_prompts_nk.{csv,md,tex}`` -- Fig. 6: PSNR and LPIPS
  against the number of prompts N (a) and against top-K at N = 7 (b). The paper gives Fig. 6 as a plot only, so
  there is no paper column; the footnote states the paper's reading of it;
* ``tables/table2_prompt_designs.{csv,md,tex}`` -- Table 2: prompt designs on seen tasks and on the unseen
  cross-degree and cross-type tasks;
* ``tables/table3_v2t_dp.{csv,md,tex}`` -- Table 3: MoE-Prompt with and without V2T and DP;
* ``figures/ablation_routing/<sweep>_<variant>/expert_usage.*`` -- the routing of one variant (which prompt
  experts each task selects), the visual checkpoint of the notebooks.

Table cells read ``ours ± half (paper; ours - paper)``; the paper's value appears only where our test set and
tasks are the paper's. ``±`` is half the bootstrap interval over the test images (``<sweep>_per_image.csv``;
:mod:`moediffir.report.ablation_spread`, docs/design.md §9), a second table gives each variant's paired difference
to the sweep's reference with its interval, and Fig. 6 draws the interval as error bars. Every output names the weights it was computed with; a random-weight backbone trained a few steps
says so in the figure title and the first footnote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moediffir.config import Config
from moediffir.errors import MoEDiffIRError
from moediffir.evaluation.protocol import METHOD_MOE, METHOD_NO_COMPENSATOR, sort_tasks
from moediffir.provenance import label_is_random
from moediffir.report import ablation_spread, figures
from moediffir.report.ablation_spread import CONFIDENCE_PCT
from moediffir.report.output import save_figure
from moediffir.report.table_doc import (
    METRIC_LABEL,
    METRIC_ORDER,
    SPREAD_COLUMNS,
    TIDY_COLUMNS,
    Cell,
    TableDoc,
    write_doc,
)
from moediffir.report.table_notes import PaperTable, is_random, load_paper
from moediffir.utils.locks import folder_lock

TABLES_DIR = "tables"
FIGURES_DIR = "figures"
ROUTING_DIR = "ablation_routing"
OUR_METHODS = (METHOD_MOE, METHOD_NO_COMPENSATOR)
FIG6 = "fig6_prompts_nk"
TABLE2 = "table2_prompt_designs"
TABLE3 = "table3_v2t_dp"
EVAL_LABEL = {"seen": "Seen", "cross_degree": "Unseen, cross-degree", "cross_type": "Unseen, cross-type"}
#: How the paper's Table 2 names its unseen columns (``tasks`` column of results/paper/table2.csv).
PAPER_UNSEEN = {"cross_degree": "cross-degree", "cross_type": "cross-type"}
FIG6_READING = (
    "The paper gives Fig. 6 as a plot only (no numbers in its text), so there is no paper column. Its reading "
    "(§4.3, LIVE1): PSNR and LPIPS are poor at N = 1, best near N = 7 (similar at N = 11) and decline for larger "
    "N; at N = 7, K = 1 gives the highest PSNR but the worst LPIPS, and the best LPIPS is at K = 3-5."
)


class AblationReportError(MoEDiffIRError, ValueError):
    """The sweep results cannot be drawn; the message names the file and what is missing."""


# ------------------------------------------------------------------------------------------ numbers
def ours(df: pd.DataFrame) -> pd.DataFrame:
    """Per-task rows of our method (``moe-diffir`` when the model has a compensator, else the plain decoder)."""
    if df.empty or "method" not in df.columns:
        raise AblationReportError("the sweep results hold no evaluated rows (is any variant finished?)")
    d = df[df["scope"] == "task"] if "scope" in df.columns else df
    present = set(d["method"])
    pick = next((m for m in OUR_METHODS if m in present), None)
    if pick is None:
        raise AblationReportError(f"no rows of {OUR_METHODS} in the sweep results (methods: {sorted(present)})")
    return d[d["method"] == pick].assign(task=lambda x: x["task"].astype(str))


def _first(values: pd.Series) -> str:
    vals = [str(v) for v in values.dropna().unique() if str(v)]
    return "; ".join(vals)


def cell_means(df: pd.DataFrame, evaluation: str | None = None) -> pd.DataFrame:
    """Mean over tasks per variant, evaluation, set and metric (columns ``value, n_tasks, n_images, tasks``)."""
    d = ours(df)
    if evaluation is not None:
        d = d[d["evaluation"] == evaluation]
    keys = ["variant", "evaluation", "set", "metric"]
    g = d.groupby(keys, sort=False)
    out = g.agg(value=("value", "mean"), n_tasks=("task", "nunique"), n_images=("n_images", "sum"),
                weights=("weights", _first), model_weights=("model_weights", _first),
                conventions=("conventions", _first)).reset_index()
    out["tasks"] = [",".join(sort_tasks(grp["task"])) for _, grp in g]
    return out


def _variant_info(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c not in ("method", "set", "task", "codec", "level", "kind", "scope", "metric",
                                                "value", "n_images", "n_tasks", "conventions", "weights",
                                                "model_weights", "note", "evaluation")]
    return df.drop_duplicates("variant")[cols]


def fig6_numbers(df: pd.DataFrame, spread: pd.DataFrame | None = None) -> pd.DataFrame:
    """The points of Fig. 6: one row per curve (``N`` / ``K``), variant, set and metric; ``lo`` / ``hi``: the
    bootstrap interval of the point from ``spread`` (indexed by its cell keys; NaN without one)."""
    cells = cell_means(df, "seen")
    info = _variant_info(df)[["variant", "group", "label", "num_prompts", "top_k", "weights_label"]]
    out = cells.merge(info, on="variant", how="left").rename(columns={"group": "curve"})
    keys = list(ablation_spread.CELL_KEYS)
    bounds = (spread[["lo", "hi"]].reset_index() if spread is not None and len(spread)
              else pd.DataFrame(columns=[*keys, "lo", "hi"]))
    out = out.merge(bounds.astype({"lo": float, "hi": float}), on=keys, how="left")
    out["x"] = np.where(out["curve"] == "N", out["num_prompts"], out["top_k"])
    out = out.sort_values(["curve", "x", "set", "metric"], key=lambda s: s.map({"N": 0, "K": 1}) if s.name == "curve"
                          else s, kind="stable").reset_index(drop=True)
    return out[["curve", "variant", "label", "num_prompts", "top_k", "x", "set", "metric", "value", "lo", "hi", "n_tasks",
                "n_images", "tasks", "weights", "model_weights", "weights_label", "conventions"]]


# ------------------------------------------------------------------------------------------ labels
def model_label(df: pd.DataFrame) -> str:
    """The sweep's weights label (e.g. "random-weight backbone, a few training steps: says nothing ...")."""
    return _first(df["weights_label"]) if "weights_label" in df.columns else ""


def _metric_weights(df: pd.DataFrame) -> str:
    net = df[df["metric"].isin(["lpips", "fid", "clipiqa", "maniqa"])]
    return _first(net["weights"]) if len(net) else ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "", text) or "variant"


# ------------------------------------------------------------------------------------------ Fig. 6
def _draw_fig6(num: pd.DataFrame, metrics: list[str], set_name: str, title: str) -> object:
    """The two panels of Fig. 6 on one figure; bars: the bootstrap interval of each point (where there is one)."""
    n_fixed = int(num.loc[num["curve"] == "K", "num_prompts"].iloc[0]) if (num["curve"] == "K").any() else None
    curves = [c for c in ("N", "K") if (num["curve"] == c).any()]
    fig = figures.new_figure(3.2 * len(curves) + 0.4, 2.7)
    axes = np.atleast_1d(fig.subplots(1, len(curves), squeeze=False)[0])
    styles = {"psnr": ("o-", "tab:blue", "PSNR (dB) ↑"), "lpips": ("s--", "tab:red", "LPIPS ↓")}
    for ax, curve, tag in zip(axes, curves, "ab"):
        d = num[(num["curve"] == curve) & (num["set"] == set_name)]
        handles = []
        for i, m in enumerate(m for m in ("psnr", "lpips") if m in metrics):
            fmt, color, label = styles[m]
            axis = ax if i == 0 else ax.twinx()
            p = d[d["metric"] == m].sort_values("x")
            err = np.vstack([p["value"] - p["lo"], p["hi"] - p["value"]])  # (2, points): below / above the mean
            if np.isfinite(err).all():
                handles.append(axis.errorbar(p["x"], p["value"], yerr=err, fmt=fmt, color=color, capsize=2,
                                             label=label))
            else:
                handles += axis.plot(p["x"], p["value"], fmt, color=color, label=label)
            axis.set_ylabel(label, color=color)
        ax.set_xticks(sorted(set(d["x"].astype(int))))
        ax.set_xlabel("number of prompts N" if curve == "N" else f"top-K (N = {n_fixed})")
        ax.set_title(f"({tag}) " + ("N, K = min(3, N)" if curve == "N" else f"K at N = {n_fixed}"))
        if handles:
            ax.legend(handles, [h.get_label() for h in handles], fontsize=6, loc="best")
    fig.suptitle(title)
    return fig


def write_fig6(df: pd.DataFrame, out_dir: str | Path, per_image: pd.DataFrame | None = None,
               meta: dict | None = None) -> list[Path]:
    """Fig. 6 (PSNR and LPIPS against N and K) as PNG + PDF, and its numbers as a table (CSV, Markdown, LaTeX).

    ``per_image``: the sweep's per-image rows, for the bootstrap intervals (error bars, ``±``, the paired
    differences to ``meta["reference"]``); without them the figure and table show means only.
    """
    out_dir = Path(out_dir)
    reference = (meta or {}).get("reference", "")
    spread = _spread(df, per_image, reference)
    num = fig6_numbers(df, spread)
    if num.empty:
        raise AblationReportError("prompts_nk: no seen-task rows to draw Fig. 6 from")
    label, random = model_label(df), is_random(df)
    metrics = [m for m in METRIC_ORDER if m in set(num["metric"])]
    sets = list(dict.fromkeys(num["set"]))
    bars = f"\nbars: {CONFIDENCE_PCT} bootstrap interval over the test images" if num["lo"].notna().any() else ""
    title = (f"Fig. 6: number of prompts N and top-K ({sets[0]}, mean of {int(num['n_tasks'].max())} seen "
             f"task(s)){bars}")
    title += (f"\n{label}" if label else "") + (f"\n({figures.RANDOM_TITLE})" if random and "says nothing"
                                                not in label else "")
    with figures.figure_style():
        paths = save_figure(_draw_fig6(num, metrics, sets[0], title), out_dir / FIGURES_DIR, FIG6)
    # the numbers as a table
    groups = [(s, [METRIC_LABEL.get(m, m) for m in metrics]) for s in sets]
    doc = TableDoc(FIG6, "Fig. 6: number of prompts N and top-K (seen tasks)", ["Curve", "Variant"], groups)
    tidy, paired = [], []
    lookup = num.set_index(["variant", "set", "metric"])
    for v in dict.fromkeys(num["variant"]):
        row = num[num["variant"] == v].iloc[0]
        index = [f"({'a' if row['curve'] == 'N' else 'b'}) {row['curve']}", str(row["label"])]
        cells, pcells = [], []
        for s in sets:
            for m in metrics:
                val = float(lookup.loc[(v, s, m), "value"]) if (v, s, m) in lookup.index else None
                sp = ablation_spread.spread_of(spread, (v, "seen", s, m), reference)
                cells.append(Cell(m, val, None, ablation_spread.half_width(sp)))
                pcells.append(ablation_spread.paired_cell(m, sp, v == reference))
                if val is not None:
                    tidy.append({**_tidy(FIG6, str(row["label"]), s, s, m, val, None, lookup.loc[(v, s, m)],
                                         str(row["weights_label"])), **sp})
        doc.rows.append((index, cells))
        paired.append((index, pcells))
    notes = _add_spread(doc, df, spread, per_image, paired, reference)
    doc.footnotes = _footnotes(df, [("seen", num)]) + notes + [FIG6_READING]
    paths += write_doc(doc, pd.DataFrame(tidy, columns=[*TIDY_COLUMNS, *SPREAD_COLUMNS]), out_dir / TABLES_DIR)
    return paths


def _spread(df: pd.DataFrame, per_image: pd.DataFrame | None, reference: str) -> pd.DataFrame:
    """:func:`~moediffir.report.ablation_spread.cell_spread` of our method, indexed by its cell keys."""
    method = str(ours(df)["method"].iloc[0])
    return ablation_spread.cell_spread(per_image, method, reference).set_index(list(ablation_spread.CELL_KEYS))


def _add_spread(doc: TableDoc, df: pd.DataFrame, spread: pd.DataFrame, per_image: pd.DataFrame | None,
                paired: list, reference: str) -> list[str]:
    labels = df.drop_duplicates("variant").set_index("variant")["label"]
    has_rows = per_image is not None and len(per_image) > 0
    return ablation_spread.attach(doc, spread, has_rows, paired, str(labels.get(reference, reference)))


# ------------------------------------------------------------------------------------------ tables
def _tidy(table: str, row: str, column: str, set_name: str, metric: str, ours_v: float, paper_v: float | None,
          r: pd.Series, weights_label: str) -> dict:
    """One cell of a table in the kit's tidy table format (:data:`moediffir.report.table_doc.TIDY_COLUMNS`)."""
    diff = None if paper_v is None else ours_v - paper_v
    return {"table": table, "row": row, "column": column, "method": row, "set": set_name, "codec": "all",
            "level": "all", "metric": metric, "ours": ours_v, "paper": paper_v, "diff": diff,
            "n_images": int(r["n_images"]), "n_tasks": int(r["n_tasks"]), "weights": r["weights"],
            "model_weights": weights_label or r["model_weights"], "conventions": r["conventions"]}


def _footnotes(df: pd.DataFrame, parts: Sequence[tuple[str, pd.DataFrame]], meta: dict | None = None) -> list[str]:
    """Weights first, then what each column averages, conventions and anything not evaluated."""
    notes = []
    label = model_label(df)
    if label:
        notes.append(f"Model: {label}.")
    mw = _metric_weights(ours(df))
    if mw:
        notes.append(f"Metric network weights (LPIPS, FID): {mw}.")
    for evaluation, cells in parts:
        if cells.empty:
            continue
        tasks = sorted({t for ts in cells["tasks"] for t in ts.split(",") if t})
        imgs = int(cells["n_images"].max() / max(int(cells["n_tasks"].max()), 1))
        shown = ", ".join(sort_tasks(tasks)) if len(tasks) <= 8 else f"{len(tasks)} tasks"
        notes.append(f"{EVAL_LABEL.get(evaluation, evaluation)} columns: mean over {len(tasks)} task(s) "
                     f"({shown}), up to {imgs} image(s) per task and set.")
    conv = _first(ours(df)["conventions"])
    if conv:
        notes.append(f"Metric conventions: {conv}.")
    missing = sorted({m for v in (meta or {}).get("variants", []) for e in v.get("evaluation", [])
                      for m in e.get("missing", [])})
    if missing:
        notes.append("Not evaluated: " + "; ".join(missing) + ".")
    no_value = [m for m in (meta or {}).get("metrics", []) if m not in set(ours(df)["metric"])]
    if no_value:
        why = " (FID needs at least 2 images per set and task)" if "fid" in no_value else ""
        notes.append(f"Measured but without a value: {', '.join(no_value)}{why}.")
    return notes


def _column_order(cells: pd.DataFrame, meta: dict | None) -> list[tuple[str, str]]:
    """(evaluation, set) columns in the sweep's order (its EvalSpecs), keeping only those with numbers."""
    have = list(dict.fromkeys(zip(cells["evaluation"], cells["set"])))
    order = [(e["name"], s) for e in (meta or {}).get("evaluations", []) for s in e["sets"]]
    return [c for c in order if c in have] + [c for c in have if c not in order]


def _design_table(
    name: str,
    title: str,
    df: pd.DataFrame,
    meta: dict | None,
    paper: PaperTable,
    paper_value: Callable[[pd.Series, str, str, str], float | None],
    paper_scope: str,
    per_image: pd.DataFrame | None = None,
) -> tuple[TableDoc, pd.DataFrame]:
    reference = (meta or {}).get("reference", "")
    spread = _spread(df, per_image, reference)
    cells = cell_means(df)
    metrics = [m for m in METRIC_ORDER if m in set(cells["metric"])]
    columns = _column_order(cells, meta)
    groups = [(f"{EVAL_LABEL.get(e, e)} {s}" if e == "seen" else f"{EVAL_LABEL.get(e, e)}: {s}",
               [METRIC_LABEL.get(m, m) for m in metrics]) for e, s in columns]
    doc = TableDoc(name, title, ["Method"], groups)
    info = _variant_info(df).set_index("variant")
    lookup = cells.set_index(["variant", "evaluation", "set", "metric"])
    tidy, paired, any_paper = [], [], False
    for v in info.index:
        vrow = info.loc[v]
        row_cells, pcells = [], []
        for (e, s), (glabel, _) in zip(columns, groups):
            for m in metrics:
                key = (v, e, s, m)
                val = float(lookup.loc[key, "value"]) if key in lookup.index else None
                pv = paper_value(vrow, e, s, m)
                any_paper |= pv is not None
                sp = ablation_spread.spread_of(spread, key, reference)
                row_cells.append(Cell(m, val, pv, ablation_spread.half_width(sp)))
                pcells.append(ablation_spread.paired_cell(m, sp, v == reference))
                if val is not None:
                    tidy.append({**_tidy(name, str(vrow["label"]), glabel, s, m, val, pv, lookup.loc[key],
                                         str(vrow.get("weights_label", ""))), **sp})
        doc.rows.append(([str(vrow["label"])], row_cells))
        paired.append(([str(vrow["label"])], pcells))
    notes = _footnotes(df, [(e, cells[cells["evaluation"] == e]) for e in dict.fromkeys(cells["evaluation"])], meta)
    notes += _add_spread(doc, df, spread, per_image, paired, reference)
    pm = " ± half" if spread["lo"].notna().any() else ""
    notes.append(f"Cells: ours{pm} (paper; ours - paper); '–' = not measured here or not in the paper.")
    notes.append(paper.note + ("" if any_paper else f" None shown: the paper reports {paper_scope}, "
                                                    "and none of our columns is one of those."))
    doc.footnotes = notes
    return doc, pd.DataFrame(tidy, columns=[*TIDY_COLUMNS, *SPREAD_COLUMNS])


def _paper_df(paper: PaperTable) -> pd.DataFrame | None:
    return paper.df if paper.df is not None and len(paper.df) else None


def write_table2(df: pd.DataFrame, meta: dict | None, out_dir: str | Path, paper_root: str | Path | None = None,
                 per_image: pd.DataFrame | None = None) -> list[Path]:
    """Table 2 (prompt designs x seen / cross-degree / cross-type) as CSV, Markdown and LaTeX; ``per_image``:
    the sweep's per-image rows, for the bootstrap intervals (as in :func:`write_fig6`)."""
    paper = load_paper("table2", paper_root)
    pdf = _paper_df(paper)

    def value(vrow: pd.Series, evaluation: str, set_name: str, metric: str) -> float | None:
        if pdf is None or metric not in pdf.columns:
            return None
        design = vrow.get("prompt_design", vrow.name)
        d = pdf[(pdf["design"] == design) & (pdf["dataset"] == set_name)]
        if evaluation == "seen":
            d = d[d["split"] == "seen"]
        else:
            d = d[(d["split"] == "unseen") & d["tasks"].astype(str).str.startswith(PAPER_UNSEEN.get(evaluation, "?"))]
        return None if d.empty or pd.isna(d[metric].iloc[0]) else float(d[metric].iloc[0])

    doc, tidy = _design_table(TABLE2, "Table 2: impact of the prompt design (seen and unseen tasks)", df, meta,
                              paper, value, "seen LIVE1 / BSDS500 / DIV2K_valid, cross-degree LIVE1 (VVC QP 32, 52) "
                              "and cross-type ICB (AVC)", per_image)
    return write_doc(doc, tidy, Path(out_dir) / TABLES_DIR)


def write_table3(df: pd.DataFrame, meta: dict | None, out_dir: str | Path, paper_root: str | Path | None = None,
                 per_image: pd.DataFrame | None = None) -> list[Path]:
    """Table 3 (MoE-Prompt +- V2T adapter +- DP, seen tasks) as CSV, Markdown and LaTeX (``per_image``: as in
    :func:`write_table2`)."""
    paper = load_paper("table3", paper_root)
    pdf = _paper_df(paper)

    def value(vrow: pd.Series, evaluation: str, set_name: str, metric: str) -> float | None:
        if pdf is None or metric not in pdf.columns or evaluation != "seen":
            return None
        d = pdf[(pdf["use_v2t"] == bool(vrow["use_v2t"])) & (pdf["use_dp"] == bool(vrow["use_dp"]))
                & (pdf["dataset"] == set_name)]
        return None if d.empty or pd.isna(d[metric].iloc[0]) else float(d[metric].iloc[0])

    doc, tidy = _design_table(TABLE3, "Table 3: impact of the Visual2Text adapter (V2T) and degradation prior (DP)",
                              df, meta, paper, value, "seen LIVE1 / BSDS500 / ICB", per_image)
    return write_doc(doc, tidy, Path(out_dir) / TABLES_DIR)


# ------------------------------------------------------------------------------------------ routing
def routing_usage(cfg: Config, sweep_name: str, variant: str, out_dir: str | Path | None = None) -> list[Path]:
    """Expert usage per task of one finished variant (the notebooks' visual checkpoint).

    Reads the run's ``routing.csv`` (kept by the sweep from the evaluator) and draws
    :func:`moediffir.report.figures.expert_usage` into
    ``<results>/<profile>/figures/ablation_routing/<sweep>_<variant>/``. Designs without top-K routing
    (``none``, ``single``) have no routing to draw.
    """
    from moediffir.ablation.sweep import ROUTING_CSV, load_sweep_results, sweeps_root

    _, meta = load_sweep_results(cfg, sweep_name)
    entry = next((v for v in meta.get("variants", []) if v["variant"] == variant), None)
    if entry is None:
        raise AblationReportError(f"sweep {sweep_name!r} has no variant {variant!r}; it has "
                                  f"{[v['variant'] for v in meta.get('variants', [])]}")
    path = sweeps_root(cfg) / sweep_name / entry["key"] / ROUTING_CSV
    if not path.is_file():
        raise AblationReportError(f"{path}: no routing numbers for {sweep_name}/{variant} (state "
                                  f"{entry.get('state')!r}; designs without top-K routing have none)")
    routing = pd.read_csv(path, dtype={"level": str, "task": str}, keep_default_na=False, na_values=[""])
    routing = routing.drop_duplicates(["method", "set", "task", "scale", "expert"])
    out = Path(out_dir) if out_dir is not None else cfg.profile_results_dir / FIGURES_DIR / ROUTING_DIR
    return figures.expert_usage(routing, out / f"{sweep_name}_{_slug(variant)}",
                                weights=label_is_random(entry.get("weights_label")))


# ------------------------------------------------------------------------------------------ all
WRITERS = {"prompts_nk": "fig6", "prompt_design": "table2", "v2t_dp": "table3"}


def write_sweep_report(cfg: Config, sweep_name: str, out_dir: str | Path | None = None,
                       paper_root: str | Path | None = None) -> list[Path]:
    """The figure / table of one sweep from its saved tidy file (``out_dir`` default ``<results>/<profile>``)."""
    from moediffir.ablation.per_image import load_per_image
    from moediffir.ablation.sweep import load_sweep_results

    if sweep_name not in WRITERS:
        raise AblationReportError(f"no report for sweep {sweep_name!r}; known: {sorted(WRITERS)}")
    df, meta = load_sweep_results(cfg, sweep_name)
    per_image = load_per_image(cfg, sweep_name)
    out = Path(out_dir) if out_dir is not None else cfg.profile_results_dir
    kind = WRITERS[sweep_name]
    with folder_lock(out, what="results folder"):  # one writer at a time (evaluate, report and sweeps write here)
        if kind == "fig6":
            return write_fig6(df, out, per_image, meta)
        if kind == "table2":
            return write_table2(df, meta, out, paper_root, per_image)
        return write_table3(df, meta, out, paper_root, per_image)


def write_ablation_report(cfg: Config, out_dir: str | Path | None = None,
                          paper_root: str | Path | None = None) -> list[Path]:
    """Every ablation figure and table whose sweep has saved results (for ``moediffir report``)."""
    from moediffir.ablation.sweep import results_path

    written: list[Path] = []
    for name in WRITERS:
        if results_path(cfg, name).is_file():
            written += write_sweep_report(cfg, name, out_dir, paper_root)
    return written
