"""Fig. 6, Table 2 and Table 3 (paper §4.3) drawn from saved sweep files, with the paper's values beside ours."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from moediffir.ablation.per_image import per_image_path
from moediffir.ablation.sweep import ROUTING_CSV, results_path, sweeps_root
from moediffir.config import resolve_config
from moediffir.report import ablations as rep

RANDOM_LABEL = "random-weight backbone, a few training steps: says nothing about the method (10 steps)"
METRICS = ("psnr", "ssim", "lpips", "fid")


def _rows(variant: dict, evaluation: str, set_name: str, tasks: list[str], base: float) -> list[dict]:
    """Per-task rows as gather_sweep writes them; task i gets value base + i (so the mean is known)."""
    out = []
    for i, task in enumerate(tasks):
        for m in METRICS:
            v = base + i if m == "psnr" else (base + i) / 100
            out.append({**variant, "method": "moe-diffir (no compensator)", "set": set_name, "task": task,
                        "codec": task.split("_")[0], "level": task.split("_")[-1], "kind": "seen", "scope": "task",
                        "metric": m, "value": v, "n_images": 2, "n_tasks": 1, "conventions": "color=rgb; crop=0",
                        "weights": "none (no network)" if m in ("psnr", "ssim") else "random(seed=0)",
                        "model_weights": "random weights: backbone", "note": "", "evaluation": evaluation})
    # an evaluator aggregate that the report must ignore
    out.append({**out[-1], "scope": "kind", "task": "all", "value": 999.0})
    return out


def _save(cfg, name: str, rows: list[dict], evaluations: list[dict], label: str = RANDOM_LABEL,
          reference: str = "", per_image: bool = False) -> None:
    df = pd.DataFrame(rows)
    df["weights_label"] = label
    path = results_path(cfg, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    variants = [{"variant": v, "key": f"key_{v}", "state": "done", "weights_label": label, "evaluation": []}
                for v in dict.fromkeys(df["variant"])]
    path.with_suffix(".json").write_text(json.dumps({"sweep": name, "evaluations": evaluations, "variants": variants,
                                                     "reference": reference}))
    if per_image:
        _per_image(df).to_csv(per_image_path(cfg, name), index=False)


def _per_image(df: pd.DataFrame) -> pd.DataFrame:
    """Two images per per-task row whose mean is the row's value: image a is 0.3 dB (PSNR; 0.003 for the others)
    above, image b as much below, for every variant, so every paired difference is exact (a zero-width interval)
    and every mean's interval is [mean - 0.3, mean + 0.3]."""
    d = df[(df["scope"] == "task") & (df["metric"] != "fid")]
    wide = d.pivot_table(index=["sweep", "variant", "method", "evaluation", "set", "task"],
                         columns="metric", values="value").reset_index()
    out = []
    for stem, sign in (("a", 1), ("b", -1)):
        img = wide.assign(stem=stem)
        for m in ("psnr", "ssim", "lpips"):
            img[m] = wide[m] + sign * (0.3 if m == "psnr" else 0.003)
        out.append(img)
    return pd.concat(out, ignore_index=True)


