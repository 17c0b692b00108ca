"""Training figures from the saved logs: loss curves and the task x expert usage heatmap (paper §3.2, §3.4, §4.1).

Every function reads numbers that training wrote (``<stage dir>/log.jsonl``, ``summary.json``), writes them
as CSV beside the figure and saves the figure as PNG + PDF atomically (the kit's fixed style, see
:mod:`moediffir.report.figures`), returning the paths. Figures of runs with random weights (the smoke
profile) carry the kit's random-weights note in their title.

- :func:`loss_curves`: the per-step training loss of a stage (and its moving mean), plus the other logged
  terms (stage II: L1, LPIPS, generator and discriminator hinge losses; stage I: gate entropy).
- :func:`training_expert_usage`: mean gate mass of each prompt expert per seen task over the run (Eq. 3's
  ``G(x)`` averaged over tokens and scales), next to the share of top-K selections.
- :func:`decoder_comparison`: stage II, L1 and LPIPS to the GT of the plain VAE decoder against the
  compensated one, before and after training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moediffir.report.figures import figure_style, new_figure, suptitle
from moediffir.report.output import save_figure
from moediffir.training.training_log import read_jsonl, usage_matrix
from moediffir.utils.io import atomic_write_csv


def read_log(stage_folder: str | Path) -> list[dict]:
    """The records of ``<stage folder>/log.jsonl`` (a clear error when training has not run)."""
    path = Path(stage_folder) / "log.jsonl"
    records = read_jsonl(path)
    if not records:
        raise FileNotFoundError(f"{path}: no training log; train this stage first")
    return records


def loss_numbers(records: Sequence[Mapping]) -> pd.DataFrame:
    """One row per optimiser step: ``step``, ``loss`` (from each record's ``steps``/``losses``)."""
    rows = [{"step": int(s), "loss": float(v)} for r in records for s, v in zip(r.get("steps", []), r.get("losses", []))]
    return pd.DataFrame(rows, columns=["step", "loss"]).drop_duplicates("step", keep="last").sort_values("step")


def loss_curves(records: Sequence[Mapping], out_dir: str | Path, name: str, title: str,
                extra: Sequence[str] = (), weights: bool | str = False) -> list[Path]:
    """Per-step loss with a moving mean (left) and the logged ``extra`` columns per log event (right)."""
    out_dir = Path(out_dir)
    per_step = loss_numbers(records)
    if per_step.empty:
        raise ValueError(f"{name}: the log has no per-step losses")
    window = max(1, len(per_step) // 10)
    per_step["moving_mean"] = per_step["loss"].rolling(window, min_periods=1).mean()
    logged = pd.DataFrame([{k: r.get(k) for k in ("step", *extra)} for r in records])
    paths = [atomic_write_csv(out_dir / f"{name}.csv", per_step)]
    if extra:
        paths.append(atomic_write_csv(out_dir / f"{name}_terms.csv", logged))
    cols = [c for c in extra if c in logged and logged[c].notna().any()]
    with figure_style():
        fig = new_figure(7.0 if cols else 3.8, 2.6)
        axes = fig.subplots(1, 2 if cols else 1, squeeze=False)[0]
        ax = axes[0]
        ax.plot(per_step["step"], per_step["loss"], lw=0.8, alpha=0.5, label="per step")
        ax.plot(per_step["step"], per_step["moving_mean"], lw=1.6, label=f"moving mean ({window})")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(frameon=False)
        if cols:
            for c in cols:
                axes[1].plot(logged["step"], logged[c], marker="o", ms=2.5, lw=1.0, label=c)
            axes[1].set_xlabel("step")
            axes[1].legend(frameon=False)
        suptitle(fig, title, weights)
        paths += save_figure(fig, out_dir, name)
    return paths


def training_usage_numbers(records: Sequence[Mapping], label_names: Mapping[int, str]) -> pd.DataFrame:
    """Long table: ``label``, ``task``, ``expert`` (1-based), ``mean_gate``, ``selected`` over the whole run."""
    usage, selected = usage_matrix(records, "usage"), usage_matrix(records, "selected")
    if usage.empty:
        return pd.DataFrame(columns=["label", "task", "expert", "mean_gate", "selected"])
    rows = []
    for label in usage.index:
        for j, col in enumerate(usage.columns):
            rows.append({"label": int(label), "task": label_names.get(int(label), str(label)), "expert": j + 1,
                         "mean_gate": float(usage.loc[label, col]),
                         "selected": float(selected.loc[label, col]) if label in selected.index else np.nan})
    return pd.DataFrame(rows)


def training_expert_usage(records: Sequence[Mapping], label_names: Mapping[int, str], out_dir: str | Path,
                          name: str = "stage1_expert_usage", weights: bool | str = False) -> list[Path]:
    """Task x expert heatmaps of the mean gate and of the share of tokens that chose the expert (top K)."""
    import seaborn as sns

    out_dir = Path(out_dir)
    num = training_usage_numbers(records, label_names)
    if num.empty:
        raise ValueError("the log has no routing statistics (prompt_design 'none'/'single' has no gates)")
    paths = [atomic_write_csv(out_dir / f"{name}.csv", num)]
    tasks = [label_names.get(lb, str(lb)) for lb in sorted(set(num["label"]))]
    with figure_style():
        fig = new_figure(7.0, 0.25 * len(tasks) + 1.6)
        axes = fig.subplots(1, 2, squeeze=False)[0]
        for ax, value, text in ((axes[0], "mean_gate", "mean gate G(x)"), (axes[1], "selected", "share in top K")):
            d = num.pivot(index="task", columns="expert", values=value).reindex(index=tasks)
            sns.heatmap(d, ax=ax, vmin=0, vmax=1 if value == "selected" else None, cmap="rocket_r", annot=len(tasks) <= 8,
                        fmt=".2f", yticklabels=ax is axes[0])
            ax.set_title(text)
            ax.set_xlabel("prompt expert")
            ax.set_ylabel("")
        suptitle(fig, "Stage I routing: expert usage per task (training batches)", weights)
        paths += save_figure(fig, out_dir, name)
    return paths


def decoder_comparison(summary: Mapping, out_dir: str | Path, name: str = "stage2_decoder",
                       weights: bool | str = False) -> list[Path]:
    """Bars of L1 and LPIPS to the GT: plain VAE decoder vs compensated (each ``w``), before/after stage II."""
    out_dir = Path(out_dir)
    rows = []
    for when in ("start", "end"):
        for key, value in summary[when].items():
            metric, tag = key.split("_", 1)
            rows.append({"when": when, "metric": metric, "decoder": "plain VAE" if tag == "plain" else f"comp. w={tag[1:]}",
                         "value": float(value)})
    df = pd.DataFrame(rows)
    paths = [atomic_write_csv(out_dir / f"{name}.csv", df)]
    import seaborn as sns

    with figure_style():
        fig = new_figure(6.0, 2.4)
        axes = fig.subplots(1, 2, squeeze=False)[0]
        for ax, metric in zip(axes, ("l1", "lpips")):
            sns.barplot(df[df["metric"] == metric], x="decoder", y="value", hue="when", ax=ax)
            ax.set_title(f"{metric.upper()} to GT (lower is better)")
            ax.set_xlabel("")
            ax.set_ylabel(metric)
            ax.tick_params(axis="x", labelsize=6)
            ax.legend(frameon=False, fontsize=6, loc="lower left")
        suptitle(fig, f"Stage II on its training batch (LPIPS {summary.get('lpips_net', '')})", weights)
        paths += save_figure(fig, out_dir, name)
    return paths
