"""Notebook 06 runs headless under papermill with the smoke profile on a model folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from demo_setup import make_demo_setup

NOTEBOOK = "06_evaluation"
# MANIQA is left out here (about 3 s per image on a CPU); the notebook's own smoke run scores it
OVERRIDES = {"eval.metrics": ["psnr", "ssim", "lpips", "fid", "clipiqa"], "eval.tasks": ["jpeg_q10", "jpeg_q25"],
             "eval.max_images": 2}


def test_notebook_is_paired_and_clean(repo_root):
    nb = json.loads((repo_root / "notebooks" / f"{NOTEBOOK}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    src = "".join(params[0]["source"])
    assert 'profile: str = "smoke"' in src and "overrides: dict = {}" in src
    jupytext = pytest.importorskip("jupytext")
    paired = jupytext.read(repo_root / "notebooks" / f"{NOTEBOOK}.py")  # the .ipynb pairs the percent script
    assert [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]] == \
        [(c.cell_type, c.source) for c in paired.cells]


def test_notebook_without_model_names_notebooks_02_03(tmp_path, repo_root):
    papermill = pytest.importorskip("papermill")
    overrides = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}
    with pytest.raises(papermill.PapermillExecutionError, match="02.*03"):
        papermill.execute_notebook(
            str(repo_root / "notebooks" / f"{NOTEBOOK}.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"profile": "smoke", "overrides": overrides}, cwd=str(repo_root), kernel_name="python3",
            progress_bar=False,
        )


def test_notebook_06_smoke_under_papermill(tmp_path, repo_root, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: one thread (CPU shared with other tests)
    cfg = make_demo_setup(tmp_path, repo_root / "data" / "smoke", codecs=("jpeg",))
    overrides = {"data.out_dir": str(cfg.benchmark_dir), "runs_dir": cfg.runs_dir, "results_dir": cfg.results_dir,
                 "device": "cpu", **OVERRIDES}
    papermill.execute_notebook(
        str(repo_root / "notebooks" / f"{NOTEBOOK}.ipynb"), str(tmp_path / "out.ipynb"),
        parameters={"profile": "smoke", "overrides": overrides}, cwd=str(repo_root), kernel_name="python3",
        progress_bar=False,
    )
    res = tmp_path / "results" / "smoke"
    results = pd.read_csv(res / "metrics" / "results.csv")
    assert set(results.method) == {"moe-diffir", "moe-diffir (no compensator)", "no restoration"}
    assert set(results.metric) == {"psnr", "ssim", "lpips", "fid", "clipiqa"}
    assert set(results.task) == {"jpeg_q10", "jpeg_q25", "all"}
    for name in ("table1", "table4", "table_levels_jpeg"):
        assert "say nothing about the method" in (res / "tables" / f"{name}.md").read_text()
    for name in ("fig4_visual_jpeg", "bpp_quality", "fig8_prompt_similarity", "expert_usage"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 5_000
    out = json.loads((tmp_path / "out.ipynb").read_text())
    images = [o for c in out["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # the routing example and the figures
