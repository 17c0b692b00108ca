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


def _live_fraction(model: ResidualCNN, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.body[:-1](x) > 0).float().mean())  # after the last ReLU


@pytest.mark.parametrize("lr, alive", [(1e-4, True), (3e-2, False)])
def test_the_default_learning_rate_keeps_the_cnn_alive(smoke_cfg, tmp_path, lr, alive):
    """At the default rate the network leaves the identity with live units. The check can see the failure the
    default avoids (on the mini crops 1e-3 killed every ReLU within 100 steps): a rate far too high kills them
    here too, and the CNN then returns its input plus a constant."""
    kwargs = {} if alive else {"lr": lr}
    model, info = train_cnn_baseline(smoke_cfg, 1e9, tmp_path, channels=16, layers=4, max_steps=60, **kwargs)
    assert info["steps"] == 60 and info["lr"] == lr and (tmp_path / "cnn.pt").is_file()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        moved = float((model(x) - x).abs().mean())
    if alive:
        assert _live_fraction(model, x) > 0.05 and moved > 1e-4
    else:
        assert _live_fraction(model, x) == 0.0
