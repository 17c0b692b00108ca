"""The model folder contract (moediffir.weights.model_folder): layout, round trip, clear errors.

Untrained smoke parts stand in for a trained model: these tests check the machinery, not restoration quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moediffir.config import ConfigError, resolve_config
from moediffir.models.compensator import build_compensator
from moediffir.pipelines import MoEDiffIRPipeline, load_pipeline
from moediffir.weights.builders import build_backbone, build_denoiser
from moediffir.weights.model_folder import (
    ModelFolderError,
    build_fresh_model_folder,
    read_model_info,
    save_model_folder,
)

IMAGE = (np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8)


def _restore(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(IMAGE, num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="np").images[0]


@pytest.fixture(scope="module")
def smoke_parts():
    torch.manual_seed(0)
    cfg = resolve_config("smoke")
    unet, vae, scheduler = build_backbone(cfg)
    denoiser = build_denoiser(cfg, unet=unet)
    compensator = build_compensator(cfg, vae)
    with torch.no_grad():  # a compensator whose fusion is not the identity, so w matters after the round trip
        for p in compensator.fusion.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, denoiser, vae, scheduler, compensator


@pytest.fixture(scope="module")
def saved(smoke_parts, tmp_path_factory):
    cfg, denoiser, vae, scheduler, compensator = smoke_parts
    folder = tmp_path_factory.mktemp("models") / "smoke_model"
    save_model_folder(folder, cfg, denoiser, vae, scheduler, compensator, info={"stage": "test"})
    return folder


def test_layout_and_info(saved):
    for rel in (
        "config.json", "model_info.json", "null_context.safetensors",
        "denoiser/prompt_module/config.json", "denoiser/spade/config.json", "denoiser/v2t/config.json",
        "compensator/config.json", "degradation_prior/config.json",
        "backbone/unet/config.json", "backbone/vae/config.json", "backbone/scheduler/scheduler_config.json",
    ):
        assert (saved / rel).is_file(), rel
    info = read_model_info(saved)
    assert info["format"] == 1 and info["profile"] == "smoke" and info["info"] == {"stage": "test"}
    assert any(p.startswith("backbone") for p in info["random_weights"])  # smoke weights are labelled random
    assert json.loads((saved / "config.json").read_text())["model"]["backbone"] == "tiny"
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_round_trip_gives_identical_images(smoke_parts, saved):
    cfg, denoiser, vae, scheduler, compensator = smoke_parts
    original = MoEDiffIRPipeline.from_denoiser(denoiser, vae, scheduler, compensator, config=cfg)
    expected = _restore(original)
    loaded = load_pipeline(saved)
    assert loaded.model_config == cfg and loaded.sample_defaults == cfg.sample
    assert loaded.compensator is not None and loaded.degradation_prior is not None and loaded.v2t is not None
    assert np.array_equal(_restore(loaded), expected)
    assert not any(p.requires_grad for p in loaded.denoiser.parameters())


def test_save_replaces_an_existing_folder_atomically(smoke_parts, tmp_path):
    cfg, denoiser, vae, scheduler, _ = smoke_parts
    folder = tmp_path / "m"
    save_model_folder(folder, cfg, denoiser, vae, scheduler, compensator=None)
    assert not (folder / "compensator").exists()
    (folder / "stale.txt").write_text("old")
    save_model_folder(folder, cfg, denoiser, vae, scheduler, compensator=build_compensator(cfg, vae))
    assert (folder / "compensator/config.json").is_file() and not (folder / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_pipeline_save_and_from_pretrained_use_the_folder(smoke_parts, tmp_path):
    cfg, denoiser, vae, scheduler, compensator = smoke_parts
    pipe = MoEDiffIRPipeline.from_denoiser(denoiser, vae, scheduler, compensator, config=cfg)
    pipe.save_pretrained(tmp_path / "p")
    again = MoEDiffIRPipeline.from_pretrained(tmp_path / "p", device="cpu")
    assert np.array_equal(_restore(again), _restore(pipe))


def test_null_context_travels_without_v2t(tmp_path):
    cfg = resolve_config("smoke", {"model.use_v2t": False})
    unet, vae, scheduler = build_backbone(cfg)
    denoiser = build_denoiser(cfg, unet=unet)
    assert denoiser.v2t is None
    context = torch.randn(1, 3, unet.config.cross_attention_dim)
    denoiser.set_null_context(context)
    save_model_folder(tmp_path / "m", cfg, denoiser, vae, scheduler)
    loaded = load_pipeline(tmp_path / "m")
    assert loaded.v2t is None and torch.equal(loaded.denoiser.null_context, context)
    denoiser.spade.detach()


def test_missing_and_broken_folders_name_what_is_wrong(saved, tmp_path):
    with pytest.raises(ModelFolderError, match="nowhere.*not found"):
        load_pipeline(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="empty.*missing config.json"):
        load_pipeline(tmp_path / "empty")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "backbone" / "unet")
    shutil.rmtree(broken / "degradation_prior")
    with pytest.raises(ModelFolderError) as exc:
        load_pipeline(broken)
    msg = str(exc.value)
    assert str(broken) in msg and "backbone/unet/config.json" in msg and "degradation_prior/config.json" in msg

    corrupt = tmp_path / "corrupt"
    shutil.copytree(saved, corrupt)
    weights = next((corrupt / "compensator").glob("diffusion_pytorch_model.*"))
    weights.write_bytes(b"not a weights file")
    with pytest.raises(ModelFolderError, match="compensator: cannot load"):
        load_pipeline(corrupt)


def test_load_overrides_and_dtype_checks(saved):
    pipe = load_pipeline(saved, overrides={"sample.num_steps": 3, "sample.scheduler": "ddim"})
    assert pipe.sample_defaults.num_steps == 3 and type(pipe.scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ConfigError, match="architecture"):
        load_pipeline(saved, overrides={"model.top_k": 2})
    with pytest.raises(ValueError, match="scheduler"):
        load_pipeline(saved, overrides={"sample.scheduler": "heun_magic"})
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_pipeline(saved, device="cpu", dtype="fp16")


def test_fresh_folder_is_marked_untrained(tmp_path):
    folder = build_fresh_model_folder(tmp_path / "fresh", resolve_config("smoke"), with_compensator=False)
    assert read_model_info(folder)["info"] == {"trained": False}
    assert isinstance(load_pipeline(Path(folder)), MoEDiffIRPipeline)


def test_pretrained_backbone_folder_lists_missing_sources(saved, tmp_path):
    """A paper-style folder holds no SD/DA-CLIP weights: loading names each missing file (offline)."""
    import shutil

    from moediffir.errors import MissingWeightsError

    paper = tmp_path / "paper_like"
    shutil.copytree(saved, paper)
    cfg = json.loads((paper / "config.json").read_text())
    cfg["model"].update(backbone="sd21", random_backbone=False, dp_backend="daclip", v2t_backend="clip_rn50",
                        sd_source=str(tmp_path / "no_sd"))
    cfg["data"]["root"] = str(tmp_path / "data")
    (paper / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingWeightsError) as exc:
        load_pipeline(paper)
    msg = str(exc.value)
    assert "no_sd" in msg and "daclip_ViT-B-32.pt" in msg
    assert "RN50" not in msg  # the V2T's CLIP tower travels inside denoiser/v2t
