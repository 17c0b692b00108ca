"""Every command, given bad input, refuses in one line and changes nothing.

For each command of the real command line (a subprocess, as a user runs it), a table of bad inputs: the exit
code is 2 (1 for a run that did part of its work), stderr holds exactly one ``moediffir: error:`` line that
names the key or file, no traceback, and every file that existed before is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "data" / "smoke"


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TORCH_HOME=str(cwd / "torch_home"))
    return subprocess.run([sys.executable, "-m", "moediffir.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a small smoke benchmark, an earlier run's checkpoints, a model folder (and one missing its
    compensator), input images (two with the same stem), a dataset with two same-stem sources, a plain file."""
    from moediffir.config import resolve_config
    from moediffir.data.builder import build_benchmark
    from moediffir.pipelines.model_folder import build_fresh_model_folder

    root = tmp_path_factory.mktemp("cli_errors")
    cfg = resolve_config("smoke", {"data.datasets_dir": str(SMOKE), "data.out_dir": str(root / "bench"),
                                   "data.codecs": ["jpeg"], "data.unseen": False, "data.max_train_images": 1,
                                   "data.max_test_images": 1})
    build_benchmark(cfg, workers=1, progress=False)
    for step in (10, 20, 30):  # an earlier run of stage I (what a run without --resume must not delete)
        ckpt = root / "runs" / "smoke" / "stage1" / "checkpoints" / f"step_{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainable.pt").write_bytes(os.urandom(64))
        (ckpt / "checkpoint.json").write_text(json.dumps({"step": step, "world_size": 1, "meta": {}}))
    (root / "runs" / "smoke" / "stage1" / "config.json").write_text("{}\n")
    model = build_fresh_model_folder(root / "model", resolve_config("smoke"))
    shutil.copytree(model, root / "model_no_comp")
    shutil.rmtree(root / "model_no_comp" / "compensator")
    images = root / "in"
    images.mkdir()
    src = min((SMOKE / "smoke_test").glob("*.png"))
    shutil.copy(src, images / "a.png")
    from PIL import Image

    Image.open(src).convert("RGB").save(images / "a.jpg")
    shutil.copy(src, images / "good.png")
    dup = root / "datasets" / "dup_set"
    dup.mkdir(parents=True)
    shutil.copy(src, dup / "x.png")
    Image.open(src).convert("RGB").save(dup / "x.jpg")
    (root / "afile").write_text("not a folder\n")
    return root


def _smoke(ws: Path) -> list[str]:
    return ["--set", f"data.out_dir={ws / 'bench'}", "--set", f"runs_dir={ws / 'runs'}",
            "--set", f"results_dir={ws / 'results'}"]


