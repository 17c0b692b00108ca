"""The one-step z_0 estimates of the conditional denoiser, per noise level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moediffir.config import resolve_config
from moediffir.studies.denoiser_probe import noised, predicted_z0, z0_estimates
from moediffir.training.prior import prior_scheduler
from moediffir.training.stage1 import diffusion_target

KINDS = ("epsilon", "v_prediction", "sample")


@pytest.mark.parametrize("kind", KINDS)
def test_predicted_z0_inverts_the_training_target_of_each_prediction_type(kind):
    sch = prior_scheduler(resolve_config("mini", {"prior.prediction_type": kind}))
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 8, 4, 4, generator=g)
    t = torch.tensor([5, 500, 990])
    z_t = noised(sch, z0, noise, t)
    torch.testing.assert_close(z_t, sch.add_noise(z0, noise, t))  # the DDPM schedule's own forward process
    torch.testing.assert_close(predicted_z0(sch, z_t, t, diffusion_target(sch, z0, noise, t)), z0,
                               atol=2e-3, rtol=1e-3)
    wrong = predicted_z0(sch, z_t, t, torch.zeros_like(z0))
    assert float((wrong - z0).abs().mean()) > 0.1


def test_z0_estimates_score_each_level_beside_the_input(tmp_path):
    from moediffir.pipelines import load_pipeline
    from moediffir.weights.model_folder import build_fresh_model_folder

    pipe = load_pipeline(build_fresh_model_folder(tmp_path / "model", resolve_config("smoke")))
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lq = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    table = z0_estimates(pipe.denoiser, pipe.vae, pipe.scheduler, [(lq, gt)], timesteps=(999, 10))
    assert list(table["t"]) == ["input", "D(z_lq)", 999, 10]
    assert table.loc[table["t"] == "input", "psnr"].item() == pytest.approx(
        10 * np.log10(255**2 / np.mean((lq.astype(float) - gt) ** 2)))
    again = z0_estimates(pipe.denoiser, pipe.vae, pipe.scheduler, [(lq, gt)], timesteps=(999, 10))
    assert table.equals(again)  # seeded


def test_z0_estimates_can_condition_on_the_ground_truth(tmp_path):
    from moediffir.pipelines import load_pipeline
    from moediffir.weights.model_folder import build_fresh_model_folder

    pipe = load_pipeline(build_fresh_model_folder(tmp_path / "model", resolve_config("smoke")))
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lq = np.zeros_like(gt)  # a condition far from the ground truth
    on_lq = z0_estimates(pipe.denoiser, pipe.vae, pipe.scheduler, [(lq, gt)], timesteps=(999,))
    on_gt = z0_estimates(pipe.denoiser, pipe.vae, pipe.scheduler, [(lq, gt)], timesteps=(999,), condition="gt")
    # the noised latent and the reference rows are the same; only the condition differs, and the model reads it
    assert on_gt.loc[on_gt["t"] != 999].equals(on_lq.loc[on_lq["t"] != 999])
    assert on_gt.loc[on_gt["t"] == 999, "psnr"].item() != on_lq.loc[on_lq["t"] == 999, "psnr"].item()
    with pytest.raises(ValueError, match="condition='hq'"):
        z0_estimates(pipe.denoiser, pipe.vae, pipe.scheduler, [(lq, gt)], timesteps=(999,), condition="hq")
