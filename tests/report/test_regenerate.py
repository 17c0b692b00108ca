"""``moediffir report``: every table and figure rebuilt from the saved numbers, byte-identically,
without the model, the benchmark or the restored images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from demo_setup import make_demo_setup
from repo_paths import REPO_ROOT

from moediffir import cli
from moediffir.evaluation import evaluator
from moediffir.report.regenerate import ReportError, regenerate_report

OVERRIDES = {"eval.metrics": ["psnr", "ssim", "lpips", "fid"], "eval.tasks": ["jpeg_q10", "avc_qp37"],
             "eval.max_images": 2}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("report")
        repo = REPO_ROOT
        cfg = make_demo_setup(root, repo / "data" / "smoke", codecs=("jpeg",), overrides=OVERRIDES)
        res = evaluator.run_evaluation(cfg, log=None)
        paths = regenerate_report(cfg, res.out_dir)  # the evaluation writes numbers; its callers draw them
    finally:
        torch.set_num_threads(n)
    return cfg, res, paths


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for sub in ("tables", "figures") for p in sorted((folder / sub).glob("*")) if p.is_file()}


def test_evaluation_writes_every_table_and_figure(evaluated):
    _, res, paths = evaluated
    snap = _snapshot(res.out_dir)
    for name in ("table1", "table4", "table_levels_jpeg", "table_levels_avc"):
        for ext in ("csv", "md", "tex"):
            assert f"tables/{name}.{ext}" in snap
    for name in ("fig4_visual_jpeg", "fig4_visual_avc", "bpp_quality", "fig8_prompt_similarity", "expert_usage"):
        assert f"figures/{name}.png" in snap and f"figures/{name}.pdf" in snap
    for name in ("bpp_quality", "fig8_prompt_similarity", "expert_usage"):
        assert f"figures/{name}.csv" in snap  # the numbers behind the figure
    md = snap["tables/table1.md"].decode()
    assert "random weights: these numbers say nothing about the method" in md.lower()
    assert "color=rgb" in md and "random(seed=0)" in md
    assert sorted(paths) == sorted(res.out_dir / k for k in snap)


def test_report_regenerates_byte_identically_without_model_or_images(evaluated):
    cfg, res, _ = evaluated
    before = _snapshot(res.out_dir)
    # nothing but the saved numbers is left
    shutil.rmtree(cfg.run_dir)
    shutil.rmtree(cfg.benchmark_dir)
    shutil.rmtree(res.out_dir / "restored")
    for p in (res.out_dir / "tables").glob("*"):
        p.unlink()
    shutil.rmtree(res.out_dir / "figures")
    stale = res.out_dir / "tables" / "table_levels_hevc.md"  # from an earlier evaluation with HEVC
    stale.write_text("old")
    other = res.out_dir / "tables" / "benchmark_summary.csv"  # notebook 01's table: not ours to remove
    other.write_text("keep")
    paths = regenerate_report(cfg)
    assert _snapshot(res.out_dir) | {} == before | {"tables/benchmark_summary.csv": b"keep"}
    assert not stale.exists() and other.read_text() == "keep"
    assert len(paths) == len(before)
    # and again, through the command line: still the same bytes
    argv = ["report", "--profile", "smoke", "--set", f"results_dir={cfg.results_dir}"]
    assert cli.main(argv) == 0
    assert {k: v for k, v in _snapshot(res.out_dir).items() if k != "tables/benchmark_summary.csv"} == before


def test_report_without_numbers_says_what_to_run(tmp_path, capsys):
    from moediffir.config import resolve_config

    cfg = resolve_config("smoke", {"results_dir": str(tmp_path)})
    with pytest.raises(ReportError, match="moediffir evaluate --profile smoke"):
        regenerate_report(cfg)
    assert cli.main(["report", "--profile", "smoke", "--set", f"results_dir={tmp_path}"]) == 2
    assert "notebook 06" in capsys.readouterr().err
