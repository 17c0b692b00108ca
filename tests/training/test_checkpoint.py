"""Atomic checkpoints and exact resume (moediffir/training/checkpoint.py, stage1.py; docs/design.md §5).

Exact resume: the per-step losses of a run interrupted after its first checkpoint and resumed must equal, bit
for bit, those of an uninterrupted run with the same seed, and so must the final trained weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from repo_paths import REPO_ROOT as REPO
from torch import nn

from moediffir.config import resolve_config
from moediffir.training import checkpoint as ckpt
from moediffir.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    trainable_state_dict,
)
from moediffir.training.training_log import read_jsonl


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 2)
        self.register_buffer("count", torch.zeros(()))


def _toy_run(model, opt, steps):
    for _ in range(steps):
        loss = model.head(model.frozen(torch.randn(3, 4))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_trainable_state_dict_leaves_frozen_parts_out():
    keys = set(trainable_state_dict(_Toy()))
    assert keys == {"head.weight", "head.bias", "count"}


def test_save_load_restores_weights_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = _Toy()
    opt = torch.optim.Adam(model.head.parameters(), lr=0.1)
    _toy_run(model, opt, 3)
    folder = save_checkpoint(tmp_path, 3, modules={"toy": model}, optimizers={"adam": opt}, meta={"x": 1})
    assert folder.name == "step_000003" and (folder / "checkpoint.json").is_file()
    expect = (torch.randn(5), np.random.rand(3), random.random())
    _toy_run(model, opt, 2)  # move everything on
    after_two = model.head.weight.detach().clone()

    torch.manual_seed(123)
    fresh = _Toy()
    fresh.frozen.load_state_dict(model.frozen.state_dict())  # frozen parts come from the backbone, not the checkpoint
    fresh_opt = torch.optim.Adam(fresh.head.parameters(), lr=0.1)
    info = load_checkpoint(folder, modules={"toy": fresh}, optimizers={"adam": fresh_opt})
    assert info["step"] == 3 and info["meta"] == {"x": 1}
    got = (torch.randn(5), np.random.rand(3), random.random())
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1]) and got[2] == expect[2]
    load_checkpoint(folder, modules={"toy": fresh}, optimizers={"adam": fresh_opt})  # back to step 3 again
    torch.randn(5)  # the same draws as after the save
    _toy_run(fresh, fresh_opt, 2)
    assert torch.equal(fresh.head.weight, after_two)


def test_checkpoint_files_hold_only_tensors_and_plain_values(tmp_path):
    """Every file reads back with ``weights_only=True`` and nothing allowed beyond it (RNG and scheduler too)."""
    model = _Toy()
    opt = torch.optim.Adam(model.head.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    _toy_run(model, opt, 1)
    sched.step()
    folder = save_checkpoint(tmp_path, 1, modules={"toy": model}, optimizers={"adam": opt}, schedulers={"lr": sched})
    files = sorted(p.name for p in folder.glob("*.pt"))
    assert files == ["optimizers.pt", "rng_rank0.pt", "schedulers.pt", "trainable.pt"]
    for name in files:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(folder / name) == [], name
        torch.load(folder / name, map_location="cpu", weights_only=True)


def test_rng_file_of_an_earlier_checkpoint_still_resumes(tmp_path):
    """Checkpoints written before the RNG states became tensors hold NumPy's state as an array: allowed for
    that file's read only, they resume as before."""
    folder = save_checkpoint(tmp_path, 1, modules={"toy": _Toy()})
    np.random.seed(7)
    random.seed(7)
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
               folder / "rng_rank0.pt")
    expect = (np.random.rand(3), random.random())
    assert torch.serialization.get_unsafe_globals_in_checkpoint(folder / "rng_rank0.pt") != []
    np.random.seed(99)
    load_checkpoint(folder, modules={"toy": _Toy()})
    got = (np.random.rand(3), random.random())
    assert np.array_equal(got[0], expect[0]) and got[1] == expect[1]
    with pytest.raises(Exception, match="Weights only"):  # the allowance does not outlive that read
        torch.load(folder / "rng_rank0.pt", map_location="cpu", weights_only=True)


def test_unreadable_checkpoint_file_is_named_in_one_line(tmp_path):
    folder = save_checkpoint(tmp_path, 1, modules={"toy": _Toy()})
    (folder / "trainable.pt").write_bytes(b"\x80\x02 not a torch file")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder, modules={"toy": _Toy()})
    assert "trainable.pt" in str(err.value) and "\n" not in str(err.value)


def test_kill_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _Toy()
    save_checkpoint(tmp_path, 10, modules={"toy": model})
    real_save = ckpt._fsync_save

    def dying_save(obj, path):
        if path.name == "optimizers.pt":
            raise KeyboardInterrupt("killed while writing")
        real_save(obj, path)

    monkeypatch.setattr(ckpt, "_fsync_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 20, modules={"toy": model})
    monkeypatch.setattr(ckpt, "_fsync_save", real_save)
    # a hard kill can also leave a half-written temporary folder, or (never from save_checkpoint) a folder
    # without its marker: neither counts
    (tmp_path / ".step_000030.tmp").mkdir()
    (tmp_path / ".step_000030.tmp" / "trainable.pt").write_bytes(b"partial")
    (tmp_path / "step_000040").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10]
    assert latest_checkpoint(tmp_path).name == "step_000010"
    load_checkpoint(latest_checkpoint(tmp_path), modules={"toy": _Toy()})
    save_checkpoint(tmp_path, 50, modules={"toy": model})  # the next save cleans the stale temporary folder
    assert not (tmp_path / ".step_000030.tmp").exists()


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model = _Toy()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, modules={"toy": model}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_wrong_model_or_process_count_is_refused(tmp_path):
    save_checkpoint(tmp_path, 1, modules={"toy": _Toy()})
    folder = latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="processes"):
        load_checkpoint(folder, modules={"toy": _Toy()}, world_size=2)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(folder, modules={"toy": nn.Linear(3, 3)})


