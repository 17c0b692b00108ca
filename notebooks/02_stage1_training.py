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
# # 02 — Stage I: excavating task-customized diffusion priors (paper §3.4, §4.1, Eq. 2)
#
# MoE-DiffIR fine-tunes Stable Diffusion in **two stages** (§3.4, Fig. 3a). In **stage I** "only the
# MoE-Prompt Module is trained, while the VAE Codecs and UNet remain fixed": the prompt module reads the
# low-quality latent `z_lq`, its router (Eq. 3) mixes K of N prompt experts per token, and SPADE layers modulate
# the frozen UNet with the result. When on, the Visual2Text adapter and its quality enhancer (§3.3) train too.
# The loss is the plain latent-diffusion loss (Eq. 2):
#
# $$\mathcal{L}_{SD} = \mathbb{E}_{z_0, t, \epsilon \sim \mathcal{N}(0, 1)}\big[\|\epsilon - \epsilon_\theta(z_t, t, z_{lq})\|_2^2\big],
# \qquad z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon .$$
#
# §4.1: Adam (β = 0.9, 0.999), constant learning rate 5e-5, 256 px inputs with random flips and rotations,
# batch 32, 0.4 M steps. This notebook walks through one training step by hand, then calls the package
# (`moediffir.training.stage1.train_stage1`, the same function as `moediffir train stage1`), and plots the loss
# and the routing. The `smoke` profile trains tiny random networks for a few steps: its numbers show that the
# code path works and that the tiny model learns, **not** the method's quality.
#
# Headless: `papermill notebooks/02_stage1_training.ipynb out.ipynb -p profile smoke` from the repository root.
# It needs the benchmark of notebook 01 (`moediffir data build --profile smoke`).

# %% tags=["parameters"]
profile: str = "smoke"  # "smoke", "mini" or "paper"
overrides: dict = {}  # dotted config keys, e.g. {"stage1.max_steps": 100, "runs_dir": "runs"}
resume: bool = False  # continue from the newest stage-I checkpoint instead of training from scratch
progress: bool = True  # tqdm progress bar

# %%
from moediffir.notebook import setup_notebook

# before the heavy imports: it also quiets third-party notices (moediffir/utils/quiet.py)
cfg, random_weights, figures_dir, tables_dir, device = setup_notebook(profile, overrides)

import json

import numpy as np
import pandas as pd
import torch
from IPython.display import Image, display

from moediffir.provenance import figure_note
from moediffir.report import study_figures
from moediffir.report.figures import routing_checkpoint
from moediffir.report.training_figures import read_log
from moediffir.report.training_report import stage1_figures
from moediffir.training.pairs import PairedCropDataset, SampleKey, training_pairs
from moediffir.training.runtime import stage_dir
from moediffir.training.stage1 import encode_pair, train_stage1
from moediffir.utils.io import atomic_write_json

s1 = cfg.stage1
print(f"profile {cfg.profile}: backbone {cfg.model.backbone!r} ({'random' if random_weights else 'trained here' if cfg.prior.enabled else 'pretrained'} weights), "
      f"prompt design {cfg.model.prompt_design!r}, N={cfg.model.num_prompts} experts, top-K={cfg.model.top_k}")
print(f"stage I: {s1.max_steps} steps, batch {s1.batch_size} x accum {s1.grad_accum}, lr {s1.lr:g} "
      f"(Adam {tuple(s1.betas)}), {s1.crop_size} px crops, mixed precision {s1.mixed_precision!r} (CUDA only)")
print(f"benchmark {cfg.benchmark_dir} -> checkpoints {stage_dir(cfg, 'stage1')} -> results {cfg.profile_results_dir}")

# %% [markdown]
# ## Step 1 — training pairs: one manifest row is one (LQ, GT, label) triple
#
# The training set is every seen task (7 codecs × 3 levels, labels 0–20) of every training image. The dataset
# reads **one row** of the benchmark manifest per item, so the label always travels with its own image (the
# released code shuffled images and labels in separate pools and lost this alignment). The same random crop,
# flip and rotation are applied to the LQ and the GT image.

# %%
pairs = training_pairs(cfg)
per_task = pairs.groupby(["label", "task"]).size().rename("pairs").reset_index()
print(f"{len(pairs)} training pairs over {pairs['task'].nunique()} seen task(s)")
display(per_task)

dataset = PairedCropDataset(cfg.benchmark_dir, pairs, s1.crop_size, augment=s1.augment)
example = dataset[SampleKey(0, 7, 0, 0)]
panels = [(f"LQ: {example['task']} (label {example['label']})", example["lq"]), ("GT", example["gt"])]
display(Image(str(study_figures.image_row(panels, figures_dir, "stage1_training_pair", height=2.2)[0])))

# %% [markdown]
# ## Step 2 — Eq. 2 by hand, on that pair
#
# The frozen VAE encoder turns the GT crop into `z_0` (a posterior sample) and the LQ crop into the condition
# `z_lq` (the posterior mean — exactly what the restoration pipeline uses at test time), both times the VAE's
# scaling factor. A timestep `t` and noise `ε` give `z_t` through the scheduler's `add_noise`; the denoiser
# predicts `ε` and the loss is their mean squared difference. Only the prompt side has gradients.

# %%
from moediffir.weights.builders import build_backbone, build_denoiser

