"""The CNN yardstick: a residual network that starts as the identity and learns from the seen-task pairs."""

from __future__ import annotations

import pytest
import torch
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config
from moediffir.studies.cnn_baseline import ResidualCNN, train_cnn_baseline


def test_the_untrained_cnn_is_the_identity():
    x = torch.rand(2, 3, 16, 24)
    assert torch.equal(ResidualCNN(channels=8, layers=3)(x), x)


@pytest.fixture(scope="module")
def smoke_cfg(tmp_path_factory):
    from moediffir.data.builder import build_benchmark

    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"),
                                   "data.out_dir": str(tmp_path_factory.mktemp("bench")), "data.codecs": ["jpeg"],
                                   "data.unseen": False, "data.max_train_images": 2})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    return cfg


def _pair_mse(model: ResidualCNN, cfg) -> tuple[float, float]:
    """Mean squared error of the CNN's output and of its input against the ground truth, over the training crops."""
    from moediffir.training.pairs import PairedCropDataset, training_pairs

    data = PairedCropDataset(cfg.benchmark_dir, training_pairs(cfg), cfg.stage1.crop_size, False)
    out, inp = [], []
    with torch.no_grad():
        for i in range(len(data)):
            lq, gt = data[i]["lq"][None], data[i]["gt"][None]  # (1, 3, S, S)
            out.append(float(((model(lq) - gt) ** 2).mean()))
            inp.append(float(((lq - gt) ** 2).mean()))
    return sum(out) / len(out), sum(inp) / len(inp)


def test_the_default_cnn_learns_to_beat_its_input(smoke_cfg, tmp_path):
    """With the defaults (MSE loss, lr 1e-3) a few steps on the JPEG pairs take the CNN from the identity to an
    output closer to the ground truth than its input is, by more than the earlier L1 loss at 1e-4 got in as many
    steps (0.99 of the input's error here; the defaults reach 0.93). The record says how it was trained."""
    model, info = train_cnn_baseline(smoke_cfg, 1e9, tmp_path, channels=16, layers=4, max_steps=80)
    assert info["steps"] == 80 and info["loss"] == "mse" and info["lr"] == 1e-3 and (tmp_path / "cnn.pt").is_file()
    restored, given = _pair_mse(model, smoke_cfg)
    assert restored < 0.97 * given


def test_an_unknown_loss_is_refused_before_any_work(smoke_cfg, tmp_path):
    with pytest.raises(ValueError, match="loss='l2'"):
        train_cnn_baseline(smoke_cfg, 1e9, tmp_path / "cnn", max_steps=1, loss="l2")
    assert not (tmp_path / "cnn").exists()
