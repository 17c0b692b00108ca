"""The kit's released-form parts hold the released checkpoint's tensors under one prefix map each
(moediffir/models/spade.py, prompts.py, router.py, compensator.py; ``moediffir/fixtures/released_moediffir_keys.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources

import pytest

from moediffir.models.sd_backbone import sd21_unet_config
from moediffir.models.spade import SpadeInjector, spade_sites_from_config


@pytest.fixture(scope="module")
def released() -> dict:
    return json.loads(resources.files("moediffir").joinpath("fixtures", "released_moediffir_keys.json").read_text())


def _shapes(module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _sub(keys: dict, prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}


def test_residual_spade_takes_the_released_spade_tensors(released):
    keys = _sub(released["checkpoints"]["stage1"]["keys"], "model.diffusion_model.")
    sites = spade_sites_from_config(sd21_unet_config())
    kit = _shapes(SpadeInjector(sites=[asdict(s) for s in sites], prompt_dim=256, hidden_dim=128))
    mapped = {}
    for i, site in enumerate(sites):  # site 0 = middle_block.0, site 1 + K = output_blocks.K.0
        block = "middle_block.0" if i == 0 else f"output_blocks.{i - 1}.0"
        mapped.update({f"layers.{i}.{k}": v for k, v in _sub(keys, f"{block}.spade.").items()})
    assert mapped == kit  # 0 missing, 0 unexpected, every shape equal


def test_released_prompt_generator_takes_prompt_model_tensors(released):
    from moediffir.models.prompts import build_prompt_generator

    keys = _sub(released["checkpoints"]["stage1"]["keys"], "structcond_stage_model.")
    gen = build_prompt_generator("moe", 256, num_prompts=7, top_k=3, routing="task", num_tasks=21, dp_dim=768,
                                 heads=4, router_input="attention", gate_init="zeros", prompt_init="uniform")
    kit = _shapes(gen)
    rel = _sub(keys, "Prompt_model1.")
    renamed = {"prompts" if k == "prompt_param" else (f"router.{k}" if k.startswith("f_gate.") else k): v
               for k, v in rel.items()}  # prompt_param -> prompts, f_gate.* -> router.f_gate.*, attn.* as is
    assert renamed == kit


def test_rrdb_compensator_takes_the_released_fusion_tensors(released):
    from diffusers import AutoencoderKL

    from moediffir.models.compensator import DecoderCompensator
    from moediffir.weights.checkpoint_files import sd21_single_file_configs

    keys = released["checkpoints"]["stage2"]["keys"]
    vae = AutoencoderKL.from_config(sd21_single_file_configs()["vae"])
    comp = DecoderCompensator.from_vae(vae, fusion_block="rrdb")
    kit = {k: v for k, v in _shapes(comp).items() if k.startswith("fusion.")}
    mapped = {}
    for level in comp.fusion_levels:
        mapped.update({f"fusion.{level}.{k}": v for k, v in _sub(keys, f"decoder.fusion_layer_{level}.").items()})
    assert mapped == kit
