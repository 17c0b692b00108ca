"""MoE-Prompt Module (moediffir/models/prompt_module.py; paper Fig. 3c, §3.2, §3.4)."""

from __future__ import annotations

import pytest
import torch

from moediffir.models.prompt_module import MoEPromptModule

SMALL = {"prompt_dim": 16, "vit_depth": 1, "vit_heads": 2, "mlp_ratio": 2.0, "num_prompts": 5, "top_k": 2}


def _module(**kw) -> MoEPromptModule:
    torch.manual_seed(0)
    return MoEPromptModule(**{**SMALL, **kw}).eval()


@pytest.mark.parametrize("hw", [(8, 8), (16, 24), (24, 8), (40, 16)])
def test_any_latent_size_divisible_by_8(hw):
    m = _module()
    out = m(torch.randn(2, 4, *hw))
    h, w = hw
    assert [tuple(x.shape) for x in out.maps] == [(2, 16, h >> s, w >> s) for s in range(4)]
    assert len(out.routing) == 4
    for s, r in enumerate(out.routing):
        assert (r["height"], r["width"]) == (h >> s, w >> s)
        assert r["indices"].shape == (2, (h >> s) * (w >> s), 2)
        assert r["gates"].requires_grad  # returned as computed: whoever keeps it detaches it
    assert not hasattr(m, "last_routing")  # no state kept between calls


def test_size_not_divisible_raises():
    with pytest.raises(ValueError, match="not divisible by 8"):
        _module()(torch.randn(1, 4, 12, 16))
    assert _module(num_scales=3)(torch.randn(1, 4, 12, 16)).maps[-1].shape[-2:] == (3, 4)


def test_routing_is_per_token_and_readable():
    m = _module()
    z = torch.randn(1, 4, 16, 16)
    routing = m(z).routing
    gates = routing[0]["gates"]  # (1, 256, 5)
    assert ((gates > 0).sum(-1) == 2).all()
    assert torch.allclose(gates.sum(-1), torch.ones_like(gates[..., 0]))
    assert len({tuple(i.tolist()) for i in routing[0]["indices"][0]}) > 1  # tokens route differently


@pytest.mark.parametrize("design", ["none", "single", "multi", "moe"])
def test_save_load_round_trip(tmp_path, design):
    m = _module(prompt_design=design, timestep_input=True, dp_dim=12 if design == "moe" else 0)
    m.save_pretrained(tmp_path)
    m2 = MoEPromptModule.from_pretrained(tmp_path).eval()

    def public(cfg):
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    assert public(m2.config) == public(m.config)
    z, t = torch.randn(2, 4, 8, 16), torch.tensor([5, 700])
    dp = torch.randn(2, 7, 12) if design == "moe" else None
    for a, b in zip(m(z, t, dp_tokens=dp).maps, m2(z, t, dp_tokens=dp).maps):
        assert torch.equal(a, b)


def test_none_design_maps_are_the_vit_features():
    m = _module(prompt_design="none")
    z = torch.randn(1, 4, 8, 8)
    out = m(z)
    x = m.conv_in(z)
    for blk in m.blocks[0]:
        x = blk(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(1, 16, 8, 8)
    assert torch.allclose(out.maps[0], x, atol=1e-6)


def test_timestep_input():
    m = _module(timestep_input=True)
    z = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="timesteps"):
        m(z)
    assert not torch.allclose(m(z, torch.tensor([1])).maps[0], m(z, torch.tensor([900])).maps[0])
    plain = _module()
    assert torch.equal(plain(z, torch.tensor([1])).maps[0], plain(z, torch.tensor([900])).maps[0])


def test_blind_ignores_labels_task_uses_them():
    z = torch.randn(2, 4, 8, 8)
    blind = _module()
    a = blind(z, task_labels=torch.tensor([0, 0])).maps[0]
    b = blind(z, task_labels=torch.tensor([4, 9])).maps[0]
    assert torch.equal(a, b)
    task = _module(routing="task", num_tasks=21)
    with pytest.raises(ValueError, match="task_labels"):
        task(z)
    outs = [task(z, task_labels=torch.tensor([t, t])) for t in range(21)]
    assert any(not torch.allclose(outs[0].maps[0], o.maps[0]) for o in outs[1:])
    assert outs[-1].routing[0]["gates"].shape == (2, 64, 5)  # per token (8x8 map)


def test_dp_required_when_built_with_dp():
    m = _module(dp_dim=12)
    assert m.uses_dp
    with pytest.raises(ValueError, match="dp_tokens"):
        m(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="without a degradation prior"):
        _module()(torch.randn(1, 4, 8, 8), dp_tokens=torch.randn(1, 7, 12))


def test_balance_loss_summed_over_scales_and_trainable():
    m = _module(balance_loss_weight=0.1).train()
    out = m(torch.randn(2, 4, 16, 16))
    assert out.balance_loss.item() > 0 and out.balance_loss.requires_grad
    out.balance_loss.backward()
    assert all(g.router.w_gate.weight.grad is not None for g in m.generators)
    assert _module().train()(torch.randn(2, 4, 8, 8)).balance_loss.item() == 0.0


def test_vit_final_norm_normalises_each_scales_tokens():
    """Released norm1..norm4: the maps of the `none` design are the LayerNorm-ed ViT tokens of each scale."""
    z = torch.randn(2, 4, 16, 16) * 3
    plain = _module(prompt_design="none")
    normed = _module(prompt_design="none", vit_final_norm=True)
    assert len(normed.final_norms) == 4 and plain.final_norms is None
    with torch.no_grad():
        for m in normed(z).maps:
            assert torch.allclose(m.mean(1), torch.zeros_like(m.mean(1)), atol=1e-4)  # per-token LN over C
            assert torch.allclose(m.var(1, unbiased=False), torch.ones_like(m.var(1)), atol=1e-2)
        first_plain = plain(z).maps[0]
        assert not torch.allclose(first_plain.var(1, unbiased=False), torch.ones_like(first_plain.var(1)), atol=1e-2)
        # the next scale reads the normed tokens: same weights with the norm skipped -> another scale-1 map
        skipped = _module(prompt_design="none", vit_final_norm=True)
        skipped.final_norms = None
        assert not torch.allclose(normed(z).maps[1], skipped(z).maps[1], atol=1e-4)
