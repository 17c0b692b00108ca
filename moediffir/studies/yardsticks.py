"""Yardsticks for a prior trained here: the VAE ceiling and a plain CNN, scored like the model (paper §4.2).

With a prior trained in minutes (``mini``), "restored PSNR" means little without two references next to it:

- ``VAE ceiling``: the prior's VAE reconstruction ``D(E(GT))`` of every test item, the bound of any restorer
  that decodes through that VAE with the plain decoder (:mod:`moediffir.studies.prior_quality`);
- ``CNN baseline``: a residual CNN trained on the same crops for the same wall time as stage I
  (:mod:`moediffir.studies.cnn_baseline`).

Both are written as folders of restored images and enter :func:`~moediffir.evaluation.evaluator.run_evaluation`
as external methods, so they are scored with exactly the model's metrics. :func:`yardstick_table` is the
per-task table of the README's ``mini`` section: compressed input, VAE ceiling, stage I alone (plain decoder),
stage I + compensator (the full method) and the CNN, on the seen tasks and their mean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE, METHOD_NO_COMPENSATOR
from moediffir.training.runtime import stage_dir

VAE_CEILING = "VAE ceiling D(E(GT))"
CNN_BASELINE = "CNN baseline (same time as stage I)"
YARDSTICK_DIR = "yardsticks"


def stage1_seconds(cfg) -> float:
    """Wall seconds of the stage-I run (``<stage dir>/summary.json``), the CNN's time budget."""
    path = stage_dir(cfg, "stage1") / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no stage-I summary; train stage I first (notebook 02)")
    return float(json.loads(path.read_text())["wall_s_this_run"])


def build_yardsticks(cfg, items: pd.DataFrame, out_dir: str | Path | None = None,
                     seconds: float | None = None) -> dict[str, Path]:
    """Write the VAE-ceiling and CNN restorations of ``items``; return ``{method name: folder}`` for externals."""
    from moediffir.pipelines.tiling import pad_to_multiple
    from moediffir.studies.cnn_baseline import restore_items_with, restore_with_cnn, train_cnn_baseline
    from moediffir.studies.prior_quality import load_prior, reconstruct
    from moediffir.weights.weight_checks import sd_source_of

    out = Path(out_dir) if out_dir is not None else cfg.profile_results_dir / YARDSTICK_DIR
    _, vae, _ = load_prior(sd_source_of(cfg))
    f = 2 ** (len(vae.config.block_out_channels) - 1)

    def ceiling(lq, gt):
        padded, (h, w) = pad_to_multiple(gt, f)  # (1, 3, H', W')
        return reconstruct(vae, padded)[..., :h, :w]

    vae_dir = restore_items_with(ceiling, cfg.benchmark_dir, items, out / "vae_ceiling")
    budget = stage1_seconds(cfg) if seconds is None else float(seconds)
    model, info = train_cnn_baseline(cfg, budget, out / "cnn")
    print(f"[yardsticks] CNN baseline: {info['steps']} steps in {info['wall_s']:.0f} s (stage I took {budget:.0f} s)")
    cnn_dir = restore_with_cnn(model, cfg.benchmark_dir, items, out / "cnn" / "restored")
    return {VAE_CEILING: vae_dir, CNN_BASELINE: cnn_dir}


def yardstick_table(results: pd.DataFrame, kind: str = "seen", metrics=("psnr", "ssim", "lpips")) -> pd.DataFrame:
    """Rows: the tasks of ``kind`` (``seen``, ``unseen_degree`` or ``unseen_type``) and their mean; columns:
    (metric, method) for the five methods present."""
    methods = [m for m in (METHOD_LQ, VAE_CEILING, METHOD_NO_COMPENSATOR, METHOD_MOE, CNN_BASELINE)
               if m in set(results["method"])]
    sub = results[(results["scope"] == "task") & (results["kind"] == kind) & results["metric"].isin(metrics)
                  & results["method"].isin(methods)]
    if sub.empty:
        raise ValueError(f"yardstick_table: no task results of kind {kind!r} "
                         f"(kinds here: {sorted(set(results['kind']))})")
    table = sub.pivot_table(index="task", columns=["metric", "method"], values="value", sort=False)
    table.loc["mean"] = table.mean()
    cols = [(m, meth) for m in metrics for meth in methods if (m, meth) in table.columns]
    return table[cols]


def target_check(table: pd.DataFrame) -> dict[str, float]:
    """The full method and stage I against the input and the CNN, from a :func:`yardstick_table`: the full
    method's mean PSNR gain over the input, on how many tasks its LPIPS (and stage I's) is below the input's, and
    its mean LPIPS minus the same-time CNN's (negative: the method is better)."""
    tasks = table.drop(index="mean")
    out = {"psnr_gain_db": float(table.loc["mean", ("psnr", METHOD_MOE)] - table.loc["mean", ("psnr", METHOD_LQ)])}
    if ("lpips", METHOD_MOE) in table.columns:
        out["lpips_better_tasks"] = int((tasks[("lpips", METHOD_MOE)] < tasks[("lpips", METHOD_LQ)]).sum())
        out["tasks"] = len(tasks)
        if ("lpips", METHOD_NO_COMPENSATOR) in table.columns:
            stage1 = tasks[("lpips", METHOD_NO_COMPENSATOR)] < tasks[("lpips", METHOD_LQ)]
            out["stage1_lpips_better_tasks"] = int(stage1.sum())
        if ("lpips", CNN_BASELINE) in table.columns:
            cnn = table.loc["mean", ("lpips", CNN_BASELINE)]
            out["lpips_minus_cnn"] = float(table.loc["mean", ("lpips", METHOD_MOE)] - cnn)
    return out


def flat_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`yardstick_table` with one ``task`` column and ``"<metric>: <method>"`` columns (for Markdown)."""
    flat = table.copy()
    flat.columns = [f"{metric}: {method}" for metric, method in table.columns]
    return flat.rename_axis("task").reset_index()
