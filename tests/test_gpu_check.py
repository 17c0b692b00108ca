"""bench/gpu_check.sh: the parts that run without a GPU — syntax, and its refusals (exit 3)
before any step starts. Its steps themselves run on a CUDA machine (README, Results)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from repo_paths import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, **env: str) -> tuple[int, str]:
    full = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "WHEELS": str(tmp_path / "none"),
            **env}
    proc = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=120,
                          check=False)
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    return proc.returncode, proc.stdout + log


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_a_cuda_gpu(tmp_path):
    code, out = _run(tmp_path, DEVICE="cuda")
    assert code == 3
    assert "no CUDA GPU visible to torch" in out and "environment not usable" in out


def test_refuses_a_benchmark_folder_without_manifest(tmp_path):
    (tmp_path / "bench").mkdir()
    code, out = _run(tmp_path, DEVICE="cpu", BENCHMARK=str(tmp_path / "bench"))
    assert code == 3
    assert "holds no manifest.csv" in out
    assert "---- reproduce_smoke" not in out  # refused before any step ran


def test_steps_beyond_the_budget_are_skipped_and_reported(tmp_path):
    """With no time left of BUDGET every step is skipped (not started), the run fails, and gpu_check.json says
    which steps were skipped and whether the whole script stayed within its budget."""
    import json

    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "manifest.csv").write_text("set,task\n")
    code, out = _run(tmp_path, DEVICE="cpu", BENCHMARK=str(tmp_path / "bench"), BUDGET="5")
    assert code == 1
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    names = [s["step"] for s in summary["steps"]]
    assert names[:4] == ["reproduce_smoke", "bench_model", "bench_model_large", "bench_train"]
    assert all(s.get("skipped") == "budget" for s in summary["steps"])
    assert summary["budget_seconds"] == 5 and summary["ok"] is False
    assert summary["within_budget"] == (summary["total_seconds"] <= 5)
    assert "skipped" in out and "---- reproduce_smoke (limit" not in out
