"""Notebook 01 runs headless under papermill with the smoke profile and writes its tables and figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from moediffir.config import load_config
from moediffir.data.manifest import read_manifest, verify_manifest
from moediffir.data.tasks import all_tasks


def test_notebook_is_paired_and_clean(repo_root):
    nb = json.loads((repo_root / "notebooks" / "01_data_generation.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and 'profile: str = "smoke"' in "".join(params[0]["source"])
    py = (repo_root / "notebooks" / "01_data_generation.py").read_text()
    for c in code:  # the .ipynb is the jupytext pairing of the .py script
        assert "".join(c["source"]).strip() in py


def test_notebook_01_smoke_under_papermill(tmp_path, repo_root):
    papermill = pytest.importorskip("papermill")
    overrides = {
        "data.datasets_dir": str(repo_root / "data" / "smoke"),
        "data.out_dir": str(tmp_path / "bench"),
        "results_dir": str(tmp_path / "results"),
    }
    papermill.execute_notebook(
        str(repo_root / "notebooks" / "01_data_generation.ipynb"), str(tmp_path / "out.ipynb"),
        parameters={"profile": "smoke", "overrides": overrides, "progress": False}, cwd=str(tmp_path),
        kernel_name="python3", progress_bar=False,
    )
    bench = tmp_path / "bench"
    df = read_manifest(bench)
    # every seen and unseen task of the paper preset, with real codecs (HiFiC/learned ones with random weights)
    assert set(df[df.split == "test"].task) == {t.id for t in all_tasks("paper")}
    assert len(df) == 6 * 21 + 3 * 27
    assert verify_manifest(bench) == []
    assert (df[df.codec.isin(["c_psnr", "c_ssim", "hific"])].weights == "random").all()
    res = tmp_path / "results" / "smoke"
    summary = pd.read_csv(res / "tables" / "benchmark_summary.csv")
    assert len(summary) == 21 + 27 and {"images", "bpp", "lq_psnr", "lq_ssim", "weights"} <= set(summary.columns)
    assert "UNTRAINED" in (res / "tables" / "benchmark_summary.md").read_text()
    for name in ("benchmark_grid", "bpp_vs_psnr"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (res / "figures" / f"{name}.pdf").is_file()
    assert load_config(res / "tables" / "benchmark_summary.config.json").profile == "smoke"
    # its run time is measured by bench/, not asserted here (pytest's --timeout stops a hang)
