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
# # 03 — Stage II: the decoder compensator (paper §3.4, §4.1, Eq. 4)
#
# Stage I gives a latent `z_0` that carries task-customised diffusion priors, but the frozen VAE decoder "does
# not align well with varying scenarios": at high compression the decoded image drifts from the input's
# structure. In **stage II** "all modules are fixed except for the VAE decoder", which is "augment[ed] with
# some low-quality information" (§3.4, Fig. 3d). The loss is a perceptual one against the ground truth (Eq. 4):
#
# $$L_{Decoder} = \mathcal{L}_{lpips}\big[\,\mathcal{D}(z_0, z_{lq}),\ hr\,\big].$$
#
# §4.1: "we generate 70,000 latent images using the weights from the first stage and train the decoder with the
# corresponding LQ images and ground truth images", lr 1e-4, 0.1 M steps. As in StableSR (which the paper and
# its released code follow), the decoder keeps its weights and gains **CFW fusion layers** that mix VAE-encoder
# features of the LQ image into the decoder at two resolutions with a weight `w`; L1 and a small hinge-GAN term
# can join LPIPS (each weight is in the config: `stage2.lpips_weight`, `l1_weight`, `gan_weight`).
#
# The notebook needs the stage-I model of notebook 02. Headless:
# `papermill notebooks/03_stage2_training.ipynb out.ipynb -p profile smoke` from the repository root.

# %% tags=["parameters"]
profile: str = "smoke"  # "smoke", "mini" or "paper"
overrides: dict = {}  # dotted config keys, e.g. {"stage2.max_steps": 50, "runs_dir": "runs"}
resume: bool = False  # continue from the newest stage-II checkpoint instead of training from scratch
progress: bool = True  # tqdm progress bars

# %%
from moediffir.notebook import setup_notebook

# before the heavy imports: it also quiets third-party notices (moediffir/utils/quiet.py)
cfg, random_weights, figures_dir, tables_dir, device = setup_notebook(profile, overrides)

import json

import pandas as pd
import torch
from IPython.display import Image, display

from moediffir.models.latent_scaling import unscale_latents
from moediffir.report import study_figures
from moediffir.report.figures import RANDOM_TITLE
from moediffir.report.training_report import stage2_figures
from moediffir.training.runtime import model_dir, stage_dir
from moediffir.training.stage2 import train_stage2
from moediffir.training.stage2_data import LatentShardDataset, generate_stage2_data
from moediffir.utils.io import atomic_write_json

s2 = cfg.stage2
print(f"profile {cfg.profile}: {s2.num_latents} latents ({s2.sample_steps or cfg.sample.num_steps} "
      f"{cfg.sample.scheduler} steps each), {s2.max_steps} steps, batch {s2.batch_size}, lr {s2.lr:g}")
print(f"loss = {s2.lpips_weight:g} LPIPS + {s2.l1_weight:g} L1 + {s2.gan_weight:g} hinge-GAN (from step "
      f"{s2.gan_start_step}); LPIPS weights {cfg.eval.metric_weights!r}; model folder {model_dir(cfg)}")

# %% [markdown]
# ## Step 1 — latents of the stage-I model
#
# For `stage2.num_latents` LQ crops of the training pairs (fixed, seeded crops; the latent belongs to that exact
# crop, so no flips here) the stage-I pipeline samples `z_0` from pure noise — the latents the decoder will see
# at test time. They are written in shards, each atomically with its own seeded generator, so an interrupted run
# continues where it stopped and reproduces the same data (`moediffir stage2-data`).

# %%
data_dir = generate_stage2_data(cfg, progress=progress)
data = LatentShardDataset(data_dir)
first = data[0]
print(f"{len(data)} latents in {data.meta['num_shards']} shard(s) under {data_dir}: LQ/GT {tuple(first['lq'].shape)}, "
      f"z0 {tuple(first['z0'].shape)}")
display(pd.Series([data[i]["label"] for i in range(len(data))]).value_counts().rename("latents per label").to_frame())

