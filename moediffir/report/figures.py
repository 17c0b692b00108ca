"""The paper's figures from saved numbers, as deterministic PNG + PDF (paper Fig. 4, Fig. 8; docs/design.md §7).

* :func:`visual_grid` -- visual comparison (Fig. 4 and appendix C): LQ / restored / GT crops, one figure per
  codec, one row per level, from the crops saved at evaluation time;
* :func:`bpp_quality` -- bits per pixel against PSNR / SSIM / LPIPS for the compressed inputs and every method;
* :func:`prompt_similarity` -- Fig. 8: cosine similarity between the prompt matrices ``P_k`` of each scale;
* :func:`expert_usage` -- how often each prompt expert is among the top-K per task (routing statistics);
* :func:`routing_checkpoint` -- the notebooks' visual checkpoint of one restoration: LQ / restored / GT panels
  and, per MoE scale, the expert with the largest gate at each token (the routing decision of Eq. 3).

Every function writes the numbers it plots as CSV beside the figure and returns the paths it wrote; ``weights``
is the weights note of its title (:func:`moediffir.provenance.figure_note`: True for random weights, a label for a
prior trained here). Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state) inside a
fixed style (DejaVu Sans, fixed dpi) and saved without timestamps or software tags
(:func:`moediffir.report.output.save_figure`), so the same numbers give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moediffir.data.tasks import CODEC_DISPLAY
from moediffir.report.output import DPI, save_figure
from moediffir.report.table_doc import METRIC_LABEL
from moediffir.report.table_notes import level_label, method_order
from moediffir.utils.io import atomic_write_csv, read_image_rgb

RANDOM_TITLE = "random weights: says nothing about the method"
_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "figure.titlesize": 9,
    "pdf.fonttype": 3,
    "svg.hashsalt": "moediffir",
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
    "image.interpolation": "nearest",
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Fixed fonts and dpi (seaborn ticks theme) for every figure of the kit."""
    import matplotlib
    import seaborn as sns

    with matplotlib.rc_context():
        sns.set_theme(context="paper", style="ticks", rc=_STYLE)
        yield


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def weights_note(weights: bool | str) -> str:
    """The line a figure's title gets about its weights: ``True`` -> :data:`RANDOM_TITLE`; a string (e.g. the
    :func:`moediffir.provenance.figure_note` of a prior trained here) -> that string; ``False`` / ``""`` -> none."""
    if weights is True:
        return RANDOM_TITLE
    return weights or ""


def suptitle(fig, title: str, weights: bool | str) -> None:
    """Set ``fig``'s title, with the :func:`weights_note` of ``weights`` as a line of its own."""
    note = weights_note(weights)
    fig.suptitle(title + (f"\n({note})" if note else ""))


# ---------------------------------------------------------------------------------- visual grid
def visual_grid(index: dict, crops_dir: str | Path, out_dir: str | Path, weights: bool | str = False) -> list[Path]:
    """Fig. 4 style grids from ``visual.json`` (``index``) and its crops under ``crops_dir``; one per codec."""
    crops_dir, out_dir = Path(crops_dir), Path(out_dir)
    by_codec: dict[str, list[dict]] = {}
    for e in index.get("entries", []):
        by_codec.setdefault(e["codec"], []).append(e)
    paths: list[Path] = []
    for codec, entries in by_codec.items():
        n_rows, n_cols = len(entries), max(len(e["panels"]) for e in entries)
        with figure_style():
            fig = new_figure(1.45 * n_cols, 1.5 * n_rows + 0.6)
            axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
            for r, e in enumerate(entries):
                for c in range(n_cols):
                    ax = axes[r, c]
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if c >= len(e["panels"]):
                        ax.set_axis_off()
                        continue
                    p = e["panels"][c]
                    ax.imshow(read_image_rgb(crops_dir / p["file"]))
                    scores = [f"{k.upper()} {p[k]:.{2 if k == 'psnr' else 3}f}" for k in ("psnr", "lpips")
                              if p.get(k) is not None]
                    if p.get("bpp") is not None:
                        scores.insert(0, f"{p['bpp']:.3f} bpp")
                    ax.set_xlabel("\n".join(scores), fontsize=6)
                    if r == 0:
                        ax.set_title(p["label"], fontsize=7)
                    if c == 0:
                        unseen = "" if e["kind"] == "seen" else "\n(unseen)"
                        ax.set_ylabel(f"{level_label(codec, e['level'])}{unseen}", fontsize=7)
            e0 = entries[0]
            suptitle(fig, f"{CODEC_DISPLAY.get(codec, codec)}: {e0['set']}/{e0['stem']}, crop "
                          f"{e0['box'][2]}x{e0['box'][3]} at ({e0['box'][0]}, {e0['box'][1]})", weights)
            paths += save_figure(fig, out_dir, f"fig4_visual_{codec}")
    return paths


