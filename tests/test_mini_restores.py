"""A reduced ``mini`` run restores: fails if training stops restoring (slow: minutes on a CPU).

Stage 0 makes a small prior on the bundled photos (the patch-PCA latent space, then the UNet), stage I trains
the MoE-DiffIR parts on JPEG QF 10 crops, stage II the decoder compensator. The promises checked, in small:

- the latent space's ceiling on the held-out photos is at least 28 dB;
- on held-out JPEG QF 10 crops the trained model is far closer to the ground truth than the same model before
  stage I (both without the colour fix), and the compensator improves on the plain decoder for the same latents;
- (not kept yet by this reduced run, marked as expected failures) the full method beats the compressed input in
  PSNR and in LPIPS, on the held-out crops and on photos from elsewhere (``shared/datasets`` beside the
  repository; skipped where absent) at their own size, restored with ``moediffir restore``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config

pytestmark = pytest.mark.slow


def _restore(folder: Path, crops: list[tuple[np.ndarray, np.ndarray]], decoder: str,
             color_fix: str | None = None) -> dict[str, float]:
    """Mean PSNR / LPIPS of the crops restored with ``decoder`` (the compensator at w = 1, or the plain VAE) and
    ``color_fix`` (None: the profile's)."""
    from moediffir.metrics.fidelity import psnr
    from moediffir.metrics.perceptual import build_lpips, lpips_distance
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    pipe = load_pipeline(folder, device="cpu")
    lqs = [lq for lq, _ in crops]
    out = pipe(lqs, generator=[torch.Generator().manual_seed(i) for i in range(len(lqs))],
               decoder=decoder, fusion_weight=1.0 if decoder == "compensator" else None, color_fix=color_fix,
               output_type="np").images
    lpips = build_lpips("alex", weights="pretrained")
    return {"psnr": float(np.mean([psnr(o, gt) for o, (_, gt) in zip(out, crops)])),
            "lpips": float(np.mean([lpips_distance(lpips, o, gt) for o, (_, gt) in zip(out, crops)]))}


def _input_scores(crops: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    from moediffir.metrics.fidelity import psnr
    from moediffir.metrics.perceptual import build_lpips, lpips_distance

    lpips = build_lpips("alex", weights="pretrained")
    return {"psnr": float(np.mean([psnr(lq, gt) for lq, gt in crops])),
            "lpips": float(np.mean([lpips_distance(lpips, lq, gt) for lq, gt in crops]))}


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    """Every stage of ``mini`` at reduced lengths: ``(cfg, trained model folder, model folder before stage I)``."""
    from moediffir.data.builder import build_benchmark
    from moediffir.training.prior import train_prior
    from moediffir.training.stage1 import train_stage1
    from moediffir.training.stage2 import train_stage2
    from moediffir.training.stage2_data import generate_stage2_data

    tmp = tmp_path_factory.mktemp("mini")
    o = {
        "runs_dir": str(tmp / "runs"), "results_dir": str(tmp / "results"),
        "data.datasets_dir": str(REPO / "data" / "mini"), "data.out_dir": str(tmp / "bench"),
        "data.tasks": ["jpeg_q10"], "data.unseen": False, "device": "cpu",
        "prior.vae_steps": 100, "prior.unet_steps": 600, "prior.checkpoint_every": 600,
        "stage1.max_steps": 0, "stage2.max_steps": 150, "stage2.num_latents": 32,
    }
    build_benchmark(resolve_config("mini", o), workers=1, progress=False)
    train_prior(resolve_config("mini", o), progress=False)
    before = tmp / "model_before"
    shutil.copytree(train_stage1(resolve_config("mini", o), progress=False), before)
    cfg = resolve_config("mini", {**o, "stage1.max_steps": 400})
    train_stage1(cfg, progress=False, overwrite=True)  # the 0-step run above left a checkpoint
    generate_stage2_data(cfg, progress=False)
    return cfg, train_stage2(cfg, progress=False), before


def _held_out_crops(cfg) -> list[tuple[np.ndarray, np.ndarray]]:
    from moediffir.evaluation.protocol import select_items
    from moediffir.utils.io import read_image_rgb

    items = select_items(cfg.benchmark_dir, ["mini_test"], ["jpeg_q10"], 0, "paper")
    crops = []
    for r in items.itertuples(index=False):  # the central 64 x 128 crop of every held-out photo
        lq, gt = read_image_rgb(cfg.benchmark_dir / r.path), read_image_rgb(cfg.benchmark_dir / r.gt_path)
        t, left = (lq.shape[0] - 64) // 2, (lq.shape[1] - 128) // 2
        crops.append((lq[t:t + 64, left:left + 128], gt[t:t + 64, left:left + 128]))
    return crops


def test_latent_space_ceiling_is_above_28_db(reduced_run):
    from moediffir.studies.prior_quality import load_prior, vae_ceiling
    from moediffir.utils.io import read_image_rgb

    cfg = reduced_run[0]
    _, vae, _ = load_prior(cfg.prior_dir)
    photos = {p.stem: read_image_rgb(p) for p in sorted((REPO / "data/mini/mini_test").glob("*.png"))}
    ceiling = vae_ceiling(vae, photos)
    assert ceiling["vae_psnr"].mean() >= 28.0, ceiling
    assert ceiling["vae_colour_shift"].max() < 2.0, ceiling


def test_stage1_learns_and_the_compensator_helps(reduced_run):
    cfg, folder, before = reduced_run
    crops = _held_out_crops(cfg)
    # what stage I learned, before the colour fix (which lends the input's low frequencies to both models)
    untrained = _restore(before, crops, "vae", color_fix="none")
    learned = _restore(folder, crops, "vae", color_fix="none")
    assert learned["psnr"] > untrained["psnr"] + 3.0, (untrained, learned)
    plain = _restore(folder, crops, "vae")
    full = _restore(folder, crops, "compensator")
    assert full["psnr"] > plain["psnr"] and full["lpips"] < plain["lpips"], (plain, full)


# The promise this reduced run does not keep yet. The full mini profile beats its JPEG QF 10 input in PSNR and LPIPS,
# on the held-out crops and on photos from elsewhere (README, "The mini profile"); this run, with a fraction of its
# training, stays below the input (held-out crops: 25.1 dB / LPIPS 0.234 against 27.2 / 0.217). Strict: the day
# it holds, this says so.
_BELOW_INPUT = "the reduced mini run stays below the JPEG QF 10 input (README, the mini profile)"


@pytest.mark.xfail(strict=True, reason=_BELOW_INPUT)
def test_reduced_mini_run_beats_its_jpeg_input(reduced_run):
    cfg, folder, _ = reduced_run
    crops = _held_out_crops(cfg)
    lq, full = _input_scores(crops), _restore(folder, crops, "compensator")
    assert full["psnr"] > lq["psnr"] and full["lpips"] < lq["lpips"], (lq, full)


@pytest.mark.xfail(strict=True, reason=_BELOW_INPUT)
def test_photos_from_elsewhere_restore_above_their_input_with_the_command_line(reduced_run, shared_datasets,
                                                                                   tmp_path):
    from moediffir.studies.restore_check import restore_check

    photos = sorted((shared_datasets / "bsds500_trainval").glob("*.png"))[:3]  # 481 x 321: tiled
    table = restore_check(reduced_run[1], photos, tmp_path, qf=10)
    assert len(table) == 3
    assert table["psnr_restored"].mean() > table["psnr_input"].mean(), table
    assert table["lpips_restored"].mean() < table["lpips_input"].mean(), table
