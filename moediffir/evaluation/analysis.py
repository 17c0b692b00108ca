"""Numbers about the model itself: prompt similarity (paper appendix A, Fig. 8) and expert usage per task (§3.2).

* :func:`prompt_similarity` -- the pairwise cosine similarity of the flattened prompt matrices ``P_k`` (each
  ``C x C``) of every scale's prompt generator. The paper shows that MoE prompts are less alike than a soft-
  weighted pool (Fig. 8); these are the numbers behind that heatmap.
* :func:`routing_counts` -- from one routing record (``PromptModuleOutput.routing``: per scale ``gates``
  ``(B, L, N)`` and, for MoE, ``indices`` ``(B, L, K)``) the per-image count of top-K selections of each expert
  and the sum of its gates, which add up over images and tasks into the expert-usage figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

SIMILARITY_COLUMNS = ("scale", "height", "width", "expert_i", "expert_j", "cosine", "design", "num_prompts")


def find_prompt_module(model: Any) -> Any:
    """The :class:`~moediffir.models.prompt_module.MoEPromptModule` of a pipeline, denoiser or the module itself."""
    from moediffir.models.prompt_module import MoEPromptModule

    if isinstance(model, MoEPromptModule):
        return model
    for attr in ("prompt_module", "denoiser"):
        sub = getattr(model, attr, None)
        if sub is not None:
            try:
                return find_prompt_module(sub)
            except TypeError:
                pass
    if isinstance(model, torch.nn.Module):
        for m in model.modules():
            if isinstance(m, MoEPromptModule):
                return m
    components = getattr(model, "components", None)
    if isinstance(components, dict):
        for c in components.values():
            if isinstance(c, torch.nn.Module):
                for m in c.modules():
                    if isinstance(m, MoEPromptModule):
                        return m
    raise TypeError(f"no MoEPromptModule found in {type(model).__name__}")


def prompt_matrices(prompt_module: Any) -> list[torch.Tensor | None]:
    """The prompt matrices ``(N, C, C)`` of each scale (``None`` for the ``none`` design)."""
    return [getattr(g, "prompts", None) for g in prompt_module.generators]


def cosine_matrix(prompts: torch.Tensor) -> np.ndarray:
    """``(N, N)`` cosine similarity of the flattened ``(N, C, C)`` prompts."""
    flat = prompts.detach().double().reshape(prompts.shape[0], -1)  # (N, C*C)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (flat @ flat.T).cpu().numpy()  # (N, N)


def prompt_similarity(model: Any, latent_size: tuple[int, int] | None = None) -> pd.DataFrame:
    """Long table of the Fig. 8 heatmaps: one row per scale and pair of prompts (:data:`SIMILARITY_COLUMNS`).

    ``latent_size`` (h, w) only labels the scales with their token grids (``h / 2**s``); 0 when not given.
    """
    pm = find_prompt_module(model)
    design = str(pm.config.prompt_design)
    rows = []
    for s, prompts in enumerate(prompt_matrices(pm)):
        if prompts is None:
            continue
        sim = cosine_matrix(prompts)
        h = latent_size[0] // 2**s if latent_size else 0
        w = latent_size[1] // 2**s if latent_size else 0
        n = sim.shape[0]
        for i in range(n):
            for j in range(n):
                rows.append({"scale": s, "height": h, "width": w, "expert_i": i, "expert_j": j,
                             "cosine": float(sim[i, j]), "design": design, "num_prompts": n})
    return pd.DataFrame(rows, columns=list(SIMILARITY_COLUMNS))


def routing_counts(routing: Sequence[dict[str, Any]], batch_index: int) -> list[dict[str, Any]]:
    """Per scale, the routing summary of image ``batch_index`` of a batch (JSON-ready lists).

    Returns ``[{"scale", "height", "width", "tokens", "k", "count": [N], "gate_sum": [N]}, ...]``; ``count`` is
    the number of tokens whose top-K includes each expert (empty when the design has no top-K, e.g. ``multi``).
    """
    out = []
    for s, r in enumerate(routing):
        gates = r.get("gates")
        if gates is None:
            continue
        g = torch.as_tensor(gates)[batch_index].detach().float()  # (L, N)
        n = g.shape[-1]
        idx = r.get("indices")
        count: list[int] = []
        k = 0
        if idx is not None:
            ii = torch.as_tensor(idx)[batch_index].detach().long()  # (L, K)
            k = int(ii.shape[-1])
            count = torch.bincount(ii.reshape(-1), minlength=n).tolist()
        out.append({
            "scale": s, "height": int(r.get("height", 0)), "width": int(r.get("width", 0)),
            "tokens": int(g.shape[0]), "k": k, "count": [int(c) for c in count],
            "gate_sum": [float(v) for v in g.sum(dim=0).tolist()],
        })
    return out


def routing_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Sum per-image routing summaries (each with ``method, set, task, codec, level, kind, routing``) into rows
    ``method, set, task, codec, level, kind, scale, expert, count, slots, gate_sum, tokens, n_images``."""
    acc: dict[tuple, dict[str, float]] = {}
    for rec in records:
        for sc in rec.get("routing") or []:
            n = len(sc["gate_sum"])
            for e in range(n):
                key = (rec["method"], rec["set"], rec["task"], rec["codec"], str(rec["level"]), rec["kind"],
                       sc["scale"], e)
                a = acc.setdefault(key, {"count": 0, "slots": 0, "gate_sum": 0.0, "tokens": 0, "n_images": 0})
                a["count"] += sc["count"][e] if sc["count"] else 0
                a["slots"] += sc["tokens"] * sc["k"]
                a["gate_sum"] += sc["gate_sum"][e]
                a["tokens"] += sc["tokens"]
                a["n_images"] += 1
    cols = ["method", "set", "task", "codec", "level", "kind", "scale", "expert"]
    rows = [dict(zip(cols, k), **v) for k, v in acc.items()]
    return pd.DataFrame(rows, columns=cols + ["count", "slots", "gate_sum", "tokens", "n_images"])