# ---------------------------------------------------------------------------------- bpp vs quality
def bpp_quality_numbers(per_image: pd.DataFrame, metrics: Sequence[str] = ("psnr", "ssim", "lpips")) -> pd.DataFrame:
    """Mean bpp and quality per method, set and task (the points of :func:`bpp_quality`)."""
    metrics = [m for m in metrics if m in per_image.columns]
    g = per_image.groupby(["method", "set", "codec", "task", "level", "kind"], sort=False)
    out = g.agg(bpp=("bpp", "mean"), n_images=("stem", "count"), **{m: (m, "mean") for m in metrics}).reset_index()
    return out


def bpp_quality(per_image: pd.DataFrame, out_dir: str | Path, weights: bool | str = False) -> list[Path]:
    """Bits per pixel of the compressed input against quality, for the input and every restoration method."""
    out_dir = Path(out_dir)
    import seaborn as sns

    pts = bpp_quality_numbers(per_image)
    metrics = [m for m in ("psnr", "ssim", "lpips") if m in pts.columns]
    sets = list(dict.fromkeys(pts["set"]))
    pts = pts.sort_values(["method", "set", "codec", "bpp"], kind="stable").reset_index(drop=True)
    paths = [atomic_write_csv(out_dir / "bpp_quality.csv", pts)]
    pts["Codec"] = [CODEC_DISPLAY.get(c, c) for c in pts["codec"]]
    pts["Method"] = pts["method"]
    methods = method_order(pts["method"])
    with figure_style():
        fig = new_figure(3.0 * len(metrics) + 1.2, 2.4 * len(sets) + 0.5)
        axes = np.atleast_2d(fig.subplots(len(sets), len(metrics), squeeze=False))
        for r, s in enumerate(sets):
            for c, m in enumerate(metrics):
                ax = axes[r, c]
                d = pts[pts["set"] == s]
                sns.lineplot(data=d, x="bpp", y=m, hue="Codec", style="Method", style_order=methods,
                             markers=True, dashes=True, estimator=None, sort=True, ax=ax,
                             legend=(r == 0 and c == len(metrics) - 1))
                ax.set_xlabel("bpp of the compressed input")
                ax.set_ylabel(METRIC_LABEL.get(m, m))
                ax.set_title(s)
        if axes[0, -1].get_legend() is not None:
            sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6, title_fontsize=6)
        suptitle(fig, "Rate against quality: compressed input and restored images", weights)
        paths += save_figure(fig, out_dir, "bpp_quality")
    return paths


# ---------------------------------------------------------------------------------- Fig. 8
def prompt_similarity(sim: pd.DataFrame, out_dir: str | Path, weights: bool | str = False) -> list[Path]:
    """Fig. 8: one heatmap per scale of the pairwise cosine similarity of the prompt matrices."""
    out_dir = Path(out_dir)
    import seaborn as sns

    paths = [atomic_write_csv(out_dir / "fig8_prompt_similarity.csv", sim)]
    scales = sorted(set(sim["scale"]))
    n = int(sim["expert_i"].max()) + 1
    with figure_style():
        fig = new_figure(2.3 * len(scales) + 0.6, 2.6)
        axes = np.atleast_1d(fig.subplots(1, len(scales), squeeze=False)[0])
        for ax, s in zip(axes, scales):
            d = sim[sim["scale"] == s]
            mat = np.full((n, n), np.nan)
            mat[d["expert_i"].to_numpy(int), d["expert_j"].to_numpy(int)] = d["cosine"].to_numpy(float)
            sns.heatmap(pd.DataFrame(mat, index=range(1, n + 1), columns=range(1, n + 1)), ax=ax, vmin=-1, vmax=1,
                        cmap="vlag", square=True, annot=n <= 8, fmt=".2f", annot_kws={"fontsize": 5}, cbar=False)
            h = int(d["height"].iloc[0]) if "height" in d else 0
            w = int(d["width"].iloc[0]) if "width" in d else 0
            ax.set_title(f"scale {s} ({h}x{w} tokens)" if h and w else f"scale {s} (latent / {2 ** int(s)})")
            ax.set_xlabel("prompt")
            ax.set_ylabel("prompt")
        fig.colorbar(axes[0].collections[0], ax=list(axes), shrink=0.8, label="cosine similarity")
        design = str(sim["design"].iloc[0]) if "design" in sim and len(sim) else "moe"
        suptitle(fig, f"Fig. 8: cosine similarity of the {n} prompt matrices P_k ({design} prompts)", weights)
        paths += save_figure(fig, out_dir, "fig8_prompt_similarity")
    return paths


# ---------------------------------------------------------------------------------- expert usage
def expert_usage_numbers(routing: pd.DataFrame) -> pd.DataFrame:
    """Per method, task, scale and expert (summed over test sets): ``usage`` = share of tokens whose top-K holds
    the expert (the K shares of a token add to K), ``mean_gate`` = its mean gate value."""
    g = routing.groupby(["method", "task", "codec", "level", "kind", "scale", "expert"], sort=False)
    out = g.agg(count=("count", "sum"), slots=("slots", "sum"), gate_sum=("gate_sum", "sum"),
                tokens=("tokens", "sum"), n_images=("n_images", "sum")).reset_index()
    out["usage"] = out["count"] / out["tokens"].where(out["slots"] > 0)  # share of tokens with the expert in top-K
    out["mean_gate"] = out["gate_sum"] / out["tokens"].where(out["tokens"] > 0)
    return out