@pytest.fixture
def cfg(tmp_path):
    return resolve_config("paper", {"results_dir": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs")})


def _fig6(cfg, per_image: bool = False) -> None:
    rows = []
    for n, k, base in ((1, 1, 27.0), (4, 3, 28.0), (7, 3, 29.0)):
        rows += _rows({"sweep": "prompts_nk", "variant": f"N{n}", "group": "N", "label": f"N = {n}",
                       "num_prompts": n, "top_k": k}, "seen", "LIVE1", ["jpeg_q10", "hevc_qp37"], base)
    for k, base in ((1, 29.5), (3, 29.0), (7, 28.5)):
        rows += _rows({"sweep": "prompts_nk", "variant": f"K{k}", "group": "K", "label": f"K = {k}",
                       "num_prompts": 7, "top_k": k}, "seen", "LIVE1", ["jpeg_q10", "hevc_qp37"], base)
    _save(cfg, "prompts_nk", rows, [{"name": "seen", "sets": ["LIVE1"], "kinds": ["seen"], "codecs": []}],
          reference="K3", per_image=per_image)


def _table2(cfg, cross_degree_set: str = "LIVE1", per_image: bool = False) -> None:
    rows = []
    for j, d in enumerate(("none", "single", "multi", "moe")):
        v = {"sweep": "prompt_design", "variant": d, "group": "design", "label": f"design {d}", "prompt_design": d}
        for s in ("LIVE1", "BSDS500"):
            rows += _rows(v, "seen", s, ["jpeg_q10", "webp_q10"], 28.5 + j)
        rows += _rows(v, "cross_degree", cross_degree_set, ["vvc_qp32", "vvc_qp52"], 33.0 + j)
        rows += _rows(v, "cross_type", "ICB", ["avc_qp37"], 29.0 + j)
    _save(cfg, "prompt_design", rows, [
        {"name": "seen", "sets": ["LIVE1", "BSDS500", "DIV2K_valid"], "kinds": ["seen"], "codecs": []},
        {"name": "cross_degree", "sets": [cross_degree_set], "kinds": ["unseen_degree"], "codecs": ["vvc"]},
        {"name": "cross_type", "sets": ["ICB"], "kinds": ["unseen_type"], "codecs": []}],
          reference="moe", per_image=per_image)


def _table3(cfg, per_image: bool = False) -> None:
    rows = []
    for j, (name, v2t, dp) in enumerate((("moe", False, False), ("moe_v2t", True, False), ("moe_dp", False, True),
                                         ("moe_v2t_dp", True, True))):
        v = {"sweep": "v2t_dp", "variant": name, "group": "v2t_dp", "label": name, "use_v2t": v2t, "use_dp": dp}
        for s in ("LIVE1", "ICB"):
            rows += _rows(v, "seen", s, ["jpeg_q10"], 29.0 + 0.1 * j)
    _save(cfg, "v2t_dp", rows, [{"name": "seen", "sets": ["LIVE1", "BSDS500", "ICB"], "kinds": ["seen"], "codecs": []}],
          reference="moe", per_image=per_image)


def _tidy(cfg, name: str) -> pd.DataFrame:
    return pd.read_csv(cfg.profile_results_dir / "tables" / f"{name}.csv")


def test_fig6_means_over_tasks_and_labels(cfg):
    _fig6(cfg)
    paths = rep.write_sweep_report(cfg, "prompts_nk")
    names = sorted(p.name for p in paths)
    assert names == ["fig6_prompts_nk." + e for e in ("csv", "md", "pdf", "png", "tex")]
    tidy = _tidy(cfg, rep.FIG6)
    psnr = tidy[tidy["metric"] == "psnr"].set_index("row")["ours"]
    assert psnr["N = 4"] == pytest.approx(28.5)  # mean of the two tasks (28, 29); the aggregate 999 ignored
    assert psnr["K = 1"] == pytest.approx(30.0)
    assert tidy["paper"].isna().all()  # the paper's Fig. 6 has no numbers
    assert set(tidy["metric"]) == set(METRICS)
    md = (cfg.profile_results_dir / "tables" / "fig6_prompts_nk.md").read_text()
    assert "says nothing about the method" in md and "Fig. 6 as a plot only" in md
    num = rep.fig6_numbers(pd.read_csv(results_path(cfg, "prompts_nk")))
    assert list(dict.fromkeys(num["curve"])) == ["N", "K"]
    assert num.loc[(num["curve"] == "N") & (num["metric"] == "psnr"), "x"].tolist() == [1, 4, 7]


def test_table2_puts_the_paper_beside_ours(cfg):
    _table2(cfg)
    rep.write_sweep_report(cfg, "prompt_design")
    tidy = _tidy(cfg, rep.TABLE2)
    moe = tidy[(tidy["row"] == "design moe") & (tidy["metric"] == "psnr")].set_index("column")
    seen = moe.loc["Seen LIVE1"]
    assert seen["ours"] == pytest.approx(32.0) and seen["paper"] == pytest.approx(29.02)
    assert seen["diff"] == pytest.approx(32.0 - 29.02)
    assert moe.loc["Unseen, cross-degree: LIVE1", "paper"] == pytest.approx(33.45)
    assert moe.loc["Unseen, cross-type: ICB", "paper"] == pytest.approx(29.02)
    none_lpips = tidy[(tidy["row"] == "design none") & (tidy["metric"] == "lpips")].set_index("column")
    assert none_lpips.loc["Seen BSDS500", "paper"] == pytest.approx(0.1591)
    md = (cfg.profile_results_dir / "tables" / "table2_prompt_designs.md").read_text()
    assert "32.00 (29.02; +2.98)" in md
    assert "Unseen, cross-degree columns: mean over 2 task(s) (vvc_qp52, vvc_qp32)" in md
    assert md.startswith("**Table 2") and "says nothing about the method" in md
    tex = (cfg.profile_results_dir / "tables" / "table2_prompt_designs.tex").read_text()
    assert "\\begin{tabular}" in tex and "29.02" in tex


def test_table2_cross_degree_on_another_set_gets_no_paper_value(cfg):
    _table2(cfg, cross_degree_set="ICB")  # the paper's ICB unseen column is cross-type, not cross-degree
    rep.write_sweep_report(cfg, "prompt_design")
    tidy = _tidy(cfg, rep.TABLE2)
    cd = tidy[tidy["column"] == "Unseen, cross-degree: ICB"]
    assert len(cd) and cd["paper"].isna().all()
    assert tidy.loc[tidy["column"] == "Unseen, cross-type: ICB", "paper"].notna().all()


def test_table3_matches_paper_rows_by_flags(cfg):
    _table3(cfg)
    rep.write_sweep_report(cfg, "v2t_dp")
    tidy = _tidy(cfg, rep.TABLE3)
    full = tidy[(tidy["row"] == "moe_v2t_dp") & (tidy["metric"] == "psnr")].set_index("column")
    assert full.loc["Seen LIVE1", "paper"] == pytest.approx(29.10)
    assert full.loc["Seen ICB", "paper"] == pytest.approx(29.88)
    dp = tidy[(tidy["row"] == "moe_dp") & (tidy["metric"] == "fid")].set_index("column")
    assert dp.loc["Seen LIVE1", "paper"] == pytest.approx(76.60)
    assert "Seen BSDS500" not in set(tidy["column"])  # not measured: no column invented


def test_smoke_sets_show_no_paper_values(tmp_path):
    cfg = resolve_config("smoke", {"results_dir": str(tmp_path / "results")})
    rows = []
    for d in ("none", "moe"):
        rows += _rows({"sweep": "prompt_design", "variant": d, "group": "design", "label": d, "prompt_design": d},
                      "seen", "smoke_test", ["jpeg_q10"], 12.0)
    rows = [r for r in rows if r["metric"] != "fid"]  # one image per task: the evaluator gives no FID
    _save(cfg, "prompt_design", rows, [{"name": "seen", "sets": ["smoke_test"], "kinds": ["seen"], "codecs": []}])
    meta_path = results_path(cfg, "prompt_design").with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "metrics": list(METRICS)}))
    rep.write_sweep_report(cfg, "prompt_design")
    tidy = _tidy(cfg, rep.TABLE2)
    assert tidy["paper"].isna().all() and "fid" not in set(tidy["metric"])
    md = (cfg.profile_results_dir / "tables" / "table2_prompt_designs.md").read_text()
    assert "None shown" in md and RANDOM_LABEL in md
    assert "Measured but without a value: fid (FID needs at least 2 images" in md


