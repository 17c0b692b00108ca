"""Decoder compensator (paper §3.4 stage II, Eq. 4, Fig. 3d): CFW fusion into the VAE decoder."""

from __future__ import annotations

import pytest
import torch

from moediffir.config import resolve_config
from moediffir.models.compensator import DecoderCompensator, build_compensator, default_fusion_levels
from moediffir.models.sd_backbone import build_vae, packaged_config


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("tiny")


def _randomise_fusion(comp: DecoderCompensator, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in comp.fusion_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _inputs(b=2, h=64, w=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, h // 8, w // 8, generator=g), torch.rand(b, 3, h, w, generator=g) * 2 - 1


def test_levels_and_channels_come_from_the_vae_config(vae):
    comp = DecoderCompensator.from_vae(vae)
    channels = vae.config.block_out_channels
    assert comp.fusion_levels == (1, 2) == default_fusion_levels(4)
    for lv in comp.fusion_levels:
        assert comp.fusion[str(lv)].encode.conv1.in_channels == 2 * channels[lv]
        assert comp.fusion[str(lv)].scale[-1].out_channels == channels[lv]
    sd21 = packaged_config("sd21_base_vae.json")["block_out_channels"]
    assert [sd21[lv] for lv in default_fusion_levels(len(sd21))] == [256, 512]  # StableSR's two CFW levels
    with pytest.raises(ValueError, match="fusion_levels"):
        DecoderCompensator.from_vae(vae, fusion_levels=(4,))


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_zero_init_equals_plain_decoder_for_any_w(vae, w):
    comp = DecoderCompensator.from_vae(vae)
    z, lq = _inputs()
    with torch.no_grad():
        assert torch.equal(comp.decode(z, lq, w=w), vae.decode(z).sample)


def test_w_zero_is_exactly_the_plain_decoder_after_training(vae):
    comp = DecoderCompensator.from_vae(vae)
    _randomise_fusion(comp)
    z, lq = _inputs()
    with torch.no_grad():
        plain = vae.decode(z).sample
        assert torch.equal(comp.decode(z, lq, w=0.0), plain)
        assert torch.equal(comp.decode(z, w=0), plain)  # w = 0 needs no LQ image
        fused = comp.decode(z, lq, w=0.5)
        assert (fused - plain).abs().max() > 1e-4
        per_sample = comp.decode(z, lq, w=torch.tensor([0.0, 0.5]))
        assert torch.equal(per_sample[0], plain[0]) and torch.allclose(per_sample[1], fused[1], atol=1e-6)


def test_precomputed_features_any_size_and_no_hidden_state(vae):
    comp = DecoderCompensator.from_vae(vae)
    _randomise_fusion(comp)
    z, lq = _inputs(b=1, h=48, w=80)
    _, lq2 = _inputs(b=1, h=48, w=80, seed=7)
    with torch.no_grad():
        feats = comp.encode_features(lq)
        assert [tuple(f.shape) for f in feats] == [(1, 16, 24, 40), (1, 32, 12, 20)]
        first = comp.decode(z, lq, w=0.7)
        assert first.shape == (1, 3, 48, 80)
        assert torch.equal(comp.decode(z, features=feats, w=0.7), first)
        other = comp.decode(z, lq2, w=0.7)
        assert not torch.equal(other, first)
        assert torch.equal(comp.decode(z, lq, w=0.7), first)  # nothing cached from the previous call


def test_input_errors(vae):
    comp = DecoderCompensator.from_vae(vae)
    z, lq = _inputs()
    with pytest.raises(ValueError, match="not divisible by 8"):
        comp.encode_features(lq[..., :60])
    with pytest.raises(ValueError, match="decode to"):
        comp.decode(z, lq[..., :56, :56], w=0.5)
    with pytest.raises(ValueError, match="needs lq_image or features"):
        comp.decode(z, w=0.5)


def test_only_fusion_layers_train(vae):
    comp = DecoderCompensator.from_vae(vae).train()
    assert not comp.vae.training
    z, lq = _inputs()
    comp.decode(z, lq, w=1.0).abs().mean().backward()
    for name, p in comp.named_parameters():
        if name.startswith("vae."):
            assert not p.requires_grad and p.grad is None, name
    grads = [p.grad for p in comp.fusion_parameters()]
    assert all(g is not None for g in grads)
    assert comp.fusion["1"].scale[-1].weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_result(vae):
    z, lq = _inputs()
    results = []
    for ckpt in (False, True):
        torch.manual_seed(3)  # same fusion initialisation for both runs
        comp = DecoderCompensator.from_vae(vae)
        _randomise_fusion(comp)
        calls = []
        if ckpt:

            def counting(module, *args, calls=calls):
                calls.append(type(module).__name__)
                return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

            comp.enable_gradient_checkpointing(gradient_checkpointing_func=counting)
        out = comp.decode(z, lq, w=0.5)
        assert ("SFTFusion" in calls) == ckpt
        out.square().mean().backward()
        results.append((out.detach(), comp.fusion["2"].encode.conv1.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_save_load_round_trip(vae, tmp_path):
    comp = build_compensator(resolve_config("smoke"), vae)
    _randomise_fusion(comp)
    z, lq = _inputs()
    with torch.no_grad():
        before = comp.decode(z, lq, w=0.5)
    comp.save_pretrained(tmp_path / "comp")
    again = DecoderCompensator.from_pretrained(tmp_path / "comp")
    assert list(again.config.fusion_levels) == [1, 2]
    assert list(again.config.vae_config["block_out_channels"]) == list(vae.config.block_out_channels)
    with torch.no_grad():
        assert torch.equal(again.decode(z, lq, w=0.5), before)
    assert not any(p.requires_grad for p in again.vae.parameters())
    assert all(p.requires_grad for p in again.fusion_parameters())


# --------------------------------------------------------------------------- released fusion block (rrdb)
def test_rrdb_fusion_is_the_released_block_with_released_names(vae):
    comp = build_compensator(resolve_config("smoke", {"stage2.fusion_block": "rrdb"}), vae)
    keys = set(comp.state_dict())
    for lv in comp.fusion_levels:
        for part in ("encode_enc_1.conv_out.weight", "encode_enc_1.norm2.weight", "encode_enc_2.0.rdb1.conv1.weight",
                     "encode_enc_2.1.rdb3.conv5.weight", "encode_enc_3.conv2.bias"):
            assert f"fusion.{lv}.{part}" in keys
        assert f"fusion.{lv}.encode_enc_3.conv_out.weight" not in keys  # C -> C: identity skip
        assert f"fusion.{lv}.encode_enc_2.2.rdb1.conv1.weight" not in keys  # exactly 2 RRDBs
        c = vae.config.block_out_channels[lv]
        assert comp.fusion[str(lv)].encode_enc_2[0].rdb1.conv5.weight.shape == (c, c + 4 * 32, 3, 3)
    with pytest.raises(ValueError, match="fusion_block"):
        DecoderCompensator.from_vae(vae, fusion_block="cfw")


def test_rrdb_fusion_output_is_dec_plus_w_f_by_hand(vae):
    F = torch.nn.functional
    comp = DecoderCompensator.from_vae(vae, fusion_block="rrdb").eval()
    block = comp.fusion["1"]
    c = vae.config.block_out_channels[1]
    g = torch.Generator().manual_seed(0)
    enc, dec = torch.randn(2, c, 8, 8, generator=g), torch.randn(2, c, 8, 8, generator=g)

    def res(m, x):  # GN-swish-conv twice + skip
        h = F.conv2d(F.silu(F.group_norm(x, m.norm1.num_groups, m.norm1.weight, m.norm1.bias, 1e-6)),
                     m.conv1.weight, m.conv1.bias, padding=1)
        h = F.conv2d(F.silu(F.group_norm(h, m.norm2.num_groups, m.norm2.weight, m.norm2.bias, 1e-6)),
                     m.conv2.weight, m.conv2.bias, padding=1)
        return h + (x if m.conv_out is None else F.conv2d(x, m.conv_out.weight, m.conv_out.bias))

    def rdb(m, x):
        feats = [x]
        for k in range(1, 5):
            conv = getattr(m, f"conv{k}")
            feats.append(F.leaky_relu(F.conv2d(torch.cat(feats, 1), conv.weight, conv.bias, padding=1), 0.2))
        return x + 0.2 * F.conv2d(torch.cat(feats, 1), m.conv5.weight, m.conv5.bias, padding=1)

    with torch.no_grad():
        f = res(block.encode_enc_1, torch.cat([enc, dec], 1))
        for rrdb in block.encode_enc_2:
            f = f + 0.2 * rdb(rrdb.rdb3, rdb(rrdb.rdb2, rdb(rrdb.rdb1, f)))
        f = res(block.encode_enc_3, f)
        for w in (0.5, 1.0):
            assert torch.allclose(block(enc, dec, w), dec + w * f, atol=1e-5)
        z, lq = _inputs()
        assert torch.equal(comp.decode(z, lq, w=0.0), vae.decode(z).sample)  # w = 0: the plain decoder
        assert not torch.allclose(comp.decode(z, lq, w=1.0), vae.decode(z).sample, atol=1e-4)  # released init
