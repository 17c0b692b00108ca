"""Noisy top-K router of the MoE prompt generator (paper §3.2, Eq. 3; Fig. 2b, Fig. 7; Shazeer et al. [59]).

Eq. 3:  ``G(x) = TopK(Softmax(x W_g + eps * Softplus(x W_noise)))``, ``eps ~ N(0, 1)``.

Choices the paper leaves open (docs/design.md §4, §8), each a switch (released value in brackets):

- **Noise** is drawn only in training mode; in eval mode the router is deterministic unless
  ``noisy_gating_in_eval=True`` [released: on, its router is noisy at inference too]. The noise std is
  ``Softplus(x W_noise) + noise_epsilon`` [released: 1e-2; paper/kit default 0].
- **Renormalisation** (``renormalize=True``, the default): the K kept softmax values are divided by their sum,
  so the gates of a token sum to one. This is exactly Shazeer's ``Softmax(KeepTopK(logits))`` because the
  softmax over the kept logits equals the kept softmax values renormalised. ``renormalize=False`` keeps the
  literal Eq. 3 values (which sum to less than one) [released: off -- it keeps ``softmax + 1e-5``]. With
  ``K = N`` both equal plain soft weighting.
- **Modes**: ``blind`` (the paper's degradation-aware router) computes the logits of each token with one gate;
  ``task`` (the released code) keeps one gate per task label, ``f_gate[t] = Linear(C, 2N, bias=False)``
  giving clean and noise logits of every token, and routes each image's tokens with its label's gate
  (labels required). Both return per-token gates ``(B, L, N)``.
- **Initialisation** (``gate_init``): ``normal`` -- clean-logit weights ``N(0, 1/C)``, noise weights 0;
  ``zeros`` [released] -- all gate weights 0, so every expert starts equally likely.
- **Balance loss**: Shazeer's importance + load losses (squared coefficient of variation of the per-expert
  gate sums and of the smooth probability of being in the top K), scaled by ``balance_loss_weight``
  (default 0: not computed, a zero is returned).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

ROUTING_MODES = ("blind", "task")
GATE_INITS = ("normal", "zeros")


@dataclass
class RouterOutput:
    """Gates of one routing call. ``L`` is the number of tokens (1 in ``task`` mode)."""

    gates: torch.Tensor  # (B, L, N) dense gates, zero outside the top K
    indices: torch.Tensor  # (B, L, K) chosen experts, by decreasing gate
    values: torch.Tensor  # (B, L, K) their gates
    balance_loss: torch.Tensor  # () weighted importance + load loss (0 when the weight is 0)


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation of a 1-D tensor (0 for a single element)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + eps)


class NoisyTopKRouter(ModelMixin, ConfigMixin):
    """Eq. 3 router choosing ``top_k`` of ``num_experts`` prompts per token (``blind``) or per task label."""

    @register_to_config
    def __init__(
        self,
        in_dim: int = 256,
        num_experts: int = 7,
        top_k: int = 3,
        mode: str = "blind",
        num_tasks: int = 21,
        noisy_gating_in_eval: bool = False,
        renormalize: bool = True,
        balance_loss_weight: float = 0.0,
        gate_init: str = "normal",
        noise_epsilon: float = 0.0,
    ) -> None:
        super().__init__()
        if gate_init not in GATE_INITS:
            raise ValueError(f"NoisyTopKRouter: gate_init={gate_init!r}; choose one of {GATE_INITS} (model.gate_init)")
        if noise_epsilon < 0:
            raise ValueError(f"NoisyTopKRouter: noise_epsilon={noise_epsilon} must be >= 0 (model.noise_epsilon)")
        if mode not in ROUTING_MODES:
            raise ValueError(f"NoisyTopKRouter: mode={mode!r}; choose one of {ROUTING_MODES} (model.routing)")
        if not 1 <= top_k <= num_experts:
            raise ValueError(
                f"NoisyTopKRouter: top_k={top_k} must lie in 1..num_experts={num_experts} (model.top_k)"
            )
        if mode == "blind":
            self.w_gate = nn.Linear(in_dim, num_experts, bias=False)
            self.w_noise = nn.Linear(in_dim, num_experts, bias=False)
            clean_weights = [self.w_gate.weight]
            nn.init.zeros_(self.w_noise.weight)
        else:
            if num_tasks < 1:
                raise ValueError(f"NoisyTopKRouter: task mode needs num_tasks >= 1, got {num_tasks}")
            # released layout: f_gate.<task>.0.weight (2N, C), rows [:N] clean logits, rows [N:] noise logits
            self.f_gate = nn.ModuleList(
                nn.Sequential(nn.Linear(in_dim, 2 * num_experts, bias=False)) for _ in range(num_tasks)
            )
            for gate in self.f_gate:
                nn.init.zeros_(gate[0].weight)
            clean_weights = [gate[0].weight[:num_experts] for gate in self.f_gate]
        if gate_init == "normal":
            with torch.no_grad():
                for w in clean_weights:
                    w.normal_(std=in_dim**-0.5)
        else:
            with torch.no_grad():
                for w in clean_weights:
                    w.zero_()

    # ------------------------------------------------------------------------------------------ logits
    def _logits(
        self, x: torch.Tensor | None, task_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.mode == "blind":
            if x is None:
                raise ValueError(
                    "NoisyTopKRouter(mode='blind'): router input tokens x (B, L, C) are required"
                )
            return self.w_gate(x), self.w_noise(x)  # (B, L, N) each
        if task_labels is None:
            raise ValueError(
                "NoisyTopKRouter(mode='task'): task_labels (B,) are required; pass the task index of each "
                "image, or build the model with model.routing='blind'"
            )
        if x is None:
            raise ValueError("NoisyTopKRouter(mode='task'): router input tokens x (B, L, C) are required")
        weights = torch.stack([gate[0].weight for gate in self.f_gate])  # (T, 2N, C)
        labels = torch.as_tensor(task_labels, device=weights.device).long().reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"NoisyTopKRouter: {labels.shape[0]} task labels for a batch of {x.shape[0]}")
        n_tasks = self.config.num_tasks
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_tasks):
            raise ValueError(
                f"NoisyTopKRouter: task labels must lie in 0..{n_tasks - 1} (model.num_tasks), "
                f"got {labels.tolist()}"
            )
        logits = torch.einsum("blc,bmc->blm", x, weights[labels].to(x.dtype))  # (B, L, 2N)
        return logits.chunk(2, dim=-1)  # (B, L, N) each: clean, raw noise

    @property
    def noise_active(self) -> bool:
        return self.training or bool(self.config.noisy_gating_in_eval)

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor | None = None, task_labels: torch.Tensor | None = None) -> RouterOutput:
        """Route tokens ``x`` ``(B, L, in_dim)``; ``task`` mode also needs ``task_labels (B,)``."""
        k = self.config.top_k
        clean, raw_noise = self._logits(x, task_labels)  # (B, L, N)
        clean = clean.float()
        noise_std = F.softplus(raw_noise.float()) + float(self.config.noise_epsilon)  # (B, L, N)
        if self.noise_active:
            logits = clean + torch.randn_like(clean) * noise_std  # (B, L, N)
        else:
            logits = clean
        probs = logits.softmax(dim=-1)  # (B, L, N)
        values, indices = probs.topk(k, dim=-1)  # (B, L, K)
        if self.config.renormalize:
            values = values / values.sum(dim=-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter(-1, indices, values)  # (B, L, N)
        balance = self._balance_loss(gates, clean, logits, noise_std)
        dtype = x.dtype if x is not None else self.dtype
        return RouterOutput(gates.to(dtype), indices, values.to(dtype), balance)

    # -------------------------------------------------------------------------------------- balance loss
    def _balance_loss(
        self, gates: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor
    ) -> torch.Tensor:
        weight = float(self.config.balance_loss_weight)
        if weight == 0.0:
            return gates.new_zeros(())
        n = gates.shape[-1]
        importance = gates.reshape(-1, n).sum(0)  # (N,)
        k = self.config.top_k
        if self.noise_active and k < n:
            load = self._prob_in_top_k(clean, noisy, noise_std).reshape(-1, n).sum(0)  # (N,)
        else:
            load = (gates > 0).reshape(-1, n).float().sum(0)  # (N,) not differentiable: plain counts
        return weight * (cv_squared(importance) + cv_squared(load))

    def _prob_in_top_k(
        self, clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor
    ) -> torch.Tensor:
        """Smooth P(expert in top K | other experts' noisy logits) per token (Shazeer et al., appendix A)."""
        k = self.config.top_k
        top, _ = noisy.topk(k + 1, dim=-1)  # (B, L, K+1)
        threshold_if_in = top[..., k : k + 1]  # (B, L, 1) the (K+1)-th noisy logit
        threshold_if_out = top[..., k - 1 : k]  # (B, L, 1) the K-th noisy logit
        is_in = noisy > threshold_if_in  # (B, L, N)
        std = noise_std + 1e-2
        normal = torch.distributions.Normal(0.0, 1.0)
        prob_if_in = normal.cdf((clean - threshold_if_in) / std)  # (B, L, N)
        prob_if_out = normal.cdf((clean - threshold_if_out) / std)  # (B, L, N)
        return torch.where(is_in, prob_if_in, prob_if_out)
