"""Importing the released stage-I checkpoint (``moediffir.models.released_checkpoint``, ``moediffir import-released``).

The checkpoint is fabricated with exactly the keys and shapes of ``moediffir/fixtures/released_moediffir_keys.json``
(2293 tensors at the paper's sizes). Allocating all of it (SD 2.1's UNet and VAE alone are ~950 M parameters,
~3.8 GB in fp32) would make the test slow and memory-hungry, so the choice is:

* the parts the kit converts (MoE-Prompt module, SPADE, DA-CLIP ``visual_control``: ~140 M parameters) get
  random fp32 values, so "lands unchanged" is checked bit for bit after reading the written folder back;
* every other tensor (the frozen SD UNet / VAE, which are checked by name and shape only and not copied, the
  released V2T, the DA-CLIP towers, the schedule buffers) is a zero-stride view of one scalar expanded to the
  fixture's shape: names and shapes are exact, storage is one element, so ``torch.save`` writes a few bytes.

The file is written and converted once per module; the failure cases edit the in-memory state dict.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moediffir.models import released_checkpoint as rc
from moediffir.models.degradation_prior import DegradationPrior
from moediffir.models.prompt_module import MoEPromptModule
from moediffir.models.spade import SpadeInjector
from moediffir.pipelines.model_folder import check_model_folder, read_model_info

CROSS_DIM = 1024  # SD 2.1's context width


def _fixture_keys(stage: str = "stage1") -> dict[str, list[int]]:
    data = json.loads(resources.files("moediffir").joinpath("fixtures", "released_moediffir_keys.json").read_text())
    return data["checkpoints"][stage]["keys"]


def _converted(key: str) -> bool:
    if key.startswith(rc.STAGE2_VAE):  # stage II: the fusion blocks and the VAE copy
        return True
    return (key.startswith(rc.DP_SUBTREE) or ".spade." in key
            or (key.startswith(rc.PROMPT) and not key.startswith("structcond_stage_model.DACLIP_model.")))


def _fabricate(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in keys.items():
        if _converted(key):
            state[key] = torch.randn(shape, generator=gen)
        else:  # (shape) view of one element: exact name and shape, no memory
            state[key] = torch.zeros(()).expand(shape)
    return state


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    keys = _fixture_keys()
    state = _fabricate(keys)
    root = tmp_path_factory.mktemp("released")
    ckpt = root / "MoE-DiffIR_DACLIP.ckpt"
    torch.save({"state_dict": state, "epoch": 0}, ckpt)
    decoder_state = _fabricate(_fixture_keys("stage2"))
    decoder = root / "Decoder_Finetuned.ckpt"
    torch.save({"state_dict": decoder_state}, decoder)
    # stands in for SD 2.1's text encoder output for "" (pretrained weights are not on this machine)
    null_context = torch.randn(1, 77, CROSS_DIM, generator=torch.Generator().manual_seed(1))
    report = rc.import_released(ckpt, root / "model", null_context=null_context, decoder=decoder)
    return {"keys": keys, "state": state, "decoder_state": decoder_state, "decoder": decoder, "ckpt": ckpt, "folder": root / "model", "report": report,
            "null_context": null_context}


def test_every_key_is_mapped_checked_or_reported(imported):
    keys, report = imported["keys"], imported["report"]
    converted = sum(1 for k in keys if _converted(k))
    # the fused ViT qkv tensors become three kit tensors each: 4 scales x 2 blocks x (weight, bias)
    assert sum(n for part, n in report["converted"].items() if part != "compensator") == converted + 2 * 16
    assert report["converted"]["compensator"] == 460 - 56  # stage II: everything but loss.*
    assert len(report["unused"]["loss.*"]["keys"]) == 56
    accounted = converted + sum(g["num_keys"] for g in report["checked_not_copied"].values()) \
        + sum(g["num_keys"] for name, g in report["unused"].items() if name != "loss.*")
    assert accounted == len(keys) == 2293
    assert report["converted"]["degradation_prior"] == 176
    assert report["checked_not_copied"]["model.diffusion_model.*"]["num_keys"] == 686
    assert report["checked_not_copied"]["first_stage_model.*"]["num_keys"] == 248


def test_non_convertible_keys_are_reported_by_name(imported):
    keys, unused = imported["keys"], imported["report"]["unused"]
    v2t = unused["cond_stage_model.*"]
    assert rc.NOT_CONVERTIBLE in v2t["what"]
    assert set(v2t["keys"]) == {k for k in keys if k.startswith("cond_stage_model.")}
    enhancer = unused["transformer_encoder.* / transformer_decoder.*"]["keys"]
    assert set(enhancer) == {k for k in keys if k.startswith("transformer_")}
    towers = unused["structcond_stage_model.DACLIP_model.{clip,visual,logit_scale}"]["keys"]
    assert len(towers) == 455 and "structcond_stage_model.DACLIP_model.logit_scale" in towers
    assert imported["report"]["v2t"].startswith("off: not convertible")


def test_tensors_land_unchanged(imported):
    state, folder = imported["state"], imported["folder"]
    cfg = check_model_folder(folder)
    assert cfg.model.recipe == "released" and cfg.model.use_v2t is False
    info = read_model_info(folder)
    assert "degradation_prior" in info["parts"] and info["info"]["v2t"].startswith("off")
    card = (folder / "README.md").read_text()
    assert "| Visual2Text | off: not convertible: the kit's V2T differs |" in card
    assert "| imported from | released stage-I checkpoint MoE-DiffIR_DACLIP.ckpt, stage-II Decoder_Finetuned.ckpt |" in card
    pm = MoEPromptModule.from_pretrained(folder / "denoiser" / "prompt_module").state_dict()
    qkv = state["structcond_stage_model.blocks2.1.attn.qkv.weight"]  # (768, 256): rows q | k | v
    assert torch.equal(pm["blocks.1.1.attn.to_q.weight"], qkv[:256])
    assert torch.equal(pm["blocks.1.1.attn.to_k.weight"], qkv[256:512])
    assert torch.equal(pm["blocks.1.1.attn.to_v.weight"], qkv[512:])
    assert torch.equal(pm["blocks.3.0.attn.to_out.bias"], state["structcond_stage_model.blocks4.0.attn.proj.bias"])
    assert torch.equal(pm["generators.2.prompts"], state["structcond_stage_model.Prompt_model3.prompt_param"])
    assert torch.equal(pm["generators.0.router.f_gate.20.0.weight"],
                       state["structcond_stage_model.Prompt_model1.f_gate.20.0.weight"])
    assert torch.equal(pm["final_norms.3.weight"], state["structcond_stage_model.norm4.weight"])
    assert torch.equal(pm["downsamplers.2.weight"], state["structcond_stage_model.downsample3.op.weight"])
    spade = SpadeInjector.from_pretrained(folder / "denoiser" / "spade").state_dict()
    assert torch.equal(spade["layers.0.mlp_gamma.weight"],
                       state["model.diffusion_model.middle_block.0.spade.mlp_gamma.weight"])
    assert torch.equal(spade["layers.12.param_free_norm.bias"],
                       state["model.diffusion_model.output_blocks.11.0.spade.param_free_norm.bias"])
    dp = DegradationPrior.from_pretrained(folder / "degradation_prior").state_dict()
    for key, value in dp.items():
        assert torch.equal(value, state[rc.DP_SUBTREE + key[len("visual_control."):]]), key
    assert torch.equal(load_file(str(folder / "null_context.safetensors"))["null_context"], imported["null_context"])


def test_a_missing_tensor_is_named(imported, tmp_path):
    state = dict(imported["state"])
    del state["structcond_stage_model.Prompt_model2.attn.to_v.weight"]
    mapped = rc.map_released_stage1(state, "x.ckpt")
    with pytest.raises(rc.ReleasedCheckpointError, match=r"x\.ckpt.*generators\.1\.attn\.to_v\.weight"):
        rc.build_kit_parts(rc.released_config(), mapped, "x.ckpt")


def test_a_misshapen_tensor_is_named_with_shapes(imported):
    state = dict(imported["state"])
    state["model.diffusion_model.output_blocks.4.0.spade.mlp_beta.weight"] = torch.zeros(640, 64, 3, 3)
    mapped = rc.map_released_stage1(state, "x.ckpt")
    with pytest.raises(rc.ReleasedCheckpointError, match=r"layers\.5\.mlp_beta\.weight.*\(640, 64, 3, 3\)"):
        rc.build_kit_parts(rc.released_config(), mapped, "x.ckpt")


def test_frozen_sd_parts_are_checked(imported, tmp_path):
    state = dict(imported["state"])
    del state["first_stage_model.decoder.conv_out.weight"]
    with pytest.raises(rc.ReleasedCheckpointError, match=r"first_stage_model\.decoder\.conv_out\.weight"):
        rc._check_sd_parts(Path("x.ckpt"), state)
    state = dict(imported["state"])
    state["model.diffusion_model.out.2.weight"] = torch.zeros(()).expand(4, 320, 3, 1)
    with pytest.raises(rc.ReleasedCheckpointError, match=r"model\.diffusion_model\.out\.2\.weight"):
        rc._check_sd_parts(Path("x.ckpt"), state)


def test_unknown_keys_and_older_checkpoint_keys(imported):
    state = dict(imported["state"])
    state["structcond_stage_model.task_embedding"] = torch.zeros(21, 256)
    state["cond_stage_model.adapter2.fc.0.weight"] = torch.zeros(256, 1024)
    unused = rc.map_released_stage1(state, "x.ckpt").unused
    assert unused["structcond_stage_model.task_embedding"] == ["structcond_stage_model.task_embedding"]
    assert unused["cond_stage_model.adapter2.*"] == ["cond_stage_model.adapter2.fc.0.weight"]
    state["structcond_stage_model.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(rc.ReleasedCheckpointError, match=r"unexpected.*structcond_stage_model\.extra_head\.weight"):
        rc.map_released_stage1(state, "x.ckpt")


def test_bad_files_are_refused_by_name(tmp_path):
    with pytest.raises(rc.ReleasedCheckpointError, match="no such checkpoint"):
        rc.read_released_state(tmp_path / "absent.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(rc.ReleasedCheckpointError, match=r"bad\.ckpt: cannot read"):
        rc.read_released_state(bad)
    stage2 = {"decoder.fusion_layer_1.encode_enc_1.conv1.weight": torch.zeros(1)}
    with pytest.raises(rc.ReleasedCheckpointError, match="stage-II"):
        rc.map_released_stage1(stage2, "dec.ckpt")


def test_stage2_decoder_lands_unchanged(imported):
    from moediffir.models.compensator import DecoderCompensator

    state = imported["decoder_state"]
    comp = DecoderCompensator.from_pretrained(imported["folder"] / "compensator")
    assert comp.config.fusion_block == "rrdb"
    got = comp.state_dict()
    for key, value in state.items():
        if key.startswith(rc.FUSION):
            level, leaf = key[len(rc.FUSION):].split(".", 1)
            assert torch.equal(got[f"fusion.{level}.{leaf}"], value), key
    assert torch.equal(got["vae.decoder.conv_out.weight"], state["decoder.conv_out.weight"])
    assert torch.equal(got["vae.encoder.down_blocks.1.resnets.0.conv1.weight"], state["encoder.down.1.block.0.conv1.weight"])
    q = state["decoder.mid.attn_1.q.weight"]  # (512, 512, 1, 1) -> a linear (512, 512)
    assert torch.equal(got["vae.decoder.mid_block.attentions.0.to_q.weight"], q[:, :, 0, 0])


def test_stage2_misshapen_fusion_is_named(imported, tmp_path):
    state = dict(imported["decoder_state"])
    state["decoder.fusion_layer_2.encode_enc_3.conv2.weight"] = torch.zeros(512, 256, 3, 3)
    bad = tmp_path / "dec.ckpt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(rc.ReleasedCheckpointError, match=r"dec\.ckpt.*2\.encode_enc_3\.conv2\.weight.*\(512, 256, 3, 3\)"):
        rc.convert_released_stage2(bad)


def test_cli_refuses_in_one_line_and_writes_nothing(imported, tmp_path, capsys):
    from moediffir.cli import main

    assert main(["import-released", str(tmp_path / "absent.ckpt"), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent.ckpt: no such checkpoint file" in err[0]
    existing = tmp_path / "existing"
    (existing / "keep.txt").parent.mkdir()
    (existing / "keep.txt").write_text("x")
    assert main(["import-released", str(imported["ckpt"]), "-o", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and (existing / "keep.txt").read_text() == "x"
    out = tmp_path / "cli_model"
    code = main(["import-released", str(imported["ckpt"]), "-o", str(out)])
    if code == 0:  # SD 2.1's text encoder is on this machine: the empty prompt was encoded
        assert check_model_folder(out).model.recipe == "released"
        assert "not convertible: the kit's V2T differs" in capsys.readouterr().out
    else:  # no SD 2.1 text encoder here: refused naming what is missing, and no folder is left behind
        assert code == 2 and "moediffir: error:" in capsys.readouterr().err
        assert not out.exists()
