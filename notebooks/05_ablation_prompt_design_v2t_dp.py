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
# # 05 — Ablation: prompt designs, the Visual2Text adapter and the degradation prior (paper §4.3, Tables 2-3)
#
# **Table 2 — how should prompts interact with the features?** The paper compares four designs (§3, Fig. 2),
# each a stage-I model with the same frozen Stable Diffusion backbone:
#
# | design | what the prompt generator does at each scale |
# |---|---|
# | `none` — No Prompt | nothing: the SPADE layers see the LQ features alone |
# | `single` — Single Prompt | one learnable prompt for every image and task |
# | `multi` — Multiple Prompts | N prompts mixed with soft weights (PromptIR style): all of them on every token |
# | `moe` — MoE-Prompt (ours) | N prompts, a noisy top-K router picks K per token (Eq. 3) |
#
# They are compared on the **21 seen tasks** (LIVE1, BSDS500, DIV2K) and on **unseen tasks**: *cross-degree*
# (a seen codec at unseen levels: VVC QP 32 and 52, on LIVE1) and *cross-type* (a codec never seen in training:
# AVC at QP 37/42/47, on ICB). The paper finds: without prompts the model tells distortions apart worst (notably
# on unseen tasks); one prompt cannot model 21 tasks; MoE-Prompt beats the soft-weighted pool by ~0.05 dB on the
# 21 tasks and lowers LPIPS by ~5% and FID by ~4 — prompts shared through routing capture task-specific priors
# better.
#
# **Table 3 — what do the two extra inputs add?** MoE-Prompt with and without the **Visual2Text adapter** (V2T,
# §3.3: CLIP image features of the LQ image, enhanced, turned into the text context of SD's cross-attention)
# and the **degradation prior** (DP, §3.2: DA-CLIP degradation features that the router cross-attends to). The
# paper: V2T lowers LPIPS by 3-5% and FID by 1-3 (perceptual quality), DP adds ~0.07 dB PSNR (fidelity).
#
# Each row is a **variant** of a resumable **sweep** (`moediffir.ablation`), keyed by a hash of its resolved
# config: finished runs are reused and an interrupted sweep resumes where it stopped. Table 2's MoE-Prompt and
# Table 3's bare MoE-Prompt are the same model (the paper's two tables repeat its numbers), so it is trained once
# and only evaluated twice. Command line: `moediffir sweep prompt_design` and `moediffir sweep v2t_dp`.
#
# **In the `smoke` profile** every variant is a tiny random-weight network trained for a few steps, the DP and
# V2T encoders are random too, and the unseen columns use JPEG QF 25 and AVC on the bundled images: the tables
# show the pipeline working end to end, **not** what the method does — every table says so. The paper's numbers
# need the `paper` profile on a GPU.

# %% tags=["parameters"]
profile: str = "smoke"  # "smoke", "mini" or "paper"
overrides: dict = {}  # dotted config keys, e.g. {"ablation.train_steps": 4, "ablation.tasks": ["jpeg_q10", "avc_qp37"]}
progress: bool = False  # training progress bars
routing_variant: str = "moe_v2t_dp"  # the Table 3 variant whose routing is shown at the end

# %%
from moediffir.notebook import setup_notebook

# before the heavy imports: it also quiets third-party notices (moediffir/utils/quiet.py)
cfg = setup_notebook(profile, overrides).cfg

import pandas as pd
from IPython.display import Image, Markdown, display

from moediffir.ablation.sweep import load_sweep_results, run_sweep, sweep_status
from moediffir.ablation.variants import build_sweep
from moediffir.report import ablations as rep

a = cfg.ablation
designs = build_sweep("prompt_design", cfg)
v2t_dp = build_sweep("v2t_dp", cfg)
print(f"profile {cfg.profile}: {a.train_steps} training steps per variant; Table 2 seen sets {list(a.design_sets)}, "
      f"cross-degree {a.cross_degree_set} ({'/'.join(a.cross_degree_codecs)}), cross-type {a.cross_type_set}; "
      f"Table 3 sets {list(a.v2t_dp_sets)}" + (f"; tasks limited to {list(a.tasks)}" if a.tasks else ""))

