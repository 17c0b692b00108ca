# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 — Evaluation: restore the test sets, measure them, write the paper's tables and figures (§4.2, appendix B)
#
# The paper validates MoE-DiffIR "on five commonly used compressed test sets: LIVE1, Classic5, BSDS500, DIV2K
# Testset, and ICB", with **PSNR and SSIM as distortion metrics** and **LPIPS and FID as perceptual metrics**
# (§4.2); the appendix adds the no-reference **CLIP-IQA** and **MANIQA** ("IQA-PyTorch with model cards
# 'clipiqa+' and 'maniqa-pipal'", B.2). Every compression task is scored on its own; Table 1 reports, per codec,
# the "average on three distortions" (levels), Table 4 the average over the 21 seen tasks, and Tables 5–11 each
# level.
#
# **What is measured, and how (the conventions).** Papers disagree silently on details that move numbers by
# tenths of a dB, so the kit writes them next to every number (`conventions` column, table footnotes):
#
# - PSNR / SSIM on **RGB** by default, data range 0–255, no border crop; the Y channel of YCbCr (BT.601) and a
#   border crop are options (`eval.color_space = "y"`, `eval.crop_border`). SSIM uses the 11×11 Gaussian window
#   (σ = 1.5) of Wang et al.; on RGB it is the mean over channels.
# - LPIPS v0.1 with AlexNet (`eval.lpips_net`), on the full RGB image.
# - FID: InceptionV3 pool3 features, clean-fid resizing, between the restored images of one set and task and
#   their ground truths. With fewer images than feature dimensions (2048) FID is biased by the set size: compare
#   it only between sets of equal size (the tables say so).
# - CLIP-IQA+ and MANIQA score the restored image alone.
# - Networks that need pretrained weights load them from local files; in the `smoke` profile they run with
#   **random weights**, and every table and figure says that these numbers say nothing about the method.
#
# **Methods.** `moe-diffir` (the pipeline with the decoder compensator at `sample.fusion_weight`),
# `moe-diffir (no compensator)` (the same diffusion samples decoded by the plain VAE decoder: Table 4),
# `no restoration` (the compressed input itself), and any other method whose restored images you pass as
# `externals = {"PromptIR": "path/to/folder"}` (CLI: `moediffir evaluate --external PromptIR=DIR`), scored under
# exactly the same protocol.
#
# Headless: `papermill notebooks/06_evaluation.ipynb out.ipynb -p profile smoke` from the repository root. The
# notebook needs the benchmark of notebook 01 and the trained model of notebooks 02–03.

# %% tags=["parameters"]
profile: str = "smoke"  # "smoke", "mini" or "paper"
overrides: dict = {}  # dotted config keys, e.g. {"eval.max_images": 5, "eval.metrics": ["psnr", "ssim", "lpips"]}
model_dir: str = ""  # "" -> <runs>/<profile>/model (written by notebook 03)
externals: dict = {}  # other methods' restored images: {"PromptIR": "path/to/folder", ...}

# %%
from moediffir.notebook import setup_notebook

# before the heavy imports: it also quiets third-party notices (moediffir/utils/quiet.py)
cfg, random_weights, figures_dir, tables_dir, _ = setup_notebook(profile, overrides)

import pandas as pd
import torch
from IPython.display import Image, Markdown, display

from moediffir.evaluation import protocol
from moediffir.evaluation.evaluator import load_model, require_model_dir, run_evaluation
from moediffir.metrics import MetricConventions
from moediffir.metrics.fidelity import psnr
from moediffir.provenance import figure_note
from moediffir.report.figures import routing_checkpoint, weights_note
from moediffir.report.regenerate import regenerate_report
from moediffir.utils.io import read_image_rgb

conventions = MetricConventions.from_config(cfg)
print(f"profile {cfg.profile}: test sets {list(cfg.eval.test_sets)}, metrics {list(cfg.eval.metrics)}, "
      f"at most {cfg.eval.max_images or 'all'} image(s) per set and task, {cfg.sample.num_steps} "
      f"{cfg.sample.scheduler} steps, fusion weight w = {cfg.sample.fusion_weight}")
print("conventions:", conventions.to_text())

# %% [markdown]
# ## Step 1 — what will be evaluated
#
# The items are the benchmark's test rows (manifest of notebook 01): every test set × task, seen and unseen,
# the first `eval.max_images` images of each (`eval.tasks` can restrict the tasks: the smoke profile keeps a few,
# because MANIQA alone costs seconds per image on a CPU). The model folder must exist.

