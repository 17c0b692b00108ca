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
# # 01 — The CIR benchmark (paper §3.5)
#
# MoE-DiffIR is trained and tested on a **universal compressed image restoration (CIR) benchmark**: every clean
# image is compressed by **7 codecs at 3 levels each = 21 seen tasks**, and the test images additionally by
# **unseen tasks** that measure generalisation (paper Table 2). This notebook builds that benchmark with the
# package (`moediffir.data`), then writes its summary table and two figures.
#
# Run it headless with papermill, e.g.
# `papermill notebooks/01_data_generation.ipynb out.ipynb -p profile smoke` (from the repository root).
# The `smoke` profile uses the bundled Kodak thumbnails in `data/smoke/` and untrained learned codecs (labelled
# as such everywhere); the `paper` profile uses DF2K and the five test sets (see `data/README.md`).

# %% tags=["parameters"]
profile: str = "smoke"  # "smoke", "mini" or "paper"
overrides: dict = {}  # dotted config keys, e.g. {"data.workers": 2, "data.max_test_images": 5}
workers: "Optional[int]" = None  # None: data.workers from the profile (0: one process per core)
progress: bool = True  # tqdm progress bar while building
image: "Optional[str]" = None  # stem of the test image shown in the grid (None: the first one)
crop: int = 96  # side of the crop shown in the grid, pixels

# %%
from moediffir.notebook import setup_notebook

# before the heavy imports: it also quiets third-party notices (moediffir/utils/quiet.py)
cfg = setup_notebook(profile, overrides).cfg

import pandas as pd
from IPython.display import Image, Markdown, display

from moediffir.codecs import make_codec
from moediffir.data.builder import build_benchmark
from moediffir.data.manifest import read_manifest
from moediffir.data.sources import list_sources
from moediffir.data.tasks import tasks_table
from moediffir.report.benchmark import write_benchmark_report
from moediffir.utils.io import read_image_rgb

print(f"profile {cfg.profile}: preset {cfg.data.preset!r}, train sets {cfg.data.train_sets}, "
      f"test sets {cfg.data.test_sets}, learned-codec weights {cfg.data.learned_weights!r}")
print(f"benchmark folder: {cfg.benchmark_dir}   results: {cfg.profile_results_dir}")

# %% [markdown]
# ## Step 1 — the tasks
#
# Four traditional codecs — **JPEG** and **WebP** (quality factor QF; lower = stronger compression),
# **HEVC** and **VVC** (one intra frame at a constant quantisation parameter QP; higher = stronger) — and three
# learned ones: **C_PSNR** and **C_SSIM** (Cheng et al. 2020 with attention, trained for MSE and MS-SSIM,
# quality index 1-3) and **HiFiC** (a GAN codec with `low`/`med`/`high` operating points).
# The paper's levels are JPEG/WebP QF 5/10/15, HEVC/VVC QP 37/42/47; the released code used JPEG 10/15/20 and
# WebP 1/5/10 (preset `official`). Seen tasks carry the labels 0-20 that the training pairs use.
#
# Unseen tasks are built for the test sets only: **cross-degree** (a seen codec at an unseen level: JPEG QF 25,
# VVC QP 32 and 52) and **cross-type** (AVC, a codec the model never sees, at QP 37/42/47).

# %%
pd.DataFrame(tasks_table(cfg.data.preset))

# %% [markdown]
# ## Step 2 — one image through one codec: bits and bits per pixel
#
# Every codec takes an RGB uint8 image and a level and returns the decoded image and the **exact number of bits
# it wrote**. Bits per pixel (bpp) divide those bits by the original width x height (odd sizes are padded for
# the video codecs and cropped back; the padding is not charged to the pixel count). The video codecs convert
# RGB to YUV 4:2:0 with one explicit matrix (BT.601, limited range) and report the QP they actually used.

# %%
src = list_sources(cfg.datasets_dir, cfg.data.test_sets[0], max_images=1)[0]
rgb = read_image_rgb(src.path)  # (H, W, 3) uint8
h, w = rgb.shape[:2]
for codec_name, level in (("jpeg", 10), ("hevc", 37)):
    res = make_codec(codec_name, cfg.data)(rgb, level)
    print(f"{codec_name} level {level}: {res.num_bits} bits / ({w} x {h} px) = {res.num_bits / (w * h):.3f} bpp, "
          f"backend {res.info['backend']}, QP used {res.info.get('qp_used', 'n/a')}")

# %% [markdown]
# ## Step 3 — build the benchmark
#
# `build_benchmark` codes every source image under every task in parallel processes (one set of codecs per
# process), writes each decoded image as PNG next to its ground truth, and records bits, bpp and the LQ
# PSNR/SSIM of each output in `manifest.csv`. Every file is written atomically and checked on a rerun, so an
# interrupted build simply continues where it stopped.

# %%
report = build_benchmark(cfg, workers=workers, progress=progress)
print(report.summary())
assert report.manifest_path is not None

# %%
manifest = read_manifest(cfg.benchmark_dir)
manifest.head()

# %% [markdown]
# ## Step 4 — summary table and figures
#
# Per task: number of images, mean bpp and mean LQ PSNR/SSIM (RGB, data range 255, whole image). The
# `weights` column says `random` for an untrained learned codec (smoke profile): those rows show the pipeline
# working, not the paper's codec.

# %%
out = write_benchmark_report(cfg, manifest=manifest, image=image, crop=crop)
display(Markdown(out["summary_md"].read_text()))

# %% [markdown]
# The same crop under every task (one row per codec, strongest compression first; unseen tasks are marked):

# %%
display(Image(filename=str(out["grid_png"])))

# %% [markdown]
# Rate against distortion per codec: where each codec's levels sit in bits per pixel and LQ PSNR (hollow
# markers are unseen tasks):

# %%
display(Image(filename=str(out["bpp_png"])))
print("written:", *[str(v) for k, v in out.items() if k != "summary"], sep="\n  ")
