"""The layout of the released MoE-DiffIR checkpoints (``moediffir/fixtures/released_moediffir_keys.json``):
its SD 2.1 parts, SPADE sites, DA-CLIP sub-tree and fusion blocks agree with what the kit derives itself."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from moediffir.models.compensator import default_fusion_levels
from moediffir.models.spade import spade_sites_from_config
from moediffir.weights.checkpoint_files import _expected_ldm_tensors, sd21_single_file_configs


def _fixture(name: str) -> dict:
    return json.loads(resources.files("moediffir").joinpath("fixtures", name).read_text())


@pytest.fixture(scope="module")
def released() -> dict:
    return _fixture("released_moediffir_keys.json")


def _sub(keys: dict, prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}


def test_counts_and_provenance(released):
    for name, ckpt in released["checkpoints"].items():
        assert ckpt["num_keys"] == len(ckpt["keys"]), name
        assert sum(p["num_keys"] for p in ckpt["parts"].values()) == len(ckpt["keys"]), name
        for key, shape in ckpt["keys"].items():
            assert isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape), key
    assert released["derived_from"]["repository"] == "renyulin-f/MoE-DiffIR"
    assert all(re.search(r"\b[0-9a-f]{40}\b", c) for c in released["derived_from"]["files"].values())


def test_stage1_sd_parts_are_the_sd21_ldm_layout(released):
    keys = released["checkpoints"]["stage1"]["keys"]
    configs = sd21_single_file_configs()
    unet = {k: v for k, v in _sub(keys, "model.diffusion_model.").items() if ".spade." not in k}
    assert unet == {k: list(s) for k, s in _expected_ldm_tensors("unet", configs["unet"]).items()}
    vae = _sub(keys, "first_stage_model.")
    assert vae == {k: list(s) for k, s in _expected_ldm_tensors("vae", configs["vae"]).items()}


def _ldm_block(site_name: str, layers_per_block: int) -> str:
    """A diffusers resnet path -> the LDM block holding it (``mid_block.resnets.0`` -> ``middle_block.0``)."""
    if site_name == "mid_block.resnets.0":
        return "middle_block.0"
    level, j = map(int, re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)", site_name).groups())
    return f"output_blocks.{level * (layers_per_block + 1) + j}.0"


def test_released_spade_sites_are_the_kits_sites(released):
    """The released code puts SPADE in the first mid resnet and every decoder resnet: the kit's 13 sites, with
    the same channels, and a SPADE of GroupNorm(C) + conv 256->128 + two convs 128->C at each."""
    keys = _sub(released["checkpoints"]["stage1"]["keys"], "model.diffusion_model.")
    unet_config = sd21_single_file_configs()["unet"]
    released_sites = sorted({k.split(".spade.")[0] for k in keys if ".spade." in k})
    kit_sites = spade_sites_from_config(unet_config)
    expected = {_ldm_block(s.name, unet_config["layers_per_block"]): s.channels for s in kit_sites}
    assert sorted(expected) == released_sites
    for block, c in expected.items():
        spade = _sub(keys, f"{block}.spade.")
        assert spade == {
            "param_free_norm.weight": [c], "param_free_norm.bias": [c],
            "mlp_shared.0.weight": [128, 256, 3, 3], "mlp_shared.0.bias": [128],
            "mlp_gamma.weight": [c, 128, 3, 3], "mlp_gamma.bias": [c],
            "mlp_beta.weight": [c, 128, 3, 3], "mlp_beta.bias": [c],
        }, block
        assert keys[f"{block}.out_layers.3.weight"][0] == c  # the resnet whose output SPADE modulates
    assert not any(".spade." in k for k in keys if k.startswith(("input_blocks.", "middle_block.2.")))


def test_moe_prompt_module_layout(released):
    keys = _sub(released["checkpoints"]["stage1"]["keys"], "structcond_stage_model.")
    daclip = _fixture("daclip_vit_b32_keys.json")["keys"]
    assert _sub(keys, "DACLIP_model.") == daclip
    for s in (1, 2, 3, 4):
        prompt = _sub(keys, f"Prompt_model{s}.")
        assert prompt["prompt_param"] == [7, 256, 256]
        gates = {k: v for k, v in prompt.items() if k.startswith("f_gate.")}
        assert gates == {f"f_gate.{t}.0.weight": [14, 256] for t in range(21)}  # clean + noise logits per task
        assert prompt["attn.to_k.weight"] == [512, 768]  # keys/values from the 768-d DA-CLIP tokens
        assert keys[f"norm{s}.weight"] == [256]  # the LayerNorm after each scale's ViT blocks
    assert "task_embedding" not in keys and not any(k.startswith("conv_middle.") for k in keys)


def test_stage2_fusion_levels_are_the_kits_levels(released):
    """Fusion blocks sit at the two VAE levels the kit's compensator picks, with the encoder's channels there."""
    keys = released["checkpoints"]["stage2"]["keys"]
    vae_config = sd21_single_file_configs()["vae"]
    channels = vae_config["block_out_channels"]
    levels = default_fusion_levels(len(channels))
    found = sorted({int(m[1]) for k in keys if (m := re.match(r"decoder\.fusion_layer_(\d+)\.", k))})
    assert found == sorted(levels)
    for level in levels:
        c = channels[level]
        block = _sub(keys, f"decoder.fusion_layer_{level}.")
        assert block["encode_enc_1.conv1.weight"] == [c, 2 * c, 3, 3]  # cat(enc, dec) -> C
        assert block["encode_enc_2.1.rdb3.conv5.weight"] == [c, c + 4 * 32, 3, 3]  # second RRDB's last conv
        assert block["encode_enc_3.conv2.weight"] == [c, c, 3, 3]
        assert "encode_enc_3.conv_out.weight" not in block
    vae = {k: list(s) for k, s in _expected_ldm_tensors("vae", vae_config).items()}
    plain = {k: v for k, v in keys.items() if not k.startswith(("loss.", "decoder.fusion_layer_"))}
    assert plain == vae
