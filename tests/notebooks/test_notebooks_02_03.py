"""Notebooks 02 (stage I) and 03 (stage II) under papermill, smoke profile (docs/design.md §1).

They run with the repository root as working directory (as ``moediffir reproduce`` runs them), with the smoke
profile's own training settings, and write into temporary folders through overrides (``runs_dir``,
``results_dir``, ``data.out_dir``: a JPEG + WebP benchmark of the bundled images).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config

NB02 = REPO / "notebooks" / "02_stage1_training.ipynb"
NB03 = REPO / "notebooks" / "03_stage2_training.ipynb"


def _bench(root: Path) -> Path:
    from moediffir.data.builder import build_benchmark

    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(root),
                                   "data.codecs": ["jpeg", "webp"], "data.unseen": False})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    return root


def _run(nb: Path, out: Path, overrides: dict) -> None:
    import papermill as pm

    pm.execute_notebook(str(nb), str(out), parameters={"profile": "smoke", "overrides": overrides, "progress": False},
                        cwd=str(REPO), progress_bar=False, kernel_name="python3", log_output=False)


def _check_outputs(tmp_path: Path, overrides: dict) -> None:
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    cfg = resolve_config("smoke", overrides)
    figures = cfg.profile_results_dir / "figures"
    for name in ("stage1_loss", "stage1_expert_usage", "stage1_visual", "stage2_loss", "stage2_decoder", "stage2_visual"):
        assert (figures / f"{name}.png").is_file() and (figures / f"{name}.pdf").is_file(), name
    for name in ("stage1_loss", "stage1_expert_usage", "stage2_loss", "stage2_decoder"):
        assert (figures / f"{name}.csv").is_file(), name
    s1 = json.loads((cfg.profile_results_dir / "tables" / "stage1_summary.json").read_text())
    s2 = json.loads((cfg.profile_results_dir / "tables" / "stage2_summary.json").read_text())
    assert s1["weights"] == s2["weights"] == "random"
    assert s2["end_l1_plain"] == pytest.approx(s2["start_l1_plain"], abs=1e-7)
    pipe = load_pipeline(cfg.run_dir / "model", device="cpu")
    assert pipe.compensator is not None
    for nb in ("02.ipynb", "03.ipynb"):
        cells = json.loads((tmp_path / nb).read_text())["cells"]
        assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))
    _check_report_redraws_training_figures(cfg, figures, tmp_path / "redrawn")


def _check_report_redraws_training_figures(cfg, figures: Path, out: Path) -> None:
    """What ``moediffir report`` draws from the training logs is, byte for byte, what the notebooks drew."""
    from moediffir.report.training_report import training_figures

    redrawn = training_figures(cfg, out)
    names = sorted(p.name for p in redrawn)
    assert names == sorted([f"{n}.{ext}" for n in ("stage1_loss", "stage1_expert_usage", "stage2_loss", "stage2_decoder")
                            for ext in ("png", "pdf", "csv")] + ["stage1_loss_terms.csv", "stage2_loss_terms.csv"])
    changed = [p.name for p in redrawn if p.read_bytes() != (figures / p.name).read_bytes()]
    assert changed == []


def test_notebooks_02_03_smoke(tmp_path):
    """The smoke profile's own settings; only the output folders are redirected."""
    overrides = {"data.out_dir": str(_bench(tmp_path / "bench")), "runs_dir": str(tmp_path / "runs"),
                 "results_dir": str(tmp_path / "results")}
    _run(NB02, tmp_path / "02.ipynb", overrides)
    _run(NB03, tmp_path / "03.ipynb", overrides)
    _check_outputs(tmp_path, overrides)
