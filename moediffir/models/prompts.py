"""Prompt generators of one scale: Table 2's designs behind one interface (paper §3.2, Fig. 2, 7, Eq. 3).

Every generator maps the scale's tokens ``(B, L, C)`` to prompted tokens ``(B, L, C)``:

- ``none``   -- identity (Table 2 "No Prompt").
- ``single`` -- one learnable ``C x C`` prompt, ``x . P`` (Fig. 2a; ProRes-style single prompt).
- ``multi``  -- a pool of N prompts fused by soft weights ``softmax(Linear(mean_L x))`` per image,
  ``x . sum_n w_n P_n`` (Fig. 2c; PromptIR-style weighted pool).
- ``moe``    -- N prompt experts chosen per token by :class:`NoisyTopKRouter` (Eq. 3), ``x . sum_k g_k P_k``
  (Fig. 2b). When the degradation prior (DP) is on, the router sees the tokens after a cross-attention whose
  keys/values are the DP tokens (appendix A, Fig. 7); the DP feeds the router only, never the prompted
  features (docs/design.md §4). ``router_input`` picks that attention's form: ``residual`` --
  ``x + Attn(LN(x), LN(dp))`` (``dp_attn``); ``attention`` [released] -- the plain cross-attention output
  ``Attn(x, dp)`` of the released ``Prompt_routing`` (8 heads of 64, no q/k/v bias; ``attn.to_q``,
  ``attn.to_k``, ``attn.to_v``, ``attn.to_out.0`` as released). Both routing modes read it.

Prompts are initialised ``N(0, 1/C)`` (``prompt_init="normal"``): ``x . P`` keeps the scale of ``x`` and the
experts start distinct; ``"uniform"`` [released] draws ``U[-0.5, 0.5)`` (``torch.rand - 0.5``).
Each call returns a :class:`PromptOutput` with the routing record used for analysis (Fig. 8, routing plots).
Generators are plain ``nn.Module`` parts of :class:`~moediffir.models.prompt_module.MoEPromptModule`, which
holds the saved config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from moediffir.models.router import NoisyTopKRouter
from moediffir.models.vit import MultiHeadAttention


@dataclass
class PromptOutput:
    """Result of one generator call."""

    tokens: torch.Tensor  # (B, L, C) prompted tokens
    routing: dict[str, torch.Tensor] = field(default_factory=dict)  # gates / indices, not detached
    balance_loss: torch.Tensor | None = None  # () or None


PROMPT_INITS = ("normal", "uniform")
ROUTER_INPUTS = ("residual", "attention")


def _init_prompts(num: int, dim: int, init: str = "normal") -> nn.Parameter:
    if init not in PROMPT_INITS:
        raise ValueError(f"prompt_init={init!r}; choose one of {PROMPT_INITS} (model.prompt_init)")
    if init == "uniform":
        return nn.Parameter(torch.rand(num, dim, dim) - 0.5)  # (N, C, C) released
    return nn.Parameter(torch.randn(num, dim, dim) * dim**-0.5)  # (N, C, C)


class IdentityPromptGenerator(nn.Module):
    """``none``: the tokens pass unchanged."""

    def __init__(self, dim: int, **_: object) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, tokens: torch.Tensor, dp_tokens=None, task_labels=None) -> PromptOutput:
        return PromptOutput(tokens)


class SinglePromptGenerator(nn.Module):
    """``single``: ``x . P`` with one learnable ``C x C`` prompt."""

    def __init__(self, dim: int, prompt_init: str = "normal", **_: object) -> None:
        super().__init__()
        self.prompts = _init_prompts(1, dim, prompt_init)  # (1, C, C)

    def forward(self, tokens: torch.Tensor, dp_tokens=None, task_labels=None) -> PromptOutput:
        return PromptOutput(tokens @ self.prompts[0])  # (B, L, C)


class MultiPromptGenerator(nn.Module):
    """``multi``: soft-weighted pool of N prompts, weights from the mean-pooled tokens (PromptIR style)."""

    def __init__(self, dim: int, num_prompts: int = 7, prompt_init: str = "normal", **_: object) -> None:
        super().__init__()
        self.prompts = _init_prompts(num_prompts, dim, prompt_init)  # (N, C, C)
        self.weight_proj = nn.Linear(dim, num_prompts)

    def forward(self, tokens: torch.Tensor, dp_tokens=None, task_labels=None) -> PromptOutput:
        weights = self.weight_proj(tokens.mean(dim=1)).softmax(dim=-1)  # (B, N)
        mixed = torch.einsum("bn,ncd->bcd", weights, self.prompts.to(tokens.dtype))  # (B, C, C)
        return PromptOutput(torch.bmm(tokens, mixed), {"gates": weights[:, None]})  # (B, L, C)


class DegradationCrossAttention(nn.Module):
    """Tokens attend to the degradation prior: ``x + Attn(LN(x), LN(dp))``; output feeds the router only."""

    def __init__(self, dim: int, dp_dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dp_dim)
        self.attn = MultiHeadAttention(dim, heads, context_dim=dp_dim)

    def forward(self, tokens: torch.Tensor, dp_tokens: torch.Tensor) -> torch.Tensor:
        dp = self.norm_kv(dp_tokens.to(tokens.dtype))  # (B, L_dp, D_dp)
        return tokens + self.attn(self.norm_q(tokens), dp)  # (B, L, C)


class ReleasedCrossAttention(nn.Module):
    """``Attn(x, dp)``: the released router's cross-attention (query ``C``, ``heads x dim_head`` inner width)."""

    def __init__(self, dim: int, context_dim: int, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(self, tokens: torch.Tensor, dp_tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        dp = dp_tokens.to(tokens.dtype)  # (B, L_dp, D_dp)
        q, k, v = self.to_q(tokens), self.to_k(dp), self.to_v(dp)  # (B, L or L_dp, inner)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, h, *, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, d)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))  # (B, L, C)


class MoEPromptGenerator(nn.Module):
    """``moe``: per-token noisy top-K mixture of N prompt experts (Eq. 3, Fig. 7)."""

    def __init__(
        self,
        dim: int,
        num_prompts: int = 7,
        top_k: int = 3,
        routing: str = "blind",
        num_tasks: int = 21,
        dp_dim: int = 0,
        heads: int = 4,
        noisy_gating_in_eval: bool = False,
        renormalize_gates: bool = True,
        balance_loss_weight: float = 0.0,
        gate_init: str = "normal",
        noise_epsilon: float = 0.0,
        prompt_init: str = "normal",
        router_input: str = "residual",
        **_: object,
    ) -> None:
        super().__init__()
        if router_input not in ROUTER_INPUTS:
            raise ValueError(f"MoEPromptGenerator: router_input={router_input!r}; choose one of {ROUTER_INPUTS}")
        self.prompts = _init_prompts(num_prompts, dim, prompt_init)  # (N, C, C)
        self.router = NoisyTopKRouter(
            in_dim=dim,
            num_experts=num_prompts,
            top_k=top_k,
            mode=routing,
            num_tasks=num_tasks,
            noisy_gating_in_eval=noisy_gating_in_eval,
            renormalize=renormalize_gates,
            balance_loss_weight=balance_loss_weight,
            gate_init=gate_init,
            noise_epsilon=noise_epsilon,
        )
        # The DP is a routing signal: the router reads it, the prompted features never do.
        self.dp_attn = DegradationCrossAttention(dim, dp_dim, heads) if dp_dim > 0 and router_input == "residual" else None
        self.attn = ReleasedCrossAttention(dim, dp_dim) if dp_dim > 0 and router_input == "attention" else None

    def forward(self, tokens: torch.Tensor, dp_tokens=None, task_labels=None) -> PromptOutput:
        router_in = tokens
        dp_attention = self.dp_attn if self.dp_attn is not None else self.attn
        if dp_attention is not None:
            if dp_tokens is None:
                raise ValueError(
                    "MoEPromptGenerator: this module was built with a degradation prior (dp_dim > 0) but no dp_tokens "
                    "were given; pass dp_tokens (B, L_dp, D_dp) or build with model.use_dp=False"
                )
            router_in = dp_attention(tokens, dp_tokens)  # (B, L, C)
        r = self.router(router_in, task_labels)
        gates = r.gates.to(tokens.dtype)  # (B, L, N)
        prompts = self.prompts.to(tokens.dtype)  # (N, C, C)
        n, c, _ = prompts.shape
        per_expert = tokens @ prompts.permute(1, 0, 2).reshape(c, n * c)  # (B, L, N*C)
        per_expert = per_expert.unflatten(-1, (n, c))  # (B, L, N, C)
        out = (per_expert * gates.unsqueeze(-1)).sum(dim=2)  # (B, L, C)
        routing = {"gates": r.gates, "indices": r.indices, "values": r.values}
        return PromptOutput(out, routing, r.balance_loss)


PROMPT_DESIGNS: dict[str, type[nn.Module]] = {
    "none": IdentityPromptGenerator,
    "single": SinglePromptGenerator,
    "multi": MultiPromptGenerator,
    "moe": MoEPromptGenerator,
}


def build_prompt_generator(design: str, dim: int, **kwargs: object) -> nn.Module:
    """The generator of ``design`` (one of :data:`PROMPT_DESIGNS`); extra keyword arguments it does not use
    are ignored so every design takes the same arguments."""
    if design not in PROMPT_DESIGNS:
        raise ValueError(
            f"unknown prompt design {design!r} (model.prompt_design); choose one of {list(PROMPT_DESIGNS)}"
        )
    return PROMPT_DESIGNS[design](dim, **kwargs)
