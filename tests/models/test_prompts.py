"""Prompt designs none / single / multi / moe (moediffir/models/prompts.py; paper Fig. 2, Table 2)."""

from __future__ import annotations

import pytest
import torch

from moediffir.models.prompts import PROMPT_DESIGNS, build_prompt_generator

C = 16


def _tokens(b=2, n=12):
    torch.manual_seed(1)
    return torch.randn(b, n, C)


@pytest.mark.parametrize("design", list(PROMPT_DESIGNS))
def test_same_interface_and_shape(design):
    torch.manual_seed(0)
    gen = build_prompt_generator(design, C, num_prompts=5, top_k=2, heads=4)
    out = gen(_tokens(), dp_tokens=None, task_labels=None)
    assert out.tokens.shape == (2, 12, C)
    if design != "none":
        out.tokens.sum().backward()
        assert all(p.grad is not None for p in gen.parameters())


def test_none_is_identity_and_single_is_one_matrix():
    x = _tokens()
    assert torch.equal(build_prompt_generator("none", C)(x).tokens, x)
    single = build_prompt_generator("single", C)
    assert torch.allclose(single(x).tokens, x @ single.prompts[0], atol=1e-6)


def test_multi_is_soft_weighted_pool():
    torch.manual_seed(0)
    gen = build_prompt_generator("multi", C, num_prompts=4)
    x = _tokens()
    out = gen(x)
    w = gen.weight_proj(x.mean(1)).softmax(-1)  # (B, N)
    expected = torch.stack([x[b] @ sum(w[b, n] * gen.prompts[n] for n in range(4)) for b in range(2)])
    assert torch.allclose(out.tokens, expected, atol=1e-5)
    assert torch.allclose(out.routing["gates"][:, 0], w)


def _manual_moe(x, gates, prompts):
    return torch.einsum("bln,blc,ncd->bld", gates, x, prompts)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_moe_output_is_x_times_sum_of_chosen_prompts(k):
    torch.manual_seed(0)
    gen = build_prompt_generator("moe", C, num_prompts=5, top_k=k, heads=4).eval()
    x = _tokens()
    out = gen(x)
    assert ((out.routing["gates"] > 0).sum(-1) == k).all()
    assert torch.allclose(out.tokens, _manual_moe(x, out.routing["gates"], gen.prompts), atol=1e-5)
    if k == 1:  # one expert: x . P_argmax
        idx = out.routing["indices"][..., 0]
        expected = torch.stack([x[b, i] @ gen.prompts[idx[b, i]] for b in range(2) for i in range(12)])
        assert torch.allclose(out.tokens.reshape(-1, C), expected, atol=1e-5)


def test_moe_k_equal_n_matches_soft_weighting_of_all_prompts():
    torch.manual_seed(0)
    gen = build_prompt_generator("moe", C, num_prompts=4, top_k=4, heads=4).eval()
    x = _tokens()
    soft = (x @ gen.router.w_gate.weight.T).softmax(-1)
    assert torch.allclose(gen(x).tokens, _manual_moe(x, soft, gen.prompts), atol=1e-5)


def test_moe_task_mode_routes_every_token_with_its_label_gate():
    torch.manual_seed(0)
    gen = build_prompt_generator(
        "moe", C, num_prompts=5, top_k=2, routing="task", num_tasks=3, heads=4
    ).eval()
    x = _tokens()
    out = gen(x, task_labels=torch.tensor([0, 2]))
    g = out.routing["gates"]
    assert g.shape == (2, 12, 5)  # per token, as released
    assert torch.allclose(out.tokens, _manual_moe(x, g, gen.prompts), atol=1e-5)
    with pytest.raises(ValueError, match="task_labels"):
        gen(x)


def test_released_router_input_is_the_plain_cross_attention_output():
    """router_input='attention': the gates read Attn(x, dp) (released Prompt_routing), the prompts read x."""
    torch.manual_seed(0)
    gen = build_prompt_generator("moe", C, num_prompts=5, top_k=2, routing="task", num_tasks=3, dp_dim=12,
                                 heads=4, router_input="attention").eval()
    assert gen.dp_attn is None and gen.attn is not None
    assert tuple(gen.attn.to_q.weight.shape) == (512, C) and gen.attn.to_q.bias is None  # 8 heads x 64
    assert tuple(gen.attn.to_k.weight.shape) == (512, 12) and tuple(gen.attn.to_out[0].weight.shape) == (C, 512)
    x, dp = _tokens(), torch.randn(2, 7, 12)
    seen = {}
    handle = gen.router.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    out = gen(x, dp_tokens=dp, task_labels=torch.tensor([1, 2]))
    handle.remove()
    a = gen.attn  # by hand: softmax(q k^T / sqrt(64)) v per head, then to_out
    q, k, v = (t.view(2, -1, 8, 64).transpose(1, 2) for t in (x @ a.to_q.weight.T, dp @ a.to_k.weight.T,
                                                            dp @ a.to_v.weight.T))
    attn = ((q @ k.transpose(-1, -2)) / 8.0).softmax(-1) @ v  # (B, 8, L, 64)
    expected = a.to_out[0](attn.transpose(1, 2).reshape(2, 12, 512))
    assert torch.allclose(seen["x"], expected, atol=1e-5)  # no residual, no LayerNorm
    assert torch.allclose(out.tokens, _manual_moe(x, out.routing["gates"], gen.prompts), atol=1e-5)


def test_prompt_init_switch():
    torch.manual_seed(0)
    normal = build_prompt_generator("moe", 64, num_prompts=3, top_k=1).prompts
    uniform = build_prompt_generator("moe", 64, num_prompts=3, top_k=1, prompt_init="uniform").prompts
    assert abs(float(normal.std()) - 64**-0.5) < 0.01
    assert float(uniform.min()) >= -0.5 and float(uniform.max()) < 0.5  # torch.rand - 0.5, as released
    assert abs(float(uniform.std()) - 12**-0.5) < 0.01
    with pytest.raises(ValueError, match="prompt_init"):
        build_prompt_generator("moe", 8, prompt_init="xavier")


def test_dp_feeds_the_router_only():
    torch.manual_seed(0)
    gen = build_prompt_generator("moe", C, num_prompts=5, top_k=2, dp_dim=12, heads=4).eval()
    x = _tokens()
    dp_a, dp_b = torch.randn(2, 7, 12), 3 * torch.randn(2, 7, 12)
    a, b = gen(x, dp_tokens=dp_a), gen(x, dp_tokens=dp_b)
    assert not torch.equal(a.routing["gates"], b.routing["gates"])  # the DP changes the routing ...
    for out in (a, b):  # ... but the prompts multiply the raw tokens, not the cross-attended ones
        assert torch.allclose(out.tokens, _manual_moe(x, out.routing["gates"], gen.prompts), atol=1e-5)
    with pytest.raises(ValueError, match="dp_tokens"):
        gen(x)


def test_unknown_design():
    with pytest.raises(ValueError, match="prompt design"):
        build_prompt_generator("mixture", C)