def expert_usage(routing: pd.DataFrame, out_dir: str | Path, weights: bool | str = False,
                 method: str | None = None) -> list[Path]:
    """Heatmaps (task x expert) of the share of tokens routed to each expert, one per prompt scale."""
    out_dir = Path(out_dir)
    import seaborn as sns

    from moediffir.evaluation.protocol import METHOD_MOE, task_order

    num = expert_usage_numbers(routing)
    method = method or (METHOD_MOE if METHOD_MOE in set(num["method"]) else str(num["method"].iloc[0]))
    num = num[num["method"] == method]
    paths = [atomic_write_csv(out_dir / "expert_usage.csv", num)]
    order = task_order()
    tasks = sorted(dict.fromkeys(num["task"]), key=lambda t: (order.get(t, len(order)), t))
    labels = {r.task: f"{CODEC_DISPLAY.get(r.codec, r.codec)} {level_label(r.codec, r.level)}"
              + ("" if r.kind == "seen" else " *") for r in num.drop_duplicates("task").itertuples(index=False)}
    scales = sorted(set(num["scale"]))
    n = int(num["expert"].max()) + 1
    value = "usage" if num["usage"].notna().any() else "mean_gate"
    with figure_style():
        fig = new_figure(1.9 * len(scales) + 1.8, 0.22 * len(tasks) + 1.4)
        axes = np.atleast_1d(fig.subplots(1, len(scales), squeeze=False)[0])
        for ax, s in zip(axes, scales):
            d = num[num["scale"] == s].pivot(index="task", columns="expert", values=value)
            d = d.reindex(index=tasks, columns=range(n))
            d.index = [labels[t] for t in tasks]
            d.columns = range(1, n + 1)
            sns.heatmap(d, ax=ax, vmin=0, vmax=1, cmap="rocket_r", cbar=s == scales[-1],
                        yticklabels=s == scales[0])
            ax.set_title(f"scale {s}")
            ax.set_xlabel("prompt expert")
            ax.set_ylabel("")
        what = "share of tokens routed to each expert (top-K)" if value == "usage" else "mean gate"
        suptitle(fig, f"Expert usage per task ({method}; {what}; * = unseen task)", weights)
        paths += save_figure(fig, out_dir, "expert_usage")
    return paths


# ---------------------------------------------------------------------------------- routing checkpoint
def _as_hwc(img) -> np.ndarray:
    """``(H, W, 3)`` uint8 or float array, or a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [0, 1], for imshow."""
    if hasattr(img, "detach"):  # torch tensor
        t = img.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        return t.permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, 3)
    return np.asarray(img)


def routing_checkpoint(panels: Sequence[tuple[str, object]], scales: Sequence[dict], out_dir: str | Path,
                       name: str, title: str, weights: bool | str = False, image: int = 0) -> list[Path]:
    """One restoration at a glance: the image ``panels`` (``(label, image)``, e.g. LQ / restored / GT), then per
    routed scale of ``scales`` (``pipe(...).routing[i]["scales"]``) the expert with the largest gate at each token
    and the top-K counts; writes ``<name>.png/.pdf`` and the counts as ``<name>.csv``."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    from moediffir.evaluation.analysis import routing_counts

    routed = [(sc, c) for sc, c in zip(scales, routing_counts(scales, image)) if c["count"]]  # top-K scales only
    n_maps = max(len(routed), 1)
    rows = []
    with figure_style():
        fig = new_figure(2.0 * (len(panels) + n_maps), 2.6)
        axes = fig.subplots(1, len(panels) + n_maps)
        for ax, (label, img) in zip(axes, panels):
            ax.imshow(_as_hwc(img))
            ax.set_title(label)
            ax.axis("off")
        im, n = None, 0
        for ax, (sc, c) in zip(axes[len(panels):], routed):
            h, w, n = c["height"], c["width"], len(c["count"])
            top1 = sc["gates"][image].argmax(-1).reshape(h, w).cpu().numpy()  # (h, w) expert with the largest gate
            cmap = ListedColormap([colormaps["tab20"](i % 20) for i in range(n)])
            im = ax.imshow(top1 + 1, cmap=cmap, vmin=0.5, vmax=n + 0.5)
            ax.set_title(f"scale {h}x{w}: top-1 expert\ntop-{c['k']} counts {c['count']}", fontsize=6)
            ax.axis("off")
            rows += [{"scale": f"{h}x{w}", "expert": e + 1, "top_k_count": v} for e, v in enumerate(c["count"])]
        if im is not None:
            fig.colorbar(im, ax=list(axes[len(panels):]), ticks=range(1, n + 1), label="prompt expert")
        else:
            axes[-1].text(0.5, 0.5, "no router:\nthis prompt design\nhas no experts", ha="center", va="center")
            axes[-1].axis("off")
        suptitle(fig, title, weights)
        paths = save_figure(fig, out_dir, name)
    if rows:
        paths.append(atomic_write_csv(Path(out_dir) / f"{name}.csv", pd.DataFrame(rows)))
    return paths


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