# ------------------------------------------------------------------------------------------------ logs
def test_training_log_survives_a_torn_line_and_resume(tmp_path):
    from moediffir.training.training_log import TrainingLog

    log = TrainingLog(tmp_path)
    for step in (1, 2, 3):
        log.append({"step": step, "loss": 1.0 / step, "usage": {"0": [0.5, 0.5]}})
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write('{"step": 4, "loss": 0.2')  # killed in the middle of a write
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2, 3]
    resumed = TrainingLog(tmp_path, resume_step=2)  # the checkpoint was at step 2: later records go
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2]
    resumed.append({"step": 3, "loss": 0.3})
    import pandas as pd

    csv = pd.read_csv(tmp_path / "log.csv")
    assert list(csv["step"]) == [1, 2, 3] and "usage" not in csv.columns  # only scalar columns in the CSV


def test_a_resumed_log_writes_the_same_files_as_an_uninterrupted_one(tmp_path):
    from moediffir.training.training_log import TrainingLog

    records = [{"phase": "unet", "step": s, "loss": 1.0 / s, "mse": 0.5 / s} for s in (1, 2, 3)]
    full = TrainingLog(tmp_path / "full")
    for r in records:
        full.append(r)
    part = TrainingLog(tmp_path / "part")
    for r in records[:2]:
        part.append(r)
    resumed = TrainingLog(tmp_path / "part", resume_step=2)  # the records come back from the JSONL
    resumed.append(records[2])
    for name in ("log.jsonl", "log.csv"):  # the columns keep the order they were logged in
        assert (tmp_path / "part" / name).read_text() == (tmp_path / "full" / name).read_text(), name
    assert (tmp_path / "full" / "log.csv").read_text().splitlines()[0] == "phase,step,loss,mse"


def test_routing_stats_usage_per_task_and_entropy():
    from moediffir.training.training_log import RoutingStats

    stats = RoutingStats(num_tasks=21)
    one_hot = torch.tensor([[[1.0, 0.0, 0.0]] * 4])  # (1, L=4, N=3): every token on expert 0
    even = torch.tensor([[[0.5, 0.5, 0.0]] * 4])  # two equal gates
    stats.update([{"gates": torch.cat([one_hot, even])}], torch.tensor([5, 7]))
    s = stats.summary()
    assert s["usage"]["5"] == pytest.approx([1.0, 0.0, 0.0]) and s["usage"]["7"] == pytest.approx([0.5, 0.5, 0.0])
    assert s["selected"]["7"] == pytest.approx([1.0, 1.0, 0.0]) and s["counts"] == {"5": 1, "7": 1}
    assert s["gate_entropy"] == pytest.approx(np.log(2) / 2)  # mean of 0 and log 2
    stats.reduce(lambda t: t * 2)  # two identical processes: same means
    assert stats.summary()["usage"] == s["usage"] and stats.summary()["counts"] == {"5": 2, "7": 2}


# ----------------------------------------------------------------------------------------- stage I resume
@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> Path:
    from moediffir.data.builder import build_benchmark

    root = tmp_path_factory.mktemp("bench")
    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(root),
                                   "data.codecs": ["jpeg"], "data.unseen": False, "data.max_train_images": 2})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    return root


def _cfg(bench, runs, **extra):
    base = {"data.out_dir": str(bench), "runs_dir": str(runs), "stage1.batch_size": 2, "stage1.log_every": 1,
            "stage1.checkpoint_every": 2, "stage1.keep_checkpoints": 0}
    return resolve_config("smoke", {**base, **extra})


def _losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for r in read_jsonl(run_dir / "smoke" / "stage1" / "log.jsonl"):
        out.update(zip(r["steps"], r["losses"]))
    return out


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = latest_checkpoint(run_dir / "smoke" / "stage1" / "checkpoints")
    return torch.load(folder / "trainable.pt", weights_only=False)["denoiser"]


def test_stage1_resume_reproduces_the_uninterrupted_run(tiny_bench, tmp_path):
    from moediffir.training.runtime import TrainingConfigError
    from moediffir.training.stage1 import train_stage1

    full, parted = tmp_path / "full", tmp_path / "parted"
    train_stage1(_cfg(tiny_bench, full, **{"stage1.max_steps": 4}), progress=False)
    train_stage1(_cfg(tiny_bench, parted, **{"stage1.max_steps": 2}), progress=False)  # "killed" after step 2
    assert [s for s, _ in list_checkpoints(parted / "smoke" / "stage1" / "checkpoints")] == [2]
    train_stage1(_cfg(tiny_bench, parted, **{"stage1.max_steps": 4}), resume=True, progress=False)

    a, b = _losses(full), _losses(parted)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert [a[s] for s in (3, 4)] == [b[s] for s in (3, 4)], "losses after resuming differ from the uninterrupted run"
    assert a[1] != a[2]  # the losses do vary: the equality above is not trivial
    wa, wb = _weights(full), _weights(parted)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    summary = json.loads((parted / "smoke" / "stage1" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["steps_this_run"] == 2

    with pytest.raises(TrainingConfigError, match="stage1.lr"):
        train_stage1(_cfg(tiny_bench, parted, **{"stage1.max_steps": 6, "stage1.lr": 0.5}), resume=True,
                     progress=False)