def test_report_regenerates_byte_identically_from_saved_numbers(cfg):
    _fig6(cfg, per_image=True)  # the bootstrap is seeded: intervals regenerate byte for byte too
    _table2(cfg, per_image=True)
    _table3(cfg)
    assert not sweeps_root(cfg).exists()  # no run folder, no model: only the saved tidy files
    first = rep.write_ablation_report(cfg)
    assert len(first) == 5 + 3 + 3
    blobs = {p: p.read_bytes() for p in first}
    second = rep.write_ablation_report(cfg)
    assert second == first and all(p.read_bytes() == blobs[p] for p in second)
    png = next(p for p in first if p.suffix == ".png").read_bytes()
    pdf = next(p for p in first if p.suffix == ".pdf").read_bytes()
    assert b"Software" not in png and b"matplotlib" not in png
    assert b"CreationDate" not in pdf and b"Producer" not in pdf


def test_routing_checkpoint_from_the_run_folder(cfg):
    _fig6(cfg)
    folder = sweeps_root(cfg) / "prompts_nk" / "key_N7"
    folder.mkdir(parents=True)
    rows = [{"method": "moe-diffir (no compensator)", "set": "LIVE1", "task": t, "codec": t.split("_")[0],
             "level": t.split("_")[-1], "kind": "seen", "scale": s, "expert": e, "count": (e + 1) * (i + 1),
             "slots": 3 * 28, "gate_sum": 1.0, "tokens": 28, "n_images": 1, "evaluation": "seen"}
            for i, t in enumerate(("jpeg_q10", "hevc_qp37")) for s in range(2) for e in range(7)]
    pd.DataFrame(rows).to_csv(folder / ROUTING_CSV, index=False)
    paths = rep.routing_usage(cfg, "prompts_nk", "N7")
    assert {p.suffix for p in paths} == {".csv", ".png", ".pdf"}
    assert all("prompts_nk_N7" in str(p) for p in paths)
    with pytest.raises(rep.AblationReportError, match="no routing numbers"):
        rep.routing_usage(cfg, "prompts_nk", "N1")
    with pytest.raises(rep.AblationReportError, match="has no variant"):
        rep.routing_usage(cfg, "prompts_nk", "N99")


def test_missing_results_name_the_command(cfg):
    from moediffir.ablation.sweep import SweepError

    with pytest.raises(SweepError, match="moediffir sweep prompt_design --profile paper"):
        rep.write_sweep_report(cfg, "prompt_design")
    assert rep.write_ablation_report(cfg) == []