# %%
folder = require_model_dir(model_dir or None, cfg)  # names notebooks 02/03 when the model is missing
items = protocol.select_items(cfg.benchmark_dir, list(cfg.eval.test_sets), list(cfg.eval.tasks) or None,
                              cfg.eval.max_images, cfg.data.preset, strict=False)
if items.attrs["skipped_tasks"]:
    print("not built, skipped:", items.attrs["skipped_tasks"])
display(items.groupby(["set", "task", "kind"], sort=False).agg(images=("stem", "count"), bpp=("bpp", "mean"),
                                                                lq_psnr=("lq_psnr", "mean")))

# %% [markdown]
# ## Step 2 — one crop through the pipeline, and its routing decision
#
# Before the full run, one LQ crop (one tile: `sample.tile_size` pixels) goes through the pipeline. The router
# of each scale of the MoE-Prompt module picks, for every token, the top-K of the N prompt experts (Eq. 3); the
# map below shows the expert with the largest gate at each token, and the bars how often each expert is among
# the top K. No oracle task label is used: routing is blind (degradation-aware), as in the paper.

# %%
pipe = load_model(folder, cfg)
first = items.iloc[0]
lq_full = read_image_rgb(cfg.benchmark_dir / first.path)
gt_full = read_image_rgb(cfg.benchmark_dir / first.gt_path)
side = min(cfg.sample.tile_size, *lq_full.shape[:2]) // pipe.pixel_multiple * pipe.pixel_multiple
top, left = (lq_full.shape[0] - side) // 2, (lq_full.shape[1] - side) // 2
lq, gt = (a[top:top + side, left:left + side] for a in (lq_full, gt_full))
seed = protocol.image_seed(cfg.seed, first.set, first.task, first.stem)
out = pipe([lq], num_inference_steps=cfg.sample.num_steps, generator=[torch.Generator().manual_seed(seed)],
           output_type="np")
restored, scales = out.images[0], out.routing[0]["scales"]
routing_checkpoint([(f"LQ {first.task}\n{psnr(lq, gt):.2f} dB", lq), (f"restored\n{psnr(restored, gt):.2f} dB", restored),
                    ("GT", gt)], scales, figures_dir, "evaluation_checkpoint",
                   f"{first.set}/{first.stem}, {side}x{side} crop", weights=figure_note(cfg))
display(Image(str(figures_dir / "evaluation_checkpoint.png")))
del pipe

# %% [markdown]
# ## Step 3 — the evaluation
#
# `run_evaluation` restores every item once per batch (seeded per image, so a rerun or a resumed run gives the
# same bytes; finished images are verified by checksum and skipped), decodes each sample with and without the
# compensator, scores every method the same way, aggregates per task, codec (mean over levels) and kind (mean
# over the seen tasks), and writes `results/<profile>/metrics/`; `regenerate_report` then draws every table and
# figure from those saved numbers (what `moediffir report` does).

# %% [markdown]
# ### Yardsticks (where the prior was trained here: `eval.yardsticks`, on in `mini`)
#
# A prior trained for minutes bounds what any method built on it can do, so two references are scored with the
# same metrics as external methods: the prior's **VAE ceiling** `D(E(GT))` and a small **residual CNN** trained on
# the same crops for as long as stage I took, with the mean-squared error that PSNR rewards (not part of the paper;
# a plain non-diffusion yardstick).

# %%
if cfg.eval.yardsticks:
    from moediffir.studies.yardsticks import build_yardsticks

    externals = {**build_yardsticks(cfg, items), **externals}

# %%
result = run_evaluation(cfg, folder, externals)
report_paths = regenerate_report(cfg, result.out_dir)  # every table and figure, from the numbers just saved
results = result.results
display(results[results.scope == "codec"].pivot_table(index=["method", "set", "codec", "kind"], columns="metric",
                                                      values="value", sort=False))

# %% [markdown]
# ## Step 4 — the tables (ours, then the paper's value and our difference where the paper has one)

# %%
for name in ["table1", "table4"] + sorted(p.stem for p in tables_dir.glob("table_levels_*.md")):
    if (tables_dir / f"{name}.md").is_file():
        display(Markdown((tables_dir / f"{name}.md").read_text()))

# %% [markdown]
# ### Per task: input, VAE ceiling, stage I alone, stage I + compensator, CNN
#
# `moe-diffir (no compensator)` is stage I alone (the plain VAE decoder), `moe-diffir` the full method (stage II's
# compensator at fusion weight w). The `target` line compares the full method's mean with the input's (PSNR gain,
# tasks where LPIPS fell), counts the tasks where stage I alone lowers LPIPS, and gives the full method's mean
# LPIPS minus the same-time CNN's. Seen tasks first, then the unseen ones (§4.2): unseen degrees (JPEG QF 25, VVC
# QP 32/52) and the unseen type (AVC).

