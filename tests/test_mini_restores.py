"""A reduced ``mini`` run restores: fails if training stops restoring (slow: minutes on a CPU).

Stage 0 trains a small prior on the bundled photos, stage I trains the MoE-DiffIR parts on JPEG QF 10 crops,
stage II the decoder compensator. On held-out JPEG crops the trained model must be clearly closer to the ground
truth than the same model before stage I (fresh prompt module and SPADE layers on the same prior), and the
compensator must improve on the plain VAE decoder for the same latents.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moediffir.config import resolve_config

REPO = Path(__file__).resolve().parents[1]


def _restore_psnr(folder: Path, crops: list[tuple[np.ndarray, np.ndarray]], fusion_weight) -> float:
    from moediffir.metrics.fidelity import psnr
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    pipe = load_pipeline(folder, device="cpu")
    lqs = [lq for lq, _ in crops]
    out = pipe(lqs, num_inference_steps=20, generator=[torch.Generator().manual_seed(i) for i in range(len(lqs))],
               fusion_weight=fusion_weight, output_type="np").images
    return float(np.mean([psnr(o, gt) for o, (_, gt) in zip(out, crops)]))


@pytest.mark.slow
def test_reduced_mini_run_restores_jpeg_and_the_compensator_helps(tmp_path):
    from moediffir.data.builder import build_benchmark
    from moediffir.evaluation.protocol import select_items
    from moediffir.training.prior import train_prior
    from moediffir.training.stage1 import train_stage1
    from moediffir.training.stage2 import train_stage2
    from moediffir.training.stage2_data import generate_stage2_data
    from moediffir.utils.io import read_image_rgb

    o = {
        "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
        "data.datasets_dir": str(REPO / "data" / "mini"), "data.out_dir": str(tmp_path / "bench"),
        "data.tasks": ["jpeg_q10"], "data.unseen": False, "device": "cpu",
        "prior.vae_steps": 300, "prior.unet_steps": 300, "prior.vae_batch_size": 4, "prior.unet_batch_size": 8,
        "prior.checkpoint_every": 300, "stage1.max_steps": 0, "stage2.max_steps": 150, "stage2.num_latents": 32,
    }
    build_benchmark(resolve_config("mini", o), workers=1, progress=False)
    train_prior(resolve_config("mini", o), progress=False)
    before = tmp_path / "model_before"
    shutil.copytree(train_stage1(resolve_config("mini", o), progress=False), before)
    cfg = resolve_config("mini", {**o, "stage1.max_steps": 300})
    train_stage1(cfg, progress=False, overwrite=True)  # the 0-step run above left a checkpoint
    generate_stage2_data(cfg, progress=False)
    folder = train_stage2(cfg, progress=False)

    items = select_items(cfg.benchmark_dir, ["mini_test"], ["jpeg_q10"], 0, "paper")
    crops = []
    for r in items.itertuples(index=False):  # the central 64 x 64 crop of every held-out photo
        lq, gt = read_image_rgb(cfg.benchmark_dir / r.path), read_image_rgb(cfg.benchmark_dir / r.gt_path)
        t, left = (lq.shape[0] - 64) // 2, (lq.shape[1] - 64) // 2
        crops.append((lq[t:t + 64, left:left + 64], gt[t:t + 64, left:left + 64]))
    untrained = _restore_psnr(before, crops, None)
    plain = _restore_psnr(folder, crops, None)
    full = _restore_psnr(folder, crops, 1.0)
    assert plain > untrained + 3.0, (untrained, plain)
    assert full > plain + 0.2, (plain, full)
