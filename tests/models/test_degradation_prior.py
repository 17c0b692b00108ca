"""Degradation prior (paper §3.2, appendix A): token layout, CLIP preprocessing, DA-CLIP key layout, loading."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from moediffir.config import resolve_config
from moediffir.errors import MissingWeightsError
from moediffir.models.clip_encoders import CLIP_MEAN, CLIP_STD, WeightLayoutError
from moediffir.models.degradation_prior import DegradationPrior, load_daclip_layout
from moediffir.weights.builders import build_degradation_prior, load_degradation_prior_weights

SMALL = {"image_size": 64, "patch_size": 16, "width": 32, "layers": 2, "heads": 2, "output_dim": 16}


def _fixture() -> dict:
    return json.loads(
        resources.files("moediffir").joinpath("fixtures", "daclip_vit_b32_keys.json").read_text()
    )


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _public_file(path, layout: dict, seed: int = 0, wrap_module: bool = False) -> dict:
    """Write a checkpoint with exactly ``layout``'s keys/shapes in the public file layout.

    Each tensor is a random row expanded to its full shape, so the file stays tiny while every key carries
    its own values (a key mix-up on loading would be visible).
    """
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for k, shape in layout.items():
        row = torch.randn(shape[-1] if shape else 1, generator=g)
        tensors[k] = row.expand(*shape) if shape else row[0].clone()
    state = {("module." + k if wrap_module else k): v for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 30, "name": "daclip_ViT-B-32", "state_dict": state}, path)
    return tensors


# ------------------------------------------------------------------------------------ behaviour
def test_tiny_tokens_shape_dim_and_any_input_size():
    dp = DegradationPrior.for_backend("tiny")
    for h, w in [(64, 64), (50, 70), (257, 31)]:
        tokens = dp(torch.rand(2, 3, h, w))
        assert tokens.shape == (2, 16, 32)
    assert dp.token_dim == 32 and dp.num_tokens == 16


def test_frozen_and_no_grad():
    dp = DegradationPrior.for_backend("tiny")
    assert not any(p.requires_grad for p in dp.parameters())
    dp.train()
    assert not dp.training and not dp.tower.training
    lq = torch.rand(1, 3, 64, 64, requires_grad=True)
    assert not dp(lq).requires_grad


@pytest.mark.parametrize("backend", ["tiny", "daclip"])
def test_tokens_are_permuted_in_raster_order(backend):
    """With no transformer block, token i depends only on patch i: proves (B, C, g, g) -> (B, g*g, C) is a
    permute in raster order, not a reshape (the released code's fault)."""
    dp = DegradationPrior(backend=backend, **{**SMALL, "layers": 0})
    _randomise(dp)
    x = torch.rand(1, 3, 64, 64)  # already 64 px: no resampling mixes patches
    base = dp(x)
    r, c = 1, 2  # patch row 1, column 2 of the 4x4 grid
    y = x.clone()
    y[:, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = torch.rand(1, 3, 16, 16)
    changed = (dp(y) - base).abs().amax(dim=-1)[0]  # (16,)
    assert changed[r * 4 + c] > 1e-3
    others = torch.ones(16, dtype=torch.bool)
    others[r * 4 + c] = False
    assert torch.all(changed[others] == 0)


def test_preprocessing_resizes_and_normalises_inside_the_module():
    dp = DegradationPrior.for_backend("tiny")
    colour = torch.tensor([0.2, 0.5, 0.9])
    lq = colour.view(1, 3, 1, 1).expand(2, 3, 40, 90).contiguous()
    x = dp.preprocess(lq)
    assert x.shape == (2, 3, 64, 64)
    expected = (colour - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x[0, :, 10, 10], expected, atol=1e-5)
    crop = DegradationPrior(backend="tiny", resize_mode="center_crop", **SMALL).preprocess(
        torch.rand(1, 3, 40, 90)
    )
    assert crop.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        dp(torch.rand(3, 64, 64))


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_matches_open_clip_vision_transformer(quick_gelu):
    """Same weights as open_clip's VisionTransformer give the same patch tokens and pooled embedding, in the
    plain (clip) layout and in the DA-CLIP controller layout."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    torch.manual_seed(0)
    act = QuickGELU if quick_gelu else torch.nn.GELU
    ref = VisionTransformer(mlp_ratio=4.0, act_layer=act, output_tokens=True, **SMALL).eval()
    _randomise(ref, seed=1)
    ours = DegradationPrior(backend="clip", quick_gelu=quick_gelu, **SMALL)
    ours.load_state_dict({f"visual.{k}": v for k, v in ref.state_dict().items()}, strict=True)
    lq = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pooled, tokens = ref(ours.preprocess(lq))
    assert torch.allclose(ours(lq), tokens, atol=1e-5)
    assert torch.allclose(ours.embed(lq), pooled, atol=1e-5)

    ctrl = DegradationPrior(backend="daclip", quick_gelu=quick_gelu, **SMALL)
    remapped = {
        "visual_control." + k.replace("transformer.resblocks", "transformer.transformer.resblocks"): v
        for k, v in ref.state_dict().items()
    }
    missing, unexpected = ctrl.load_state_dict(remapped, strict=False)
    assert all(".zero_modules." in k for k in missing) and not unexpected
    assert torch.allclose(ctrl(lq), tokens, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    dp = DegradationPrior.for_backend("tiny")
    _randomise(dp)
    lq = torch.rand(2, 3, 48, 48)
    before = dp(lq)
    dp.save_pretrained(tmp_path / "dp")
    again = DegradationPrior.from_pretrained(tmp_path / "dp")
    assert again.config.backend == "tiny" and again.token_dim == 32
    assert torch.equal(again(lq), before)
    assert not any(p.requires_grad for p in again.parameters())


# ----------------------------------------------------------------------------- DA-CLIP key layout
def test_fixture_counts_and_used_subtree():
    fx = _fixture()
    keys = fx["keys"]
    assert fx["num_keys"] == len(keys) == 631
    used = [k for k in keys if k.startswith("visual_control.")]
    assert fx["num_used_keys"] == len(used) == 176
    assert keys["visual_control.conv1.weight"] == [768, 3, 32, 32]
    assert keys["visual_control.transformer.zero_modules.11.weight"] == [768, 768]
    assert keys["visual_control.positional_embedding"] == [50, 768]


def test_daclip_module_keys_equal_public_subtree():
    dp = DegradationPrior.for_backend("daclip")
    ours = {k: list(v.shape) for k, v in dp.state_dict().items()}
    public = {k: v for k, v in load_daclip_layout().items() if k.startswith("visual_control.")}
    assert ours == public
    assert dp.token_dim == 768 and dp.num_tokens == 49


def test_fixture_agrees_with_open_clip_vit_b32_architecture():
    """Independent check of the hand-derived fixture: DaCLIP's layout rebuilt from open_clip's ViT-B-32 CLIP
    (clip.*, the shared visual.*, the controller copy with ControlTransformer, logit_scale)."""
    import open_clip

    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    sd = {k: list(v.shape) for k, v in clip.state_dict().items()}
    derived = {f"clip.{k}": s for k, s in sd.items()}
    visual = {k[len("visual.") :]: s for k, s in sd.items() if k.startswith("visual.")}
    derived.update({f"visual.{k}": s for k, s in visual.items()})
    for k, s in visual.items():
        derived[
            "visual_control." + k.replace("transformer.resblocks", "transformer.transformer.resblocks")
        ] = s
    for i in range(12):
        derived[f"visual_control.transformer.zero_modules.{i}.weight"] = [768, 768]
        derived[f"visual_control.transformer.zero_modules.{i}.bias"] = [768]
    derived["logit_scale"] = []
    assert derived == load_daclip_layout()


@pytest.mark.parametrize("wrap_module", [False, True])
def test_loads_a_file_in_the_public_layout(tmp_path, wrap_module):
    path = tmp_path / "daclip_ViT-B-32.pt"
    tensors = _public_file(path, load_daclip_layout(), wrap_module=wrap_module)
    dp = load_degradation_prior_weights(DegradationPrior.for_backend("daclip"), path)
    sd = dp.state_dict()
    for key in (
        "visual_control.conv1.weight",
        "visual_control.transformer.transformer.resblocks.7.mlp.c_fc.bias",
        "visual_control.ln_post.weight",
        "visual_control.transformer.zero_modules.3.weight",
    ):
        assert torch.equal(sd[key], tensors[key])
    assert not torch.equal(sd["visual_control.ln_post.weight"], tensors["visual.ln_post.weight"])
    assert not any(p.requires_grad for p in dp.parameters())


def test_wrong_file_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    layout = load_daclip_layout()
    del layout["visual_control.ln_pre.bias"]
    layout["visual_control.extra_head.weight"] = [4, 4]
    layout["visual_control.proj"] = [768, 256]
    path = tmp_path / "wrong.pt"
    _public_file(path, layout)
    dp = DegradationPrior.for_backend("daclip")
    with pytest.raises(WeightLayoutError) as err:
        load_degradation_prior_weights(dp, path)
    msg = str(err.value)
    assert "missing keys (1): [visual_control.ln_pre.bias]" in msg
    assert "unexpected keys (1): [visual_control.extra_head.weight]" in msg
    assert "visual_control.proj: file (768, 256) vs expected (768, 512)" in msg
    assert str(path) in msg


def test_plain_clip_file_is_not_taken_for_daclip(tmp_path):
    clip_only = {k[len("clip.") :]: s for k, s in load_daclip_layout().items() if k.startswith("clip.")}
    path = tmp_path / "open_clip.bin"
    _public_file(path, clip_only)
    with pytest.raises(
        WeightLayoutError, match=r"missing keys \(478\).*by prefix: clip\.\*: 302, visual_control\.\*: 176"
    ):
        load_degradation_prior_weights(DegradationPrior.for_backend("daclip"), path)
    dp = load_degradation_prior_weights(DegradationPrior.for_backend("clip"), path)  # the clip backend takes visual.*
    assert dp.prefix == "visual"


# --------------------------------------------------------------------------------------- factory
def test_factory_smoke_is_tiny_and_paper_needs_the_file(tmp_path):
    assert build_degradation_prior(resolve_config("smoke")).config.backend == "tiny"
    cfg = resolve_config("paper", {"data.root": str(tmp_path)})
    with pytest.raises(MissingWeightsError) as err:
        build_degradation_prior(cfg)
    assert str(tmp_path / "weights" / "daclip_ViT-B-32.pt") in str(err.value)
    assert "weblzw/daclip-uir-ViT-B-32-irsde" in str(err.value)
    random = build_degradation_prior(
        resolve_config("paper", {"data.root": str(tmp_path), "model.random_backbone": True})
    )
    assert random.config.backend == "daclip" and random.token_dim == 768
    _public_file(tmp_path / "weights" / "daclip_ViT-B-32.pt", load_daclip_layout())
    loaded = build_degradation_prior(cfg)
    assert loaded(torch.rand(1, 3, 32, 32)).shape == (1, 49, 768)