torch.manual_seed(cfg.seed)
unet, vae, scheduler = build_backbone(cfg)
denoiser = build_denoiser(cfg, unet=unet).to(device).train()
vae.to(device)
lq, gt = example["lq"][None].to(device), example["gt"][None].to(device)  # (1, 3, c, c) in [0, 1]
with torch.no_grad():
    z_lq, z0 = encode_pair(vae, lq, gt)  # (1, 4, c/8, c/8) each
t = torch.tensor([500], device=device)
eps = torch.randn_like(z0)
z_t = scheduler.add_noise(z0, eps, t)  # sqrt(abar_t) z0 + sqrt(1 - abar_t) eps
abar = scheduler.alphas_cumprod[500].item()
pred = denoiser(z_t, t, z_lq, lq_image=lq, task_labels=torch.tensor([example["label"]], device=device))
loss = torch.nn.functional.mse_loss(pred, eps)
loss.backward()
print(f"latents {tuple(z0.shape)}, t = {t.item()}: abar_t = {abar:.4f}, so z_t keeps {np.sqrt(abar):.3f} of z0 "
      f"and {np.sqrt(1 - abar):.3f} of the noise; L_SD = {loss.item():.4f}")

parts = []
for name, module in [("UNet (frozen)", denoiser.unet), ("VAE (frozen)", vae)] + list(denoiser.trainable_modules().items()):
    n_all = sum(p.numel() for p in module.parameters())
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    n_grad = sum(p.numel() for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0)
    parts.append({"part": name, "parameters": n_all, "trainable": n_train, "with gradient now": n_grad})
display(pd.DataFrame(parts))
del denoiser, unet, vae, pred
if device == "cuda":
    torch.cuda.empty_cache()

# %% [markdown]
# ## Step 3 — train
#
# `train_stage1` runs that step `stage1.max_steps` times on shuffled batches with `accelerate` (CPU, one GPU, or
# `accelerate launch --multi_gpu --num_processes N` for DDP), logs loss, learning rate and routing statistics
# every `log_every` steps, writes an atomic checkpoint every `checkpoint_every` steps (exact resume with
# `resume=True` / `--resume`), and finally the model folder `<runs_dir>/<profile>/model` that the pipeline
# loads. It also measures Eq. 2 on a fixed batch with fixed noise and timesteps before and after training.

# %%
model_folder = train_stage1(cfg, resume=resume, overwrite=not resume, progress=progress)  # a rerun retrains
summary = json.loads((stage_dir(cfg, "stage1") / "summary.json").read_text())
print(f"model folder: {model_folder}")
print(f"fixed-batch L_SD: {summary['eval_loss_start']:.4f} before -> {summary['eval_loss_end']:.4f} after "
      f"{summary['steps']} steps ({summary['steps_per_s'] or float('nan'):.2f} steps/s on {summary['device']})")

# %% [markdown]
# ## Step 4 — loss curve and routing statistics
#
# Left: Eq. 2 per optimiser step and its moving mean. Right: the logged window mean and the mean per-token gate
# entropy `−Σ g log g` of the routers (log K for K equal gates, lower when the router commits). The heatmap
# shows, per seen task, the mean gate mass of each prompt expert and how often it is among the chosen top K —
# the task-customised prompt combinations of §3.2 appear here as different rows.

# %%
for png in [p for p in stage1_figures(cfg, figures_dir) if p.suffix == ".png"]:  # also what `moediffir report` redraws
    display(Image(str(png)))
records = read_log(stage_dir(cfg, "stage1"))

# %% [markdown]
# ## Step 5 — visual checkpoint: a routing decision and a restored crop
#
# The trained model folder loads into the restoration pipeline. For one LQ crop we sample `z_0` from noise
# (`sample.num_steps` steps), decode it with the plain VAE decoder (stage II adds the compensator), and show
# which expert each token's router ranked first at every scale (Eq. 3), with how many tokens have each expert among
# their top K. With the smoke profile's random backbone the restored crop is noise-like by construction.

# %%
from moediffir.pipelines.moediffir_pipeline import load_pipeline

pipe = load_pipeline(model_folder, device=device)
pipe.set_progress_bar_config(disable=True)
out = pipe(lq, num_inference_steps=cfg.sample.num_steps, generator=torch.Generator().manual_seed(cfg.seed),
           decoder="vae", output_type="pt",
           task_labels=[example["label"]] if pipe.prompt_module.uses_task_labels else None)
restored = out.images[0] if isinstance(out.images, list) else out.images  # (1, 3, c, c)
scales = out.routing[0]["scales"] if out.routing else []
routing_checkpoint([("LQ", lq[0]), ("stage I (plain VAE decode)", restored[0]), ("GT", gt[0])], scales, figures_dir,
                   "stage1_visual", "Stage I model", weights=figure_note(cfg))
display(Image(str(figures_dir / "stage1_visual.png")))

# %% [markdown]
# ## Step 6 — the numbers behind the figures
#
# The per-step losses, the routing table and the summary are saved next to the figures so they can be redrawn
# without training again.

# %%
numbers = {
    "profile": cfg.profile, "weights": "random" if random_weights else "trained here" if cfg.prior.enabled else "pretrained",
    "steps": summary["steps"], "steps_per_s": summary["steps_per_s"], "device": summary["device"],
    "eval_loss_start": summary["eval_loss_start"], "eval_loss_end": summary["eval_loss_end"],
    "final_window_loss": records[-1]["loss"], "final_gate_entropy": records[-1].get("gate_entropy"),
    "model_folder": str(model_folder),
}
atomic_write_json(tables_dir / "stage1_summary.json", numbers)
pd.Series(numbers)