# %% [markdown]
# ## Step 2 — train the compensator
#
# Each step decodes a batch of `z_0` with the compensator at `w = stage2.train_fusion_weight` (the LQ image's
# encoder features fused in), and minimises the weighted LPIPS + L1 (+ generator hinge) loss to the GT; a PatchGAN
# discriminator learns the hinge loss on the same batch once the GAN term starts. Only the fusion layers (and
# the discriminator) train; the VAE copy inside stays frozen. The result is added to the model folder.

# %%
model_folder = train_stage2(cfg, resume=resume, overwrite=not resume, progress=progress)  # a rerun retrains
summary = json.loads((stage_dir(cfg, "stage2") / "summary.json").read_text())
comparison = pd.DataFrame({"before": summary["start"], "after": summary["end"]})
print(f"model folder: {model_folder} ({summary['steps']} steps, {summary['steps_per_s'] or float('nan'):.2f} steps/s "
      f"on {summary['device']}); LPIPS {summary['lpips_net']}")
display(comparison)

# %% [markdown]
# ## Step 3 — loss curves and plain vs compensated decoding
#
# `l1_plain` is the frozen VAE decoder (`w = 0`, identical before and after: it is not trained); `l1_w…` the
# compensated decoder at that weight. The fusion layers start at zero, so before training both coincide.

# %%
for png in [p for p in stage2_figures(cfg, figures_dir) if p.suffix == ".png"]:  # also what `moediffir report` redraws
    display(Image(str(png)))

# %% [markdown]
# ## Step 4 — visual checkpoint: one restored crop at several fusion weights
#
# The pipeline now loads the compensator from the model folder. We decode the same stage-I latent of one
# training crop with `w = 0` (plain decoder), the sampling default `sample.fusion_weight`, and `w = 1`.

# %%
from moediffir.pipelines.moediffir_pipeline import load_pipeline

pipe = load_pipeline(model_folder, device=device)
assert pipe.compensator is not None, "the model folder should hold the stage-II compensator"
z = unscale_latents(pipe.vae, first["z0"][None].to(device))  # (1, 4, h, w) as the VAE decoder takes them
lq = first["lq"][None].to(device)  # (1, 3, H, W) in [0, 1]
weights = sorted({0.0, cfg.sample.fusion_weight, 1.0})
with torch.no_grad():
    decoded = [((pipe.compensator.decode(z, lq_image=lq * 2 - 1, w=w).float().cpu() + 1) / 2).clamp(0, 1)
               for w in weights]
panels = [("LQ", first["lq"])] + [(f"w = {w:g}" + (" (plain)" if w == 0 else ""), d[0]) for w, d in zip(weights, decoded)]
panels.append(("GT", first["gt"]))
title = "Stage II decoding of a stage-I latent" + (f" ({RANDOM_TITLE})" if random_weights else "")
display(Image(str(study_figures.image_row(panels, figures_dir, "stage2_visual", height=2.3, title=title)[0])))
l1 = {f"w={w:g}": float((d - first["gt"][None]).abs().mean()) for w, d in zip(weights, decoded)}
print("L1 to GT of this crop:", {k: round(v, 4) for k, v in l1.items()})

# %% [markdown]
# ## Step 5 — the numbers behind the figures

# %%
numbers = {
    "profile": cfg.profile, "weights": "random" if random_weights else "trained here" if cfg.prior.enabled else "pretrained", "lpips": summary["lpips_net"],
    "steps": summary["steps"], "steps_per_s": summary["steps_per_s"], "device": summary["device"],
    "num_latents": len(data), **{f"start_{k}": v for k, v in summary["start"].items()},
    **{f"end_{k}": v for k, v in summary["end"].items()}, **{f"visual_l1_{k}": v for k, v in l1.items()},
    "model_folder": str(model_folder),
}
atomic_write_json(tables_dir / "stage2_summary.json", numbers)
pd.Series(numbers)
