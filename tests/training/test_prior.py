"""Stage 0 (the prior trained here) and the prediction types read from the prior's configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from repo_paths import REPO_ROOT as REPO

from moediffir.config import ConfigError, resolve_config
from moediffir.errors import MissingWeightsError
from moediffir.pipelines.sampling import initial_noise, make_scheduler, sample_loop
from moediffir.training import prior as P
from moediffir.training.stage1 import diffusion_target

KINDS = ("epsilon", "v_prediction", "sample")


def _scheduler(kind: str):
    cfg = resolve_config("mini", {"prior.prediction_type": kind})
    return P.prior_scheduler(cfg)


def _abar(scheduler, t: torch.Tensor) -> torch.Tensor:
    return scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)  # (B, 1, 1, 1)


def _oracle_output(kind: str, scheduler, z_t: torch.Tensor, t: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """What a perfect network of ``kind`` outputs for ``z_t`` whose clean latent is ``z0``."""
    a = _abar(scheduler, t)
    eps = (z_t - a.sqrt() * z0) / (1 - a).sqrt()
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return a.sqrt() * eps - (1 - a).sqrt() * z0
    return z0.expand_as(z_t)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_target_is_the_quantity_of_the_prediction_type(kind):
    sch = _scheduler(kind)
    assert sch.config.prediction_type == kind
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 8, 4, 4, generator=g)
    t = torch.tensor([10, 500, 990])
    a = _abar(sch, t)
    expected = {"epsilon": noise, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * z0, "sample": z0}[kind]
    torch.testing.assert_close(diffusion_target(sch, z0, noise, t), expected, rtol=1e-5, atol=1e-5)
    others = [k for k in KINDS if k != kind]
    for other in others:  # the three targets really differ: the switch matters
        assert not torch.allclose(diffusion_target(_scheduler(other), z0, noise, t), expected, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_prior_unet_loss_is_zero_for_a_perfect_network_of_its_type(kind):
    sch = _scheduler(kind)
    z0 = torch.randn(4, 8, 4, 4, generator=torch.Generator().manual_seed(1))

    def oracle(z_t, t, encoder_hidden_states):
        return type("Out", (), {"sample": _oracle_output(kind, sch, z_t, t, z0)})()

    loss, _ = P.unet_loss(oracle, sch, z0, torch.zeros(1, 1, 8))
    assert float(loss) < 1e-8
    wrong = _scheduler(KINDS[(KINDS.index(kind) + 1) % 3])
    loss_wrong, _ = P.unet_loss(oracle, wrong, z0, torch.zeros(1, 1, 8))
    assert float(loss_wrong) > 1e-2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m"])
def test_sampler_with_a_perfect_denoiser_of_each_type_recovers_z0(kind, sampler):
    base = _scheduler(kind)
    sch = make_scheduler(sampler, base.config)
    assert sch.config.prediction_type == kind  # read from the prior's scheduler config, not assumed
    sch.set_timesteps(20)
    z0 = torch.randn(2, 8, 6, 4, generator=torch.Generator().manual_seed(2))
    latents = initial_noise(tuple(z0.shape), sch, torch.Generator().manual_seed(3), torch.device("cpu"))
    out = sample_loop(lambda z_t, t: _oracle_output(kind, base, z_t, t.reshape(1), z0), sch, latents,
                      generator=torch.Generator().manual_seed(4))
    assert float((out - z0).abs().max()) < 2e-3
    assert float((latents - z0).abs().mean()) > 0.5  # it started far away


# ------------------------------------------------------------------------------------------- stage 0
def _tiny_cfg(tmp_path: Path, **over):
    photos = tmp_path / "photos" / "mini_train"
    if not photos.is_dir():
        photos.mkdir(parents=True)
        for name in ("kodim01_0.png", "kodim03_1.png", "skimage_coffee_0.png"):
            shutil.copy(REPO / "data" / "mini" / "mini_train" / name, photos / name)
    o = {
        "runs_dir": str(tmp_path / "runs"), "data.datasets_dir": str(tmp_path / "photos"), "device": "cpu",
        "prior.crop_size": 32, "prior.vae_channels": [8, 8], "prior.unet_channels": [8, 16],
        "prior.latent_channels": 8, "prior.cross_attention_dim": 8, "prior.attention_head_dim": 4,
        "prior.vae_steps": 4, "prior.unet_steps": 4, "prior.vae_batch_size": 2, "prior.unet_batch_size": 2,
        "prior.checkpoint_every": 2, "prior.log_every": 2, "model.num_scales": 2, "model.prompt_dim": 16,
        "model.spade_hidden": 8, "model.vit_heads": 2,
    }
    o.update(over)
    return resolve_config("mini", o)


def test_stage1_refuses_a_missing_prior_and_says_how_to_make_it(tmp_path):
    from moediffir.weights.builders import build_backbone

    with pytest.raises(MissingWeightsError, match="moediffir train prior --profile mini"):
        build_backbone(_tiny_cfg(tmp_path))


def test_train_prior_writes_a_diffusers_prior_that_stage1_loads_like_sd(tmp_path):
    from moediffir.weights.builders import build_backbone, build_denoiser

    cfg = _tiny_cfg(tmp_path)
    folder = P.train_prior(cfg, progress=False)
    assert folder == cfg.prior_dir
    for sub in ("vae/config.json", "unet/config.json", "scheduler/scheduler_config.json", P.PRIOR_INFO):
        assert (folder / sub).is_file(), sub
    info = json.loads((folder / P.PRIOR_INFO).read_text())
    assert info["photos"] == 3 and info["prediction_type"] == "v_prediction"
    unet, vae, scheduler = build_backbone(cfg)  # model.sd_source "" -> the stage-0 folder
    assert not any(p.requires_grad for p in unet.parameters()) and not any(p.requires_grad for p in vae.parameters())
    assert scheduler.config.prediction_type == "v_prediction"
    assert vae.config.latent_channels == 8 and unet.config.in_channels == 8
    std = P.latent_std(vae, P.training_photos(cfg), torch.device("cpu"))
    assert vae.config.scaling_factor == pytest.approx(1.0 / std, rel=1e-4)  # unit-variance latents
    denoiser = build_denoiser(cfg, unet=unet)
    assert denoiser.prompt_module.conv_in.in_channels == 8  # derived from the prior, not assumed
    z = P.scaled_latents(vae, torch.rand(2, 3, 32, 32), sample=False)  # (2, 8, 16, 16)
    out = denoiser(z, torch.tensor([5, 900]), z, lq_image=torch.rand(2, 3, 32, 32))
    assert out.shape == z.shape


def test_prior_resume_matches_the_uninterrupted_run_weights_and_logs(tmp_path):
    from diffusers import UNet2DConditionModel

    from moediffir.training.training_log import read_jsonl
    from moediffir.weights.loading import autoencoder_class_in

    full = _tiny_cfg(tmp_path / "a", **{"prior.vae_steps": 6, "prior.unet_steps": 4})
    P.train_prior(full, progress=False)
    part = _tiny_cfg(tmp_path / "b", **{"prior.vae_steps": 4, "prior.unet_steps": 2})
    P.train_prior(part, progress=False)
    stage = part.prior_dir.parent
    shutil.rmtree(stage / "vae_trained")  # as if killed during the VAE phase after its step-4 checkpoint ...
    with open(stage / "vae" / "log.jsonl", "a") as fh:  # ... and after logging step 5
        fh.write(json.dumps({"phase": "vae", "step": 5, "loss": 99.0}) + "\n")
    resumed = _tiny_cfg(tmp_path / "b", **{"prior.vae_steps": 6, "prior.unet_steps": 4})
    P.train_prior(resumed, resume=True, progress=False)

    vae_class = autoencoder_class_in(full.prior_dir, "vae")
    for cls, sub in ((vae_class, "vae"), (UNet2DConditionModel, "unet")):
        a = cls.from_pretrained(full.prior_dir / sub).state_dict()
        b = cls.from_pretrained(resumed.prior_dir / sub).state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=f"{sub}.{k}")
    for phase in P.PRIOR_PHASES:  # one log per phase, the same records as the uninterrupted run's
        a = read_jsonl(full.prior_dir.parent / phase / "log.jsonl")
        b = read_jsonl(stage / phase / "log.jsonl")
        assert [(r["step"], r["losses"]) for r in a] == [(r["step"], r["losses"]) for r in b], phase
        assert {r["phase"] for r in a} == {phase}


def test_resume_with_other_prior_settings_is_refused(tmp_path):
    from moediffir.training.runtime import TrainingConfigError

    P.train_prior(_tiny_cfg(tmp_path, **{"prior.unet_steps": 2}), progress=False)
    shutil.rmtree(_tiny_cfg(tmp_path).prior_dir.parent / "vae_trained")
    with pytest.raises(TrainingConfigError, match="cannot resume"):
        P.train_prior(_tiny_cfg(tmp_path, **{"prior.vae_lr": 1e-2}), resume=True, progress=False)


def test_resume_ignores_settings_stage0_does_not_read(tmp_path):
    P.train_prior(_tiny_cfg(tmp_path, **{"prior.unet_steps": 2}), progress=False)
    longer = _tiny_cfg(tmp_path, **{"prior.unet_steps": 4, "model.prompt_dim": 32})  # a stage-I setting
    P.train_prior(longer, resume=True, progress=False)
    assert json.loads((longer.prior_dir / P.PRIOR_INFO).read_text())["unet"]["steps"] == 4


def test_stage0_refuses_a_distributed_launch_before_writing(tmp_path, monkeypatch):
    from moediffir.training.runtime import TrainingConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = _tiny_cfg(tmp_path)
    with pytest.raises(TrainingConfigError, match="one process"):
        P.train_prior(cfg, progress=False)
    assert not cfg.prior_dir.parent.exists()


def test_profiles_without_stage0_refuse_to_train_a_prior():
    with pytest.raises(ValueError, match="no stage 0"):
        P.train_prior(resolve_config("smoke"))
    with pytest.raises(ValueError, match="prediction_type"):
        P.prior_scheduler(resolve_config("mini", {"prior.prediction_type": "x0"}))


def test_a_fresh_start_over_earlier_checkpoints_is_refused_unless_overwrite(tmp_path):
    from moediffir.training.runtime import TrainingConfigError

    cfg = _tiny_cfg(tmp_path, **{"prior.vae_steps": 2, "prior.unet_steps": 2})
    P.train_prior(cfg, progress=False)
    before = sorted(p.relative_to(tmp_path) for p in cfg.prior_dir.parent.rglob("*"))
    with pytest.raises(TrainingConfigError, match="--overwrite"):
        P.train_prior(cfg, progress=False)
    assert sorted(p.relative_to(tmp_path) for p in cfg.prior_dir.parent.rglob("*")) == before  # nothing changed
    assert P.train_prior(cfg, progress=False, overwrite=True) == cfg.prior_dir


def test_the_unet_keeps_several_channels_in_every_norm_group():
    """One channel per group would normalise each feature map on its own (no layer could pass on a mean colour)."""
    from moediffir.training.prior import prior_unet_config

    assert prior_unet_config(resolve_config("mini"))["norm_num_groups"] == 4  # (32, 64, 64): 8+ channels a group
    assert prior_unet_config(resolve_config("mini", {"prior.unet_channels": [320, 640]}))["norm_num_groups"] == 32
    assert prior_unet_config(resolve_config("mini", {"prior.unet_norm_groups": 8}))["norm_num_groups"] == 8
    with pytest.raises(ConfigError, match="prior.unet_norm_groups.*must divide every width"):
        resolve_config("mini", {"prior.unet_norm_groups": 3})
