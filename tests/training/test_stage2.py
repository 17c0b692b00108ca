"""Stage II: stage-I latents and the decoder compensator (moediffir/training/stage2_data.py, stage2.py; paper §3.4,
§4.1, Eq. 4).

The latents are sharded, resumable and reproducible; a 6-step run writes its checkpoint folders and adds the
compensator to the model folder the pipeline loads; the trained compensator decodes the training batch closer
to the GT (L1) than the plain VAE decoder does.
"""

from __future__ import annotations

import json

import pytest
import torch
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config
from moediffir.training.stage2 import train_stage2
from moediffir.training.stage2_data import (
    LatentShardDataset,
    Stage2DataError,
    generate_stage2_data,
    stage1_fingerprint,
    stage2_data_dir,
)
from moediffir.training.training_log import read_jsonl


@pytest.fixture(scope="module")
def stage1_model(tmp_path_factory):
    """A benchmark (JPEG, 2 images) and a 2-step stage-I model."""
    from moediffir.data.builder import build_benchmark
    from moediffir.training.stage1 import train_stage1

    bench, runs = tmp_path_factory.mktemp("bench"), tmp_path_factory.mktemp("runs")
    over = {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(bench), "data.codecs": ["jpeg"],
            "data.unseen": False, "data.max_train_images": 2, "runs_dir": str(runs), "stage1.max_steps": 2,
            "stage1.batch_size": 2, "stage2.num_latents": 8, "stage2.shard_size": 3, "stage2.sample_steps": 2,
            "stage2.max_steps": 6, "stage2.checkpoint_every": 3, "stage2.log_every": 2, "stage2.gan_start_step": 3,
            "stage2.keep_checkpoints": 0}
    cfg = resolve_config("smoke", over)
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    train_stage1(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def stage2_data(stage1_model):
    return generate_stage2_data(stage1_model, progress=False)


def test_data_is_sharded_resumable_and_reproducible(stage1_model, stage2_data):
    cfg, out = stage1_model, stage2_data
    assert out == stage2_data_dir(cfg) == cfg.run_dir / "stage2" / "data"
    shards = sorted(p.name for p in out.glob("shard_*.pt"))
    assert shards == ["shard_00000.pt", "shard_00001.pt", "shard_00002.pt"]  # 8 latents in shards of 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["source"]["model_fingerprint"] == stage1_fingerprint(cfg.run_dir / "model")
    ds = LatentShardDataset(out)
    assert len(ds) == 8
    item = ds[7]
    assert item["lq"].shape == (3, 64, 64) and item["gt"].shape == (3, 64, 64) and item["z0"].shape == (4, 8, 8)
    assert item["label"] in (0, 1, 2) and torch.isfinite(item["z0"]).all()

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.pt")}
    kept = torch.load(out / "shard_00001.pt", weights_only=True)
    (out / "shard_00001.pt").unlink()  # as if killed before this shard was written
    generate_stage2_data(cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.pt")}
    assert after["shard_00000.pt"] == before["shard_00000.pt"] and after["shard_00002.pt"] == before["shard_00002.pt"]
    redone = torch.load(out / "shard_00001.pt", weights_only=True)
    assert all(torch.equal(kept[k], redone[k]) for k in kept), "a regenerated shard must equal the original"


def test_crops_of_the_latents_match_their_pairs(stage1_model, stage2_data):
    from moediffir.data.manifest import read_manifest
    from moediffir.training.pairs import training_pairs

    cfg = stage1_model
    shard = torch.load(stage2_data / "shard_00000.pt", weights_only=True)
    pairs = training_pairs(cfg)
    assert len(read_manifest(cfg.benchmark_dir)) >= len(pairs)
    for j in range(shard["row"].shape[0]):
        assert int(shard["label"][j]) == int(pairs.iloc[int(shard["row"][j])]["label"])


def test_six_step_run_checkpoints_and_compensator_beats_plain_decoder(stage1_model, stage2_data):
    from moediffir.pipelines.moediffir_pipeline import load_pipeline
    from moediffir.weights.model_folder import read_model_info

    cfg = stage1_model
    folder = train_stage2(cfg, progress=False)
    stage = cfg.run_dir / "stage2"
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["step_000003", "step_000006"]
    assert {p.name for p in (stage / "checkpoints" / "step_000006").iterdir()} == {
        "checkpoint.json", "trainable.pt", "optimizers.pt", "schedulers.pt", "rng_rank0.pt"}
    state = torch.load(stage / "checkpoints" / "step_000006" / "trainable.pt", weights_only=False)
    assert set(state) == {"compensator", "discriminator"}
    assert all(k.startswith("fusion.") for k in state["compensator"])  # the frozen VAE copy is not checkpointed

    records = read_jsonl(stage / "log.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert [r["gan_on"] for r in records] == [False, True, True]  # hinge GAN from stage2.gan_start_step = 3
    assert records[-1]["d_loss"] > 0 and "random" in records[-1]["lpips_net"]  # smoke LPIPS is labelled

    summary = json.loads((stage / "summary.json").read_text())
    start, end = summary["start"], summary["end"]
    assert start["l1_w1"] == pytest.approx(start["l1_plain"], abs=1e-7)  # zero-initialised fusion = plain decoder
    assert end["l1_plain"] == pytest.approx(start["l1_plain"], abs=1e-7)  # the plain decoder is frozen
    assert end["l1_w1"] < 0.95 * end["l1_plain"], f"compensated L1 {end['l1_w1']:.4f} vs plain {end['l1_plain']:.4f}"

    pipe = load_pipeline(folder, device="cpu")
    assert pipe.compensator is not None
    assert "stage2" in read_model_info(folder)["info"]
    assert stage1_fingerprint(folder) == json.loads((stage2_data / "meta.json").read_text())["source"]["model_fingerprint"]
    lq = torch.rand(1, 3, 64, 64)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(lq, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (1, 3, 64, 64)


def test_stage2_needs_its_inputs(tmp_path):
    cfg = resolve_config("smoke", {"runs_dir": str(tmp_path / "runs"), "data.out_dir": str(tmp_path / "bench")})
    with pytest.raises(Stage2DataError, match="moediffir train stage1 --profile smoke"):
        generate_stage2_data(cfg, progress=False)
    with pytest.raises(Stage2DataError, match="moediffir train stage1"):
        train_stage2(cfg, progress=False)


def test_latents_of_an_older_stage1_model_are_refused(stage1_model, stage2_data, tmp_path):
    import shutil

    cfg = stage1_model
    other = tmp_path / "runs"
    shutil.copytree(cfg.run_dir.parent, other)
    spade = next((other / "smoke" / "model" / "denoiser" / "spade").glob("*.safetensors"))
    spade.write_bytes(spade.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # a retrained stage I: different weights
    moved = resolve_config("smoke", {"data.out_dir": str(cfg.benchmark_dir), "runs_dir": str(other)})
    with pytest.raises(Stage2DataError, match="another stage-I model"):
        train_stage2(moved, progress=False)


def test_stage2_resume_reproduces_the_uninterrupted_run(stage1_model, stage2_data, tmp_path):
    cfg = stage1_model

    def run(out: str, steps: int, resume: bool = False) -> dict[int, tuple[float, float]]:
        c = resolve_config("smoke", {"data.out_dir": str(cfg.benchmark_dir), "runs_dir": str(cfg.runs_dir),
                                     "stage2.data_dir": str(stage2_data), "stage2.out_dir": str(tmp_path / out),
                                     "stage2.max_steps": steps, "stage2.checkpoint_every": 2, "stage2.log_every": 1,
                                     "stage2.gan_start_step": 1, "stage2.batch_size": 2})
        train_stage2(c, resume=resume, progress=False)
        return {r["step"]: (r["loss"], r["d_loss"]) for r in read_jsonl(tmp_path / out / "log.jsonl")}

    full = run("full", 4)
    run("parted", 2)
    parted = run("parted", 4, resume=True)
    assert sorted(full) == sorted(parted) == [1, 2, 3, 4]
    assert full == parted, "generator and discriminator losses after resuming differ from the uninterrupted run"
    assert full[3][1] > 0  # the discriminator was training


def test_cli_stage2_data_and_a_user_error(stage1_model, stage2_data, tmp_path, capsys):
    from moediffir.cli import main

    cfg = stage1_model
    before = {p.name: p.stat().st_mtime_ns for p in stage2_data.glob("shard_*.pt")}
    sets = [f"data.out_dir={cfg.benchmark_dir}", f"runs_dir={cfg.runs_dir}", "stage2.num_latents=8",
            "stage2.shard_size=3", "stage2.sample_steps=2"]
    argv = ["stage2-data", "--profile", "smoke", "--device", "cpu", "--no-progress"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    assert "stage II latents:" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in stage2_data.glob("shard_*.pt")} == before  # all done already
    rc = main(["train", "stage1", "--profile", "smoke", "--set", f"data.out_dir={tmp_path / 'none'}",
               "--set", f"runs_dir={tmp_path / 'runs'}", "--no-progress"])
    assert rc == 2 and "moediffir data build --profile smoke" in capsys.readouterr().err


def test_training_lpips_net_is_its_own_switch():
    """stage2.lpips_net: AlexNet by default, VGG16 (the released training loss) on request; eval keeps its own."""
    from moediffir.training.stage2 import _build_lpips

    alex, label_a = _build_lpips(resolve_config("smoke"), "cpu")
    vgg, label_v = _build_lpips(resolve_config("smoke", {"stage2.lpips_net": "vgg", "eval.lpips_net": "alex"}), "cpu")
    assert label_a.startswith("alex:") and label_v.startswith("vgg:")
    assert type(alex.net).__name__ == "alexnet" and type(vgg.net).__name__ == "vgg16"
