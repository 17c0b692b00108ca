"""Stage I training end to end on the smoke networks (moediffir/training/stage1.py; paper §3.4, §4.1, Eq. 2).

A 6-step run writes its checkpoint folders, logs and the model folder the pipeline loads; only the prompt side
trains (SPADE included: the released code's ``lr // 2`` left it untrained, docs/design.md §8); and on a tiny fixed
set the model really learns (Eq. 2 on a fixed batch with fixed noise and timesteps drops).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config
from moediffir.training.pairs import BenchmarkMissingError
from moediffir.training.stage1 import train_stage1
from moediffir.training.training_log import read_jsonl


def _bench(root: Path, codecs=("jpeg", "webp"), images=2) -> Path:
    from moediffir.data.builder import build_benchmark

    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(root),
                                   "data.codecs": list(codecs), "data.unseen": False, "data.max_train_images": images})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    return root


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    bench = _bench(tmp_path_factory.mktemp("bench"))
    runs = tmp_path_factory.mktemp("runs")
    cfg = resolve_config("smoke", {"data.out_dir": str(bench), "runs_dir": str(runs), "stage1.max_steps": 6,
                                   "stage1.checkpoint_every": 3, "stage1.log_every": 2, "stage1.keep_checkpoints": 0})
    folder = train_stage1(cfg, progress=False)
    return cfg, folder


def _fresh(cfg):
    from accelerate.utils import set_seed

    from moediffir.weights.builders import build_backbone, build_denoiser

    set_seed(cfg.seed)  # the order train_stage1 builds in
    unet, vae, _ = build_backbone(cfg)
    return build_denoiser(cfg, unet=unet), vae


def test_missing_benchmark_fails_with_the_build_command(tmp_path):
    cfg = resolve_config("smoke", {"data.out_dir": str(tmp_path / "none"), "runs_dir": str(tmp_path / "runs")})
    with pytest.raises(BenchmarkMissingError, match="moediffir data build --profile smoke"):
        train_stage1(cfg, progress=False)


def test_six_step_run_writes_checkpoints_logs_and_model(smoke_run):
    cfg, folder = smoke_run
    stage = cfg.run_dir / "stage1"
    ckpts = sorted(p.name for p in (stage / "checkpoints").iterdir())
    assert ckpts == ["step_000003", "step_000006"]
    for name in ckpts:
        files = {p.name for p in (stage / "checkpoints" / name).iterdir()}
        assert files == {"checkpoint.json", "trainable.pt", "optimizers.pt", "schedulers.pt", "rng_rank0.pt"}
    info = json.loads((stage / "checkpoints" / "step_000006" / "checkpoint.json").read_text())
    assert info["step"] == 6 and info["meta"]["samples_seen"] == 6 * cfg.stage1.batch_size

    records = read_jsonl(stage / "log.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all(r["lr"] == pytest.approx(cfg.stage1.lr) for r in records)  # constant learning rate
    assert all(np.isfinite(r["loss"]) and len(r["losses"]) == 2 for r in records)
    assert all(0 <= r["gate_entropy"] <= np.log(cfg.model.top_k) + 1e-6 for r in records)
    usage = records[-1]["usage"]
    assert usage and set(map(int, usage)) <= {0, 1, 2, 9, 10, 11}  # jpeg and webp labels only
    assert all(len(v) == cfg.model.num_prompts and abs(sum(v) - 1) < 1e-4 for v in usage.values())
    assert list(pd.read_csv(stage / "log.csv")["step"]) == [2, 4, 6]
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["mixed_precision"] == "no" and summary["world_size"] == 1
    assert folder == cfg.run_dir / "model" and (folder / "denoiser" / "spade" / "config.json").is_file()


def test_model_folder_loads_and_only_the_prompt_side_changed(smoke_run):
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    cfg, folder = smoke_run
    pipe = load_pipeline(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    z0, _ = pipe.sample_latents(torch.rand(1, 3, 64, 64), num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert z0.shape == (1, 4, 8, 8) and torch.isfinite(z0).all()

    fresh, fresh_vae = _fresh(cfg)
    trained = pipe.denoiser

    def same(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    assert same(trained.unet, fresh.unet) and same(pipe.vae, fresh_vae)  # frozen backbone untouched
    assert same(trained.v2t.clip_visual, fresh.v2t.clip_visual)  # the V2T's CLIP tower is frozen too
    assert not same(trained.prompt_module, fresh.prompt_module)
    assert not same(trained.v2t.enhancer, fresh.v2t.enhancer)  # the quality enhancer trains (§3.3)
    # SPADE trains (under the released code's `lr // 2` it would keep its initial weights)
    assert not same(trained.spade, fresh.spade)


def test_trainable_parameters_are_exactly_the_prompt_side():
    denoiser, vae = _fresh(resolve_config("smoke"))
    names = {id(p): n for n, p in denoiser.named_parameters()}
    trainable = [names[id(p)] for p in denoiser.trainable_parameters()]
    assert trainable and all(n.split(".")[0] in ("prompt_module", "spade", "v2t") for n in trainable)
    assert not any(n.startswith("v2t.clip_visual") for n in trainable)
    assert any(n.startswith("spade.") for n in trainable) and any(n.startswith("v2t.enhancer") for n in trainable)
    assert not any(p.requires_grad for p in denoiser.unet.parameters())
    assert not any(p.requires_grad for p in vae.parameters())
    assert not any(p.requires_grad for p in denoiser.degradation_prior.parameters())
    frozen_requiring_grad = [n for n, p in denoiser.named_parameters() if p.requires_grad and n not in trainable]
    assert frozen_requiring_grad == []


def test_tiny_model_learns_in_60_steps(tmp_path):
    bench = _bench(tmp_path / "bench", codecs=("jpeg",), images=1)  # 3 pairs: a tiny fixed set
    cfg = resolve_config("smoke", {"data.out_dir": str(bench), "runs_dir": str(tmp_path / "runs"),
                                   "stage1.max_steps": 60, "stage1.batch_size": 1, "stage1.log_every": 10,
                                   "stage1.checkpoint_every": 60})
    train_stage1(cfg, progress=False)
    stage = cfg.run_dir / "stage1"
    summary = json.loads((stage / "summary.json").read_text())
    start, end = summary["eval_loss_start"], summary["eval_loss_end"]
    assert end < 0.9 * start, f"fixed-batch Eq. 2 loss {start:.4f} -> {end:.4f}: the model did not learn"
    losses = [x for r in read_jsonl(stage / "log.jsonl") for x in r["losses"]]
    assert len(losses) == 60
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.92 * first, f"training loss {first:.4f} (steps 1-10) -> {last:.4f} (steps 51-60)"


def test_gradient_accumulation_consumes_micro_batches(tmp_path):
    bench = _bench(tmp_path / "bench", codecs=("jpeg",), images=1)
    cfg = resolve_config("smoke", {"data.out_dir": str(bench), "runs_dir": str(tmp_path / "runs"),
                                   "stage1.max_steps": 2, "stage1.batch_size": 1, "stage1.grad_accum": 3,
                                   "stage1.log_every": 1, "stage1.checkpoint_every": 2})
    train_stage1(cfg, progress=False)
    info = json.loads((cfg.run_dir / "stage1" / "checkpoints" / "step_000002" / "checkpoint.json").read_text())
    assert info["meta"]["samples_seen"] == 6
    assert info["meta"]["sampler"] == {"epoch": 2, "batch": 0}  # 3 pairs, batch 1: 6 micro-batches = 2 epochs
    records = read_jsonl(cfg.run_dir / "stage1" / "log.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert sum(sum(r["counts"].values()) for r in records) == 6  # every micro-batch went into the statistics


def test_optimizer_switches_released_groups_and_adamw():
    """stage1.optimizer / prompt_lr_scale / injection_lr_scale: the released AdamW groups (prompt 2 lr, SPADE 0)."""
    from moediffir.training.stage1 import build_stage1_optimizer

    cfg = resolve_config("smoke", {"model.recipe": "released", "model.use_v2t": False})
    denoiser, _ = _fresh(cfg)
    opt = build_stage1_optimizer(denoiser, cfg.stage1)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.01
    assert [g["lr"] for g in opt.param_groups] == [2 * cfg.stage1.lr, 0.0]
    assert opt.defaults["betas"] == tuple(cfg.stage1.betas)
    before = {n: p.detach().clone() for n, p in denoiser.named_parameters() if p.requires_grad}
    z = torch.randn(2, 4, 8, 8)
    img = torch.rand(2, 3, 64, 64)
    denoiser.train()
    denoiser(z, torch.tensor([3, 500]), z, lq_image=img, task_labels=torch.tensor([0, 4])).square().mean().backward()
    opt.step()
    moved = {n for n, p in denoiser.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert any(n.startswith("prompt_module.") for n in moved)
    assert not any(n.startswith("spade.") for n in moved)  # lr 0 (and AdamW's decay is lr-scaled): frozen
    paper = build_stage1_optimizer(denoiser, resolve_config("smoke").stage1)
    assert type(paper) is torch.optim.Adam and {g["lr"] for g in paper.param_groups} == {1e-3}


def test_usm_switch_sharpens_the_gt_the_loss_sees(monkeypatch):
    from moediffir.training import stage1

    cfg = resolve_config("smoke", {"model.use_v2t": False})
    denoiser, vae = _fresh(cfg)
    from moediffir.weights.builders import build_backbone

    scheduler = build_backbone(cfg)[2]
    g = torch.Generator().manual_seed(0)
    gt = torch.full((1, 3, 64, 64), 0.3)
    gt[..., 32:] = 0.7
    batch = {"lq": torch.rand(1, 3, 64, 64, generator=g), "gt": gt, "label": torch.tensor([0])}
    seen = []
    real = stage1.encode_pair
    monkeypatch.setattr(stage1, "encode_pair", lambda vae_, lq, gt_, generator=None: seen.append(gt_) or real(vae_, lq, gt_))
    for sharpen in (False, True):
        stage1.stage1_loss(denoiser, vae, scheduler, batch, "cpu", sharpen_gt=sharpen)
    assert torch.equal(seen[0], gt)
    assert torch.equal(seen[1], stage1.usm_sharpen(gt)) and not torch.equal(seen[1], gt)


def test_training_conditions_exactly_like_the_pipeline():
    """Stage I's ``z_lq`` is the pipeline's ``encode_lq`` (one encoder for both), and so is the deterministic
    latent of the fixed-batch loss."""
    from moediffir.pipelines.vae_steps import encode_lq
    from moediffir.training import stage1

    _, vae = _fresh(resolve_config("smoke", {"model.use_v2t": False}))
    g = torch.Generator().manual_seed(3)
    lq, gt = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        z_lq, z0 = stage1.encode_pair(vae, lq, gt, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(z_lq, encode_lq(vae, lq))
        assert z0.shape == z_lq.shape and not torch.allclose(z0, encode_lq(vae, gt))  # z_0 is a posterior sample


def test_released_v2t_form_trains_its_conv_tokens_and_adapter():
    """model.recipe=released (smoke sizes): the released V2T form gets the VAE from the stage-I builder, and one
    loss step gives gradients to its grid conv, tokens and adapter only (its enhancer and CLIP stay frozen)."""
    from moediffir.training.stage1 import _build_model, _check_frozen, stage1_loss

    cfg = resolve_config("smoke", {"model.recipe": "released"})
    denoiser, vae, scheduler = _build_model(cfg)
    _check_frozen(denoiser, vae)
    assert denoiser.v2t._decoder == [vae]
    g = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(2, 3, 64, 64, generator=g), "gt": torch.rand(2, 3, 64, 64, generator=g),
             "label": torch.tensor([0, 3])}
    denoiser.train()
    loss, _ = stage1_loss(denoiser, vae, scheduler, batch, torch.device("cpu"))
    loss.backward()
    with_grad = {n for n, p in denoiser.v2t.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"grid_conv.weight", "grid_conv.bias", "learned_tokens", "adapter.0.weight", "adapter.2.weight"}
