"""The evaluation in shards (moediffir.evaluation.sharded_evaluation): two processes under ``accelerate launch`` (CPU,
gloo) write the same results file as one process, a merge is idempotent, and a missing or stale part is named.

Untrained smoke parts (random weights) stand in for a trained model: this checks the machinery, not quality.
``sample.batch_size`` is 1 so that each restoration is independent of which images share its batch.
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
from demo_setup import make_demo_setup
from repo_paths import REPO_ROOT as REPO

from moediffir.cli import main as cli_main
from moediffir.evaluation.evaluator import run_evaluation
from moediffir.evaluation.sharded_evaluation import merge_evaluation, part_folder
from moediffir.sharding import Shard, ShardError

LAUNCHER = Path(sys.executable).parent / "accelerate"
OVERRIDES = {"eval.metrics": ["psnr", "ssim", "lpips", "fid"], "eval.tasks": ["jpeg_q10", "jpeg_q25"],
             "eval.max_images": 2, "sample.batch_size": 1}
FILES = ("results.csv", "per_image.csv", "routing.csv", "prompt_similarity.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(cfg, results_dir: Path) -> list[str]:
    pairs = {"data.datasets_dir": cfg.data.datasets_dir, "data.out_dir": cfg.data.out_dir, "data.codecs": ["jpeg"],
             "runs_dir": cfg.runs_dir, "results_dir": str(results_dir), **OVERRIDES}
    out = []
    for key, value in pairs.items():
        out += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_shards")
    cfg = make_demo_setup(root, REPO / "data" / "smoke", codecs=("jpeg",), overrides=OVERRIDES)
    one = root / "one"
    run_evaluation(cfg, out_dir=one, log=None)
    return cfg, root, one / "metrics"


@pytest.fixture(scope="module")
def two_processes(setup):
    cfg, root, _ = setup
    results = root / "two"
    cmd = [str(LAUNCHER) if LAUNCHER.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "moediffir.cli", "evaluate", "--profile", "smoke",
           "--device", "cpu", *_sets(cfg, results)]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "shard 1/2 done" in proc.stdout and "shard 2/2 done" in proc.stdout  # both processes evaluated
    return results / "smoke"


@pytest.mark.skipif(shutil.which("accelerate") is None and not LAUNCHER.exists(),
                    reason="the accelerate launcher is not installed")
def test_two_processes_write_the_results_of_one(setup, two_processes):
    _, _, one = setup
    two = two_processes / "metrics"
    parts = [json.loads((part_folder(two_processes, Shard(k, 2)) / "part.json").read_text()) for k in (1, 2)]
    assert [p["n_items"] for p in parts] == [1, 3]  # the stable hash's split of the 4 items
    for name in FILES:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert "fid" in set(__import__("pandas").read_csv(two / "results.csv")["metric"])  # FID over both shards
    card = json.loads((Path(setup[0].runs_dir) / "smoke" / "model" / "eval_results.json").read_text())
    assert {r["method"] for r in card["results"]} == {"moe-diffir", "moe-diffir (no compensator)"}
    assert "model-index:" in (Path(setup[0].runs_dir) / "smoke" / "model" / "README.md").read_text()
    before = (two / "results.csv").read_bytes()
    assert cli_main(["evaluate", "--merge", "--profile", "smoke", *_sets(setup[0], two_processes.parent)]) == 0
    assert (two / "results.csv").read_bytes() == before  # merging again: the same bytes


@pytest.mark.skipif(shutil.which("accelerate") is None and not LAUNCHER.exists(),
                    reason="the accelerate launcher is not installed")
def test_missing_or_stale_part_is_named_and_report_merges(setup, two_processes, tmp_path, capsys):
    cfg = setup[0]
    copy = tmp_path / "results" / "smoke"
    shutil.copytree(two_processes, copy)
    (copy / "metrics" / "results.csv").unlink()
    shutil.rmtree(part_folder(copy, Shard(2, 2)))
    with pytest.raises(ShardError, match=r"missing part\(s\) 2/2.*moediffir evaluate --shard K/2"):
        merge_evaluation(cfg, copy, log=None)
    assert not (copy / "metrics" / "results.csv").exists()  # nothing written
    from dataclasses import replace

    fewer = replace(cfg, eval=replace(cfg.eval, max_images=1))
    with pytest.raises(ShardError, match=r"stale part\(s\) 1/2 \(settings, items changed\)"):
        merge_evaluation(fewer, copy, 2, log=None)
    shutil.copytree(part_folder(two_processes, Shard(2, 2)), part_folder(copy, Shard(2, 2)))
    assert cli_main(["report", "--profile", "smoke", *_sets(cfg, tmp_path / "results")]) == 0  # merges first
    assert "merged the evaluation's parts" in capsys.readouterr().out
    assert (copy / "metrics" / "results.csv").read_bytes() == (setup[2] / "results.csv").read_bytes()
