# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 — Ablation: how many prompts N, and how many per token K (paper §4.3, Fig. 6)
#
# The **MoE-Prompt Module** (paper §3.2, Fig. 2b) keeps, at each of its four scales, a pool of **N prompts** —
# learnable 256 x 256 matrices `P_1 ... P_N`, the "experts". For every token `x` of the LQ latent a **noisy
# top-K router** scores the N prompts, keeps the **K** best (`TopK(Softmax(x W_g + noise))`, Eq. 3) and applies
# their gate-weighted sum, `x · Σ_k g_k P_k`. N decides how many distortion "specialists" the model can hold;
# K decides how many of them cooperate on one token.
#
# The paper's ablation (§4.3, Fig. 6) trains one model per setting and reports PSNR and LPIPS on LIVE1:
#
# * **(a) N ∈ {1, 4, 7, 11, 14, 17, 21}** (21 = the number of seen tasks, one prompt per task at most). With
#   N = 1 one prompt must serve 21 distortions and both metrics are poor; quality rises with N, peaks near
#   **N = 7** (N = 11 is similar) and then declines: too many prompts are under-used and harder to learn.
# * **(b) K ∈ {1, 3, 5, 7} at N = 7.** K = 1 gives the highest PSNR but the worst LPIPS: one prompt per token
#   cannot combine knowledge; the best perceptual quality is at **K = 3-5**. The paper keeps **N = 7, K = 3**.
#
# Here each setting is a **variant** of one **sweep** (`moediffir.ablation`): a dict of config overrides on
# top of the profile, trained with stage I (`train_stage1`) and evaluated with the kit's evaluator on the seen
# tasks of `ablation.test_set`. A variant's run is keyed by a hash of its resolved config, so finished runs are
# reused, an interrupted sweep resumes where it stopped (a half-trained model continues from its checkpoint),
# and `N = 7, K = 3` — a point of both curves — is trained and evaluated once. The same sweep runs from the
# command line: `moediffir sweep prompts_nk --profile smoke`.
#
# **In the `smoke` profile** every variant is a tiny random-weight network trained for a few steps on a few
# 64 px crops: the curves show that the pipeline works end to end, **not** what the method does. Every figure
# and table says so. The paper's numbers need the `paper` profile (0.4 M steps per variant on a GPU).

# %% tags=["parameters"]
profile: str = "smoke"  # "smoke", "mini" or "paper"
overrides: dict = {}  # dotted config keys, e.g. {"ablation.n_values": [1, 7], "ablation.tasks": ["jpeg_q10"]}
progress: bool = False  # training progress bars
routing_variant: str = "N7"  # the variant whose routing is shown at the end

# %%
from moediffir.notebook import setup_notebook

# before the heavy imports: it also quiets third-party notices (moediffir/utils/quiet.py)
cfg = setup_notebook(profile, overrides).cfg

from IPython.display import Image, Markdown, display

from moediffir.ablation.sweep import run_sweep, sweep_status
from moediffir.ablation.variants import build_sweep
from moediffir.report import ablations as rep

sweep = build_sweep("prompts_nk", cfg)
a = cfg.ablation
print(f"profile {cfg.profile}: N in {list(a.n_values)} (K = min({a.nk_top_k}, N)), K in {list(a.k_values)} at "
      f"N = {cfg.model.num_prompts}; {a.train_steps} training steps per variant; test set {a.test_set}")

# %% [markdown]
# ## Step 1 — the variants and their run keys
#
# Each row is one variant: its overrides, its **run key** (what is trained *and* how it is evaluated) and its
# **train key** (what is trained). Rows with the same key are one run. `state` is `done` for runs finished
# earlier (reused as they are), `trained` when only the evaluation is missing, `partial` when a checkpoint
# exists, `pending` otherwise.

# %%
sweep_status(cfg, sweep).drop(columns=["folder"])

# %% [markdown]
# ## Step 2 — run the sweep
#
# Runs that are not finished train (or resume) and are evaluated; the tidy results of every variant are gathered
# into `results/<profile>/ablations/prompts_nk.csv`, one row per variant x task x metric with the variant's
# N and K as columns, and the score of every test image behind them into `prompts_nk_per_image.csv` (the input
# of the intervals of Step 3).

# %%
report = run_sweep(cfg, sweep, progress=progress)
results = report.results
results[["variant", "num_prompts", "top_k", "set", "task", "metric", "value", "weights_label"]].head(12)

# %% [markdown]
# ## Step 3 — Fig. 6
#
# Each point is the mean over the seen tasks of PSNR (left axis) and LPIPS (right axis, lower is better).
# The same numbers are written as a table (CSV, Markdown, LaTeX); the paper gives Fig. 6 as a plot only, so its
# reading is quoted in the footnote instead of a paper column.
#
# **How sure is a difference?** The error bars and the `±` of the table are a 95 % bootstrap interval over the
# test images (`moediffir.ablation.spread`, docs/design.md §9): the images are drawn again with replacement
# 1000 times and the point recomputed. The second table gives each variant's **paired** difference to N = 7,
# K = 3 — the same draws for both models, so what the images share (an easy image is easy for every variant)
# cancels. Read it this way: **a difference whose paired interval contains 0 is not distinguishable from noise
# at this number of images** (the `mini` profile scores 6 test images per task); two bars that overlap can
# still differ clearly when their paired interval excludes 0.

# %%
paths = rep.write_sweep_report(cfg, "prompts_nk")
display(Image(filename=str(next(p for p in paths if p.suffix == ".png"))))
display(Markdown(next(p for p in paths if p.suffix == ".md").read_text()))

# %% [markdown]
# ## Step 4 — checkpoint: which prompts does each task use?
#
# The router's decisions for one variant, recorded while its test images were restored: for each task (rows)
# and prompt expert (columns), the share of top-K slots that expert took, one heatmap per scale. A healthy MoE
# uses several experts and uses them differently for different tasks; a collapsed router sends every token to
# the same few. (In `smoke` the router has seen a few steps of training: expect little structure.)

# %%
if routing_variant in {v.name for v in sweep.variants}:
    routing_paths = rep.routing_usage(cfg, "prompts_nk", routing_variant)
    display(Image(filename=str(next(p for p in routing_paths if p.suffix == ".png"))))
else:
    print(f"variant {routing_variant!r} is not part of this sweep; choose one of {[v.name for v in sweep.variants]}")

# %%
print(report.summary())
print("written:", *[str(p) for p in paths], sep="\n  ")
