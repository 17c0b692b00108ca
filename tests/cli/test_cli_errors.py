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
from repo_paths import REPO_ROOT as REPO

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
    from moediffir.weights.model_folder import build_fresh_model_folder

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
    _arm_weight_files(root, model)
    return root


class _Armed:
    """Unpickled in full, this object creates the workspace's MARKER file: any code a pickle may run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _arm_weight_files(root: Path, model: Path) -> None:
    """Armed pickles where the kit reads weights (the released checkpoint, the HiFiC checkpoints, a model folder
    part saved as ``.bin``), and a released checkpoint with the right keys and every shape wrong."""
    from importlib import resources

    import torch

    armed = {"state_dict": {"w": torch.zeros(2)}, "args": _Armed(root / "MARKER")}
    (root / "armed" / "hific").mkdir(parents=True)
    torch.save(armed, root / "armed" / "released.ckpt")
    for name in ("hific_low.pt", "hific_med.pt", "hific_hi.pt"):
        torch.save(armed, root / "armed" / "hific" / name)
    shutil.copytree(model, root / "model_bin")
    (root / "model_bin" / "backbone" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(armed, root / "model_bin" / "backbone" / "unet" / "diffusion_pytorch_model.bin")
    fixture = json.loads(resources.files("moediffir").joinpath("fixtures", "released_moediffir_keys.json").read_text())
    keys = fixture["checkpoints"]["stage1"]["keys"]
    torch.save({"state_dict": {k: torch.zeros(1) for k in keys}}, root / "misshapen.ckpt")


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
    # every bad value is one line, before any work
    ("train-lr-infinity", lambda w: ["train", "stage1", "--set", "stage1.lr=Infinity", *_smoke(w)], 2, "stage1.lr"),
    ("train-fusion-weight-nan", lambda w: ["train", "stage2", "--set", "stage2.train_fusion_weight=NaN",
                                           *_smoke(w)], 2, "stage2.train_fusion_weight"),
    ("train-seed-negative", lambda w: ["train", "stage1", "--set", "seed=-1", *_smoke(w)], 2, "'seed'"),
    ("train-batch-no-machine-holds", lambda w: ["train", "stage1", "--set", "stage1.batch_size=100000",
                                                *_smoke(w)], 2, "stage1.batch_size"),
    ("train-prior-no-stage-0", lambda w: ["train", "prior", "--profile", "smoke", *_smoke(w)], 2, "no stage 0"),
    ("train-prior-range", lambda w: ["train", "prior", "--profile", "mini", "--set", "prior.checkpoint_every=0",
                                     *_smoke(w)], 2, "prior.checkpoint_every"),
    ("restore-fp16-on-cpu", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w / "out"), "--model",
                                       str(w / "model"), "--dtype", "fp16", "--device", "cpu"], 2, "fp16"),
    ("import-released-misshapen", lambda w: ["import-released", str(w / "misshapen.ckpt"), "-o",
                                             str(w / "imported")], 2, "attn.qkv"),
    # nothing of the user's is replaced
    ("restore-in-place", lambda w: ["restore", str(w / "in"), "-o", str(w / "in"), "--model", str(w / "model"),
                                    "--overwrite"], 2, "output folder {w}/in is the input folder {w}/in"),
    ("restore-input-inside-output", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w), "--model",
                                               str(w / "model"), "--overwrite"], 2, "in/good.png lies inside"),
    # no code runs from a weight file
    ("import-released-pickle", lambda w: ["import-released", str(w / "armed" / "released.ckpt"), "-o",
                                          str(w / "imported")], 2, "released.ckpt"),
    ("restore-model-part-bin", lambda w: ["restore", str(w / "in" / "good.png"), "-o", str(w / "out"), "--model",
                                          str(w / "model_bin"), "--steps", "1"], 2, "backbone/unet"),
]
#: Cases whose error is the whole message: nothing follows the ``moediffir: error:`` line.
ONE_LINE = {"train-lr-infinity", "train-fusion-weight-nan", "train-seed-negative", "train-batch-no-machine-holds",
            "train-prior-no-stage-0", "train-prior-range", "restore-fp16-on-cpu", "import-released-misshapen",
            "restore-in-place", "restore-input-inside-output", "import-released-pickle", "restore-model-part-bin"}


@pytest.mark.parametrize(("case", "argv", "code", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(ws, case, argv, code, names):
    before = _snapshot(ws)
    res = _cli(*argv(ws), cwd=ws)
    errors = [line for line in res.stderr.splitlines() if line.startswith("moediffir: error:")]
    assert res.returncode == code, f"{case}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(errors) == 1, res.stderr[-3000:]
    assert names.format(w=ws) in errors[0], errors[0]
    if case in ONE_LINE:
        assert res.stderr.strip().splitlines()[-1] == errors[0], res.stderr[-3000:]
    assert _snapshot(ws) == before, "a refused command changed or removed a file that existed before"
    assert not (ws / "MARKER").exists(), "a weight file ran code while it was read"
    assert not (ws / "runs" / "smoke" / "prior").exists() and not (ws / "runs" / "mini").exists()


def test_hific_pickles_are_refused_with_the_conversion_command_before_any_coding(ws, tmp_path):
    """Only the public pickles in the HiFiC folder: the build's preflight stops it naming the file and
    ``convert-hific`` (the list of what is missing follows that line), before the output folder exists, and
    nothing unpickles them."""
    res = _cli("data", "build", "--workers", "1", "--no-progress", "--set", f"data.datasets_dir={SMOKE}",
               "--set", 'data.codecs=["hific"]', "--set", "data.learned_weights=pretrained", "--set",
               f"data.hific_dir={ws / 'armed' / 'hific'}", "--set", "data.unseen=false", "--set",
               "data.max_train_images=1", "--set", "data.max_test_images=1", "--out", str(tmp_path / "bench"),
               cwd=tmp_path)
    errors = [line for line in res.stderr.splitlines() if line.startswith("moediffir: error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(errors) == 1 and all(line.startswith("  ") for line in lines[lines.index(errors[0]) + 1:]), lines
    assert "hific_low.pt" in errors[0] and "moediffir convert-hific" in errors[0], errors[0]
    assert not (ws / "MARKER").exists()
    assert not (tmp_path / "bench").exists()


def test_a_full_disk_during_data_build_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """ENOSPC while a PNG of the benchmark is written (simulated): one line naming it, exit 1, no traceback."""
    import errno

    from moediffir.cli import main

    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        if ".png." in os.readlink(f"/proc/self/fd/{fd}"):  # the temporary file of an atomic PNG write
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the files apart")
    monkeypatch.setattr(os, "fsync", full_disk)
    code = main(["data", "build", "--workers", "1", "--no-progress", "--set", f"data.datasets_dir={SMOKE}",
                 "--set", 'data.codecs=["jpeg"]', "--set", "data.unseen=false", "--set", "data.max_train_images=1",
                 "--set", "data.max_test_images=1", "--out", str(tmp_path / "bench")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("moediffir: error: no space left on device writing "), err
    assert ".png" in err[0] and str(tmp_path / "bench") in err[0]
    assert not list((tmp_path / "bench").rglob("*.tmp"))  # no partial file left behind


def test_a_full_disk_outside_the_atomic_writes_is_one_line_too(monkeypatch, capsys):
    import errno

    from moediffir.cli import doctor, main

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/smoke/stage1/log.jsonl")

    monkeypatch.setattr(doctor, "_cmd_doctor", full)
    assert main(["doctor"]) == 1
    expected = ("moediffir: error: no space left on device writing runs/smoke/stage1/log.jsonl; free some space "
                "and rerun the same command (finished files are kept)")
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_a_failed_training_run_leaves_no_empty_stage_folder(tmp_path, monkeypatch, capsys):
    """A run that stops before writing any file leaves no empty ``runs/<profile>/prior`` (nor its parents); a
    stage folder that held files before is left as it was."""
    import moediffir.doctor
    from moediffir.cli import main
    from moediffir.training import prior
    from moediffir.training.runtime import TrainingConfigError

    def failing(cfg, **kwargs):
        (prior.prior_stage_dir(cfg) / "vae" / "checkpoints").mkdir(parents=True)
        raise TrainingConfigError("stopped before the first checkpoint")

    monkeypatch.setattr(moediffir.doctor, "require", lambda cfg, needs: None)  # no datasets needed here
    monkeypatch.setattr(prior, "train_prior", failing)
    argv = ["train", "prior", "--profile", "mini", "--no-progress", "--set", f"runs_dir={tmp_path / 'runs'}"]
    assert main(argv) == 2
    assert "stopped before the first checkpoint" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    earlier = tmp_path / "runs" / "mini" / "prior" / "log.jsonl"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}\n")
    assert main(argv) == 2
    assert earlier.read_text() == "{}\n" and (earlier.parent / "vae" / "checkpoints").is_dir()


# ------------------------------------------------------------------------------------------- make targets
def _make(target: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), target, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def outputs(tmp_path) -> Path:
    for folder in ("results/smoke", "results/mini", "runs/smoke", "runs/mini"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "kept.txt").write_text(folder)
    return tmp_path


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_results_removes_that_profiles_results_only(outputs):
    res = _make("clean-results", outputs, "PROFILE=smoke")
    assert res.returncode == 0, res.stderr
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.glob("*/*")) == [
        "results/mini", "runs/mini", "runs/smoke"]  # checkpoints stay


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_clean_runs_is_its_own_target_and_says_so(outputs):
    res = _make("clean-runs", outputs, "PROFILE=smoke")
    assert res.returncode == 0, res.stderr
    assert "runs/smoke" in res.stdout and "checkpoint" in res.stdout
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.glob("*/*")) == [
        "results/mini", "results/smoke", "runs/mini"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["clean-results", "clean-runs"])
@pytest.mark.parametrize("profile", ["", ".", "..", "smoke/..", "a b"])
def test_make_clean_refuses_a_profile_that_is_not_one(outputs, target, profile):
    before = _snapshot(outputs)
    res = _make(target, outputs, f"PROFILE={profile}")
    assert res.returncode != 0 and "not a profile name" in res.stderr, res.stderr
    assert _snapshot(outputs) == before


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
