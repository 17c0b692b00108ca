"""Summary table and figures of the CIR benchmark (paper §3.5; docs/design.md §3, §7).

From the manifest alone (no image is recoded):

- ``benchmark_summary.{csv,md}``: per split, set and task — images, mean bits per pixel, mean LQ PSNR/SSIM
  (RGB, data range 255, whole image), the codec backend and its ``weights`` (``random`` marks an untrained
  learned codec: those rows are not the paper's codec);
- ``benchmark_grid.{png,pdf}``: the same crop of one test image under every task, one row per codec;
- ``bpp_vs_psnr.{png,pdf}``: mean bpp against mean LQ PSNR per codec, seen levels filled, unseen hollow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moediffir.config import Config, save_config
from moediffir.data.manifest import read_manifest
from moediffir.data.tasks import ALL_CODECS, CODEC_DISPLAY, all_tasks, strength_rank
from moediffir.metrics.fidelity import RGB_CONVENTION
from moediffir.report.output import save_figure, write_table
from moediffir.utils.io import read_image_rgb

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

SUMMARY_COLUMNS = ("split", "set", "task", "codec", "level", "label", "kind", "images", "bpp", "lq_psnr",
                   "lq_ssim", "backend", "weights", "bits_source")
# display order of codecs in figures: traditional, then unseen AVC, then learned
FIGURE_CODECS = ("jpeg", "webp", "hevc", "vvc", "avc", "c_psnr", "c_ssim", "hific")


def _task_order(df: pd.DataFrame) -> dict[str, int]:
    order: dict[str, int] = {}
    for preset in ("paper", "official"):
        for t in all_tasks(preset):
            order.setdefault(t.id, len(order))
    for t in sorted(set(df["task"]) - set(order)):
        order[t] = len(order)
    return order


def benchmark_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per (split, set, task): image count, mean bpp, mean LQ PSNR/SSIM, backend and weights."""
    import pandas as pd

    def _join(values: pd.Series) -> str:
        return "; ".join(sorted({str(v) for v in values if isinstance(v, str) and v}))

    g = manifest.groupby(["split", "set", "task"], sort=False)
    out = g.agg(codec=("codec", "first"), level=("level", "first"), label=("label", "first"),
                kind=("kind", "first"), images=("stem", "nunique"), bpp=("bpp", "mean"),
                lq_psnr=("lq_psnr", "mean"), lq_ssim=("lq_ssim", "mean"), backend=("backend", _join),
                weights=("weights", _join), bits_source=("bits_source", _join)).reset_index()
    order = _task_order(out)
    split_order = {"train": 0, "test": 1}
    out = out.sort_values(by=["split", "set", "task"],
                          key=lambda s: s.map(split_order) if s.name == "split" else
                          (s.map(order) if s.name == "task" else s)).reset_index(drop=True)
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def summary_notes(summary: pd.DataFrame) -> list[str]:
    notes = [(f"LQ PSNR / SSIM: {RGB_CONVENTION}; bpp = bits written by the codec / (width x height) of "
              "the original image; means over the images of each set."),
             ("kind: seen = one of the 21 training tasks (label 0-20); unseen_degree = a seen codec at an unseen "
              "level; unseen_type = a codec never seen in training (AVC).")]
    if (summary["weights"].str.contains("random")).any():
        notes.append("weights = random: the learned codec is an UNTRAINED network (smoke profile); its bpp and "
                     "PSNR are not those of the paper's codec.")
    return notes


def write_benchmark_summary(manifest: pd.DataFrame, tables_dir: str | Path) -> list[Path]:
    """``<tables_dir>/benchmark_summary.{csv,md}``."""
    summary = benchmark_summary(manifest)
    return write_table(summary, Path(tables_dir) / "benchmark_summary", title="CIR benchmark (paper §3.5)",
                       notes=summary_notes(summary), digits={"bpp": 3, "lq_psnr": 2, "lq_ssim": 4})


