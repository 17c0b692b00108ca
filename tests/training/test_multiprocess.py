"""Stage I under ``accelerate launch`` with 2 processes on the CPU (gloo DDP) (moediffir/training; docs/design.md §5).

On a CPU-only machine ``accelerate launch --cpu`` starts a single process; ``--multi_gpu --num_processes 2``
starts two and ``Accelerator(cpu=True)`` joins them in a gloo process group (MULTI_CPU). The same command with
GPUs runs DDP on them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate launcher is not installed")
def test_two_process_stage1_writes_one_consistent_model(tmp_path):
    from moediffir.data.builder import build_benchmark
    from moediffir.pipelines.moediffir_pipeline import load_pipeline
    from moediffir.training.training_log import read_jsonl

    bench, runs = tmp_path / "bench", tmp_path / "runs"
    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(bench),
                                   "data.codecs": ["jpeg"], "data.unseen": False, "data.max_train_images": 2})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))

    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher) if launcher.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "moediffir.cli", "train", "stage1",
           "--profile", "smoke", "--device", "cpu", "--no-progress",
           "--set", f"data.out_dir={bench}", "--set", f"runs_dir={runs}", "--set", "stage1.max_steps=4",
           "--set", "stage1.batch_size=1", "--set", "stage1.checkpoint_every=2", "--set", "stage1.log_every=2"]
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0/2 done" in proc.stdout and "rank 1/2 done" in proc.stdout  # both processes trained

    stage = runs / "smoke" / "stage1"
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["samples_seen"] == 4 * 1 * 2
    for step in ("step_000002", "step_000004"):
        folder = stage / "checkpoints" / step
        assert {p.name for p in folder.iterdir()} == {"checkpoint.json", "trainable.pt", "optimizers.pt",
                                                      "schedulers.pt", "rng_rank0.pt", "rng_rank1.pt"}
        assert json.loads((folder / "checkpoint.json").read_text())["world_size"] == 2
    rng0 = torch.load(stage / "checkpoints" / "step_000004" / "rng_rank0.pt", weights_only=False)["torch"]
    rng1 = torch.load(stage / "checkpoints" / "step_000004" / "rng_rank1.pt", weights_only=False)["torch"]
    assert not torch.equal(rng0, rng1)  # each process drew its own noise
    assert [r["step"] for r in read_jsonl(stage / "log.jsonl")] == [2, 4]  # one log, from the main process

    # the model folder holds exactly the weights of the last checkpoint
    pipe = load_pipeline(runs / "smoke" / "model", device="cpu")
    state = torch.load(stage / "checkpoints" / "step_000004" / "trainable.pt", weights_only=False)["denoiser"]
    model_state = pipe.denoiser.spade.state_dict()
    for key, value in model_state.items():
        assert torch.equal(state[f"spade.{key}"], value), key
    assert any(v.abs().sum() > 0 for k, v in model_state.items() if "gamma" in k)  # SPADE trained under DDP