# %%
if cfg.eval.yardsticks:
    from moediffir.report.output import write_table
    from moediffir.studies.yardsticks import flat_table, target_check, yardstick_table

    label = weights_note(figure_note(cfg))
    for kind in dict.fromkeys(results.loc[results["scope"] == "task", "kind"]):  # seen, unseen_degree, unseen_type
        table = yardstick_table(results, kind)
        write_table(flat_table(table), tables_dir / f"yardsticks_{kind}",
                    f"{kind.replace('_', ' ').capitalize()} tasks: input, VAE ceiling, stage I, full, CNN", notes=[label],
                    digits={c: 4 for c in flat_table(table).columns if c.startswith(("ssim", "lpips"))})
        display(table.round(3))
        print(f"{kind} target:", target_check(table))

# %% [markdown]
# ## Sampler study: PSNR and LPIPS against sampler steps (`eval.sampler_study_steps`)
#
# The paper samples with 200 DDPM steps (§4.1). The same items restored with DDIM and DPM-Solver++ at fewer steps
# show what a user gives up for speed; the fewest steps within 0.1 dB of DDPM-200 are named below.

# %%
if cfg.eval.sampler_study_steps:
    from moediffir.metrics import MetricSuite
    from moediffir.report import study_figures
    from moediffir.studies.sampler_study import fewest_steps_within, sampler_settings, sampler_study
    from moediffir.utils.io import atomic_write_csv

    study_items = items[items["task"] == cfg.eval.sampler_study_task].head(cfg.eval.sampler_study_images)
    study = sampler_study(load_model(folder, cfg), MetricSuite.from_config(cfg), study_items, cfg.benchmark_dir,
                          sampler_settings(200, cfg.eval.sampler_study_steps), seed=cfg.seed)
    atomic_write_csv(tables_dir / "sampler_study.csv", study)
    display(study.round(4))
    print("fewest steps within 0.1 dB of DDPM-200:", fewest_steps_within(study, 0.1))
    display(Image(str(study_figures.sampler_study(study, cfg.eval.sampler_study_task, figures_dir)[0])))

# %% [markdown]
# ## Where the denoiser stands, noise level by noise level (Eq. 2)
#
# Every prediction of the prompted UNet implies a one-step estimate of the clean latent, `ẑ_0(z_t, t, z_lq)`. Below,
# the ground truth's latent is noised to `t` and the estimate decoded and scored (PSNR, the sampler-study images):
# near `t = 999` it is what the model infers from the LQ condition alone (a model that uses `z_lq` well reaches
# at least `D(z_lq)`, the LQ latent decoded without diffusion); at small `t` it is the denoiser's own precision,
# bounded by the VAE ceiling. When the full sampler falls short of the input, this says which end is to blame.