def _pick_crop(gt: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The ``size`` x ``size`` window (clipped to the image) with the most detail, on a coarse grid."""
    h, w = gt.shape[:2]
    ch, cw = min(size, h), min(size, w)
    gray = gt.astype(np.float32).mean(axis=2)  # (H, W)
    best, box = -1.0, (0, 0, ch, cw)
    step = max(8, size // 4)
    for y in sorted({*range(0, h - ch + 1, step), h - ch}):
        for x in sorted({*range(0, w - cw + 1, step), w - cw}):
            score = float(gray[y : y + ch, x : x + cw].std())
            if score > best:
                best, box = score, (y, x, ch, cw)
    return box


def _by_strength(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of one codec from the strongest to the weakest compression (by level, not by measured bpp)."""
    keys = [strength_rank(c, lv) for c, lv in zip(rows["codec"], rows["level"])]
    return rows.assign(_k=keys).sort_values("_k").drop(columns="_k")


def plot_benchmark_grid(
    manifest: pd.DataFrame,
    benchmark_dir: str | Path,
    split: str = "test",
    image: str | None = None,
    crop: int = 96,
    box: tuple[int, int, int, int] | None = None,
) -> Figure:
    """The same crop under every task: one row per codec (strongest compression first), the GT on the left.

    Args:
        image: stem of the image (default: the first stem of the split).
        box: ``(top, left, height, width)``; default the most detailed ``crop`` x ``crop`` window.
    """
    import matplotlib.pyplot as plt

    root = Path(benchmark_dir)
    df = manifest[manifest["split"] == split]
    if df.empty:
        raise ValueError(f"no '{split}' rows in the manifest of {root}")
    stem = image or min(df["stem"].unique())
    df = df[df["stem"] == stem]
    if df.empty:
        raise ValueError(f"image {stem!r} is not in the '{split}' split of {root}")
    gt = read_image_rgb(root / df["gt_path"].iloc[0])
    y, x, ch, cw = box or _pick_crop(gt, crop)
    codecs = [c for c in FIGURE_CODECS if c in set(df["codec"])] + sorted(set(df["codec"]) - set(FIGURE_CODECS))
    rows = {c: _by_strength(df[df["codec"] == c]) for c in codecs}
    ncols = 1 + max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(codecs), ncols, figsize=(1.9 * ncols, 2.15 * len(codecs)), squeeze=False)
    for i, codec in enumerate(codecs):
        axes[i][0].imshow(gt[y : y + ch, x : x + cw])
        axes[i][0].set_title("GT", fontsize=8)
        axes[i][0].set_ylabel(CODEC_DISPLAY.get(codec, codec), fontsize=10)
        for j, row in enumerate(rows[codec].itertuples(index=False), start=1):
            lq = read_image_rgb(root / row.path)
            axes[i][j].imshow(lq[y : y + ch, x : x + cw])
            tag = " (unseen)" if row.kind != "seen" else ""
            rnd = "\nrandom weights" if "random" in str(row.weights) else ""
            axes[i][j].set_title(f"{row.task}{tag}\n{row.bpp:.3f} bpp, {row.lq_psnr:.2f} dB{rnd}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(ax.has_data())
    fig.suptitle(f"{split}/{df['set'].iloc[0]}/{stem}: crop {cw}x{ch} at (x={x}, y={y}); PSNR: RGB, whole image",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # keep the title clear of the top row
    return fig


def plot_bpp_vs_psnr(manifest: pd.DataFrame, split: str = "test") -> Figure:
    """Mean bpp (log scale) against mean LQ PSNR per codec and level; unseen levels drawn hollow."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = manifest[manifest["split"] == split]
    if df.empty:
        raise ValueError(f"no '{split}' rows in the manifest")
    agg = (df.groupby(["codec", "task", "kind"]).agg(bpp=("bpp", "mean"), psnr=("lq_psnr", "mean"),
                                                    weights=("weights", "first")).reset_index())
    codecs = [c for c in FIGURE_CODECS if c in set(agg["codec"])] + sorted(set(agg["codec"]) - set(FIGURE_CODECS))
    palette = dict(zip(ALL_CODECS + tuple(sorted(set(codecs) - set(ALL_CODECS))),
                       sns.color_palette("tab10", len(ALL_CODECS) + len(set(codecs) - set(ALL_CODECS)))))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for codec in codecs:
        a = agg[agg["codec"] == codec].sort_values("bpp")  # a rate curve: ordered by rate
        label = CODEC_DISPLAY.get(codec, codec) + (" (random weights)" if "random" in str(a["weights"].iloc[0]) else "")
        color = palette[codec]
        ax.plot(a["bpp"], a["psnr"], "-", color=color, lw=1.2, label=label)
        seen = a[a["kind"] == "seen"]
        unseen = a[a["kind"] != "seen"]
        ax.scatter(seen["bpp"], seen["psnr"], color=color, s=28, zorder=3)
        ax.scatter(unseen["bpp"], unseen["psnr"], facecolors="white", edgecolors=color, s=34, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (mean over images, log scale)")
    ax.set_ylabel("LQ PSNR (dB, RGB, mean over images)")
    n_img = df["stem"].nunique()
    ax.set_title(f"CIR benchmark, {split} split ({n_img} image(s)); hollow markers: unseen tasks", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_benchmark_report(cfg: Config, manifest: pd.DataFrame | None = None, image: str | None = None,
                           crop: int = 96) -> dict[str, Any]:
    """Everything notebook 01 shows: the summary table, both figures and the resolved config beside them.

    Writes to ``results/<profile>/tables`` and ``results/<profile>/figures``; returns the paths and the summary.
    """
    import matplotlib.pyplot as plt

    manifest = read_manifest(cfg.benchmark_dir) if manifest is None else manifest
    tables = cfg.profile_results_dir / "tables"
    figures = cfg.profile_results_dir / "figures"
    csv_path, md_path = write_benchmark_summary(manifest, tables)
    save_config(cfg, tables, "benchmark_summary.config.json")
    split = "test" if (manifest["split"] == "test").any() else "train"
    out: dict[str, Any] = {"summary_csv": csv_path, "summary_md": md_path, "summary": benchmark_summary(manifest)}
    fig = plot_benchmark_grid(manifest, cfg.benchmark_dir, split=split, image=image, crop=crop)
    out["grid_png"], out["grid_pdf"] = save_figure(fig, figures, "benchmark_grid", tight=True)
    plt.close(fig)
    fig = plot_bpp_vs_psnr(manifest, split=split)
    out["bpp_png"], out["bpp_pdf"] = save_figure(fig, figures, "bpp_vs_psnr", tight=True)
    plt.close(fig)
    save_config(cfg, figures, "benchmark_figures.config.json")
    return out
