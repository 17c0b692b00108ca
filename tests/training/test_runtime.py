"""Start of a training run (moediffir.training.runtime): an earlier run's checkpoints are never lost implicitly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config
from moediffir.training.runtime import TrainingConfigError, check_fresh_start


def _fake_run(folder: Path, steps=(10, 20, 30)) -> dict[str, bytes]:
    for step in steps:
        ckpt = folder / "checkpoints" / f"step_{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "checkpoint.json").write_text(json.dumps({"step": step, "world_size": 1, "meta": {}}))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_fresh_start_over_checkpoints_needs_overwrite(tmp_path):
    files = _fake_run(tmp_path / "stage1")
    with pytest.raises(TrainingConfigError, match="--resume.*--overwrite") as err:
        check_fresh_start(tmp_path / "stage1", resume=False, overwrite=False)
    assert "step_000030" in str(err.value)
    check_fresh_start(tmp_path / "stage1", resume=True, overwrite=False)
    check_fresh_start(tmp_path / "stage1", resume=False, overwrite=True)
    check_fresh_start(tmp_path / "empty", resume=False, overwrite=False)
    assert {p.relative_to(tmp_path / "stage1").as_posix(): p.read_bytes()
            for p in (tmp_path / "stage1").rglob("*") if p.is_file()} == files


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    from moediffir.data.builder import build_benchmark

    root = tmp_path_factory.mktemp("runtime") / "bench"
    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(root),
                                   "data.codecs": ["jpeg"], "data.unseen": False, "data.max_train_images": 1})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    return root


def test_a_failed_start_deletes_nothing_and_overwrite_replaces_only_after_the_build(bench, tmp_path, monkeypatch):
    from moediffir.training import stage1

    cfg = resolve_config("smoke", {"data.out_dir": str(bench), "runs_dir": str(tmp_path / "runs"),
                                   "stage1.max_steps": 1, "stage1.batch_size": 1, "device": "cpu"})
    folder = cfg.run_dir / "stage1"
    files = _fake_run(folder)
    with pytest.raises(TrainingConfigError, match="--overwrite"):
        stage1.train_stage1(cfg, progress=False)

    def broken_build(cfg):  # a network that cannot be built (e.g. weights that do not load)
        raise RuntimeError("cannot build")

    monkeypatch.setattr(stage1, "_build_model", broken_build)
    with pytest.raises(RuntimeError, match="cannot build"):
        stage1.train_stage1(cfg, overwrite=True, progress=False)
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    monkeypatch.undo()
    stage1.train_stage1(cfg, overwrite=True, progress=False)
    steps = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert steps == ["step_000001"]  # the earlier run's step_000010..30 were replaced by this run's


def test_a_second_stage1_run_into_the_same_folder_is_refused_at_once(bench, tmp_path):
    """The stage folder's lock is held here (as a first run holds it); ``moediffir train stage1`` into the same
    runs folder stops before any work with one line naming this process."""
    import os
    import socket
    import subprocess
    import sys

    from moediffir.utils.locks import folder_lock

    runs = tmp_path / "runs"
    folder = runs / "smoke" / "stage1"
    argv = [sys.executable, "-m", "moediffir.cli", "train", "stage1", "--profile", "smoke", "--device", "cpu",
            "--no-progress", "--set", f"data.out_dir={bench}", "--set", f"runs_dir={runs}"]
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    with folder_lock(folder):
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert [p.name for p in folder.iterdir()] == [".moediffir.lock"]  # nothing was written
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("moediffir:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{folder}: stage folder in use by another run (PID {os.getpid()} on {socket.gethostname()}" in errors[0]
    assert not (runs / "smoke" / "model").exists()


def test_a_run_holds_its_stage_folder_lock_and_leaves_nothing_when_it_stops(bench, tmp_path, monkeypatch):
    import os

    from moediffir.training import stage1
    from moediffir.utils.locks import read_holder

    cfg = resolve_config("smoke", {"data.out_dir": str(bench), "runs_dir": str(tmp_path / "runs"), "device": "cpu"})
    folder = cfg.run_dir / "stage1"
    seen = []

    def pairs_then_stop(cfg):  # the first step of a run: the lock is already held
        seen.append(read_holder(folder))
        raise RuntimeError("stopped")

    monkeypatch.setattr(stage1, "training_pairs", pairs_then_stop)
    with pytest.raises(RuntimeError, match="stopped"):
        stage1.train_stage1(cfg, progress=False)
    assert seen[0] is not None and seen[0].pid == os.getpid()
    assert not (tmp_path / "runs").exists()  # released, and the folders it made for the lock are gone


def test_a_fresh_start_clears_the_stage_folder_but_keeps_its_lock(tmp_path):
    from moediffir.training.runtime import stage_lock, start_stage_dir
    from moediffir.utils.locks import read_holder

    class OneProcess:  # what start_stage_dir uses of an Accelerator
        is_main_process = True

        def wait_for_everyone(self) -> None: ...

    folder = tmp_path / "stage1"
    _fake_run(folder)
    (folder / "log.jsonl").write_text("{}\n")
    with stage_lock(folder) as lock:
        start_stage_dir(OneProcess(), resolve_config("smoke"), folder, resuming=False)
        assert sorted(p.name for p in folder.iterdir()) == [".moediffir.lock", "config.json"]
        assert read_holder(folder) is not None and lock.exists()