# %% [markdown]
# ## Step 1 — Table 2's variants
#
# The four designs, with the evaluation each run will do. Which tasks exist depends on the benchmark that
# notebook 01 built: a set or kind that was not built is skipped and the table's footnote names it.

# %%
display(sweep_status(cfg, designs).drop(columns=["folder"]))
pd.DataFrame([{"evaluation": e.name, "sets": ", ".join(e.sets), "kinds": ", ".join(e.kinds),
               "codecs": ", ".join(e.codecs) or "any"} for e in designs.evaluations])

# %% [markdown]
# ## Step 2 — run the prompt-design sweep and draw Table 2
#
# Each cell reads `ours ± half (paper; ours − paper)`. The paper's value appears only where our column is the
# paper's (same test set and the same kind of unseen task).
#
# **How sure is a difference?** `±` is half a 95 % bootstrap interval over the test images
# (`moediffir.ablation.spread`, docs/design.md §9): the images are drawn again with replacement 1000 times and
# every cell recomputed (exact bounds: columns `ci_lo`, `ci_hi` of the CSV). The table printed under it gives
# each design's **paired** difference to MoE-Prompt, `difference [lo, hi]`, from the same draws for both
# models, so what the images share cancels. **A difference whose paired interval contains 0 is not
# distinguishable from noise at this number of images** (the `mini` profile scores 6 test images per task).
# FID is one number per set and task, with no per-image value: it has no interval.

# %%
report2 = run_sweep(cfg, designs, progress=progress)
paths2 = rep.write_sweep_report(cfg, "prompt_design")
display(Markdown(next(p for p in paths2 if p.suffix == ".md").read_text()))

# %% [markdown]
# ## Step 3 — run the V2T / DP sweep and draw Table 3
#
# The bare MoE-Prompt model is the one Table 2 trained (same train key): it is only evaluated on Table 3's sets.
# The paired differences are taken to it, so each row says what adding V2T and / or DP changes, and whether
# that change stands out from the noise of this many images (its interval excludes 0).

# %%
display(sweep_status(cfg, v2t_dp).drop(columns=["folder"]))
report3 = run_sweep(cfg, v2t_dp, progress=progress)
paths3 = rep.write_sweep_report(cfg, "v2t_dp")
display(Markdown(next(p for p in paths3 if p.suffix == ".md").read_text()))

# %% [markdown]
# ## Step 4 — checkpoint: did every variant train, and how does the full model route?
#
# The training loss of each variant on one fixed batch, before and after its training steps (a variant whose loss
# did not move did not learn), then the expert usage per task of one MoE variant: the share of top-K slots each
# prompt expert takes, per task and scale.

# %%
rows = []
for name in ("prompt_design", "v2t_dp"):
    _, meta = load_sweep_results(cfg, name)
    for v in meta["variants"]:
        rows.append({"sweep": name, "variant": v["variant"], "label": v["label"], "state": v["state"],
                     "train_key": v["train_key"], "loss before": v.get("eval_loss_start"),
                     "loss after": v.get("eval_loss_end"), "weights": v["weights_label"]})
pd.DataFrame(rows)

# %%
if routing_variant in {v.name for v in v2t_dp.variants}:
    routing_paths = rep.routing_usage(cfg, "v2t_dp", routing_variant)
    display(Image(filename=str(next(p for p in routing_paths if p.suffix == ".png"))))
else:
    print(f"variant {routing_variant!r} is not in Table 3's sweep; choose one of {[v.name for v in v2t_dp.variants]}")

# %%
print(report2.summary())
print(report3.summary())
print("written:", *[str(p) for p in paths2 + paths3], sep="\n  ")
