"""The main job: `moediffir reproduce --profile smoke` runs the six real notebooks from a clean folder, leaves
every table and figure, and a second call skips every notebook."""

from __future__ import annotations

import json

import pytest

from moediffir.config import resolve_config
from moediffir.reproduce import find_notebooks, in_profile, reproduce


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("reproduce")
    overrides = {
        "runs_dir": str(out / "runs"),
        "results_dir": str(out / "results"),
        "data.out_dir": str(out / "benchmark"),
        # keep CI time small: a few evaluation tasks; every notebook still runs end to end
        "eval.tasks": ["jpeg_q10", "hevc_qp42", "jpeg_q25", "avc_qp42"],
        "eval.metrics": ["psnr", "ssim", "lpips", "fid", "clipiqa"],
    }
    report = reproduce("smoke", overrides, root=repo_root, log=lambda s: None)
    return out, overrides, report


def test_clean_reproduce_runs_all_notebooks_and_writes_outputs(clean_run, repo_root):
    out, _, report = clean_run
    every = find_notebooks(repo_root / "notebooks")
    names = [p.stem for p in every if in_profile(p, resolve_config("smoke"))]
    assert len(names) == 6 and report.ran == names
    assert "00_prior" in [p.stem for p in every] and "00_prior" not in names  # stage 0 only where it trains
    res = out / "results" / "smoke"
    for name in names:
        assert (res / "notebooks" / f"{name}.ipynb").is_file()
    tables = {p.name for p in (res / "tables").iterdir()}
    for stem in ("benchmark_summary", "table1", "table4", "fig6_prompts_nk", "table2_prompt_designs", "table3_v2t_dp"):
        assert f"{stem}.csv" in tables and f"{stem}.md" in tables, stem
    figures = {p.name for p in (res / "figures").iterdir()}
    for stem in ("benchmark_grid", "bpp_vs_psnr", "stage1_loss", "stage2_loss", "fig6_prompts_nk",
                 "fig8_prompt_similarity", "expert_usage", "bpp_quality"):
        assert f"{stem}.png" in figures and f"{stem}.pdf" in figures, stem
    assert (out / "runs" / "smoke" / "model" / "config.json").is_file()
    manifest = json.loads((res / "run_manifest.json").read_text())
    assert [n["status"] for n in manifest["notebooks"]] == ["ran"] * 6
    assert manifest["device"] == "cpu" and manifest["seed"] == 0


def test_second_call_skips_every_notebook(clean_run, repo_root):
    _, overrides, _ = clean_run
    executed = []  # a counter, not a stopwatch: no notebook is executed again
    again = reproduce("smoke", overrides, root=repo_root, log=lambda s: None,
                      executor=lambda *args: executed.append(args[0].name))
    assert again.ran == [] and len(again.skipped) == 6 and executed == []
