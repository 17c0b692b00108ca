"""The paper's ablation sweeps (paper §4.3: Fig. 6, Table 2, Table 3) as variant definitions."""

from __future__ import annotations

import pytest

from moediffir.ablation.sweep_plan import TRAIN_SECTIONS, SweepError, result_relevant, variant_config
from moediffir.ablation.variants import NOTEBOOK_SWEEPS, SWEEPS, build_sweep
from moediffir.config import resolve_config
from moediffir.report.paper_numbers import load_paper_table


def _resolved(cfg, sweep):
    return {v.name: variant_config(cfg, sweep, v) for v in sweep.variants}


def test_fig6_sweep_in_the_paper_profile():
    cfg = resolve_config("paper")
    sweep = build_sweep("prompts_nk", cfg)
    vc = _resolved(cfg, sweep)
    n_curve = [v for v in sweep.variants if v.group == "N"]
    k_curve = [v for v in sweep.variants if v.group == "K"]
    assert [vc[v.name].model.num_prompts for v in n_curve] == [1, 4, 7, 11, 14, 17, 21]
    assert [vc[v.name].model.top_k for v in n_curve] == [1, 3, 3, 3, 3, 3, 3]  # K = min(3, N)
    assert [vc[v.name].model.top_k for v in k_curve] == [1, 3, 5, 7]
    assert {vc[v.name].model.num_prompts for v in k_curve} == {7}
    for c in vc.values():
        assert c.stage1.max_steps == 400_000 and c.model.prompt_design == "moe"
        assert c.eval.metrics == ("psnr", "ssim", "lpips")
    assert sweep.evaluations[0].sets == ("LIVE1",) and sweep.evaluations[0].kinds == ("seen",)
    assert vc["N7"] == vc["K3"]  # one run, a point of both curves


def test_smoke_sizes_come_from_the_profile():
    cfg = resolve_config("smoke")
    sweep = build_sweep("prompts_nk", cfg)
    assert [v.name for v in sweep.variants] == ["N1", "N4", "N7", "K1", "K3", "K7"]
    for c in _resolved(cfg, sweep).values():
        assert c.stage1.max_steps == cfg.ablation.train_steps == 10
        assert c.eval.max_images == cfg.ablation.max_images
        assert c.model.backbone == "tiny"  # the profile's networks: only the ablated values change
    shrunk = resolve_config("smoke", {"ablation.n_values": [2], "ablation.k_values": [1], "ablation.train_steps": 3})
    s2 = build_sweep("prompts_nk", shrunk)
    assert [v.name for v in s2.variants] == ["N2", "K1"]
    assert {c.stage1.max_steps for c in _resolved(shrunk, s2).values()} == {3}


@pytest.mark.parametrize("override, match", [
    ({"ablation.k_values": [9]}, "exceed model.num_prompts"),
    ({"ablation.n_values": [0, 4]}, "integers >= 1"),
    ({"ablation.n_values": []}, "integers >= 1"),
])
def test_bad_sweep_sizes_are_refused(override, match):
    with pytest.raises(SweepError, match=match):
        build_sweep("prompts_nk", resolve_config("smoke", override))


def test_table2_designs_and_evaluations():
    cfg = resolve_config("paper")
    sweep = build_sweep("prompt_design", cfg)
    vc = _resolved(cfg, sweep)
    assert [c.model.prompt_design for c in vc.values()] == ["none", "single", "multi", "moe"]
    assert all(not c.model.use_v2t and not c.model.use_dp for c in vc.values())  # as the paper's Table 2
    ev = {e.name: e for e in sweep.evaluations}
    assert ev["seen"].sets == ("LIVE1", "BSDS500", "DIV2K_valid") and ev["seen"].kinds == ("seen",)
    assert ev["cross_degree"].sets == ("LIVE1",) and ev["cross_degree"].codecs == ("vvc",)
    assert ev["cross_degree"].kinds == ("unseen_degree",)
    assert ev["cross_type"].sets == ("ICB",) and ev["cross_type"].kinds == ("unseen_type",)
    # every row of the paper's Table 2 has a variant of the same design
    paper = load_paper_table("table2")
    assert set(paper["design"]) == {c.model.prompt_design for c in vc.values()}
    assert set(paper["dataset"]) <= {s for e in sweep.evaluations for s in e.sets}


def test_table3_flags_match_the_paper_rows():
    cfg = resolve_config("paper")
    sweep = build_sweep("v2t_dp", cfg)
    vc = _resolved(cfg, sweep)
    flags = {(c.model.use_v2t, c.model.use_dp) for c in vc.values()}
    assert flags == {(False, False), (True, False), (False, True), (True, True)}
    paper = load_paper_table("table3")
    assert set(zip(paper["use_v2t"], paper["use_dp"])) == flags
    labels = {v.display for v in sweep.variants}
    assert labels == set(paper["variant"])
    assert sweep.evaluations[0].sets == ("LIVE1", "BSDS500", "ICB")


def test_the_bare_moe_model_is_shared_by_fig6_table2_and_table3():
    cfg = resolve_config("paper")
    train = {}
    for name, variant in (("prompts_nk", "N7"), ("prompt_design", "moe"), ("v2t_dp", "moe")):
        sweep = build_sweep(name, cfg)
        train[name] = result_relevant(variant_config(cfg, sweep, sweep.variant(variant)), TRAIN_SECTIONS)
    assert train["prompts_nk"] == train["prompt_design"] == train["v2t_dp"]
    other = build_sweep("v2t_dp", cfg)
    assert result_relevant(variant_config(cfg, other, other.variant("moe_dp")), TRAIN_SECTIONS) != train["v2t_dp"]


def test_each_sweep_is_compared_to_the_model_the_paper_keeps():
    cfg = resolve_config("paper")
    refs = {name: build_sweep(name, cfg).reference for name in SWEEPS}
    assert refs == {"prompts_nk": "K3", "prompt_design": "moe", "v2t_dp": "moe"}
    no_k3 = build_sweep("prompts_nk", resolve_config("paper", {"ablation.k_values": [1, 5]}))
    assert no_k3.reference == "N7"  # the same model, on the N curve
    neither = build_sweep("prompts_nk", resolve_config("paper", {"ablation.n_values": [1], "ablation.k_values": [1]}))
    assert neither.reference == ""


def test_user_overrides_reach_fig6_and_table2_but_not_table3_flags():
    cfg = resolve_config("smoke", {"ablation.use_dp": True, "stage1.lr": 3e-4})
    for name in ("prompts_nk", "prompt_design"):
        assert all(c.model.use_dp and c.stage1.lr == 3e-4 for c in _resolved(cfg, build_sweep(name, cfg)).values())
    t3 = _resolved(cfg, build_sweep("v2t_dp", cfg))
    assert not t3["moe"].model.use_dp and t3["moe_dp"].model.use_dp and t3["moe"].stage1.lr == 3e-4


def test_registry():
    assert list(SWEEPS) == ["prompts_nk", "prompt_design", "v2t_dp"]
    assert sorted(s for names in NOTEBOOK_SWEEPS.values() for s in names) == sorted(SWEEPS)
    with pytest.raises(SweepError, match="unknown sweep"):
        build_sweep("table9", resolve_config("smoke"))