# (case id, argv builder, exit code, text the error line must hold)
CASES = [
    ("build-enum", lambda w: ["data", "build", "--set", "model.prompt_design=foo", *_smoke(w)], 2,
     "model.prompt_design"),
    ("build-range", lambda w: ["data", "build", "--set", "data.png_compress_level=42", *_smoke(w)], 2,
     "data.png_compress_level"),
    ("build-unknown-key", lambda w: ["data", "build", "--set", "data.nope=1"], 2, "data.nope"),
    ("build-out-is-a-file", lambda w: ["data", "build", "--set", f"data.datasets_dir={SMOKE}", "--set",
                                       'data.codecs=["jpeg"]', "--out", str(w / "afile" / "bench")], 2, "afile"),
    ("build-same-stem", lambda w: ["data", "build", "--set", f"data.datasets_dir={w / 'datasets'}", "--set",
                                   'data.train_sets=["dup_set"]', "--set", 'data.test_sets=["dup_set"]', "--set",
                                   'data.codecs=["jpeg"]', "--out", str(w / "dup_bench")], 2, "x.jpg"),
    ("build-paper-lists-all", lambda w: ["data", "build", "--profile", "paper", "--set",
                                         f"data.root={w / 'paper_data'}"], 2, "ICB"),
    ("train-enum-keeps-checkpoints", lambda w: ["train", "stage1", "--set", "model.prompt_design=foo",
                                                *_smoke(w)], 2, "model.prompt_design"),
    ("train-range", lambda w: ["train", "stage1", "--set", "stage1.max_steps=-5", *_smoke(w)], 2,
     "stage1.max_steps"),
    ("train-no-resume-keeps-checkpoints", lambda w: ["train", "stage1", "--device", "cpu", *_smoke(w)], 2,
     "--overwrite"),
    ("train-paper-missing-weights", lambda w: ["train", "stage1", "--profile", "paper", "--set",
                                               f"data.root={w / 'paper_data'}", *_smoke(w)], 2, "RN50"),
    ("train-cuda", lambda w: ["train", "stage1", "--device", "cuda", *_smoke(w)], 2, "CUDA is not available"),
    ("train-runs-is-a-file", lambda w: ["train", "stage1", "--set", f"data.out_dir={w / 'bench'}", "--set",
                                        f"runs_dir={w / 'afile'}"], 2, "afile"),
    ("stage2-data-cuda", lambda w: ["stage2-data", "--device", "cuda", *_smoke(w)], 2, "CUDA is not available"),
    ("stage2-cuda", lambda w: ["train", "stage2", "--device", "cuda", *_smoke(w)], 2, "CUDA is not available"),
    ("evaluate-cuda", lambda w: ["evaluate", "--device", "cuda", *_smoke(w)], 2, "CUDA is not available"),
    ("evaluate-no-benchmark", lambda w: ["evaluate", "--set", f"data.out_dir={w / 'no_bench'}"], 2, "no_bench"),
    ("evaluate-results-is-a-file", lambda w: ["evaluate", "--no-model", "--set", f"data.out_dir={w / 'bench'}",
                                              "--set", f"results_dir={w / 'afile'}"], 2, "afile"),
    ("report-no-results", lambda w: ["report", "--results", str(w / "no_results")], 2, "no_results"),
    ("sweep-unknown", lambda w: ["sweep", "nope", *_smoke(w)], 2, "nope"),
    ("reproduce-unknown-notebook", lambda w: ["reproduce", "--only", "99_nope", "--root", str(REPO), "--set",
                                              f"data.datasets_dir={SMOKE}", *_smoke(w)], 2, "99_nope"),
    ("restore-cuda", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w / "out"), "--model",
                                str(w / "model"), "--device", "cuda"], 2, "CUDA is not available"),
    ("restore-same-stem", lambda w: ["restore", str(w / "in"), "-o", str(w / "out"), "--model", str(w / "model")],
     2, "a.jpg"),
    ("restore-out-is-a-file", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w / "afile"),
                                         "--model", str(w / "model"), "--steps", "1"], 2, "afile"),
    ("restore-missing-part", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w / "out"), "--model",
                                        str(w / "model_no_comp"), "--steps", "1"], 2, "compensator"),
    ("restore-existing-output", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w / "in"),
                                           "--model", str(w / "model"), "--steps", "1"], 2, "good.png"),
    ("verify-no-benchmark", lambda w: ["data", "verify", "--out", str(w / "no_bench")], 2, "no_bench"),
]


@pytest.mark.parametrize(("case", "argv", "code", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(ws, case, argv, code, names):
    before = _snapshot(ws)
    res = _cli(*argv(ws), cwd=ws)
    errors = [line for line in res.stderr.splitlines() if line.startswith("moediffir: error:")]
    assert res.returncode == code, f"{case}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(errors) == 1, res.stderr[-3000:]
    assert names in errors[0], errors[0]
    assert _snapshot(ws) == before, "a refused command changed or removed a file that existed before"


def test_a_partial_import_exits_1_naming_the_truncated_file(tmp_path):
    """``data import`` decodes every image by default: a truncated JPEG is named and the exit code is 1."""
    src = tmp_path / "src"
    src.mkdir()
    good = min((SMOKE / "smoke_test").glob("*.png"))
    shutil.copy(good, src / "good.png")
    from PIL import Image

    Image.open(good).convert("RGB").save(src / "cut.jpg", quality=90)
    data = (src / "cut.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 2])
    before = _snapshot(src)
    res = _cli("data", "import", "MYSET", str(src), "--set", f"data.datasets_dir={tmp_path / 'datasets'}",
               cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cut.jpg" in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert _snapshot(src) == before