# ------------------------------------------------------------------------------------------ intervals
def test_table2_shows_the_interval_and_the_paired_difference(cfg):
    _table2(cfg, per_image=True)
    rep.write_sweep_report(cfg, "prompt_design")
    tidy = _tidy(cfg, rep.TABLE2)
    assert list(tidy.columns)[-6:] == ["ci_lo", "ci_hi", "reference", "ref_diff", "ref_diff_lo", "ref_diff_hi"]
    psnr = tidy[tidy["metric"] == "psnr"]
    assert (psnr["ci_lo"] <= psnr["ours"]).all() and (psnr["ours"] <= psnr["ci_hi"]).all()
    assert (psnr["ci_hi"] - psnr["ci_lo"]).to_numpy() == pytest.approx(0.6)  # images 0.3 dB above / below
    assert set(tidy["reference"]) == {"moe"}
    none = psnr[psnr["row"] == "design none"].set_index("column")
    assert none.loc["Seen LIVE1", "ref_diff"] == pytest.approx(28.5 - 31.5)
    assert none.loc["Seen LIVE1", "ref_diff_lo"] == pytest.approx(-3.0)  # the same image effects: exact
    assert tidy.loc[tidy["metric"] == "fid", "ci_lo"].isna().all()  # FID is not per image: no interval
    md = (cfg.profile_results_dir / "tables" / "table2_prompt_designs.md").read_text()
    assert "32.00 ± 0.30 (29.02; +2.98)" in md
    assert "**Paired difference to design moe" in md
    paired = md.split("**Paired difference")[1]
    assert "| design none | -3.00 [-3.00, -3.00] |" in paired and "| design moe | reference |" in paired
    assert "contains 0 is not distinguishable from noise" in md and "2 test image(s)" in md
    assert "Cells: ours ± half (paper; ours - paper)" in md
    tex = (cfg.profile_results_dir / "tables" / "table2_prompt_designs.tex").read_text()
    assert "$\\pm$0.30" in tex and "Paired difference" in tex and tex.count("\\begin{tabular}") == 2


def test_table3_without_per_image_rows_says_why_there_is_no_interval(cfg):
    _table3(cfg)
    rep.write_sweep_report(cfg, "v2t_dp")
    tidy = _tidy(cfg, rep.TABLE3)
    assert tidy["ci_lo"].isna().all() and tidy["ref_diff"].isna().all()
    md = (cfg.profile_results_dir / "tables" / "table3_v2t_dp.md").read_text()
    assert "±" not in md.split("\n\n1. ")[0] and "Paired difference" not in md
    assert "No interval: these sweep results hold no per-image rows" in md


def test_table3_paired_to_the_bare_moe_prompt(cfg):
    _table3(cfg, per_image=True)
    rep.write_sweep_report(cfg, "v2t_dp")
    tidy = _tidy(cfg, rep.TABLE3)
    full = tidy[(tidy["row"] == "moe_v2t_dp") & (tidy["metric"] == "lpips")].set_index("column")
    assert full.loc["Seen LIVE1", "ref_diff"] == pytest.approx((29.3 - 29.0) / 100)
    md = (cfg.profile_results_dir / "tables" / "table3_v2t_dp.md").read_text()
    assert "| moe | reference |" in md and "+0.0030 [+0.0030, +0.0030]" in md


def test_fig6_draws_error_bars_and_lists_the_interval(cfg):
    _fig6(cfg, per_image=True)
    rep.write_sweep_report(cfg, "prompts_nk")
    tidy = _tidy(cfg, rep.FIG6)
    psnr = tidy[tidy["metric"] == "psnr"].set_index("row")
    assert psnr.loc["N = 4", "ci_lo"] == pytest.approx(28.2) and psnr.loc["N = 4", "ci_hi"] == pytest.approx(28.8)
    assert psnr.loc["N = 7", "ref_diff"] == 0 and psnr.loc["N = 1", "ref_diff"] == pytest.approx(-2.0)
    md = (cfg.profile_results_dir / "tables" / "fig6_prompts_nk.md").read_text()
    assert "28.50 ± 0.30" in md and "**Paired difference to K = 3" in md
    df = pd.read_csv(results_path(cfg, "prompts_nk"))
    spread = rep._spread(df, pd.read_csv(per_image_path(cfg, "prompts_nk")), "K3")
    num = rep.fig6_numbers(df, spread)
    per_image_metrics = num[num["metric"] != "fid"]
    assert per_image_metrics[["lo", "hi"]].notna().all().all()
    assert (per_image_metrics["lo"] <= per_image_metrics["value"]).all() and num.loc[num["metric"] == "fid", "lo"].isna().all()
    fig = rep._draw_fig6(num, ["psnr", "lpips"], "LIVE1", "title")
    bars = [c for ax in fig.axes for c in ax.containers]
    assert len(bars) == 4  # PSNR and LPIPS, on both panels
    assert rep._draw_fig6(rep.fig6_numbers(df), ["psnr"], "LIVE1", "t").axes[0].containers == []  # no interval