# %%
if cfg.eval.yardsticks:
    from moediffir.studies.denoiser_probe import z0_estimates
    from moediffir.utils.io import atomic_write_csv

    probe_items = items[items["task"] == cfg.eval.sampler_study_task].head(cfg.eval.sampler_study_images)
    pairs = [(read_image_rgb(cfg.benchmark_dir / r.path), read_image_rgb(cfg.benchmark_dir / r.gt_path))
             for r in probe_items.itertuples(index=False)]
    probe_pipe = load_model(folder, cfg)
    m = probe_pipe.pixel_multiple  # whole latent grid of every prompt scale
    pairs = [(lq[: lq.shape[0] // m * m, : lq.shape[1] // m * m], gt[: gt.shape[0] // m * m, : gt.shape[1] // m * m])
             for lq, gt in pairs]
    probe = z0_estimates(probe_pipe.denoiser, probe_pipe.vae, probe_pipe.scheduler, pairs, seed=cfg.seed)
    atomic_write_csv(tables_dir / "denoiser_probe.csv", probe)
    display(probe.groupby("t", sort=False)["psnr"].mean().round(2).to_frame(
        f"PSNR of D(ẑ_0) on {cfg.eval.sampler_study_task} ({weights_note(figure_note(cfg))})"))

# %% [markdown]
# ## What the compensator takes from the latent (§3.4 stage II, Eq. 4)
#
# The compensator decodes a sampled latent together with the LQ image's features. Decoding latents of known
# quality instead, the ground truth's own `E(GT)` and the LQ image's `E(LQ)`, shows which input it leans on. With
# the plain decoder, `E(GT)` gives the VAE ceiling and `E(LQ)` about the input. A compensator that reads its
# latent comes near the ceiling on `E(GT)`; one that scores about the same on both latents restores from the LQ
# features alone, so better samples from stage I would not raise the full method.

# %%
if cfg.eval.yardsticks:
    from moediffir.metrics import MetricSuite
    from moediffir.studies.compensator_probe import decoder_estimates, decoder_table

    probe_suite = MetricSuite.from_config(cfg, ["psnr", "lpips"])
    decoded = decoder_estimates(probe_pipe, probe_suite, pairs)
    atomic_write_csv(tables_dir / "compensator_probe.csv", decoded)
    for metric in ("psnr", "lpips"):
        display(decoder_table(decoded, metric).round(3).rename_axis(
            f"{metric} on {cfg.eval.sampler_study_task} ({weights_note(figure_note(cfg))})"))

# %% [markdown]
# ## One sample against the mean of many (§3.4, sampling Eq. 2)
#
# The method restores with *one* sample of `p(z_0 | z_lq)`. A sampler that draws from the true posterior loses
# 3 dB of PSNR to the posterior mean `E[x | y]` (the sample and the ground truth are two independent draws given
# the LQ image, so a sample's squared error is twice the mean's), in exchange for a sharp, plausible image. Below,
# `eval.sample_spread_samples` samples of each study image are decoded by the plain decoder (stage I alone) and
# by the compensator (the full method); their average, and the posterior mean extrapolated from the two, show
# whether a sample falls short of the input because the model knows less than the input, or because it samples.

# %%
if cfg.eval.yardsticks and cfg.eval.sample_spread_samples:
    from moediffir.studies.sample_spread import sample_spread, spread_table

    spread = sample_spread(probe_pipe, probe_suite, pairs, cfg.eval.sample_spread_samples, seed=cfg.seed,
                           decoders=("vae", "compensator"))
    atomic_write_csv(tables_dir / "sample_spread.csv", spread)
    for metric in ("psnr", "lpips"):
        display(spread_table(spread, metric).round(3).rename_axis(
            f"{metric} on {cfg.eval.sampler_study_task} ({weights_note(figure_note(cfg))})"))

# %% [markdown]
# ## Which latent channels stage I gets wrong (§3.1 latent space, §3.4 sampling)
#
# Stage I's output is a latent, drawn by the plain decoder. Below, one group of a stage-I sample's channels at a
# time is replaced by that group of the ground truth's latent `E(GT)` (what the group costs) or of the compressed
# image's `E(LQ)` (whether stage I keeps what the input already had there). In the `mini` latent space the
# channels are principal components ordered by energy: channels 1-2 hold the patches' colour and coarse shape, the
# last ones their finest detail. The last row swaps everything but the finest detail: if stage I kept the input's
# coarse content and drew only its own fine detail, would it beat the input?

# %%
if cfg.eval.yardsticks:
    from moediffir.studies.channel_swap import channel_swaps, swap_table

    swaps = channel_swaps(probe_pipe, probe_suite, pairs, seed=cfg.seed)
    atomic_write_csv(tables_dir / "channel_swap.csv", swaps)
    for metric in ("psnr", "lpips"):
        display(swap_table(swaps, metric).round(3).rename_axis(
            f"{metric} on {cfg.eval.sampler_study_task} ({weights_note(figure_note(cfg))})"))
    del probe_pipe, probe_suite  # the probes' model and metrics, built once for the four of them

# %% [markdown]
# ## Step 5 — the figures
#
# Visual comparison grids (Fig. 4 style: LQ / restored / GT crops per codec and level), rate against quality,
# the cosine similarity of the prompt matrices of every scale (Fig. 8: MoE prompts should stay dissimilar), and
# the expert usage per task gathered while restoring. Each figure's numbers are saved beside it, and
# `moediffir report --profile <profile>` redraws all of them, byte for byte, from `results/<profile>/metrics/`
# without the model or the images.

# %%
for png in sorted(figures_dir.glob("*.png")):
    if png.stem.startswith(("fig4_visual_", "fig8_", "bpp_quality", "expert_usage")):
        print(png.name)
        display(Image(str(png)))

# %% [markdown]
# ## Step 6 — what ran

# %%
summary = pd.Series({
    "items": len(items), "methods": ", ".join(sorted(set(results.method))),
    "restored now / kept": {m: (s.restored, s.kept) for m, s in result.restore_stats.items()},
    "externals": {n: m.summary() for n, m in result.externals.items()} or "none",
    "metric weights": conventions.weights_label, "results": str(result.metrics_dir / "results.csv"),
    "table and figure files": len(report_paths),
})
display(summary.to_frame("value"))
