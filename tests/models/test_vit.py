"""Pre-LN ViT blocks and attention of the MoE-Prompt Module (moediffir/models/vit.py)."""

from __future__ import annotations

import pytest
import torch

from moediffir.models.vit import MultiHeadAttention, PreLNViTBlock, map_from_tokens, tokens_from_map


def test_block_keeps_shape_and_is_pre_ln():
    torch.manual_seed(0)
    block = PreLNViTBlock(dim=16, heads=4, mlp_ratio=2.0)
    x = torch.randn(2, 10, 16)
    y = block(x)
    assert y.shape == x.shape
    # Pre-LN: with the output projections zeroed the block is the identity (residual path untouched by LN).
    torch.nn.init.zeros_(block.attn.to_out.weight)
    torch.nn.init.zeros_(block.attn.to_out.bias)
    torch.nn.init.zeros_(block.mlp.fc2.weight)
    torch.nn.init.zeros_(block.mlp.fc2.bias)
    assert torch.equal(block(x), x)


def test_attention_matches_manual_softmax():
    torch.manual_seed(0)
    attn = MultiHeadAttention(dim=8, heads=2, context_dim=6)
    x, ctx = torch.randn(1, 3, 8), torch.randn(1, 5, 6)
    q = attn.to_q(x).view(1, 3, 2, 4).transpose(1, 2)
    k = attn.to_k(ctx).view(1, 5, 2, 4).transpose(1, 2)
    v = attn.to_v(ctx).view(1, 5, 2, 4).transpose(1, 2)
    w = (q @ k.transpose(-1, -2) / 2.0).softmax(-1)
    expected = attn.to_out((w @ v).transpose(1, 2).reshape(1, 3, 8))
    assert torch.allclose(attn(x, ctx), expected, atol=1e-5)


def test_self_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    block = PreLNViTBlock(dim=8, heads=2)
    x = torch.randn(1, 6, 8)
    perm = torch.randperm(6)
    assert torch.allclose(block(x)[:, perm], block(x[:, perm]), atol=1e-5)


def test_token_map_round_trip_non_square():
    x = torch.randn(2, 5, 3, 7)
    t = tokens_from_map(x)
    assert t.shape == (2, 21, 5)
    assert torch.equal(map_from_tokens(t, 3, 7), x)
    with pytest.raises(ValueError, match="cannot form"):
        map_from_tokens(t, 4, 5)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(dim=10, heads=4)
