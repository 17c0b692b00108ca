"""Importing the released stage-I checkpoint (``moediffir.weights.released_checkpoint``, ``moediffir import-released``).

The checkpoint is fabricated with exactly the keys and shapes of ``moediffir/fixtures/released_moediffir_keys.json``
(2293 tensors at the paper's sizes). Allocating all of it (SD 2.1's UNet and VAE alone are ~950 M parameters,
~3.8 GB in fp32) would make the test slow and memory-hungry, so the choice is:

* the parts the kit converts (MoE-Prompt module, SPADE, DA-CLIP ``visual_control``, the released Visual2Text
  with its latent enhancer: ~210 M parameters) get random fp32 values (BatchNorm counters random int64), so
  "lands unchanged" is checked bit for bit after reading the written folder back;
* every other tensor (the frozen SD UNet / VAE, which are checked by name and shape only and not copied, the
  DA-CLIP towers, the schedule buffers) is a zero-stride view of one scalar expanded to the fixture's shape:
  names and shapes are exact, storage is one element, so ``torch.save`` writes a few bytes.

The file is written and converted once per module; the failure cases edit the in-memory state dict.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moediffir.models.degradation_prior import DegradationPrior
from moediffir.models.prompt_module import MoEPromptModule
from moediffir.models.spade import SpadeInjector
from moediffir.weights import released_checkpoint as rc
from moediffir.weights.model_folder import check_model_folder, read_model_info

CROSS_DIM = 1024  # SD 2.1's context width


def _fixture_keys(stage: str = "stage1") -> dict[str, list[int]]:
    data = json.loads(resources.files("moediffir").joinpath("fixtures", "released_moediffir_keys.json").read_text())
    return data["checkpoints"][stage]["keys"]


def _is_v2t(key: str) -> bool:
    return key.startswith(("cond_stage_model.", "transformer_encoder.", "transformer_decoder."))


def _converted(key: str) -> bool:
    if key.startswith(rc.STAGE2_VAE):  # stage II: the fusion blocks and the VAE copy
        return True
    return (key.startswith(rc.DP_SUBTREE) or ".spade." in key or _is_v2t(key)
            or (key.startswith(rc.PROMPT) and not key.startswith("structcond_stage_model.DACLIP_model.")))


def _fabricate(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in keys.items():
        if _converted(key) and key.endswith("num_batches_tracked"):
            state[key] = torch.randint(0, 10_000, shape, generator=gen)  # int64, as BatchNorm keeps it
        elif _converted(key):
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
    assert report["converted"]["v2t"] == 344 + 48  # cond_stage_model.* and transformer_encoder/decoder.*, 1:1
    assert report["checked_not_copied"]["model.diffusion_model.*"]["num_keys"] == 686
    assert report["checked_not_copied"]["first_stage_model.*"]["num_keys"] == 248


def test_v2t_keys_convert_into_the_released_form_and_only_the_towers_stay_unused(imported):
    unused = imported["report"]["unused"]
    assert set(unused) == {"structcond_stage_model.DACLIP_model.{clip,visual,logit_scale}", "loss.*"}
    towers = unused["structcond_stage_model.DACLIP_model.{clip,visual,logit_scale}"]["keys"]
    assert len(towers) == 455 and "structcond_stage_model.DACLIP_model.logit_scale" in towers
    assert imported["report"]["v2t"].startswith("on: the released form")


def test_v2t_keys_are_reported_by_name_when_the_kit_form_is_asked_for(imported):
    """model.v2t_form=kit (or V2T off): the released keys do not fit, so V2T is off and they are listed by name."""
    keys = imported["keys"]
    cfg = rc.released_config({"model.v2t_form": "kit"})
    assert cfg.model.use_v2t is False and rc.released_config().model.use_v2t is True
    mapped = rc.map_released_stage1(imported["state"], "x.ckpt", convert_v2t=cfg.model.use_v2t)
    report = mapped.report()
    assert not mapped.v2t and "v2t" not in report["converted"]
    assert rc.NOT_CONVERTIBLE in report["unused"]["cond_stage_model.*"]["what"]
    assert set(report["unused"]["cond_stage_model.*"]["keys"]) == {k for k in keys if k.startswith("cond_stage_model.")}
    enhancer = report["unused"]["transformer_encoder.* / transformer_decoder.*"]["keys"]
    assert set(enhancer) == {k for k in keys if k.startswith("transformer_")}
    assert report["v2t"] == "off: " + rc.NOT_CONVERTIBLE


def test_tensors_land_unchanged(imported):
    state, folder = imported["state"], imported["folder"]
    cfg = check_model_folder(folder)
    assert cfg.model.recipe == "released" and cfg.model.use_v2t is True and cfg.model.v2t_form == "released"
    info = read_model_info(folder)
    assert "degradation_prior" in info["parts"] and info["info"]["v2t"] == rc.V2T_ON
    card = (folder / "README.md").read_text()
    assert f"| Visual2Text | {rc.V2T_ON} |" in card
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


# released key -> the released V2T form's key, written out by hand (the converter's rules are not used here)
V2T_SPOTS = {
    "cond_stage_model.conv1.weight": "clip_visual.conv1.weight",
    "cond_stage_model.bn2.num_batches_tracked": "clip_visual.bn2.num_batches_tracked",
    "cond_stage_model.layer3.4.conv2.weight": "clip_visual.layer3.4.conv2.weight",
    "cond_stage_model.layer4.0.downsample.1.running_var": "clip_visual.layer4.0.downsample.1.running_var",
    "cond_stage_model.attnpool.positional_embedding": "clip_visual.attnpool.positional_embedding",
    "cond_stage_model.conv.0.weight": "grid_conv.weight",
    "cond_stage_model.conv.0.bias": "grid_conv.bias",
    "cond_stage_model.prompt_model_semantic.prompt_param": "learned_tokens",
    "cond_stage_model.adapter1.fc.0.weight": "adapter.0.weight",
    "cond_stage_model.adapter1.fc.2.weight": "adapter.2.weight",
    "transformer_encoder.0.weight": "latent_enhancer.conv_in.weight",
    "transformer_encoder.1.attn.temperature": "latent_enhancer.blocks.0.attn.temperature",
    "transformer_encoder.2.norm1.body.weight": "latent_enhancer.blocks.1.norm1.norm.weight",
    "transformer_decoder.0.ffn.project_in.weight": "latent_enhancer.blocks.2.ffn.project_in.weight",
    "transformer_decoder.1.norm2.body.bias": "latent_enhancer.blocks.3.norm2.norm.bias",
    "transformer_decoder.2.weight": "latent_enhancer.conv_out.weight",
    "transformer_decoder.2.bias": "latent_enhancer.conv_out.bias",
}


def test_v2t_lands_unchanged_and_the_folder_loads_with_it(imported):
    from diffusers import UNet2DConditionModel

    from moediffir.models.visual2text_released import ReleasedVisual2Text
    from moediffir.weights.checkpoint_files import sd21_single_file_configs
    from moediffir.weights.denoiser_folder import load_denoiser

    state, folder = imported["state"], imported["folder"]
    v2t = ReleasedVisual2Text.from_pretrained(folder / "denoiser" / "v2t")
    got = v2t.state_dict()
    for released, kit in V2T_SPOTS.items():
        assert torch.equal(got[kit], state[released]) and got[kit].dtype == state[released].dtype, released
    # every released V2T tensor is in the form exactly once, and nothing else is
    released_values = sorted(float(v.double().sum()) for k, v in state.items() if _is_v2t(k))
    assert sorted(float(v.double().sum()) for v in got.values()) == released_values
    assert v2t.context_length == 49 + 49 and v2t.config.enhancer_dim == 256
    with torch.device("meta"):  # the denoiser around a structure-only SD 2.1 UNet: which V2T class loads
        unet = UNet2DConditionModel.from_config(sd21_single_file_configs()["unet"])
    denoiser = load_denoiser(folder / "denoiser", unet)
    assert isinstance(denoiser.v2t, ReleasedVisual2Text)
    denoiser.spade.detach()


def test_a_missing_tensor_is_named(imported, tmp_path):
    state = dict(imported["state"])
    del state["structcond_stage_model.Prompt_model2.attn.to_v.weight"]
    mapped = rc.map_released_stage1(state, "x.ckpt")
    with pytest.raises(rc.ReleasedCheckpointError, match=r"x\.ckpt.*generators\.1\.attn\.to_v\.weight"):
        rc.build_kit_parts(rc.released_config(), mapped, "x.ckpt")


def test_a_missing_or_misshapen_v2t_tensor_is_named(imported):
    state = dict(imported["state"])
    del state["transformer_decoder.1.attn.qkv_dwconv.weight"]
    mapped = rc.map_released_stage1(state, "x.ckpt")
    with pytest.raises(rc.ReleasedCheckpointError,
                       match=r"x\.ckpt: the Visual2Text.*latent_enhancer\.blocks\.3\.attn\.qkv_dwconv\.weight"):
        rc.build_kit_parts(rc.released_config(), mapped, "x.ckpt")
    state = dict(imported["state"])
    state["cond_stage_model.adapter1.fc.0.weight"] = torch.zeros(128, 1024)
    mapped = rc.map_released_stage1(state, "x.ckpt")
    with pytest.raises(rc.ReleasedCheckpointError, match=r"adapter\.0\.weight.*\(128, 1024\)"):
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
    state["structcond_stage_model.conv_middle.0.weight"] = torch.zeros(256, 256, 3, 3)
    mapped = rc.map_released_stage1(state, "x.ckpt")
    unused = mapped.unused
    assert unused["structcond_stage_model.task_embedding"] == ["structcond_stage_model.task_embedding"]
    assert unused["cond_stage_model.adapter2.*"] == ["cond_stage_model.adapter2.fc.0.weight"]
    assert unused["structcond_stage_model.conv_middle.*"] == ["structcond_stage_model.conv_middle.0.weight"]
    assert len(mapped.v2t) == 392  # the stale adapter2 does not reach the V2T form; everything else does
    state["structcond_stage_model.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(rc.ReleasedCheckpointError, match=r"unexpected.*structcond_stage_model\.extra_head\.weight"):
        rc.map_released_stage1(state, "x.ckpt")
    for stray in ("cond_stage_model.adapter3.fc.0.weight", "transformer_encoder.3.attn.qkv.weight"):
        bad = {**imported["state"], stray: torch.zeros(3)}  # a V2T key no rule knows is unexpected, not "unused"
        with pytest.raises(rc.ReleasedCheckpointError, match=rf"unexpected.*{stray.replace('.', '[.]')}"):
            rc.map_released_stage1(bad, "x.ckpt")


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
    # V2T converts, so the UNet reads its context and no text encoder is needed: the import runs anywhere
    assert main(["import-released", str(imported["ckpt"]), "-o", str(out)]) == 0
    assert check_model_folder(out).model.recipe == "released"
    assert f"Visual2Text {rc.V2T_ON}" in capsys.readouterr().out
