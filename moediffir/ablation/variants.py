"""The paper's ablation sweeps (paper §4.3): Fig. 6 (N and K), Table 2 (prompt designs), Table 3 (V2T and DP).

Sizes come from :class:`moediffir.config.AblationConfig` (the profile): every variant is a stage-I model
trained for ``ablation.train_steps`` steps (0.4 M in ``paper``, a few in ``smoke``) and evaluated on the sets
named there, restricted to ``ablation.tasks`` when given.

* ``prompts_nk`` -- Fig. 6: the number of prompts ``N`` in ``ablation.n_values`` at ``K = min(nk_top_k, N)``
  (Fig. 6a), then top-``K`` in ``ablation.k_values`` at ``N = model.num_prompts`` (7; Fig. 6b); PSNR, SSIM and
  LPIPS on the seen tasks of ``ablation.test_set`` (LIVE1 in the paper). ``N = 7, K = 3`` is one run shared by
  both curves.
* ``prompt_design`` -- Table 2: ``none`` / ``single`` / ``multi`` / ``moe`` prompts, evaluated on the seen tasks
  of ``ablation.design_sets`` (LIVE1, BSDS500, DIV2K), on the unseen cross-degree tasks of
  ``ablation.cross_degree_codecs`` (VVC QP 32, 52) on ``cross_degree_set`` (LIVE1) and on the unseen
  cross-type tasks (AVC QP 37, 42, 47) on ``cross_type_set`` (ICB).
* ``v2t_dp`` -- Table 3: MoE-Prompt with and without the Visual2Text adapter and the degradation prior, on the
  seen tasks of ``ablation.v2t_dp_sets`` (LIVE1, BSDS500, ICB).

Fig. 6 and Table 2 variants use ``ablation.use_v2t`` / ``ablation.use_dp`` (off by default): the paper's Table 2
MoE-Prompt row repeats Table 3's bare "MoE-Prompt" row (LIVE1 29.02 dB, LPIPS 0.1179), so Table 2 was run
without V2T and DP; the same bare model is the natural centre of Fig. 6, so Fig. 6's N = 7, K = 3 point, Table
2's MoE row and Table 3's first row are one trained model (same train key).

Each sweep names the variant its paired bootstrap differences are taken to (``Sweep.reference``,
docs/design.md §9): that model (``K3`` / ``N7``) for Fig. 6, MoE-Prompt for Table 2, the bare MoE-Prompt for
Table 3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moediffir.ablation.sweep_plan import EvalSpec, Sweep, SweepError, Variant
from moediffir.config import Config
from moediffir.data.tasks import SEEN, UNSEEN_DEGREE, UNSEEN_TYPE

#: The paper's row labels (Table 2, Table 3).
DESIGN_LABELS = {"none": "No Prompt", "single": "Single Prompt", "multi": "Multiple Prompt",
                 "moe": "MoE-Prompt (Ours)"}
V2T_DP_VARIANTS: tuple[tuple[str, str, bool, bool], ...] = (  # name, paper label, use_v2t, use_dp
    ("moe", "MoE-Prompt", False, False),
    ("moe_v2t", "MoE-Prompt+V2T Adapter", True, False),
    ("moe_dp", "MoE-Prompt+DP", False, True),
    ("moe_v2t_dp", "MoE-Prompt+V2T Adapter+DP", True, True),
)
FIG6_METRICS = ("psnr", "ssim", "lpips")


def _common(cfg: Config, metrics: tuple[str, ...]) -> dict[str, Any]:
    """Overrides every ablation variant shares: its training length and what the evaluation measures."""
    a = cfg.ablation
    out: dict[str, Any] = {"stage1.max_steps": a.train_steps, "model.prompt_design": "moe",
                           "eval.metrics": list(metrics)}
    if a.max_images > 0:
        out["eval.max_images"] = a.max_images
    return out


def _check_positive(name: str, values: tuple[int, ...]) -> None:
    if not values or any(v < 1 for v in values):
        raise SweepError(f"ablation.{name}={list(values)}: give one or more integers >= 1")


def prompts_nk(cfg: Config) -> Sweep:
    """Fig. 6: N in ``ablation.n_values`` (K = min(nk_top_k, N)), then K in ``ablation.k_values`` at N = 7."""
    a = cfg.ablation
    _check_positive("n_values", a.n_values)
    _check_positive("k_values", a.k_values)
    n_fixed = cfg.model.num_prompts
    too_big = [k for k in a.k_values if k > n_fixed]
    if too_big:
        raise SweepError(f"ablation.k_values={list(a.k_values)}: K={too_big} exceed model.num_prompts={n_fixed} "
                         "(the K curve is drawn at N = model.num_prompts)")
    variants = []
    for n in a.n_values:
        k = min(a.nk_top_k, n)
        variants.append(Variant(f"N{n}", {"model.num_prompts": n, "model.top_k": k}, group="N",
                                label=f"N = {n} (K = {k})"))
    for k in a.k_values:
        variants.append(Variant(f"K{k}", {"model.num_prompts": n_fixed, "model.top_k": k}, group="K",
                                label=f"K = {k} (N = {n_fixed})"))
    overrides = {**_common(cfg, FIG6_METRICS), "model.use_v2t": a.use_v2t, "model.use_dp": a.use_dp}
    # compared to the model the paper keeps (N = 7, K = 3), a point of both curves (one run, two names)
    names = [v.name for v in variants]
    reference = next((r for r in (f"K{min(a.nk_top_k, n_fixed)}", f"N{n_fixed}") if r in names), "")
    return Sweep("prompts_nk", "Fig. 6: number of prompts N and top-K", tuple(variants),
                 (EvalSpec("seen", (a.test_set,), (SEEN,)),), overrides, reference)


def prompt_design(cfg: Config) -> Sweep:
    """Table 2: none / single / multi / moe prompts on seen, cross-degree and cross-type tasks."""
    a = cfg.ablation
    variants = tuple(Variant(d, {"model.prompt_design": d}, group="design", label=DESIGN_LABELS[d])
                     for d in ("none", "single", "multi", "moe"))
    evaluations = (
        EvalSpec("seen", tuple(a.design_sets), (SEEN,)),
        EvalSpec("cross_degree", (a.cross_degree_set,), (UNSEEN_DEGREE,), tuple(a.cross_degree_codecs)),
        EvalSpec("cross_type", (a.cross_type_set,), (UNSEEN_TYPE,)),
    )
    overrides = {**_common(cfg, tuple(a.metrics)), "model.use_v2t": a.use_v2t, "model.use_dp": a.use_dp}
    return Sweep("prompt_design", "Table 2: prompt designs on seen and unseen tasks", variants, evaluations,
                 overrides, reference="moe")  # the other designs against MoE-Prompt


def v2t_dp(cfg: Config) -> Sweep:
    """Table 3: MoE-Prompt with and without the Visual2Text adapter (V2T) and the degradation prior (DP)."""
    a = cfg.ablation
    variants = tuple(Variant(name, {"model.use_v2t": v2t, "model.use_dp": dp}, group="v2t_dp", label=label)
                     for name, label, v2t, dp in V2T_DP_VARIANTS)
    return Sweep("v2t_dp", "Table 3: Visual2Text adapter (V2T) and degradation prior (DP)", variants,
                 (EvalSpec("seen", tuple(a.v2t_dp_sets), (SEEN,)),), _common(cfg, tuple(a.metrics)),
                 reference="moe")  # what V2T and DP add to the bare MoE-Prompt


#: Every sweep by name (``moediffir sweep NAME``), in notebook order.
SWEEPS: dict[str, Callable[[Config], Sweep]] = {
    "prompts_nk": prompts_nk,
    "prompt_design": prompt_design,
    "v2t_dp": v2t_dp,
}
#: The sweeps each ablation notebook runs.
NOTEBOOK_SWEEPS: dict[str, tuple[str, ...]] = {
    "04_ablation_prompts_NK": ("prompts_nk",),
    "05_ablation_prompt_design_v2t_dp": ("prompt_design", "v2t_dp"),
}


def build_sweep(name: str, cfg: Config) -> Sweep:
    """The sweep ``name`` sized by ``cfg`` (its ``ablation`` section)."""
    if name not in SWEEPS:
        raise SweepError(f"unknown sweep {name!r}; choose one of {sorted(SWEEPS)}")
    return SWEEPS[name](cfg)
